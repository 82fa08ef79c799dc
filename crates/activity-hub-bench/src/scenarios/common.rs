//! Pieces the scenarios share: histograms, payload time stamps, opening and reading
//! subscriptions, publishers.

use super::*;

pub(super) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

/// One histogram of many tasks' samples. Tasks keep plain samples rather than a
/// histogram each: at three significant digits one is ~190 KB, and 10,000 subscribers
/// each holding one would cost the load generator gigabytes and its caches.
pub(crate) fn histogram_of<'a>(samples: impl IntoIterator<Item = &'a Vec<u64>>) -> Histogram<u64> {
    let mut h = histogram();
    for v in samples.into_iter().flatten() {
        let _ = h.record((*v).max(1));
    }
    h
}

/// The first failure of a run, kept for the report.
#[derive(Clone, Default)]
pub(super) struct FirstError(Arc<Mutex<Option<String>>>);

impl FirstError {
    pub(super) fn set(&self, e: impl FnOnce() -> String) {
        let mut g = self.0.lock().expect("not poisoned");
        if g.is_none() {
            *g = Some(e());
        }
    }
    pub(super) fn take(&self) -> Option<String> {
        self.0.lock().expect("not poisoned").take()
    }
}

pub(super) fn status_text(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// A payload of `size` bytes starting with `at` (microseconds since the run's base).
pub(crate) fn stamped(at: u64, size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(size);
    b.put_u64_le(at);
    b.resize(size, b'x');
    b.freeze()
}

pub(crate) fn stamp_of(payload: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(payload.get(..8)?.try_into().ok()?))
}

/// An open subscription.
pub(super) struct Sub {
    pub(super) user: u64,
    pub(super) tx: mpsc::Sender<SubscribeRequest>,
    pub(super) rx: Streaming<SubscribeResponse>,
    pub(super) subscribed: Subscribed,
}

/// `n` new users and connections enough for a subscription each (`--connections`, else
/// one per `--streams-per-connection`).
pub(super) async fn subscriber_setup(
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
pub(super) fn starts(
    ack_mode: AckMode,
    start_from: StartFrom,
    consumer: &'static str,
) -> impl Fn(u64) -> Start {
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
pub(super) async fn open_subs(
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
        let channel = channels[conn].clone();
        let (first, auth, opened) = (start(user), t.auth(), opened.clone());
        opening.spawn(async move {
            // The client library's handshake: Start, then wait for Subscribed.
            let metadata = auth.req(()).into_parts().0;
            let stream = OpenStream::open(channel, first, metadata, 64)
                .await
                .map_err(|s| format!("Subscribe user {user}: {}", status_text(&s)))?;
            opened.fetch_add(1, Ordering::Relaxed);
            Ok(Sub {
                user,
                tx: stream.requests,
                rx: stream.responses,
                subscribed: stream.subscribed,
            })
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

pub(super) fn joined<T>(r: Option<Result<Result<T, String>, tokio::task::JoinError>>) -> Result<T, String> {
    match r {
        Some(Ok(v)) => v,
        Some(Err(e)) => Err(format!("a bench task failed: {e}")),
        None => Err("no task".into()),
    }
}

/// What one subscriber saw.
pub(super) struct Seen {
    pub(super) sub: Sub,
    /// Publish -> deliver latencies, microseconds.
    pub(super) samples: Vec<u64>,
    pub(super) got: u64,
    pub(super) last: u64,
    pub(super) lost: u64,
    pub(super) redelivered: u64,
    pub(super) error: Option<String>,
    pub(super) done_at: Option<Instant>,
}

/// Reads `sub` until it has seen seq `until` (or `stall` passes with no new event;
/// heartbeats do not count as progress):
/// checks order and gaps from `resume_after`, records publish -> deliver latency from
/// the payload stamps, and acks every `ack_every` events when asked.
pub(super) async fn read_until(
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
    // After Ctrl-C a reader waits only until its stream goes quiet, and what never came
    // (because it was never sent) is not counted as lost.
    let mut stopping = false;
    while s.last < until {
        if !stopping && crate::stop::requested() {
            stopping = true;
            deadline = deadline.min(tokio::time::Instant::now() + STOP_QUIET);
        }
        let next = tokio::select! {
            m = tokio::time::timeout_at(deadline, s.sub.rx.message()) => m,
            _ = crate::stop::wait(), if !stopping => continue,
        };
        if stopping && next.is_err() {
            return s;
        }
        let msg = match next {
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
        deadline = tokio::time::Instant::now() + if stopping { STOP_QUIET } else { stall };
        s.got += 1;
        delivered.fetch_add(1, Ordering::Relaxed);
        if let Some(sent) = stamp_of(&e.payload) {
            let now = base.elapsed().as_micros() as u64;
            s.samples.push(now.saturating_sub(sent));
        }
        if let Some(every) = ack_every {
            if s.got.is_multiple_of(every) || s.last >= until {
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

/// How long a reader waits for more after Ctrl-C.
const STOP_QUIET: Duration = Duration::from_secs(1);

/// Sums what the subscribers saw into `run`; returns the subscriptions.
pub(super) fn collect(run: &mut Run, seen: Vec<Seen>, first: &FirstError) -> Vec<Sub> {
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

pub(crate) async fn join_all<T: 'static>(mut set: JoinSet<T>) -> Result<Vec<T>, String> {
    let mut out = Vec::with_capacity(set.len());
    while let Some(r) = set.join_next().await {
        out.push(r.map_err(|e| format!("a bench task failed: {e}"))?);
    }
    Ok(out)
}

/// A reader per subscription ([`read_until`] seq `until(sub)`; none when that is 0),
/// acking every `ack_every` when given, counting deliveries in `delivered`.
pub(super) fn spawn_readers(
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
pub(super) async fn publisher(
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
pub(super) async fn publish_to_all(
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
    // Ctrl-C: send no more; what was sent is still answered.
    let produced = Arc::new(AtomicU64::new(0));
    let counted = produced.clone();
    let reqs = (0..expected)
        .take_while(|_| !crate::stop::requested())
        .inspect(move |_| {
            counted.fetch_add(1, Ordering::Relaxed);
        })
        .map(move |i| {
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
    produced.load(Ordering::Relaxed).saturating_sub(answered)
}

pub(crate) fn per_sec(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// The subscriber side of a delivery scenario (`fanout`, `broadcast`): `n` new users,
/// the store prefilled for them (`--prefill`), a subscription each from its latest event
/// with `--ack`, and a reader each expecting `per_user` events after its head.
pub(super) struct Subscribers {
    pub(super) users: Arc<Vec<u64>>,
    pub(super) readers: JoinSet<Seen>,
    pub(super) delivered: Arc<AtomicU64>,
    /// Payload stamps count from here.
    pub(super) base: Instant,
}

pub(super) async fn subscribe_all(
    t: &Target,
    a: &BenchArgs,
    ui: &Ui,
    n: usize,
    per_user: u64,
) -> Result<Subscribers, String> {
    let (channels, users) = subscriber_setup(t, a, n).await?;
    prefill(t, a, &users, ui).await?;
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
    let readers = spawn_readers(
        subs,
        |s| s.subscribed.resume_after + per_user,
        ack_every,
        a,
        base,
        &delivered,
    );
    Ok(Subscribers {
        users,
        readers,
        delivered,
        base,
    })
}

/// The figures of a delivery scenario: deliveries/s over `secs`, events delivered.
pub(crate) fn delivery_figures(run: &mut Run, delivered: u64, secs: Duration) {
    run.figures.push(Figure::more(
        "deliveries_per_sec",
        "deliveries/s",
        per_sec(delivered, secs),
    ));
    run.figures
        .push(Figure::info("deliveries", "events delivered", delivered as f64));
    run.latency_label = "publish -> deliver";
}

/// The figures of the latency scenario: the publish rate achieved, events delivered.
pub(crate) fn latency_figures(run: &mut Run, sent: u64, publish_secs: Duration, delivered: u64) {
    run.figures.push(Figure::info(
        "publish_rate",
        "events/s published (achieved)",
        per_sec(sent, publish_secs),
    ));
    run.figures
        .push(Figure::info("deliveries", "events delivered", delivered as f64));
    run.latency_label = "publish -> deliver";
}

/// A fixed publish rate: how many events are due by now, and when event `k` was due
/// (microseconds since the run's base; events are stamped with it, so a publisher that
/// falls behind shows as latency).
pub(crate) struct Pace {
    pub(crate) rate: u64,
    /// When publishing began, microseconds since the base.
    pub(crate) begin: u64,
}

impl Pace {
    pub(crate) fn due(&self, base: Instant) -> u64 {
        ((base.elapsed().as_micros() as u64 - self.begin) as f64 * self.rate as f64 / 1e6) as u64
    }
    pub(crate) fn due_at(&self, k: u64) -> u64 {
        self.begin + (k as f64 * 1e6 / self.rate as f64) as u64
    }
}
