//! Criterion micro-benchmarks of the hub's in-process hot paths: no server, no store, no
//! network. `benches/hub.rs` measures the whole server; these say where its time goes.
//!
//! - `encode/deliver/{64B,1KiB}`: the deliver path of one event: `convert::event` of a
//!   `StoredEvent` (3 attributes) into a `SubscribeResponse`, encoded with prost into a
//!   reused `BytesMut`. Throughput is encoded bytes.
//! - `encode/publish_decode/{1,100}`: `PublishRequest::decode` of a 64-byte-payload request
//!   with 1 or 100 recipients, from a `Bytes` (as tonic hands it over: the payload is not
//!   copied). Throughput is encoded bytes.
//! - `encode/publish_validate/{1,100}`: the same decode followed by `convert::new_event`,
//!   the validation every publish passes before it reaches the persistence actor.
//! - `routing/spread/{1,100,1000}`: the registry actor routing one `Committed` batch of
//!   1,000 events, spread round-robin over N registered subscribers, until every
//!   subscriber actor has received its live share. The subscribers only count,
//!   so this is the registry's grouping plus one mailbox hop per recipient. Throughput is
//!   deliveries.
//!
//! ```text
//! cargo bench --bench micro               # everything
//! cargo bench --bench micro -- routing    # one group (any substring of the ids)
//! cargo bench --bench micro -- --quick    # a fast, rougher pass
//! ```

use std::{
    collections::BTreeMap,
    hint::black_box,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use activity_hub::{
    api::activity::convert::{self, PublishLimits},
    hub::{registry::RegistryHandle, subscription, HubStats, SubscriptionHandle},
    proto::activity::v1::{subscribe_response, PublishRequest, SubscribeResponse},
    store::events::{Committed, EventBody, StoredEvent},
};
use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use prost::Message;
use tokio::sync::Notify;

/// Events per routed batch.
const BATCH: usize = 1_000;
/// How long a routed batch may take before the benchmark gives up.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

fn body(payload_len: usize) -> Arc<EventBody> {
    Arc::new(EventBody {
        event_id: "01890a5d-ac96-774b-bcce-b302099a8057".into(),
        event_type: "order.filled".into(),
        payload: Bytes::from(vec![b'x'; payload_len]),
        content_type: "application/json".into(),
        attributes: BTreeMap::from([
            ("region".into(), "eu-west-1".into()),
            ("source".into(), "matching-engine".into()),
            ("trace".into(), "4bf92f3577b34da6a3ce929d0e0e4736".into()),
        ]),
        published_at: 1_700_000_000_000_000,
        publisher_id: 7,
    })
}

fn publish_request(recipients: u64) -> Bytes {
    let req = PublishRequest {
        recipient_ids: (1..=recipients).rev().collect(),
        r#type: "order.filled".into(),
        payload: Bytes::from(vec![b'x'; 64]),
        content_type: "application/json".into(),
        attributes: [("region", "eu-west-1"), ("source", "matching-engine")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        idempotency_key: "order-42".into(),
    };
    req.encode_to_vec().into()
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    let mut buf = BytesMut::with_capacity(4096);
    for (name, len) in [("64B", 64), ("1KiB", 1024)] {
        let ev = StoredEvent {
            user_id: 42,
            seq: 1_000_001,
            body: body(len),
        };
        let to_wire = |ev: &StoredEvent| SubscribeResponse {
            msg: Some(subscribe_response::Msg::Event(convert::event(ev))),
        };
        g.throughput(Throughput::Bytes(to_wire(&ev).encoded_len() as u64));
        g.bench_function(BenchmarkId::new("deliver", name), |b| {
            b.iter(|| {
                buf.clear();
                to_wire(black_box(&ev)).encode(&mut buf).expect("buffer grows");
                black_box(buf.len())
            })
        });
    }
    let limits = PublishLimits {
        max_payload_bytes: 64 * 1024,
        max_recipients: 1_000,
    };
    for recipients in [1, 100] {
        let wire = publish_request(recipients);
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_with_input(
            BenchmarkId::new("publish_decode", recipients),
            &wire,
            |b, wire| b.iter(|| PublishRequest::decode(black_box(wire.clone())).expect("valid request")),
        );
        g.bench_with_input(
            BenchmarkId::new("publish_validate", recipients),
            &wire,
            |b, wire| {
                b.iter(|| {
                    let req = PublishRequest::decode(black_box(wire.clone())).expect("valid request");
                    convert::new_event(req, 7, limits).expect("request passes validation")
                })
            },
        );
    }
    g.finish();
}

/// Deliveries seen by all counting subscribers, and a wake-up when a goal is reached.
#[derive(Default)]
struct Progress {
    delivered: AtomicU64,
    goal: AtomicU64,
    reached: Notify,
}

impl Progress {
    fn add(&self, n: u64) {
        // The goal is raised before the batch is sent, and the send orders it before us.
        if self.delivered.fetch_add(n, Ordering::AcqRel) + n >= self.goal.load(Ordering::Acquire) {
            // notify_one keeps a permit if nobody waits yet, so the wake-up is not lost.
            self.reached.notify_one();
        }
    }

    async fn wait_for(&self, goal: u64) {
        let reached = async {
            while self.delivered.load(Ordering::Acquire) < goal {
                self.reached.notified().await;
            }
        };
        if tokio::time::timeout(DELIVERY_TIMEOUT, reached).await.is_err() {
            panic!(
                "routing: {} of {goal} deliveries after {DELIVERY_TIMEOUT:?}; is the registry dropping batches?",
                self.delivered.load(Ordering::Acquire)
            );
        }
    }
}

/// A registry with `n` counting subscribers, users 1..=n.
struct Fixture {
    registry: RegistryHandle,
    subs: Vec<SubscriptionHandle>,
    progress: Arc<Progress>,
}

impl Fixture {
    async fn start(n: u64) -> Fixture {
        let stats = Arc::new(HubStats::default());
        // No heartbeat ticks during a run: they would add messages to every subscriber.
        let (registry, _) = RegistryHandle::spawn(stats, Duration::from_secs(3600), None)
            .await
            .expect("registry starts");
        let progress = Arc::new(Progress::default());
        let mut subs = Vec::with_capacity(n as usize);
        for user_id in 1..=n {
            // A stand-in subscription actor that only counts the live events routed to it.
            let counted = progress.clone();
            let sub = subscription::stub(None, move |events| counted.add(events.len() as u64))
                .await
                .expect("counting subscriber starts");
            registry
                .register(user_id, None, sub.clone())
                .await
                .expect("registry answers Register");
            subs.push(sub);
        }
        Fixture {
            registry,
            subs,
            progress,
        }
    }

    /// Routes `batch` and waits until all `deliveries` of it have arrived; returns the time
    /// from the send to the last arrival.
    async fn route(&self, batch: Vec<Committed>, deliveries: u64) -> Duration {
        let goal = self.progress.goal.load(Ordering::Relaxed) + deliveries;
        self.progress.goal.store(goal, Ordering::Release);
        let start = Instant::now();
        self.registry.committed(batch);
        self.progress.wait_for(goal).await;
        start.elapsed()
    }

    fn stop(self) {
        for s in self.subs {
            s.stop();
        }
        self.registry.stop();
    }
}

/// `BATCH` events, event i to user `i % n + 1`, each with its own (shared) body.
fn spread_batch(bodies: &[Arc<EventBody>], n: u64) -> Vec<Committed> {
    bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let i = i as u64;
            (body.clone(), vec![(i % n + 1, i / n + 1)])
        })
        .collect()
}

fn routing(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let bodies: Vec<Arc<EventBody>> = (0..BATCH).map(|_| body(64)).collect();
    let mut g = c.benchmark_group("routing");
    g.throughput(Throughput::Elements(BATCH as u64));
    for n in [1u64, 100, 1_000] {
        let fixture = rt.block_on(Fixture::start(n));
        g.bench_with_input(BenchmarkId::new("spread", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        // Building the batch is the persistence actor's work: not timed.
                        let batch = spread_batch(&bodies, n);
                        total += fixture.route(batch, BATCH as u64).await;
                    }
                    total
                })
            })
        });
        rt.block_on(async { fixture.stop() });
    }
    g.finish();
}

criterion_group!(benches, encode, routing);
criterion_main!(benches);
