//! SQLite's inbox tail: a commit writes its deliveries to `inbox_tail`; reads find them
//! there until a merge pass moves them into `inbox`; they survive kill -9 before any
//! merge, the next server merges them, and a read across the two tables is whole and in
//! order.

use std::time::Duration;

use activity_hub::proto::activity::v1::ListEventsRequest;
use sqlx::SqlitePool;

use crate::{
    activity::dsl::{client, event_req},
    crash::{admin, spawn_server_with},
    helpers::{authed, bulk_users, Backend, TestDb, TestServer},
};

/// (rows in `inbox`, rows in `inbox_tail`).
async fn rows(pool: &SqlitePool) -> (i64, i64) {
    sqlx::query_as("SELECT (SELECT count(*) FROM inbox), (SELECT count(*) FROM inbox_tail)")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Every seq the admin's log lists after `after`, in the order listed.
async fn listed(ch: &tonic::transport::Channel, token: &str, after: u64) -> Vec<u64> {
    let page = client(ch)
        .list_events(authed(
            ListEventsRequest {
                after_seq: after,
                limit: 1000,
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner();
    page.events.iter().map(|e| e.seq).collect()
}

async fn publish(ch: &tonic::transport::Channel, token: &str, me: u64, n: usize) {
    for i in 0..n {
        client(ch)
            .publish(authed(event_req(&[me], "tail.test", format!("e{i}")), token))
            .await
            .unwrap();
    }
}

async fn until_merged(pool: &SqlitePool, inbox: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = rows(pool).await;
        if now == (inbox, 0) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not merged in 20 s: (inbox, tail) = {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_wait_in_the_tail_survive_a_crash_and_merge_in_order() {
    let db = TestDb::new(Backend::Sqlite).await;

    // No merge pass for an hour: every delivery stays in the tail, and is read from it.
    let (mut child, ch) = spawn_server_with(&db, &["--inbox-merge-interval", "1h"]).await;
    let pool = SqlitePool::connect(&db.url).await.unwrap();
    let (token, me) = admin(&ch).await;
    publish(&ch, &token, me, 30).await;
    assert_eq!(rows(&pool).await, (0, 30));
    assert_eq!(listed(&ch, &token, 0).await, (1..=30).collect::<Vec<_>>());

    // kill -9 before any merge: the tail is durable like the rest of the commit.
    child.start_kill().unwrap();
    let _ = child.wait().await;

    // The next server merges what it finds, then keeps merging behind its commits.
    let (_child, ch) = spawn_server_with(&db, &["--inbox-merge-interval", "50ms"]).await;
    let (token, me) = admin(&ch).await;
    until_merged(&pool, 30).await;
    assert_eq!(listed(&ch, &token, 0).await, (1..=30).collect::<Vec<_>>());
    publish(&ch, &token, me, 20).await;
    // Straight after publishing the read may straddle both tables: still whole, in order.
    assert_eq!(listed(&ch, &token, 10).await, (11..=50).collect::<Vec<_>>());
    until_merged(&pool, 50).await;
    assert_eq!(listed(&ch, &token, 0).await, (1..=50).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_pass_moves_whole_recipients_in_slices_and_reads_stay_whole() {
    let db = TestDb::new(Backend::Sqlite).await;
    let s = TestServer::start(&db, &["--inbox-merge-interval", "1h"]).await;
    let token = s.admin_token().await;
    let users = bulk_users(&s, &token, "tail", 4).await;
    // Deliveries per recipient; the third alone has more than a slice.
    let counts = [5usize, 1, 12, 2];
    for (&u, &n) in users.iter().zip(&counts) {
        for i in 0..n {
            client(&s.channel)
                .publish(authed(event_req(&[u], "tail.slice", format!("e{i}")), &token))
                .await
                .unwrap();
        }
    }
    let pool = SqlitePool::connect(&db.url).await.unwrap();
    assert_eq!(rows(&pool).await, (0, 20));
    let whole = || async {
        for (&u, &n) in users.iter().zip(&counts) {
            let page = s.store.events_page(u, 0, u64::MAX, &[], 100).await.unwrap();
            let seqs: Vec<u64> = page.iter().map(|e| e.seq).collect();
            assert_eq!(seqs, (1..=n as u64).collect::<Vec<_>>(), "user {u}");
        }
    };
    whole().await;
    // Slices of at most 4 deliveries, whole recipients: 5 (one recipient over the
    // limit moves alone), then 1 (the next recipient would cross it), 12, 2.
    let mut from = 0;
    let mut moved = Vec::new();
    loop {
        let (n, next) = s.store.merge_inbox_tail(from, 4).await.unwrap();
        moved.push(n);
        whole().await;
        match next {
            Some(next) => from = next,
            None => break,
        }
    }
    assert_eq!(moved, vec![5, 1, 12, 2]);
    assert_eq!(rows(&pool).await, (20, 0));
    // Nothing left: a pass over an empty tail moves nothing and ends at once.
    assert_eq!(s.store.merge_inbox_tail(0, 4).await.unwrap(), (0, None));
}
