//! Resuming: a durable consumer continues right after its last persisted ack, and
//! starting from LATEST neither rewinds nor rewrites its cursor.

use activity_hub::proto::activity::v1::{Start, StartFrom};

use super::dsl::{consumer, numbered, Server};
use crate::helpers::Backend;

crate::dual!(resumption_continues_after_the_acked_seq);

async fn resumption_continues_after_the_acked_seq(b: Backend) {
    let s = Server::start(b).await;
    let (publisher, alice, alice_token) = s.cast().await;
    s.publish_all(&publisher, numbered(alice.id, 20)).await;
    let phone = || Start {
        start_from: StartFrom::Cursor as i32,
        ..consumer("phone")
    };
    let mut sub = s.subscribe(&alice_token, phone()).await;
    assert_eq!(
        sub.subscribed.resume_after, 0,
        "a new consumer starts from the beginning"
    );
    sub.expect_seqs(1..=12, "from the first event").await;
    sub.ack(10).await;
    let cur = s
        .cursor_reaches(&alice_token, 0, "phone", 10, "ack persisted")
        .await;
    assert_eq!(cur.head_seq, 20);
    drop(sub);
    let mut sub = s.subscribe(&alice_token, phone()).await;
    assert_eq!(sub.subscribed.resume_after, 10);
    sub.expect_seqs(11..=20, "continues after the acked seq").await;
    // LATEST with the same consumer does not rewind or rewrite the cursor.
    drop(sub);
    let sub = s
        .subscribe(
            &alice_token,
            Start {
                start_from: StartFrom::Latest as i32,
                ..phone()
            },
        )
        .await;
    assert_eq!(sub.subscribed.resume_after, 20);
    s.hub.flush().await;
    assert_eq!(s.cursor(&alice_token, 0, "phone").await.acked_seq, 10);
    drop(sub);
    s.stop().await;
}
