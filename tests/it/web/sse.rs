//! Server-Sent Events: live events as `id: seq` messages, resume strictly after
//! `Last-Event-ID` (or `lastEventId`) across a server restart, the token as
//! `accessToken`, heartbeats as comments, `truncated` surfaced, explicit-ack windows
//! released by the REST ack.

use std::time::Duration;

use serde_json::json;

use super::client::{post, sse, Sse};
use crate::{
    activity::dsl::{numbered, Server},
    dual,
    helpers::Backend,
};

fn stream_path(token: &str, query: &str) -> String {
    format!("/v1/users/0/events/stream?accessToken={token}{query}")
}

/// The next `n` event messages' seqs (their `id`, checked against the JSON's `seq`).
async fn seqs(rx: &mut Sse, n: usize) -> Vec<u64> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = rx.message().await.expect("the stream goes on");
        assert_eq!(m.event, None, "an event message: {m:?}");
        let id: u64 =
            m.id.clone()
                .expect("events carry their seq as id")
                .parse()
                .unwrap();
        assert_eq!(m.json()["seq"], id.to_string(), "{m:?}");
        out.push(id);
    }
    out
}

async fn subscribed(rx: &mut Sse) -> serde_json::Value {
    assert_eq!(rx.status, 200);
    assert_eq!(rx.headers.get("content-type").unwrap(), "text/event-stream");
    let m = rx.message().await.expect("subscribed");
    assert_eq!(m.event.as_deref(), Some("subscribed"), "{m:?}");
    m.json()
}

dual!(event_source_resumes_across_a_restart_losing_and_repeating_nothing);

async fn event_source_resumes_across_a_restart_losing_and_repeating_nothing(b: Backend) {
    let s = Server::start(b).await;
    let (publisher, alice, token) = s.cast().await;
    let mut rx = sse(s.addr, &stream_path(&token, "&consumerId=browser"), &[]).await;
    let sub = subscribed(&mut rx).await;
    assert_eq!(sub["truncated"], false, "{sub}");
    assert_eq!(sub["userId"], alice.id.to_string());
    s.publish_all(&publisher, numbered(alice.id, 2)).await;
    assert_eq!(seqs(&mut rx, 2).await, [1, 2]);
    let payload = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, "MQ==").unwrap(),
    )
    .unwrap();
    assert_eq!(payload, "1");

    // The server restarts under the open stream: it ends (with an error event or not).
    let db = s.db();
    s.stop().await;
    while let Some(m) = rx.next_within(Duration::from_secs(20)).await {
        if m.event.as_deref() == Some("error") {
            assert_eq!(m.json()["code"], 14, "UNAVAILABLE: {m:?}");
        } else {
            assert!(
                m.id.is_none() || m.comment.is_some(),
                "no event after the restart began: {m:?}"
            );
        }
    }
    let s = Server::on(db, &[]).await;
    s.publish_all(&publisher, numbered(alice.id, 1)).await;
    // What EventSource sends when it reconnects.
    let mut rx = sse(
        s.addr,
        &stream_path(&token, "&consumerId=browser"),
        &[("last-event-id", "2")],
    )
    .await;
    let sub = subscribed(&mut rx).await;
    assert_eq!(sub["resumeAfter"], "2", "{sub}");
    assert_eq!(
        seqs(&mut rx, 1).await,
        [3],
        "the one event published while away, once"
    );
    s.publish_all(&publisher, numbered(alice.id, 1)).await;
    assert_eq!(seqs(&mut rx, 1).await, [4]);
    drop(rx);
    // The same through the lastEventId parameter (a page re-creating its EventSource)...
    let mut rx = sse(s.addr, &stream_path(&token, "&lastEventId=3"), &[]).await;
    subscribed(&mut rx).await;
    assert_eq!(seqs(&mut rx, 1).await, [4]);
    drop(rx);
    // ...whose own reconnection later sends the newer seq it saw in the header: that wins.
    s.publish_all(&publisher, numbered(alice.id, 1)).await;
    let mut rx = sse(
        s.addr,
        &stream_path(&token, "&lastEventId=3"),
        &[("last-event-id", "4")],
    )
    .await;
    subscribed(&mut rx).await;
    assert_eq!(seqs(&mut rx, 1).await, [5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_acks_over_rest_release_the_sse_window() {
    let s = Server::start(Backend::Sqlite).await;
    let (publisher, alice, token) = s.cast().await;
    let q = "&consumerId=tab&ackMode=ACK_MODE_EXPLICIT&window=2&startFrom=START_FROM_EARLIEST";
    let mut rx = sse(s.addr, &stream_path(&token, q), &[]).await;
    subscribed(&mut rx).await;
    s.publish_all(&publisher, numbered(alice.id, 4)).await;
    assert_eq!(seqs(&mut rx, 2).await, [1, 2]);
    let quiet = tokio::time::timeout(Duration::from_millis(300), rx.message()).await;
    assert!(
        quiet.is_err(),
        "nothing beyond the window before an ack: {quiet:?}"
    );
    let ack = post(
        s.addr,
        &format!("/v1/users/{}/cursors/tab/ack", alice.id),
        Some(&token),
        &json!({"seq": "2"}),
    )
    .await;
    assert_eq!(ack.status, 200, "{ack:?}");
    assert_eq!(seqs(&mut rx, 2).await, [3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_truncation_and_bad_parameters() {
    let s = Server::start_with(
        Backend::Sqlite,
        &[
            "--heartbeat-interval",
            "100ms",
            "--retention-max-events",
            "2",
            "--retention-max-age",
            "1h",
        ],
    )
    .await;
    let (publisher, alice, token) = s.cast().await;
    s.publish_all(&publisher, numbered(alice.id, 5)).await;
    s.hub.prune_at(activity_hub::store::now_micros()).await.unwrap();
    let mut rx = sse(s.addr, &stream_path(&token, "&lastEventId=1"), &[]).await;
    let sub = subscribed(&mut rx).await;
    assert_eq!(sub["truncated"], true, "{sub}");
    assert_eq!(sub["requestedAfter"], "1");
    assert_eq!(sub["resumeAfter"], "3");
    assert_eq!(seqs(&mut rx, 2).await, [4, 5]);
    let beat = loop {
        let m = rx
            .next_within(Duration::from_secs(10))
            .await
            .expect("stream open");
        if let Some(c) = m.comment {
            break c;
        }
    };
    assert!(beat.starts_with("heartbeat"), "{beat}");

    // Errors answer before the stream starts, as JSON naming the parameter.
    let addr = s.addr;
    let bad = |q: &str| {
        let path = stream_path(&token, q);
        async move { super::client::get(addr, &path, None).await }
    };
    bad("&window=lots").await.assert_error(400, 3, "window");
    bad("&colour=red").await.assert_error(400, 3, "colour");
    bad("&lastEventId=x").await.assert_error(400, 3, "lastEventId");
    bad("&ackMode=ACK_MODE_EXPLICIT")
        .await
        .assert_error(400, 3, "start.consumer_id");
    super::client::get(s.addr, "/v1/users/0/events/stream", None)
        .await
        .assert_error(401, 16, "");
    super::client::get(s.addr, "/v1/users/0/events/stream?accessToken=forged", None)
        .await
        .assert_error(401, 16, "");
}
