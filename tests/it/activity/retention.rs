//! Retention: pruning by count and by age keeps the newest events, reports a resume
//! from a pruned position as truncated, and never reuses a seq.

use std::time::Duration;

use activity_hub::proto::activity::v1::{Start, StartFrom};

use super::dsl::{consumer, earliest, event_req, numbered, start, Server};
use crate::helpers::Backend;

crate::dual!(
    retention_prunes_and_reports_truncation,
    age_retention_keeps_what_is_younger,
);

async fn retention_prunes_and_reports_truncation(b: Backend) {
    let s = Server::start_with(b, &["--retention-max-events", "5", "--retention-max-age", "1h"]).await;
    let (publisher, alice, alice_token) = s.cast().await;
    s.publish_all(&publisher, numbered(alice.id, 10)).await;
    let pruned = s.hub.prune_at(activity_hub::store::now_micros()).await.unwrap();
    assert_eq!(pruned.deliveries, 5, "count limit keeps the 5 newest");
    let mut sub = s
        .subscribe(
            &alice_token,
            Start {
                start_from: StartFrom::Seq as i32,
                after_seq: 2,
                ..start(0)
            },
        )
        .await;
    let sb = sub.subscribed.clone();
    assert!(sb.truncated, "resuming from a pruned position is reported");
    assert_eq!((sb.resume_after, sb.earliest_seq, sb.head_seq), (5, 6, 10));
    assert_eq!(sub.event().await.seq, 6);
    let sub2 = s.subscribe(&alice_token, earliest()).await;
    assert!(!sub2.subscribed.truncated);
    let two_hours = 2 * 3600 * 1_000_000;
    s.hub
        .prune_at(activity_hub::store::now_micros() + two_hours)
        .await
        .unwrap();
    let page = s.history(&alice_token).await;
    assert!(page.events.is_empty(), "age limit prunes everything older");
    assert_eq!(page.head_seq, 10, "seqs are never reused");
    let sub3 = s.subscribe(&alice_token, consumer("new-device")).await;
    assert!(sub3.subscribed.truncated);
    assert_eq!(
        (sub3.subscribed.earliest_seq, sub3.subscribed.resume_after),
        (11, 10)
    );
    s.stop().await;
}

async fn age_retention_keeps_what_is_younger(b: Backend) {
    let s = Server::start_with(b, &["--retention-max-age", "1h"]).await;
    let (publisher, alice, alice_token) = s.cast().await;
    let (bob, bob_token) = s.user_with_token("bob", &[]).await;
    let old = (0..3)
        .map(|_| event_req(&[alice.id, bob.id], "t", "old"))
        .collect();
    s.publish_all(&publisher, old).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let boundary = activity_hub::store::now_micros();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let young = (0..2).map(|_| event_req(&[alice.id], "t", "young")).collect();
    s.publish_all(&publisher, young).await;
    // As if an hour had passed since `boundary`: the three older events expire.
    let pruned = s.hub.prune_at(boundary + 3600 * 1_000_000).await.unwrap();
    assert_eq!(pruned.deliveries, 3 + 3);
    let seqs = |page: activity_hub::proto::activity::v1::ListEventsResponse| {
        page.events.iter().map(|e| e.seq).collect::<Vec<_>>()
    };
    assert_eq!(seqs(s.history(&alice_token).await), vec![4, 5]);
    assert!(seqs(s.history(&bob_token).await).is_empty());
    s.stop().await;
}
