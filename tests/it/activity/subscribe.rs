//! Subscribing: history replays into live delivery without loss, filters apply to both,
//! one live stream per durable consumer, and idle streams hear heartbeats.

use std::time::Duration;

use activity_hub::proto::activity::v1::{subscribe_response, AckMode, PublishRequest, Start, StartFrom};
use tonic::Code;

use super::dsl::{consumer, earliest, event_req, publish_stream, start, Server};
use crate::helpers::Backend;

crate::dual!(
    replay_live_seam_loses_nothing,
    types_filter_and_ack_mode_none,
    one_live_stream_per_consumer,
);

async fn replay_live_seam_loses_nothing(b: Backend) {
    let s = Server::start(b).await;
    let (publisher, alice, alice_token) = s.cast().await;
    const N: u64 = 3000;
    let ch = s.channel.clone();
    let id = alice.id;
    let producer = tokio::spawn(async move {
        // Small PublishStreams back to back: commits keep landing while subscribers start.
        for chunk in 0..(N / 50) {
            let reqs = (0..50)
                .map(|i| event_req(&[id], "t", format!("{}", chunk * 50 + i)))
                .collect();
            publish_stream(&ch, &publisher, reqs).await;
        }
    });
    let mut subs = Vec::new();
    for k in 0..6u64 {
        tokio::time::sleep(Duration::from_millis(40)).await;
        let from = if k % 2 == 0 {
            Start {
                window: 64,
                ..earliest()
            }
        } else {
            let head = s.history(&alice_token).await.head_seq;
            Start {
                start_from: StartFrom::Seq as i32,
                after_seq: head / 2,
                window: 64,
                ..start(0)
            }
        };
        subs.push(s.subscribe(&alice_token, from).await);
    }
    producer.await.unwrap();
    for mut sub in subs {
        let first = sub.subscribed.resume_after + 1;
        sub.expect_seqs_acking(first..=N, "no loss or reordering across the replay/live seam")
            .await;
    }
    s.stop().await;
}

async fn types_filter_and_ack_mode_none(b: Backend) {
    let s = Server::start(b).await;
    let (publisher, alice, alice_token) = s.cast().await;
    let typed = |types: &[&str]| -> Vec<PublishRequest> {
        types.iter().map(|t| event_req(&[alice.id], t, "x")).collect()
    };
    s.publish_all(&publisher, typed(&["a", "b", "a", "b"])).await;
    let mut sub = s
        .subscribe(
            &alice_token,
            Start {
                types: vec!["a".into()],
                ..earliest()
            },
        )
        .await;
    assert_eq!(sub.event().await.seq, 1);
    assert_eq!(sub.event().await.seq, 3);
    s.publish_all(&publisher, typed(&["b", "a"])).await;
    let e = sub.event().await;
    assert_eq!(
        (e.seq, e.r#type.as_str()),
        (6, "a"),
        "live events are filtered too"
    );

    // ACK_MODE_NONE: a window of 4 does not limit it, and the cursor follows what was written.
    let mut none = s
        .subscribe(
            &alice_token,
            Start {
                start_from: StartFrom::Earliest as i32,
                window: 4,
                ack_mode: AckMode::None as i32,
                ..consumer("tv")
            },
        )
        .await;
    none.expect_seqs(1..=6, "no acks needed").await;
    s.cursor_reaches(&alice_token, alice.id, "tv", 6, "written events count as acked")
        .await;
    s.stop().await;
}

async fn one_live_stream_per_consumer(b: Backend) {
    let s = Server::start(b).await;
    let (_, _, alice_token) = s.cast().await;
    let mut old = s.subscribe(&alice_token, consumer("phone")).await;
    let mut anon = s.subscribe(&alice_token, start(0)).await;
    let _new = s.subscribe(&alice_token, consumer("phone")).await;
    let end = old.end().await;
    assert_eq!(end.code(), Code::Aborted);
    assert!(end.message().contains("replaced by a newer stream"), "{end:?}");
    let _anon2 = s.subscribe(&alice_token, start(0)).await;
    assert!(
        anon.event_within(Duration::from_millis(300)).await.is_none(),
        "streams without a consumer_id never replace each other"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_streams_get_heartbeats() {
    let s = Server::start_with(Backend::Sqlite, &["--heartbeat-interval", "100ms"]).await;
    let (publisher, alice, alice_token) = s.cast().await;
    s.publish(&publisher, event_req(&[alice.id], "t", "x"))
        .await
        .unwrap();
    let mut sub = s.subscribe(&alice_token, start(0)).await;
    let mut beats = 0;
    while beats < 3 {
        let m = tokio::time::timeout(Duration::from_secs(10), sub.rx.message())
            .await
            .expect("heartbeats keep coming")
            .unwrap()
            .unwrap();
        match m.msg {
            Some(subscribe_response::Msg::Heartbeat(h)) => {
                assert_eq!(h.head_seq, 1);
                assert!(h.at.is_some());
                beats += 1;
            }
            other => panic!("an idle stream gets only heartbeats, got {other:?}"),
        }
    }
    s.stop().await;
}
