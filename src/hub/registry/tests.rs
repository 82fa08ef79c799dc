//! The registry's routing, with stand-in subscriptions (no server, no store).

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::*;
use crate::{hub::subscription, store::events::EventBody};

/// What a stand-in subscription received: (its name, recipient, seqs) per message.
type Seen = mpsc::UnboundedReceiver<(&'static str, Vec<(u64, u64)>)>;

async fn registry() -> (RegistryHandle, Arc<HubStats>) {
    let stats = Arc::new(HubStats::default());
    // No heartbeat during a test.
    let (r, _) = RegistryHandle::spawn(stats.clone(), Duration::from_secs(3600), None)
        .await
        .expect("registry starts");
    (r, stats)
}

/// A stand-in subscription named `name` registered for `user`, reporting into `seen`.
async fn subscriber(
    r: &RegistryHandle,
    user: u64,
    consumer: Option<&str>,
    name: &'static str,
    seen: &mpsc::UnboundedSender<(&'static str, Vec<(u64, u64)>)>,
) -> SubscriptionHandle {
    let seen = seen.clone();
    let sub = subscription::stub(Some(r.cell()), move |events| {
        let _ = seen.send((name, events.iter().map(|e| (e.user_id, e.seq)).collect()));
    })
    .await
    .expect("stand-in subscription starts");
    r.register(user, consumer.map(String::from), sub.clone())
        .await
        .expect("registered");
    sub
}

fn body(id: &str) -> Arc<EventBody> {
    Arc::new(EventBody {
        event_id: id.into(),
        event_type: "t".into(),
        payload: Bytes::new(),
        content_type: String::new(),
        attributes: Default::default(),
        published_at: 0,
        publisher_id: 1,
    })
}

/// Everything the stand-ins received, once `r` has handled all sent before (its
/// answer to `subscribers` comes after the routing, and each stand-in's mailbox is
/// drained by asking it to stop and waiting).
async fn received(
    r: &RegistryHandle,
    subs: &[SubscriptionHandle],
    mut seen: Seen,
) -> Vec<(&'static str, Vec<(u64, u64)>)> {
    r.subscribers(0).await;
    for s in subs {
        use crate::hub::StreamInput;
        s.client_gone();
        s.stopped().await;
    }
    let mut out = Vec::new();
    while let Ok(m) = seen.try_recv() {
        out.push(m);
    }
    out.sort();
    out
}

#[tokio::test]
async fn an_event_reaches_exactly_its_recipients_subscribers() {
    let (r, _) = registry().await;
    let (tx, seen) = mpsc::unbounded_channel();
    let a1 = subscriber(&r, 1, None, "a1", &tx).await;
    let a2 = subscriber(&r, 1, None, "a2", &tx).await;
    let b = subscriber(&r, 2, None, "b", &tx).await;
    let c = subscriber(&r, 3, None, "c", &tx).await;
    // One event to users 1 and 2, one to user 1 only, one to user 9 (no subscriber).
    r.committed(vec![
        (body("x"), vec![(1, 10), (2, 4)]),
        (body("y"), vec![(1, 11)]),
        (body("z"), vec![(9, 1)]),
    ]);
    let got = received(&r, &[a1, a2, b, c], seen).await;
    assert_eq!(
        got,
        vec![
            ("a1", vec![(1, 10), (1, 11)]),
            ("a2", vec![(1, 10), (1, 11)]),
            ("b", vec![(2, 4)]),
        ],
        "user 1's two subscribers get both its events in order, user 2's gets its one, \
         user 3's nothing"
    );
}

#[tokio::test]
async fn a_stopped_subscriber_is_forgotten() {
    let (r, stats) = registry().await;
    let (tx, seen) = mpsc::unbounded_channel();
    let gone = subscriber(&r, 1, Some("c1"), "gone", &tx).await;
    let stays = subscriber(&r, 1, None, "stays", &tx).await;
    assert_eq!(stats.subscriptions.load(Ordering::Relaxed), 2);
    {
        use crate::hub::StreamInput;
        gone.client_gone();
    }
    gone.stopped().await;
    // The registry learns of the stop by supervision, ahead of later messages.
    let left: Vec<ActorId> = r.subscribers(1).await.iter().map(|s| s.id()).collect();
    assert_eq!(left, vec![stays.id()], "only the running subscriber is routed to");
    assert_eq!(
        stats.subscriptions.load(Ordering::Relaxed),
        1,
        "the count follows"
    );
    r.committed(vec![(body("x"), vec![(1, 1)])]);
    let got = received(&r, &[stays], seen).await;
    assert_eq!(got, vec![("stays", vec![(1, 1)])]);
}

#[tokio::test]
async fn a_newer_stream_of_a_consumer_replaces_the_older_one() {
    let (r, stats) = registry().await;
    let (tx, seen) = mpsc::unbounded_channel();
    let old = subscriber(&r, 1, Some("c1"), "old", &tx).await;
    let other = subscriber(&r, 1, Some("c2"), "other", &tx).await;
    let new = subscriber(&r, 1, Some("c1"), "new", &tx).await;
    // The old stream of c1 is told to end (the stand-in stops, as a real one does).
    old.stopped().await; // replaced
    let mut left: Vec<ActorId> = r.subscribers(1).await.iter().map(|s| s.id()).collect();
    let mut want = vec![other.id(), new.id()];
    left.sort();
    want.sort();
    assert_eq!(left, want, "another consumer of the same user is untouched");
    assert_eq!(stats.subscriptions.load(Ordering::Relaxed), 2);
    // A takeover on another server ends the current stream of c1, and only that one.
    r.replace_consumer(1, "c1".into());
    new.stopped().await; // taken over
    let left: Vec<ActorId> = r.subscribers(1).await.iter().map(|s| s.id()).collect();
    assert_eq!(left, vec![other.id()]);
    r.committed(vec![(body("x"), vec![(1, 5)])]);
    assert_eq!(received(&r, &[other], seen).await, vec![("other", vec![(1, 5)])]);
}
