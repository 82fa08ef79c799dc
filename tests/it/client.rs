//! The Rust client: subscriptions that survive a server crash with no gap, fail-over
//! past a dead endpoint, round-robin balancing, the circuit breaker, sessions that
//! refresh themselves, and pruned history reported as such.

use std::{collections::BTreeSet, process::Stdio, time::Duration};

use activity_hub_client::{
    proto::activity::v1::PublishRequest, Client, ClientConfig, Delivery, Pruned, SubscribeOptions,
};
use futures_util::StreamExt;

use crate::{
    crash::{free_port, spawn_server_on},
    helpers::{skip_without_pg, Backend, TestDb, TestServer, ADMIN_EMAIL, ADMIN_PASSWORD},
};

fn fast(endpoints: Vec<String>) -> ClientConfig {
    let mut c = ClientConfig::new(endpoints);
    c.initial_backoff = Duration::from_millis(20);
    c.max_backoff = Duration::from_millis(200);
    c.max_attempts = 50;
    c.health_interval = Duration::from_millis(100);
    c.breaker_cooldown = Duration::from_millis(200);
    c
}

/// Two servers of one deployment (one PostgreSQL database), so one session works on
/// both; `None` (and a "skipped" line) without TEST_DATABASE_URL.
async fn two_servers(test: &str) -> Option<(TestDb, TestServer, TestServer)> {
    if skip_without_pg(&format!("client::{test}")) {
        return None;
    }
    let db = TestDb::new(Backend::Postgres).await;
    let a = TestServer::start(&db, &[]).await;
    let b = TestServer::start(&db, &[]).await;
    Some((db, a, b))
}

async fn as_admin(client: &Client) {
    client.set_token(Some(client.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.unwrap()));
}

fn event(me: u64, i: usize) -> PublishRequest {
    PublishRequest {
        recipient_ids: vec![me],
        r#type: "tick".into(),
        payload: format!("{i}").into_bytes().into(),
        ..Default::default()
    }
}

/// kill -9 of the server under a running subscription and a running publisher, then a
/// restart on the same port: the subscription reconnects by itself and yields every
/// event exactly once, in order; every publish the client reported as done is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_survives_a_server_crash_with_no_gap() {
    let db = TestDb::new(Backend::Sqlite).await;
    let port = free_port();
    let (mut child, _) = spawn_server_on(port, &db, &[], Stdio::inherit()).await;
    let client = Client::connect(fast(vec![format!("http://127.0.0.1:{port}")]))
        .await
        .unwrap();
    as_admin(&client).await;
    let me = client.get_user(1).await.unwrap().id;
    let mut sub = client.subscribe(SubscribeOptions {
        auto_ack: true,
        ..SubscribeOptions::consumer("phone")
    });
    const N: usize = 300;
    let publisher = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..N {
                let r = client
                    .publish(event(me, i), true)
                    .await
                    .expect("publish retried until done");
                seqs.push(r.deliveries[0].seq);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            seqs
        })
    };
    let mut got = Vec::new();
    let mut restarted = None;
    while got.len() < N {
        let ev = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .expect("events keep coming")
            .expect("the stream does not end")
            .expect("no error reaches the application")
            .into_event()
            .expect("nothing was pruned");
        got.push(ev.seq);
        if got.len() == N / 3 && restarted.is_none() {
            child.start_kill().unwrap();
            child.wait().await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            restarted = Some(spawn_server_on(port, &db, &[], Stdio::inherit()).await.0);
        }
    }
    assert!(restarted.is_some(), "the server was killed mid-stream");
    let expected: Vec<u64> = (1..=N as u64).collect();
    assert_eq!(got, expected, "every event once, in order, no gap");
    let published = publisher.await.unwrap();
    assert_eq!(
        published.iter().copied().collect::<BTreeSet<_>>(),
        expected.iter().copied().collect::<BTreeSet<_>>(),
        "each acknowledged publish is one event (idempotency keys made retries safe)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_fail_over_past_a_dead_endpoint_and_balance_over_live_ones() {
    let Some((_db, a, b)) =
        two_servers("calls_fail_over_past_a_dead_endpoint_and_balance_over_live_ones").await
    else {
        return;
    };
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut cfg = fast(vec![
        dead.clone(),
        format!("http://{}", a.addr),
        format!("http://{}", b.addr),
    ]);
    cfg.breaker_failures = 2;
    cfg.breaker_cooldown = Duration::from_secs(3600);
    let client = Client::connect(cfg).await.unwrap();
    as_admin(&client).await;
    for _ in 0..40 {
        client
            .get_user(1)
            .await
            .expect("every call succeeds despite the dead endpoint");
    }
    let st = client.endpoints();
    assert_eq!(st[0].uri, dead);
    assert_eq!(st[0].answered, 0);
    // Found dead by the first health check or the breaker, whichever came first; either
    // way it costs at most the breaker's threshold of failed calls, each retried.
    assert!(st[0].failed <= 2, "the dead endpoint is skipped: {st:?}");
    assert!(!st[0].healthy || st[0].breaker == activity_hub_client::BreakerState::Open);
    assert!(
        st[1].answered >= 10 && st[2].answered >= 10,
        "round robin over live endpoints: {st:?}"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_steer_calls_away_from_a_stopped_server() {
    let Some((_db, a, b)) = two_servers("health_checks_steer_calls_away_from_a_stopped_server").await else {
        return;
    };
    let client = Client::connect(fast(vec![
        format!("http://{}", a.addr),
        format!("http://{}", b.addr),
    ]))
    .await
    .unwrap();
    as_admin(&client).await;
    a.stop().await;
    crate::helpers::eventually(
        Duration::from_secs(10),
        "the stopped server is marked unhealthy",
        || !client.endpoints()[0].healthy,
    )
    .await;
    let before = client.endpoints()[0].failed;
    for _ in 0..20 {
        client.get_user(1).await.expect("served by the live server");
    }
    let st = client.endpoints();
    assert_eq!(
        st[0].failed, before,
        "no call was sent to the unhealthy server: {st:?}"
    );
    assert!(st[1].answered >= 20);
    b.stop().await;
}

/// Access tokens that live 1 s (and the server's 5 s clock leeway): a session installed
/// with `use_session` keeps calls and a subscription working long past that, across a
/// server crash, because the client refreshes by itself; every rotation reaches the
/// application's hook. Without the refresh, the reconnect after the crash is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_outlives_its_access_token_across_a_reconnect() {
    let db = TestDb::new(Backend::Sqlite).await;
    let port = free_port();
    let flags = ["--token-ttl", "1s"];
    let (mut child, _) = spawn_server_on(port, &db, &flags, Stdio::inherit()).await;
    let client = Client::connect(fast(vec![format!("http://127.0.0.1:{port}")]))
        .await
        .unwrap();
    let session = client.login_session(ADMIN_EMAIL, ADMIN_PASSWORD).await.unwrap();
    client.use_session(&session);
    let rotations = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = rotations.clone();
    client.on_session_refresh(move |r| {
        assert!(!r.refresh_token.is_empty());
        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    });
    let me = client.who_am_i().await.unwrap().id;
    let mut sub = client.subscribe(SubscribeOptions {
        auto_ack: true,
        ..SubscribeOptions::consumer("long-lived")
    });
    client.publish(event(me, 0), true).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("an event")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_event().unwrap().seq, 1);

    // Well past the first token's life and leeway.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let done = rotations.load(std::sync::atomic::Ordering::SeqCst);
    assert!(done >= 2, "refreshed before expiry, more than once");
    // Kill just after a rotation reached the client, not during one: a Refresh whose
    // answer is lost with the server leaves the client holding a spent token, which the
    // restarted server must treat as reuse (a known limit, in the README).
    while rotations.load(std::sync::atomic::Ordering::SeqCst) == done {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let (_restarted, _) = spawn_server_on(port, &db, &flags, Stdio::inherit()).await;
    client
        .publish(event(me, 1), true)
        .await
        .expect("calls go on with a fresh token");
    let second = tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .expect("the subscription reconnected")
        .expect("it did not end")
        .expect("no error: the token was refreshed, not refused");
    assert_eq!(second.into_event().unwrap().seq, 2);
    assert_eq!(client.who_am_i().await.unwrap().id, me);
}

/// A consumer whose cursor retention overtook: the subscription yields a typed Pruned
/// item naming the lost seqs, then the events that remain, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruned_history_is_reported_not_skipped() {
    let db = TestDb::new(Backend::Sqlite).await;
    let s = TestServer::start(&db, &["--retention-max-events", "3", "--retention-max-age", "1h"]).await;
    let client = Client::connect(fast(vec![format!("http://{}", s.addr)]))
        .await
        .unwrap();
    as_admin(&client).await;
    let me = client.who_am_i().await.unwrap().id;
    for i in 0..10 {
        client.publish(event(me, i), true).await.unwrap();
    }
    s.hub.prune_at(activity_hub::store::now_micros()).await.unwrap();
    let mut sub = client.subscribe(SubscribeOptions::consumer("late-device"));
    let mut items = Vec::new();
    while items.len() < 4 {
        let item = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("items keep coming")
            .unwrap()
            .unwrap();
        items.push(item);
    }
    assert_eq!(
        items[0],
        Delivery::Pruned(Pruned {
            first_seq: 1,
            last_seq: 7
        })
    );
    if let Delivery::Pruned(gap) = &items[0] {
        assert_eq!(gap.count(), 7);
    }
    let seqs: Vec<u64> = items[1..]
        .iter()
        .map(|i| i.clone().into_event().expect("events after the gap").seq)
        .collect();
    assert_eq!(seqs, vec![8, 9, 10]);
    s.stop().await;
}
