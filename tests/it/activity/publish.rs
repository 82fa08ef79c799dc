//! Publishing: every event reaches each of its recipients once, in seq order without
//! gaps, whatever the number of concurrent publishers or recipients.

use std::collections::HashMap;

use activity_hub::proto::{activity::v1::Start, user::v1::UserRole};

use super::dsl::{earliest, event_req, publish_stream, start, Server};
use crate::helpers::Backend;

crate::dual!(order_and_no_gaps_under_concurrent_publishers);

async fn order_and_no_gaps_under_concurrent_publishers(b: Backend) {
    let s = Server::start(b).await;
    let (publisher, alice, alice_token) = s.cast().await;
    let mut sub = s
        .subscribe(
            &alice_token,
            Start {
                window: 1000,
                ..earliest()
            },
        )
        .await;
    const TASKS: usize = 8;
    const EACH: usize = 2000;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let ch = s.channel.clone();
        let token = publisher.clone();
        let id = alice.id;
        tasks.push(tokio::spawn(async move {
            let reqs = (0..EACH)
                .map(|i| event_req(&[id], "order.filled", format!("{t}:{i}")))
                .collect();
            publish_stream(&ch, &token, reqs).await
        }));
    }
    let mut acked_seqs = Vec::new();
    for t in tasks {
        let answers = t.await.unwrap();
        // Each stream's answers come in order, so its seqs increase.
        let seqs: Vec<u64> = answers.iter().map(|a| a.deliveries[0].seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "a stream's seqs increase");
        acked_seqs.extend(seqs);
    }
    acked_seqs.sort_unstable();
    assert_eq!(acked_seqs, (1..=(TASKS * EACH) as u64).collect::<Vec<_>>());
    let mut last_of_task: HashMap<String, i64> = HashMap::new();
    for expect in 1..=(TASKS * EACH) as u64 {
        let e = sub.event().await;
        assert_eq!(e.seq, expect, "seq order with no gap");
        let p = String::from_utf8(e.payload.to_vec()).unwrap();
        let (t, i) = p.split_once(':').unwrap();
        let i: i64 = i.parse().unwrap();
        let prev = last_of_task.insert(t.to_string(), i).unwrap_or(-1);
        assert_eq!(i, prev + 1, "publisher {t}'s events in publish order");
        if expect % 500 == 0 {
            sub.ack(expect).await;
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_reaches_1000_subscribers_once_each() {
    let s = Server::start(Backend::Sqlite).await;
    let admin = s.admin_token().await;
    let (_, publisher) = s.user_with_token("pub", &[UserRole::Publisher]).await;
    let ids = crate::helpers::bulk_users(&s, &admin, "fan", 1000).await;
    let mut subs = Vec::new();
    for id in &ids {
        subs.push(s.subscribe(&admin, start(*id)).await);
    }
    let r = s
        .publish(&publisher, event_req(&ids, "broadcast", "hello"))
        .await
        .unwrap();
    assert_eq!(r.deliveries.len(), 1000);
    assert!(r.deliveries.iter().all(|d| d.seq == 1));
    let event_id = r.event_id.clone();
    let mut readers = Vec::new();
    for (mut sub, id) in subs.into_iter().zip(ids) {
        let event_id = event_id.clone();
        readers.push(tokio::spawn(async move {
            let e = sub.event().await;
            assert_eq!((e.user_id, e.seq, e.event_id), (id, 1, event_id));
            assert_eq!(&e.payload[..], b"hello");
            assert!(
                sub.event_within(std::time::Duration::from_millis(50))
                    .await
                    .is_none(),
                "once"
            );
        }));
    }
    for r in readers {
        r.await.unwrap();
    }
    s.stop().await;
}
