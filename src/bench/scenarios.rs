//! The traffic shapes. Each runs against one [`Target`] and returns a [`Run`]: figures,
//! a latency histogram (microseconds) and what went wrong (failed calls, lost events).
//!
//! Publish -> deliver latency is measured inside this process: the first 8 bytes of each
//! payload carry the time the event was *meant* to be sent (microseconds since the run's
//! base instant), so a publisher that falls behind its schedule does not hide the delay
//! (no coordinated omission).

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::{sync::mpsc, task::JoinSet};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{transport::Channel, Streaming};

use super::{
    report::{Figure, Report, Run},
    target::{Auth, Kind, Target},
    Acks, BenchArgs, Scenario,
};
use crate::proto::{
    activity::v1::{
        activity_service_client::ActivityServiceClient, subscribe_request, subscribe_response, Ack, AckMode,
        PublishRequest, Start, StartFrom, SubscribeRequest, SubscribeResponse, Subscribed,
    },
    user::v1::{get_user_request::Identifier, user_service_client::UserServiceClient, GetUserRequest},
};

mod soak;

/// Most recipients of one publish (the hub's default `--max-recipients`).
const RECIPIENTS_PER_PUBLISH: usize = 10_000;
/// Subscriptions opened at once while setting up (a storm opens all at once).
const OPEN_BURST: usize = 256;

/// Runs the chosen scenario against the hub and, with `--baseline`, the baseline.
pub(crate) async fn run(a: &BenchArgs) -> Result<Report, String> {
    let mut report = Report::new(a.scenario, shape(a), settings(a));
    let kinds = [Kind::Hub]
        .into_iter()
        .chain(a.baseline.then_some(Kind::Baseline));
    for kind in kinds {
        let ui = Ui {
            quiet: a.quiet,
            who: kind.name(),
        };
        ui.say(&format!("starting: {}", report.shape));
        let t = Target::start(kind, a).await?;
        let result = match a.scenario {
            Scenario::GetUser => get_user(&t, a, &ui).await,
            Scenario::Publish => publish(&t, a, &ui).await,
            Scenario::Fanout => fanout(&t, a, &ui).await,
            Scenario::Latency => latency(&t, a, &ui).await,
            Scenario::Idle => idle(&t, a, &ui).await,
            Scenario::ReconnectStorm => reconnect_storm(&t, a, &ui).await,
            Scenario::Soak => soak::soak(&t, a, &ui).await,
            Scenario::ServeBaseline => unreachable!("served before any scenario runs"),
        };
        if !t.started_here() && !a.keep_users {
            ui.say("deleting the users the bench created (--keep-users keeps them)");
            match t.remove_users().await {
                Ok(0) => {}
                Ok(n) => ui.say(&format!("{n} bench users could not be deleted")),
                Err(e) => ui.say(&format!("could not delete the bench users: {e}")),
            }
        }
        let run = result.map_err(|e| {
            let log = t.log_tail();
            if log.is_empty() {
                format!("{}: {e}", kind.name())
            } else {
                format!("{}: {e}\nits last log lines:\n{log}", kind.name())
            }
        })?;
        report.runs.push((kind, run));
    }
    Ok(report)
}

fn subscribers(a: &BenchArgs) -> usize {
    a.subscribers.unwrap_or(match a.scenario {
        Scenario::Idle => 10_000,
        Scenario::Soak => 200,
        _ => 1_000,
    })
}

/// The flags that shaped the run, for the JSON report.
fn settings(a: &BenchArgs) -> serde_json::Value {
    serde_json::json!({
        "server": a.server.as_deref().unwrap_or("started"),
        // The kind of store only: a URL may carry a password.
        "store": match (&a.server, &a.database_url) {
            (Some(_), _) => "unknown",
            (None, None) => "temporary sqlite",
            (None, Some(url)) => match crate::store::Backend::of_url(url) {
                crate::store::Backend::Postgres => "postgres",
                crate::store::Backend::Sqlite => "sqlite",
            },
        },
        "hub_args": a.hub_args,
        "connections": a.connections,
        "concurrency": a.concurrency,
        "streams": a.streams,
        "inflight": a.inflight,
        "streams_per_connection": a.streams_per_connection,
        "subscribers": subscribers(a),
        "events": a.events,
        "recipients": a.recipients,
        "rate": a.rate,
        "duration_ms": a.duration.as_millis() as u64,
        "warmup_ms": a.warmup.as_millis() as u64,
        "payload_size": a.payload_size,
        "ack": format!("{:?}", a.ack).to_lowercase(),
        "ack_every": a.ack_every,
        "baseline": a.baseline,
        "durable_pct": a.durable,
        "logins": a.logins,
        "rounds_per_minute": a.rounds_per_minute,
        "max_growth_pct": a.max_growth,
    })
}

/// One line saying what traffic the run makes.
fn shape(a: &BenchArgs) -> String {
    let n = subscribers(a);
    let ack = match a.ack {
        Acks::Explicit => format!("explicit acks every {}", a.ack_every),
        Acks::None => "ACK_MODE_NONE".into(),
    };
    match a.scenario {
        Scenario::GetUser => format!(
            "GetUser by id with a bearer token, {} connections x {} in flight, {:?} after {:?} warm-up",
            a.connections.unwrap_or(4),
            a.concurrency,
            a.duration,
            a.warmup
        ),
        Scenario::Publish => format!(
            "{} events over {} PublishStream streams ({} in flight each), one of {} recipients each, {} B payloads",
            a.events.unwrap_or(200_000),
            a.streams,
            a.inflight,
            a.recipients,
            a.payload_size
        ),
        Scenario::Fanout => format!(
            "{} events each to all of {n} subscribers, {ack}, {} B payloads",
            a.events.unwrap_or(200),
            a.payload_size
        ),
        Scenario::Latency => format!(
            "{} events/s for {:?}, each to one of {n} subscribers (round robin), explicit acks",
            a.rate, a.duration
        ),
        Scenario::Idle => format!("{n} idle subscriptions held for {:?}", a.duration),
        Scenario::ReconnectStorm => format!(
            "{n} durable subscribers get {e} events, drop at once, miss {e}, resume at once while {e} more are published",
            e = a.events.unwrap_or(20)
        ),
        Scenario::Soak => soak::shape(a, n, &ack),
        Scenario::ServeBaseline => String::new(),
    }
}

// ---------------------------------------------------------------- progress

/// Phase lines and progress bars on stderr (bars only on a terminal).
pub(crate) struct Ui {
    quiet: bool,
    who: &'static str,
}

struct Bar {
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl Bar {
    fn done(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

impl Ui {
    fn say(&self, msg: &str) {
        if !self.quiet {
            eprintln!("[{}] {msg}", self.who);
        }
    }

    /// A bar following `counter` up to `total`.
    fn count(&self, what: &str, total: u64, counter: Arc<AtomicU64>) -> Bar {
        self.say(what);
        let bar = self.bar(
            total,
            "{prefix:>8} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} {per_sec}",
        );
        bar.set_prefix(self.who);
        let b = bar.clone();
        let ticker = tokio::spawn(async move {
            loop {
                b.set_position(counter.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Bar { bar, ticker }
    }

    /// A bar over `length` of time, with `counter` in its message.
    fn timed(&self, what: &str, length: Duration, counter: Arc<AtomicU64>) -> Bar {
        let start = Instant::now();
        self.timed_with(what, length, move || {
            let n = counter.load(Ordering::Relaxed);
            let secs = start.elapsed().as_secs_f64().max(1e-3);
            format!("{n} done, {:.0}/s", n as f64 / secs)
        })
    }

    /// A bar over `length` of time with the message `msg()` says.
    fn timed_with(&self, what: &str, length: Duration, msg: impl Fn() -> String + Send + 'static) -> Bar {
        self.say(what);
        let bar = self.bar(
            length.as_millis() as u64,
            "{prefix:>8} [{elapsed_precise}] {wide_bar} {msg}",
        );
        bar.set_prefix(self.who);
        let b = bar.clone();
        let start = Instant::now();
        let ticker = tokio::spawn(async move {
            loop {
                b.set_position(start.elapsed().as_millis() as u64);
                b.set_message(msg());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Bar { bar, ticker }
    }

    fn bar(&self, len: u64, template: &str) -> ProgressBar {
        let target = if self.quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr_with_hz(10)
        };
        let bar = ProgressBar::with_draw_target(Some(len), target);
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar
    }
}

// ---------------------------------------------------------------- shared pieces

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

/// One histogram of many tasks' samples. Tasks keep plain samples rather than a
/// histogram each: at three significant digits one is ~190 KB, and 10,000 subscribers
/// each holding one would cost the load generator gigabytes and its caches.
fn histogram_of<'a>(samples: impl IntoIterator<Item = &'a Vec<u64>>) -> Histogram<u64> {
    let mut h = histogram();
    for v in samples.into_iter().flatten() {
        let _ = h.record((*v).max(1));
    }
    h
}

/// The first failure of a run, kept for the report.
#[derive(Clone, Default)]
struct FirstError(Arc<Mutex<Option<String>>>);

impl FirstError {
    fn set(&self, e: impl FnOnce() -> String) {
        let mut g = self.0.lock().expect("not poisoned");
        if g.is_none() {
            *g = Some(e());
        }
    }
    fn take(&self) -> Option<String> {
        self.0.lock().expect("not poisoned").take()
    }
}

fn status_text(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// A payload of `size` bytes starting with `at` (microseconds since the run's base).
fn stamped(at: u64, size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(size);
    b.put_u64_le(at);
    b.resize(size, b'x');
    b.freeze()
}

fn stamp_of(payload: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(payload.get(..8)?.try_into().ok()?))
}

/// An open subscription.
struct Sub {
    user: u64,
    tx: mpsc::Sender<SubscribeRequest>,
    rx: Streaming<SubscribeResponse>,
    subscribed: Subscribed,
}

/// `n` new users and connections enough for a subscription each (`--connections`, else
/// one per `--streams-per-connection`).
async fn subscriber_setup(
    t: &Target,
    a: &BenchArgs,
    n: usize,
) -> Result<(Vec<Channel>, Arc<Vec<u64>>), String> {
    let channels = t
        .channels(a.connections.unwrap_or(n.div_ceil(a.streams_per_connection)))
        .await?;
    let users = Arc::new(t.create_users(&channels[0], n).await?);
    Ok((channels, users))
}

/// The Start message of each subscriber (a durable consumer when `consumer` is not empty).
fn starts(ack_mode: AckMode, start_from: StartFrom, consumer: &'static str) -> impl Fn(u64) -> Start {
    move |user_id| Start {
        user_id,
        consumer_id: consumer.into(),
        ack_mode: ack_mode as i32,
        start_from: start_from as i32,
        ..Default::default()
    }
}

/// Opens one subscription per user, `--streams-per-connection` streams per connection,
/// at most `burst` opening at a time; with `progress`, a bar counts them as confirmed.
async fn open_subs(
    t: &Target,
    a: &BenchArgs,
    channels: &[Channel],
    users: &[u64],
    start: impl Fn(u64) -> Start,
    burst: usize,
    progress: Option<(&Ui, &str)>,
) -> Result<Vec<Sub>, String> {
    let opened = Arc::new(AtomicU64::new(0));
    let bar = progress.map(|(ui, what)| ui.count(what, users.len() as u64, opened.clone()));
    let mut opening = JoinSet::new();
    let mut out = Vec::with_capacity(users.len());
    for (i, &user) in users.iter().enumerate() {
        let conn = (i / a.streams_per_connection) % channels.len();
        let mut client = ActivityServiceClient::new(channels[conn].clone());
        let first = SubscribeRequest {
            msg: Some(subscribe_request::Msg::Start(start(user))),
        };
        let (auth, opened) = (t.auth(), opened.clone());
        opening.spawn(async move {
            let (tx, rx) = mpsc::channel(64);
            tx.send(first).await.map_err(|_| "request stream closed")?;
            let mut rx = client
                .subscribe(auth.req(ReceiverStream::new(rx)))
                .await
                .map_err(|s| format!("Subscribe user {user}: {}", status_text(&s)))?
                .into_inner();
            match rx.message().await {
                Ok(Some(SubscribeResponse {
                    msg: Some(subscribe_response::Msg::Subscribed(subscribed)),
                })) => {
                    opened.fetch_add(1, Ordering::Relaxed);
                    Ok(Sub {
                        user,
                        tx,
                        rx,
                        subscribed,
                    })
                }
                Ok(other) => Err(format!("Subscribe user {user}: first message was {other:?}")),
                Err(s) => Err(format!("Subscribe user {user}: {}", status_text(&s))),
            }
        });
        if opening.len() >= burst {
            out.push(joined(opening.join_next().await)?);
        }
    }
    while let Some(r) = opening.join_next().await {
        out.push(joined(Some(r))?);
    }
    if let Some(bar) = bar {
        bar.done();
    }
    Ok(out)
}

fn joined<T>(r: Option<Result<Result<T, String>, tokio::task::JoinError>>) -> Result<T, String> {
    match r {
        Some(Ok(v)) => v,
        Some(Err(e)) => Err(format!("a bench task failed: {e}")),
        None => Err("no task".into()),
    }
}

/// What one subscriber saw.
struct Seen {
    sub: Sub,
    /// Publish -> deliver latencies, microseconds.
    samples: Vec<u64>,
    got: u64,
    last: u64,
    lost: u64,
    redelivered: u64,
    error: Option<String>,
    done_at: Option<Instant>,
}

/// Reads `sub` until it has seen seq `until` (or `stall` passes with no new event;
/// heartbeats do not count as progress):
/// checks order and gaps from `resume_after`, records publish -> deliver latency from
/// the payload stamps, and acks every `ack_every` events when asked.
async fn read_until(
    sub: Sub,
    until: u64,
    ack_every: Option<u64>,
    base: Instant,
    stall: Duration,
    delivered: Arc<AtomicU64>,
) -> Seen {
    let last = sub.subscribed.resume_after;
    let mut s = Seen {
        sub,
        samples: Vec::new(),
        got: 0,
        last,
        lost: 0,
        redelivered: 0,
        error: None,
        done_at: None,
    };
    let mut deadline = tokio::time::Instant::now() + stall;
    while s.last < until {
        let msg = match tokio::time::timeout_at(deadline, s.sub.rx.message()).await {
            Ok(Ok(Some(m))) => m,
            Ok(Ok(None)) => {
                s.error = Some(format!("user {}: the stream ended at seq {}", s.sub.user, s.last));
                break;
            }
            Ok(Err(st)) => {
                s.error = Some(format!("user {}: {}", s.sub.user, status_text(&st)));
                break;
            }
            Err(_) => {
                s.error = Some(format!(
                    "user {}: nothing for {stall:?} at seq {} of {until}",
                    s.sub.user, s.last
                ));
                break;
            }
        };
        let Some(subscribe_response::Msg::Event(e)) = msg.msg else {
            continue;
        };
        if e.seq <= s.last {
            s.redelivered += 1;
            continue;
        }
        s.lost += e.seq - s.last - 1;
        s.last = e.seq;
        deadline = tokio::time::Instant::now() + stall;
        s.got += 1;
        delivered.fetch_add(1, Ordering::Relaxed);
        if let Some(sent) = stamp_of(&e.payload) {
            let now = base.elapsed().as_micros() as u64;
            s.samples.push(now.saturating_sub(sent));
        }
        if let Some(every) = ack_every {
            if s.got % every == 0 || s.last >= until {
                let ack = SubscribeRequest {
                    msg: Some(subscribe_request::Msg::Ack(Ack { seq: e.seq })),
                };
                if s.sub.tx.send(ack).await.is_err() {
                    s.error = Some(format!("user {}: could not send an ack", s.sub.user));
                    break;
                }
            }
        }
    }
    if s.last < until {
        s.lost += until - s.last;
    } else {
        s.done_at = Some(Instant::now());
    }
    s
}

/// Sums what the subscribers saw into `run`; returns the subscriptions.
fn collect(run: &mut Run, seen: Vec<Seen>, first: &FirstError) -> Vec<Sub> {
    run.latency = Some(histogram_of(seen.iter().map(|s| &s.samples)));
    let mut subs = Vec::with_capacity(seen.len());
    for s in seen {
        run.lost += s.lost;
        run.redelivered += s.redelivered;
        if let Some(e) = s.error {
            run.failed += 1;
            first.set(|| e);
        }
        subs.push(s.sub);
    }
    subs
}

async fn join_all<T: 'static>(mut set: JoinSet<T>) -> Result<Vec<T>, String> {
    let mut out = Vec::with_capacity(set.len());
    while let Some(r) = set.join_next().await {
        out.push(r.map_err(|e| format!("a bench task failed: {e}"))?);
    }
    Ok(out)
}

/// A reader per subscription ([`read_until`] seq `until(sub)`; none when that is 0),
/// acking every `ack_every` when given, counting deliveries in `delivered`.
fn spawn_readers(
    subs: Vec<Sub>,
    until: impl Fn(&Sub) -> u64,
    ack_every: Option<u64>,
    a: &BenchArgs,
    base: Instant,
    delivered: &Arc<AtomicU64>,
) -> JoinSet<Seen> {
    let mut readers = JoinSet::new();
    for sub in subs {
        let last = until(&sub);
        if last > 0 {
            readers.spawn(read_until(
                sub,
                last,
                ack_every,
                base,
                a.stall_timeout,
                delivered.clone(),
            ));
        }
    }
    readers
}

/// [`publish_to_all`] on a connection of its own; returns failed publishes.
async fn publisher(
    t: &Target,
    a: &BenchArgs,
    users: &Arc<Vec<u64>>,
    events: u64,
    base: Instant,
    first: &FirstError,
) -> Result<impl std::future::Future<Output = u64> + Send + 'static, String> {
    let channel = t.channel().await?;
    Ok(publish_to_all(
        channel,
        t.auth(),
        users.clone(),
        events,
        a.payload_size,
        base,
        first.clone(),
    ))
}

/// Publishes `events` events, each to every user in `users` (split into publishes of
/// at most [`RECIPIENTS_PER_PUBLISH`]), over one PublishStream; payloads carry the send
/// time. Returns how many publishes failed.
async fn publish_to_all(
    channel: Channel,
    auth: Auth,
    users: Arc<Vec<u64>>,
    events: u64,
    payload_size: usize,
    base: Instant,
    first: FirstError,
) -> u64 {
    let chunks = users.len().div_ceil(RECIPIENTS_PER_PUBLISH) as u64;
    let expected = events * chunks;
    let u = users.clone();
    let reqs = (0..expected).map(move |i| {
        let chunk = (i % chunks) as usize * RECIPIENTS_PER_PUBLISH;
        PublishRequest {
            recipient_ids: u[chunk..(chunk + RECIPIENTS_PER_PUBLISH).min(u.len())].to_vec(),
            r#type: "bench.fanout".into(),
            payload: stamped(base.elapsed().as_micros() as u64, payload_size),
            ..Default::default()
        }
    });
    let mut client = ActivityServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let mut answered = 0;
    match client.publish_stream(auth.req(tokio_stream::iter(reqs))).await {
        Ok(out) => {
            let mut out = out.into_inner();
            loop {
                match out.message().await {
                    Ok(Some(_)) => answered += 1,
                    Ok(None) => break,
                    Err(s) => {
                        first.set(|| format!("PublishStream: {}", status_text(&s)));
                        break;
                    }
                }
            }
        }
        Err(s) => first.set(|| format!("PublishStream: {}", status_text(&s))),
    }
    expected - answered
}

fn per_sec(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

// ---------------------------------------------------------------- scenarios

/// Unary GetUser by id with a bearer token, `concurrency` calls in flight per connection.
async fn get_user(t: &Target, a: &BenchArgs, ui: &Ui) -> Result<Run, String> {
    let channels = t.channels(a.connections.unwrap_or(4)).await?;
    let users = Arc::new(t.create_users(&channels[0], 100).await?);
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first = FirstError::default();
    let start = Instant::now();
    let measure_from = start + a.warmup;
    let end = measure_from + a.duration;
    let mut tasks = JoinSet::new();
    for (c, ch) in channels.iter().enumerate() {
        for j in 0..a.concurrency {
            let mut client = UserServiceClient::new(ch.clone());
            let (auth, users, ok, failed, first) =
                (t.auth(), users.clone(), ok.clone(), failed.clone(), first.clone());
            let mut k = c * a.concurrency + j;
            tasks.spawn(async move {
                let mut samples = Vec::new();
                loop {
                    let sent = Instant::now();
                    if sent >= end {
                        return samples;
                    }
                    k += 1;
                    let req = GetUserRequest {
                        identifier: Some(Identifier::UserId(users[k % users.len()])),
                    };
                    let r = client.get_user(auth.req(req)).await;
                    if sent < measure_from {
                        continue;
                    }
                    samples.push(sent.elapsed().as_micros() as u64);
                    match r {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(s) => {
                            first.set(|| format!("GetUser: {}", status_text(&s)));
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            });
        }
    }
    let bar = ui.timed("calling GetUser", a.warmup + a.duration, ok.clone());
    let samples = join_all(tasks).await?;
    bar.done();
    let mut run = Run::default();
    let done = ok.load(Ordering::Relaxed);
    run.figures.push(Figure::more(
        "requests_per_sec",
        "GetUser calls/s",
        per_sec(done, a.duration),
    ));
    run.figures
        .push(Figure::info("requests", "calls answered OK", done as f64));
    run.failed = failed.load(Ordering::Relaxed);
    run.latency = Some(histogram_of(&samples));
    run.latency_label = "GetUser call latency";
    run.first_error = first.take();
    Ok(run)
}

/// PublishStream throughput with `inflight` publishes awaiting their answer per stream.
async fn publish(t: &Target, a: &BenchArgs, ui: &Ui) -> Result<Run, String> {
    let channels = t.channels(a.connections.unwrap_or(a.streams)).await?;
    let users = Arc::new(t.create_users(&channels[0], a.recipients).await?);
    let total = a.events.unwrap_or(200_000);
    let committed = Arc::new(AtomicU64::new(0));
    let first = FirstError::default();
    let payload = stamped(0, a.payload_size);
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for s in 0..a.streams as u64 {
        let n = total / a.streams as u64 + u64::from(s < total % a.streams as u64);
        let mut client = ActivityServiceClient::new(channels[s as usize % channels.len()].clone());
        let (auth, users, committed, first, payload) = (
            t.auth(),
            users.clone(),
            committed.clone(),
            first.clone(),
            payload.clone(),
        );
        let inflight = a.inflight;
        tasks.spawn(async move {
            // The queue of send times doubles as the in-flight window: answers come in order.
            let (times_tx, mut times_rx) = mpsc::channel::<Instant>(inflight);
            let (req_tx, req_rx) = mpsc::channel::<PublishRequest>(inflight);
            let sender = tokio::spawn(async move {
                for i in 0..n {
                    if times_tx.send(Instant::now()).await.is_err() {
                        return;
                    }
                    let req = PublishRequest {
                        recipient_ids: vec![users[((i + s) as usize) % users.len()]],
                        r#type: "bench.publish".into(),
                        payload: payload.clone(),
                        ..Default::default()
                    };
                    if req_tx.send(req).await.is_err() {
                        return;
                    }
                }
            });
            let mut samples = Vec::with_capacity(n as usize);
            let mut answered = 0u64;
            match client.publish_stream(auth.req(ReceiverStream::new(req_rx))).await {
                Ok(out) => {
                    let mut out = out.into_inner();
                    loop {
                        match out.message().await {
                            Ok(Some(r)) => {
                                let sent = times_rx.recv().await.unwrap_or_else(Instant::now);
                                samples.push(sent.elapsed().as_micros() as u64);
                                if r.deliveries.len() == 1 {
                                    answered += 1;
                                    committed.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    first.set(|| format!("PublishStream answered {r:?}"));
                                }
                            }
                            Ok(None) => break,
                            Err(st) => {
                                first.set(|| format!("PublishStream: {}", status_text(&st)));
                                break;
                            }
                        }
                    }
                }
                Err(st) => first.set(|| format!("PublishStream: {}", status_text(&st))),
            }
            sender.abort();
            (samples, n - answered)
        });
    }
    let bar = ui.count("publishing", total, committed.clone());
    let results = join_all(tasks).await?;
    let secs = start.elapsed();
    bar.done();
    let mut run = Run {
        latency: Some(histogram_of(results.iter().map(|(s, _)| s))),
        failed: results.iter().map(|(_, failed)| failed).sum(),
        ..Default::default()
    };
    let done = committed.load(Ordering::Relaxed);
    run.figures.push(Figure::more(
        "events_per_sec",
        "events/s committed",
        per_sec(done, secs),
    ));
    run.figures
        .push(Figure::info("events", "events committed", done as f64));
    run.latency_label = "publish -> commit answer";
    run.first_error = first.take();
    Ok(run)
}

/// `events` events, each to all subscribers; deliveries/s and publish -> deliver latency.
async fn fanout(t: &Target, a: &BenchArgs, ui: &Ui) -> Result<Run, String> {
    let n = subscribers(a);
    let events = a.events.unwrap_or(200);
    let (channels, users) = subscriber_setup(t, a, n).await?;
    let ack_mode = match a.ack {
        Acks::Explicit => AckMode::Explicit,
        Acks::None => AckMode::None,
    };
    let start = starts(ack_mode, StartFrom::Latest, "");
    let progress = Some((ui, "opening subscriptions"));
    let subs = open_subs(t, a, &channels, &users, start, OPEN_BURST, progress).await?;
    let base = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let ack_every = (a.ack == Acks::Explicit).then_some(a.ack_every);
    let readers = spawn_readers(subs, |_| events, ack_every, a, base, &delivered);
    let first = FirstError::default();
    let publisher = tokio::spawn(publisher(t, a, &users, events, base, &first).await?);
    let bar = ui.count("delivering", n as u64 * events, delivered.clone());
    let seen = join_all(readers).await?;
    let secs = base.elapsed();
    bar.done();
    let mut run = Run::default();
    run.failed += publisher.await.map_err(|e| format!("publisher: {e}"))?;
    let _subs = collect(&mut run, seen, &first);
    let got = delivered.load(Ordering::Relaxed);
    run.figures.push(Figure::more(
        "deliveries_per_sec",
        "deliveries/s",
        per_sec(got, secs),
    ));
    run.figures
        .push(Figure::info("deliveries", "events delivered", got as f64));
    run.latency_label = "publish -> deliver";
    run.first_error = first.take();
    Ok(run)
}

/// Publish -> deliver latency at a fixed rate, one recipient per event (round robin).
async fn latency(t: &Target, a: &BenchArgs, ui: &Ui) -> Result<Run, String> {
    let n = subscribers(a);
    let total = (a.rate as f64 * a.duration.as_secs_f64()).round().max(1.0) as u64;
    let (channels, users) = subscriber_setup(t, a, n).await?;
    let start = starts(AckMode::Explicit, StartFrom::Latest, "");
    let progress = Some((ui, "opening subscriptions"));
    let subs = open_subs(t, a, &channels, &users, start, OPEN_BURST, progress).await?;
    let base = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    // Event k goes to users[k % n]: user i gets total / n, plus one if i < total % n.
    let index: std::collections::HashMap<u64, u64> =
        users.iter().enumerate().map(|(i, &u)| (u, i as u64)).collect();
    let mine = |sub: &Sub| total / n as u64 + u64::from(index[&sub.user] < total % n as u64);
    let readers = spawn_readers(subs, mine, Some(a.ack_every), a, base, &delivered);
    let first = FirstError::default();
    let (tx, rx) = mpsc::channel::<PublishRequest>(4096);
    let mut client = ActivityServiceClient::new(t.channel().await?);
    let mut out = client
        .publish_stream(t.req(ReceiverStream::new(rx)))
        .await
        .map_err(|s| format!("PublishStream: {}", status_text(&s)))?
        .into_inner();
    let drain_first = first.clone();
    let drain = tokio::spawn(async move {
        let mut answered = 0u64;
        loop {
            match out.message().await {
                Ok(Some(_)) => answered += 1,
                Ok(None) => return answered,
                Err(s) => {
                    drain_first.set(|| format!("PublishStream: {}", status_text(&s)));
                    return answered;
                }
            }
        }
    });
    let bar = ui.timed(
        &format!("publishing {} events/s", a.rate),
        a.duration,
        delivered.clone(),
    );
    let begin = base.elapsed().as_micros() as u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent = 0u64;
    while sent < total {
        tick.tick().await;
        let due = ((base.elapsed().as_micros() as u64 - begin) as f64 * a.rate as f64 / 1e6) as u64;
        while sent < due.min(total) {
            // Stamped with when it was due, not when it went out.
            let at = begin + (sent as f64 * 1e6 / a.rate as f64) as u64;
            let req = PublishRequest {
                recipient_ids: vec![users[sent as usize % n]],
                r#type: "bench.latency".into(),
                payload: stamped(at, a.payload_size),
                ..Default::default()
            };
            if tx.send(req).await.is_err() {
                break;
            }
            sent += 1;
        }
        if tx.is_closed() {
            break;
        }
    }
    let publish_secs = base.elapsed();
    drop(tx);
    let seen = join_all(readers).await?;
    bar.done();
    let answered = drain.await.map_err(|e| format!("publisher: {e}"))?;
    let mut run = Run {
        failed: total - answered,
        ..Default::default()
    };
    let _subs = collect(&mut run, seen, &first);
    run.figures.push(Figure::info(
        "publish_rate",
        "events/s published (achieved)",
        per_sec(sent, publish_secs),
    ));
    run.figures.push(Figure::info(
        "deliveries",
        "events delivered",
        delivered.load(Ordering::Relaxed) as f64,
    ));
    run.latency_label = "publish -> deliver";
    run.first_error = first.take();
    Ok(run)
}

/// Server RSS per idle subscription.
async fn idle(t: &Target, a: &BenchArgs, ui: &Ui) -> Result<Run, String> {
    let n = subscribers(a);
    let (channels, users) = subscriber_setup(t, a, n).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = t.rss_bytes();
    let start = starts(AckMode::Explicit, StartFrom::Latest, "");
    let began = Instant::now();
    let progress = Some((ui, "opening subscriptions"));
    let subs = open_subs(t, a, &channels, &users, start, OPEN_BURST, progress).await?;
    let open_secs = began.elapsed();
    let bar = ui.timed("holding", a.duration, Arc::new(AtomicU64::new(n as u64)));
    tokio::time::sleep(a.duration).await;
    bar.done();
    let after = t.rss_bytes();
    let mut run = Run::default();
    // Every stream must still be open: a server that dropped them would look cheap.
    let mut open = 0;
    for mut s in subs {
        match tokio::time::timeout(Duration::from_millis(1), s.rx.message()).await {
            Err(_) | Ok(Ok(Some(_))) => open += 1,
            Ok(Ok(None)) | Ok(Err(_)) => run.failed += 1,
        }
    }
    run.figures.push(Figure::more(
        "opens_per_sec",
        "subscriptions opened/s",
        per_sec(n as u64, open_secs),
    ));
    run.figures
        .push(Figure::info("open", "subscriptions open at the end", open as f64));
    match (before, after) {
        (Some(b), Some(a)) => {
            run.figures.push(Figure::less(
                "rss_bytes_per_subscription",
                "server RSS per subscription, bytes",
                a.saturating_sub(b) as f64 / n as f64,
            ));
            run.figures.push(Figure::info(
                "rss_bytes",
                "server RSS at the end, bytes",
                a as f64,
            ));
        }
        _ => run
            .notes
            .push("server RSS not visible: it is not a process on this machine (pass --server-pid)".into()),
    }
    if run.failed > 0 {
        run.first_error = Some(format!("{} subscriptions were closed by the server", run.failed));
    }
    Ok(run)
}

/// N durable subscribers drop at once and resume at once.
async fn reconnect_storm(t: &Target, a: &BenchArgs, ui: &Ui) -> Result<Run, String> {
    let n = subscribers(a);
    let e = a.events.unwrap_or(20);
    let (channels, users) = subscriber_setup(t, a, n).await?;
    let start = starts(AckMode::Explicit, StartFrom::Cursor, "bench");
    let first = FirstError::default();
    let mut run = Run::default();

    // 1. Connected: every subscriber gets `e` events and acks them.
    let progress = Some((ui, "opening durable subscriptions"));
    let subs = open_subs(t, a, &channels, &users, &start, OPEN_BURST, progress).await?;
    let base = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let readers = spawn_readers(subs, |_| e, Some(a.ack_every), a, base, &delivered);
    let publishing = publisher(t, a, &users, e, base, &first).await?;
    let bar = ui.count("delivering while connected", n as u64 * e, delivered.clone());
    run.failed += publishing.await;
    let seen = join_all(readers).await?;
    bar.done();
    let subs = collect(&mut run, seen, &first);

    // 2. Everyone drops at once (streams and connections); `e` more events meanwhile.
    ui.say(&format!(
        "{n} subscribers drop; {e} events each published while they are away"
    ));
    let conns = channels.len();
    drop(subs);
    drop(channels);
    run.failed += publisher(t, a, &users, e, base, &first).await?.await;

    // 3. Everyone resumes at once from its cursor while `e` more are published live.
    let channels = t.channels(conns).await?;
    let delivered = Arc::new(AtomicU64::new(0));
    let bar = ui.count("resuming and catching up", n as u64 * 2 * e, delivered.clone());
    let storm = Instant::now();
    let opening = open_subs(t, a, &channels, &users, &start, n, None);
    let live = tokio::spawn(publisher(t, a, &users, e, base, &first).await?);
    let subs = opening.await?;
    let reconnected = storm.elapsed();
    for sub in &subs {
        // Acked through seq e before the drop: a cursor beyond that lost events.
        run.lost += sub.subscribed.resume_after.saturating_sub(e);
        // One behind it: those events come again (at least once), counted, not lost.
        run.redelivered += e.saturating_sub(sub.subscribed.resume_after);
    }
    let readers = spawn_readers(subs, |_| 3 * e, Some(a.ack_every), a, base, &delivered);
    let seen = join_all(readers).await?;
    let caught_up = storm.elapsed();
    bar.done();
    run.failed += live.await.map_err(|e| format!("publisher: {e}"))?;
    let mut catch_up = histogram();
    for s in &seen {
        if let Some(at) = s.done_at {
            let _ = catch_up.record(at.duration_since(storm).as_micros().max(1) as u64);
        }
    }
    let _subs = collect(&mut run, seen, &first);
    run.latency = Some(catch_up);
    run.latency_label = "time until a subscriber caught up";
    let got = delivered.load(Ordering::Relaxed);
    run.figures.push(Figure::less(
        "reconnect_ms",
        "all resumed (Subscribed), ms",
        reconnected.as_secs_f64() * 1e3,
    ));
    run.figures.push(Figure::less(
        "caught_up_ms",
        "all caught up, ms",
        caught_up.as_secs_f64() * 1e3,
    ));
    run.figures.push(Figure::more(
        "catch_up_events_per_sec",
        "events/s while catching up",
        per_sec(got, caught_up),
    ));
    run.figures.push(Figure::info(
        "events_after_resume",
        "events received after resuming",
        got as f64,
    ));
    run.first_error = first.take();
    Ok(run)
}
