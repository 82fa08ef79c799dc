//! Idempotency keys: a publish repeating a key (alone or in one pipelined stream) is
//! answered with the first event and stores nothing new.

use activity_hub::proto::activity::v1::PublishRequest;

use super::dsl::{event_req, Server};
use crate::helpers::Backend;

crate::dual!(idempotency_key_returns_the_first_event);

async fn idempotency_key_returns_the_first_event(b: Backend) {
    let s = Server::start(b).await;
    let (publisher, alice, alice_token) = s.cast().await;
    let (bob, _) = s.user_with_token("bob", &[]).await;
    let keyed = |k: &str| PublishRequest {
        idempotency_key: k.into(),
        ..event_req(&[alice.id, bob.id, alice.id], "t", "x")
    };
    let first = s.publish(&publisher, keyed("k1")).await.unwrap();
    assert!(!first.duplicate);
    assert_eq!(
        first.deliveries.len(),
        2,
        "duplicate recipients are delivered once"
    );
    let again = s.publish(&publisher, keyed("k1")).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(
        (&again.event_id, &again.deliveries),
        (&first.event_id, &first.deliveries)
    );
    // In one pipelined stream too, and a different key is a new event.
    let answers = s
        .publish_all(&publisher, vec![keyed("k2"), keyed("k2"), keyed("k1")])
        .await;
    assert!(!answers[0].duplicate && answers[1].duplicate && answers[2].duplicate);
    assert_eq!(answers[1].event_id, answers[0].event_id);
    assert_eq!(answers[2].event_id, first.event_id);
    let page = s.history(&alice_token).await;
    assert_eq!(page.events.len(), 2, "k1 and k2 stored once each");
    s.stop().await;
}
