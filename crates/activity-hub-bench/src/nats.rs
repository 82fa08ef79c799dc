//! `--peer nats`: the same shapes against NATS JetStream, the peer users compare us with.
//!
//! One file-store stream (one replica) per run with a subject per recipient,
//! `bench.RUN.uI`; publishes go to the recipient's subject and count once JetStream has
//! acknowledged them (it acknowledges after writing, before fsync: a process crash loses
//! nothing acknowledged, a power loss can). Subscribers are per-subject pull consumers
//! delivering new messages, acked like the hub's subscribers (cumulative ack every
//! `--ack-every`, `AckPolicy::All`; or none) with at most the hub's default window
//! (256) unacked. The stream is deleted at the end.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use async_nats::jetstream::{
    self,
    consumer::{pull, AckPolicy, DeliverPolicy},
    stream::{Config, StorageType},
    Context,
};
use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::task::JoinSet;

use crate::{
    report::{Figure, Run},
    scenarios::{
        delivery_figures, histogram_of, join_all, latency_figures, per_sec, stamp_of, stamped, Pace,
    },
    ui::Ui,
    Acks, BenchArgs, Scenario,
};

/// Unacked messages per consumer (the hub's default window).
const WINDOW: i64 = 256;

/// Runs `a.scenario` against JetStream.
pub(crate) async fn run(a: &BenchArgs, ui: &Ui) -> Result<Run, String> {
    let tag = format!("{:08x}", rand::random::<u32>());
    let js = context(&a.nats_url).await?;
    let name = format!("BENCH_{tag}");
    js.create_stream(Config {
        name: name.clone(),
        subjects: vec![format!("bench.{tag}.>")],
        storage: StorageType::File,
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("creating stream {name}: {e}"))?;
    let peer = Peer { a, tag, name };
    let result = match a.scenario {
        Scenario::Publish => peer.publish(ui).await,
        Scenario::Fanout => peer.fanout(ui).await,
        Scenario::Latency => peer.latency(ui).await,
        other => Err(format!("--peer nats has no {other:?} scenario")),
    };
    let _ = js.delete_stream(&peer.name).await;
    result
}

async fn context(url: &str) -> Result<Context, String> {
    let client = async_nats::connect(url)
        .await
        .map_err(|e| format!("--nats-url {url}: {e}"))?;
    Ok(jetstream::new(client))
}

struct Peer<'a> {
    a: &'a BenchArgs,
    tag: String,
    name: String,
}

impl Peer<'_> {
    fn subject(&self, recipient: u64) -> String {
        format!("bench.{}.u{recipient}", self.tag)
    }

    /// `--streams` publishers (a connection each) with `--inflight` unacknowledged
    /// publishes each, sending `total` messages between them, message `g` to recipient
    /// `g % recipients`. With `base`, payloads carry their send time.
    async fn publishers(
        &self,
        total: u64,
        recipients: u64,
        base: Option<Instant>,
        done: Arc<AtomicU64>,
    ) -> Result<JoinSet<Result<Vec<u64>, String>>, String> {
        let streams = self.a.streams as u64;
        let mut tasks = JoinSet::new();
        for s in 0..streams {
            let js = context(&self.a.nats_url).await?;
            let n = total / streams + u64::from(s < total % streams);
            let subjects: Vec<String> = (0..recipients).map(|r| self.subject(r)).collect();
            let (inflight, size, done) = (self.a.inflight, self.a.payload_size, done.clone());
            let fixed = stamped(0, size);
            tasks.spawn(async move {
                let mut pending = VecDeque::with_capacity(inflight);
                let mut samples = Vec::with_capacity(n as usize);
                for i in 0..n {
                    if pending.len() == inflight {
                        let (sent, ack): (Instant, jetstream::context::PublishAckFuture) =
                            pending.pop_front().expect("not empty");
                        ack.await.map_err(|e| format!("publish ack: {e}"))?;
                        samples.push(sent.elapsed().as_micros() as u64);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    let g = i * streams + s;
                    let payload: Bytes = match base {
                        Some(b) => stamped(b.elapsed().as_micros() as u64, size),
                        None => fixed.clone(),
                    };
                    let sent = Instant::now();
                    let ack = js
                        .publish(subjects[(g % recipients) as usize].clone(), payload)
                        .await
                        .map_err(|e| format!("publish: {e}"))?;
                    pending.push_back((sent, ack));
                }
                for (sent, ack) in pending {
                    ack.await.map_err(|e| format!("publish ack: {e}"))?;
                    samples.push(sent.elapsed().as_micros() as u64);
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(samples)
            });
        }
        Ok(tasks)
    }

    /// `--prefill` messages in the stream first, over `recipients` subjects.
    async fn prefill(&self, recipients: u64, ui: &Ui) -> Result<(), String> {
        if self.a.prefill == 0 {
            return Ok(());
        }
        let done = Arc::new(AtomicU64::new(0));
        let bar = ui.count("prefilling the stream", self.a.prefill, done.clone());
        let tasks = self.publishers(self.a.prefill, recipients, None, done).await?;
        for r in join_all(tasks).await? {
            r?;
        }
        bar.done();
        Ok(())
    }

    async fn publish(&self, ui: &Ui) -> Result<Run, String> {
        let recipients = self.a.recipients as u64;
        self.prefill(recipients, ui).await?;
        let total = self.a.events.unwrap_or(200_000);
        let done = Arc::new(AtomicU64::new(0));
        let bar = ui.count("publishing", total, done.clone());
        let start = Instant::now();
        let tasks = self.publishers(total, recipients, None, done.clone()).await?;
        let mut run = Run::default();
        let mut samples = Vec::new();
        for r in join_all(tasks).await? {
            match r {
                Ok(s) => samples.push(s),
                Err(e) => {
                    run.failed += 1;
                    run.first_error.get_or_insert(e);
                }
            }
        }
        let secs = start.elapsed();
        bar.done();
        let n = done.load(Ordering::Relaxed);
        run.failed += total - n;
        run.figures.push(Figure::more(
            "events_per_sec",
            "events/s committed",
            per_sec(n, secs),
        ));
        run.figures
            .push(Figure::info("events", "events committed", n as f64));
        run.latency = Some(histogram_of(&samples));
        run.latency_label = "publish -> commit answer";
        Ok(run)
    }

    /// One pull consumer per subscriber, reading `until(i)` messages of subject `i`.
    async fn consumers(
        &self,
        n: usize,
        until: impl Fn(u64) -> u64,
        base: Instant,
        delivered: Arc<AtomicU64>,
        ui: &Ui,
    ) -> Result<JoinSet<Seen>, String> {
        // --streams-per-connection consumers share a connection, as the hub's
        // subscribers share HTTP/2 connections.
        let per_conn = self.a.streams_per_connection.max(1);
        let mut streams = Vec::new();
        for _ in 0..n.div_ceil(per_conn) {
            let stream = context(&self.a.nats_url)
                .await?
                .get_stream(&self.name)
                .await
                .map_err(|e| format!("stream {}: {e}", self.name))?;
            streams.push(stream);
        }
        let opened = Arc::new(AtomicU64::new(0));
        let bar = ui.count("creating consumers", n as u64, opened.clone());
        let explicit = self.a.ack == Acks::Explicit;
        let mut readers = JoinSet::new();
        for i in 0..n {
            let config = pull::Config {
                filter_subject: self.subject(i as u64),
                deliver_policy: DeliverPolicy::New,
                ack_policy: if explicit { AckPolicy::All } else { AckPolicy::None },
                max_ack_pending: WINDOW,
                inactive_threshold: Duration::from_secs(60),
                ..Default::default()
            };
            let consumer = streams[i / per_conn]
                .create_consumer(config)
                .await
                .map_err(|e| format!("consumer {i}: {e}"))?;
            let mut messages = consumer
                .messages()
                .await
                .map_err(|e| format!("consumer {i}: {e}"))?;
            opened.fetch_add(1, Ordering::Relaxed);
            let (want, every, stall, delivered) = (
                until(i as u64),
                self.a.ack_every,
                self.a.stall_timeout,
                delivered.clone(),
            );
            readers.spawn(async move {
                let mut seen = Seen::default();
                while seen.got < want {
                    let msg = match tokio::time::timeout(stall, messages.next()).await {
                        Ok(Some(Ok(m))) => m,
                        Ok(Some(Err(e))) => {
                            seen.error = Some(format!("consumer {i}: {e}"));
                            break;
                        }
                        Ok(None) => {
                            seen.error = Some(format!("consumer {i}: ended"));
                            break;
                        }
                        Err(_) => {
                            seen.error = Some(format!("consumer {i}: nothing for {stall:?}"));
                            break;
                        }
                    };
                    seen.got += 1;
                    delivered.fetch_add(1, Ordering::Relaxed);
                    if let Some(sent) = stamp_of(&msg.payload) {
                        let now = base.elapsed().as_micros() as u64;
                        seen.samples.push(now.saturating_sub(sent));
                    }
                    if explicit && (seen.got.is_multiple_of(every) || seen.got == want) {
                        if let Err(e) = msg.ack().await {
                            seen.error = Some(format!("consumer {i}: ack: {e}"));
                            break;
                        }
                    }
                }
                seen.lost = want - seen.got;
                seen
            });
        }
        bar.done();
        Ok(readers)
    }

    /// Per-user fan-out: N consumers, N x `--events` messages round robin over them.
    async fn fanout(&self, ui: &Ui) -> Result<Run, String> {
        let n = self.a.subscribers.unwrap_or(1_000);
        let events = self.a.events.unwrap_or(200);
        self.prefill(n as u64, ui).await?;
        let base = Instant::now();
        let delivered = Arc::new(AtomicU64::new(0));
        let readers = self.consumers(n, |_| events, base, delivered.clone(), ui).await?;
        let total = n as u64 * events;
        let start = Instant::now();
        let published = Arc::new(AtomicU64::new(0));
        let publishers = self
            .publishers(total, n as u64, Some(base), published.clone())
            .await?;
        let bar = ui.count("delivering", total, delivered.clone());
        let seen = join_all(readers).await?;
        let secs = start.elapsed();
        bar.done();
        let mut run = self.collect(seen);
        for r in join_all(publishers).await? {
            if let Err(e) = r {
                run.failed += 1;
                run.first_error.get_or_insert(e);
            }
        }
        delivery_figures(&mut run, delivered.load(Ordering::Relaxed), secs);
        Ok(run)
    }

    /// `--rate` messages/s for `--duration`, one subscriber's subject each, round robin.
    async fn latency(&self, ui: &Ui) -> Result<Run, String> {
        let n = self.a.subscribers.unwrap_or(1_000) as u64;
        let a = self.a;
        self.prefill(n, ui).await?;
        let total = (a.rate as f64 * a.duration.as_secs_f64()).round().max(1.0) as u64;
        let base = Instant::now();
        let delivered = Arc::new(AtomicU64::new(0));
        let mine = |i: u64| total / n + u64::from(i < total % n);
        let readers = self
            .consumers(n as usize, mine, base, delivered.clone(), ui)
            .await?;
        let js = context(&a.nats_url).await?;
        let subjects: Vec<String> = (0..n).map(|r| self.subject(r)).collect();
        let bar = ui.timed(
            &format!("publishing {} events/s", a.rate),
            a.duration,
            delivered.clone(),
        );
        let (tx, mut rx) = tokio::sync::mpsc::channel::<jetstream::context::PublishAckFuture>(65_536);
        let acks = tokio::spawn(async move {
            let mut failed = 0u64;
            while let Some(ack) = rx.recv().await {
                failed += u64::from(ack.await.is_err());
            }
            failed
        });
        let pace = Pace {
            rate: a.rate,
            begin: base.elapsed().as_micros() as u64,
        };
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut sent = 0u64;
        let mut failed = 0u64;
        while sent < total {
            tick.tick().await;
            let due = pace.due(base);
            while sent < due.min(total) {
                let at = pace.due_at(sent);
                match js
                    .publish(subjects[(sent % n) as usize].clone(), stamped(at, a.payload_size))
                    .await
                {
                    Ok(ack) => {
                        let _ = tx.send(ack).await;
                    }
                    Err(_) => failed += 1,
                }
                sent += 1;
            }
        }
        let publish_secs = base.elapsed();
        drop(tx);
        let seen = join_all(readers).await?;
        bar.done();
        let mut run = self.collect(seen);
        run.failed += failed + acks.await.unwrap_or(0);
        latency_figures(&mut run, sent, publish_secs, delivered.load(Ordering::Relaxed));
        Ok(run)
    }

    fn collect(&self, seen: Vec<Seen>) -> Run {
        let mut run = Run {
            latency: Some(histogram_of(seen.iter().map(|s| &s.samples))),
            ..Default::default()
        };
        for s in seen {
            run.lost += s.lost;
            if let Some(e) = s.error {
                run.failed += 1;
                run.first_error.get_or_insert(e);
            }
        }
        run
    }
}

/// What one consumer saw.
#[derive(Default)]
struct Seen {
    samples: Vec<u64>,
    got: u64,
    lost: u64,
    error: Option<String>,
}
