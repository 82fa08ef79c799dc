//! Follow + Ack: a one-way subscription with every guarantee of Subscribe, its window
//! released by Ack calls for its consumer, made to any server.

use std::time::Duration;

use activity_hub::proto::activity::v1::{
    subscribe_response::Msg, AckRequest, FollowRequest, Start, StartFrom, SubscribeResponse,
};
use tonic::{Code, Streaming};

use crate::{
    activity::dsl::{client, numbered, Server},
    dual,
    helpers::{assert_status, authed, skip_without_pg, Backend},
};

fn start(consumer: &str, window: u32) -> Start {
    Start {
        consumer_id: consumer.into(),
        window,
        start_from: StartFrom::Earliest as i32,
        ..Default::default()
    }
}

async fn follow(s: &Server, token: &str, start: Start) -> Streaming<SubscribeResponse> {
    let mut rx = client(&s.channel)
        .follow(authed(FollowRequest { start: Some(start) }, token))
        .await
        .expect("Follow opens")
        .into_inner();
    match rx.message().await.expect("first message") {
        Some(SubscribeResponse {
            msg: Some(Msg::Subscribed(_)),
        }) => rx,
        other => panic!("Follow did not start with Subscribed: {other:?}"),
    }
}

/// The next event's seq, or None if nothing comes within `within`.
async fn next_seq(rx: &mut Streaming<SubscribeResponse>, within: Duration) -> Option<u64> {
    loop {
        match tokio::time::timeout(within, rx.message()).await {
            Err(_) => return None,
            Ok(Ok(Some(SubscribeResponse {
                msg: Some(Msg::Event(e)),
            }))) => return Some(e.seq),
            Ok(Ok(Some(_))) => continue,
            Ok(other) => panic!("stream ended: {other:?}"),
        }
    }
}

async fn ack(s: &Server, token: &str, consumer: &str, seq: u64) -> Result<u64, tonic::Status> {
    client(&s.channel)
        .ack(authed(
            AckRequest {
                user_id: 0,
                consumer_id: consumer.into(),
                seq,
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().acked_seq)
}

dual!(acks_release_the_window_of_a_follow_stream);

async fn acks_release_the_window_of_a_follow_stream(b: Backend) {
    let s = Server::start(b).await;
    let (publisher, alice, token) = s.cast().await;
    let mut rx = follow(&s, &token, start("web", 2)).await;
    s.publish_all(&publisher, numbered(alice.id, 5)).await;
    assert_eq!(next_seq(&mut rx, Duration::from_secs(10)).await, Some(1));
    assert_eq!(next_seq(&mut rx, Duration::from_secs(10)).await, Some(2));
    assert_eq!(
        next_seq(&mut rx, Duration::from_millis(300)).await,
        None,
        "nothing beyond the window before an ack"
    );
    // Above what the stream sent: refused, and the stream goes on.
    assert_status(
        ack(&s, &token, "web", 4).await,
        Code::InvalidArgument,
        "seq: 4 is above",
    );
    assert_eq!(ack(&s, &token, "web", 1).await.unwrap(), 1);
    assert_eq!(next_seq(&mut rx, Duration::from_secs(10)).await, Some(3));
    assert_eq!(ack(&s, &token, "web", 3).await.unwrap(), 3);
    assert_eq!(next_seq(&mut rx, Duration::from_secs(10)).await, Some(4));
    assert_eq!(next_seq(&mut rx, Duration::from_secs(10)).await, Some(5));
    assert_eq!(
        s.cursor(&token, 0, "web").await.acked_seq,
        3,
        "the Ack committed the cursor"
    );
    drop(rx);
    // Resuming the consumer starts after its cursor.
    let mut again = follow(
        &s,
        &token,
        Start {
            start_from: StartFrom::Cursor as i32,
            ..start("web", 10)
        },
    )
    .await;
    assert_eq!(next_seq(&mut again, Duration::from_secs(10)).await, Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_refuses_what_it_cannot_honour() {
    let s = Server::start(Backend::Sqlite).await;
    let (_, alice, token) = s.cast().await;
    let open = |start: Option<Start>| {
        let mut c = client(&s.channel);
        let token = token.clone();
        async move {
            c.follow(authed(FollowRequest { start }, &token))
                .await
                .map(|_| ())
        }
    };
    assert_status(open(None).await, Code::InvalidArgument, "start");
    // Explicit acks (the default) need a consumer for Ack to name.
    assert_status(
        open(Some(Start::default())).await,
        Code::InvalidArgument,
        "start.consumer_id",
    );
    assert_status(
        open(Some(Start {
            window: 20_000,
            ..start("c", 0)
        }))
        .await,
        Code::InvalidArgument,
        "start.window",
    );
    // Ack without a live stream moves the stored cursor, up to the head only.
    assert_status(ack(&s, &token, "", 1).await, Code::InvalidArgument, "consumer_id");
    assert_status(
        ack(&s, &token, "idle", 1).await,
        Code::InvalidArgument,
        "seq: 1 is above",
    );
    let (_, publisher) = s
        .user_with_token("pub2", &[activity_hub::proto::user::v1::UserRole::Publisher])
        .await;
    s.publish_all(&publisher, numbered(alice.id, 2)).await;
    assert_eq!(ack(&s, &token, "idle", 2).await.unwrap(), 2);
    assert_eq!(s.cursor(&token, 0, "idle").await.acked_seq, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_made_on_another_server_releases_the_window() {
    if skip_without_pg("web::follow::an_ack_made_on_another_server_releases_the_window") {
        return;
    }
    let a = Server::start(Backend::Postgres).await;
    let b = Server::on(a.db(), &[]).await;
    let (publisher, alice, token) = a.cast().await;
    let mut rx = follow(&a, &token, start("web", 1)).await;
    a.publish_all(&publisher, numbered(alice.id, 3)).await;
    assert_eq!(next_seq(&mut rx, Duration::from_secs(10)).await, Some(1));
    assert_eq!(next_seq(&mut rx, Duration::from_millis(300)).await, None);
    // Made to server B, which has no stream for the consumer.
    assert_eq!(ack(&b, &token, "web", 1).await.unwrap(), 1);
    assert_eq!(
        next_seq(&mut rx, Duration::from_secs(10)).await,
        Some(2),
        "A's window opened"
    );
    assert_eq!(ack(&b, &token, "web", 2).await.unwrap(), 2);
    assert_eq!(next_seq(&mut rx, Duration::from_secs(10)).await, Some(3));
}
