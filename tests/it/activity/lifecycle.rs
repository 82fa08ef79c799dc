//! A stream's life: closing it stops its actor, and shutting the server down ends every
//! stream with UNAVAILABLE while keeping every publish it acknowledged.

use std::{collections::HashMap, time::Duration};

use activity_hub::proto::activity::v1::ListEventsRequest;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use super::dsl::{client, event_req, start, Server};
use crate::helpers::{authed, eventually, Backend};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_streams_leave_no_actor_behind() {
    let s = Server::start(Backend::Sqlite).await;
    let (_, _, alice_token) = s.cast().await;
    let mut subs = Vec::new();
    for _ in 0..5 {
        subs.push(s.subscribe(&alice_token, start(0)).await);
    }
    let stats = s.hub.clone();
    let open = || {
        stats
            .stats()
            .subscriptions
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert_eq!(open(), 5);
    drop(subs);
    eventually(
        Duration::from_secs(10),
        "every subscription actor stopped",
        || open() == 0,
    )
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_streams_with_unavailable_and_keeps_acknowledged_events() {
    let s = Server::start(Backend::Sqlite).await;
    let (publisher, alice, alice_token) = s.cast().await;
    let mut sub = s.subscribe(&alice_token, start(0)).await;
    let ch = s.channel.clone();
    let id = alice.id;
    // A publisher streaming while the server stops: whatever it got answers for must survive.
    let (req_tx, req_rx) = mpsc::channel(16);
    let mut answers = client(&ch)
        .publish_stream(authed(ReceiverStream::new(req_rx), &publisher))
        .await
        .unwrap()
        .into_inner();
    let feeder = tokio::spawn(async move {
        for i in 0.. {
            if req_tx.send(event_req(&[id], "t", format!("{i}"))).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let mut acknowledged = Vec::new();
    for _ in 0..50 {
        acknowledged.push(answers.message().await.unwrap().unwrap());
    }
    let reader = tokio::spawn(async move {
        loop {
            match answers.message().await {
                Ok(Some(a)) => acknowledged.push(a),
                _ => return acknowledged,
            }
        }
    });
    let db = s.db();
    let stop = tokio::spawn(s.stop());
    let end = sub.end().await;
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    stop.await.unwrap();
    feeder.abort();
    let acknowledged = reader.await.unwrap();
    let s = Server::on(db, &[]).await;
    let page = s
        .list(
            &alice_token,
            ListEventsRequest {
                limit: 1000,
                ..Default::default()
            },
        )
        .await;
    let stored: HashMap<u64, String> = page.events.into_iter().map(|e| (e.seq, e.event_id)).collect();
    for a in &acknowledged {
        assert_eq!(
            stored.get(&a.deliveries[0].seq),
            Some(&a.event_id),
            "acknowledged publish survived"
        );
    }
    s.stop().await;
}
