//! `publish`: see [`crate::Scenario`].

use super::*;

/// PublishStream throughput with `inflight` publishes awaiting their answer per stream,
/// one recipient per event, round robin over `--recipients`.
pub(super) async fn publish(t: &Target, a: &BenchArgs, ui: &Ui) -> Result<Run, String> {
    let channel = t.channel().await?;
    let users = Arc::new(t.create_users(&channel, a.recipients).await?);
    prefill(t, a, &users, ui).await?;
    let total = a.events.unwrap_or(200_000);
    let first = FirstError::default();
    let start = Instant::now();
    let publishers = spawn_publishers(t, a, &users, total, None, "bench.publish", &first).await?;
    let bar = ui.count("publishing", total, publishers.committed.clone());
    let results = join_all(publishers.tasks).await?;
    let secs = start.elapsed();
    bar.done();
    let mut run = Run {
        latency: Some(histogram_of(results.iter().map(|(s, _)| s))),
        failed: results.iter().map(|(_, failed)| failed).sum(),
        ..Default::default()
    };
    let done = publishers.committed.load(Ordering::Relaxed);
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

/// The publishing streams of [`spawn_publishers`].
pub(super) struct Publishers {
    /// One task per stream: its publish -> commit-answer samples (microseconds) and how
    /// many of its publishes failed.
    pub(super) tasks: JoinSet<(Vec<u64>, u64)>,
    /// Publishes answered as committed so far.
    pub(super) committed: Arc<AtomicU64>,
}

/// `--streams` PublishStreams (on `--connections` connections) with `--inflight`
/// publishes each awaiting their answer, sending `total` events between them: event `g`
/// goes to `users[g % users.len()]` alone, so each user gets `total / users.len()`
/// (one more for the first `total % users.len()`). With `base`, payloads carry their
/// send time (see [`stamped`]).
pub(super) async fn spawn_publishers(
    t: &Target,
    a: &BenchArgs,
    users: &Arc<Vec<u64>>,
    total: u64,
    base: Option<Instant>,
    event_type: &'static str,
    first: &FirstError,
) -> Result<Publishers, String> {
    let channels = t.channels(a.connections.unwrap_or(a.streams)).await?;
    let committed = Arc::new(AtomicU64::new(0));
    let streams = a.streams as u64;
    let mut tasks = JoinSet::new();
    for s in 0..streams {
        let n = total / streams + u64::from(s < total % streams);
        let mut client = ActivityServiceClient::new(channels[s as usize % channels.len()].clone());
        let (auth, users, committed, first) = (t.auth(), users.clone(), committed.clone(), first.clone());
        let (inflight, size) = (a.inflight, a.payload_size);
        let fixed = stamped(0, size);
        tasks.spawn(async move {
            // The queue of send times doubles as the in-flight window: answers come in order.
            let (times_tx, mut times_rx) = mpsc::channel::<Instant>(inflight);
            let (req_tx, req_rx) = mpsc::channel::<PublishRequest>(inflight);
            let sent = Arc::new(AtomicU64::new(0));
            let sent_here = sent.clone();
            let sender = tokio::spawn(async move {
                for i in 0..n {
                    // Ctrl-C: send no more; what was sent is still answered.
                    if crate::stop::requested() || times_tx.send(Instant::now()).await.is_err() {
                        return;
                    }
                    let g = i * streams + s;
                    let req = PublishRequest {
                        recipient_ids: vec![users[(g % users.len() as u64) as usize]],
                        r#type: event_type.into(),
                        payload: match base {
                            Some(b) => stamped(b.elapsed().as_micros() as u64, size),
                            None => fixed.clone(),
                        },
                        ..Default::default()
                    };
                    if req_tx.send(req).await.is_err() {
                        return;
                    }
                    sent_here.fetch_add(1, Ordering::Relaxed);
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
            (samples, sent.load(Ordering::Relaxed).saturating_sub(answered))
        });
    }
    Ok(Publishers { tasks, committed })
}
