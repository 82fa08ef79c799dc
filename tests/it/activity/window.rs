//! Acks and windows: a subscriber holds at most its window of unacked events, so a
//! stalled one costs bounded memory and never holds back publishers or other
//! subscribers; each ack opens exactly as many slots as it acks.

use std::time::Duration;

use activity_hub::proto::activity::v1::Start;

use super::dsl::{numbered, start, Server};
use crate::helpers::Backend;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_holds_a_stalled_subscriber_to_its_window() {
    let s = Server::start(Backend::Sqlite).await;
    let (publisher, alice, alice_token) = s.cast().await;
    const WINDOW: u64 = 8;
    const N: u64 = 500;
    let windowed = |window: u64| Start {
        window: window as u32,
        ..start(0)
    };
    let mut stalled = s.subscribe(&alice_token, windowed(WINDOW)).await;
    let mut fast = s.subscribe(&alice_token, windowed(16)).await;
    let answers = s.publish_all(&publisher, numbered(alice.id, N)).await;
    assert_eq!(
        answers.len() as u64,
        N,
        "publishers are not held back by a stalled subscriber"
    );
    fast.expect_seqs_acking(1..=N, "the fast subscriber gets everything in order")
        .await;
    // The stalled one got exactly its window, and holds no more than that in memory.
    stalled.expect_seqs(1..=WINDOW, "the window's events").await;
    assert!(
        stalled.event_within(Duration::from_millis(300)).await.is_none(),
        "no event beyond the window without an ack"
    );
    let infos = s.hub.inspect(alice.id).await;
    assert_eq!(infos.len(), 2);
    for info in &infos {
        assert!(
            info.pending + info.queued <= WINDOW as usize + 16,
            "memory bounded by the window: {info:?}"
        );
    }
    assert!(
        infos.iter().any(|i| i.behind && i.unacked == WINDOW as usize),
        "{infos:?}"
    );
    // Acking 3 opens exactly 3 slots, filled from the store.
    stalled.ack(3).await;
    stalled
        .expect_seqs(WINDOW + 1..=WINDOW + 3, "3 slots filled from the store")
        .await;
    assert!(stalled.event_within(Duration::from_millis(200)).await.is_none());
    // And it can catch up all the way.
    stalled.ack(WINDOW + 3).await;
    stalled
        .expect_seqs_acking(WINDOW + 4..=N, "catches up all the way")
        .await;
    s.stop().await;
}
