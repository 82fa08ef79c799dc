//! `publish`: see [`crate::Scenario`].

use super::*;

/// PublishStream throughput with `inflight` publishes awaiting their answer per stream.
pub(super) async fn publish(t: &Target, a: &BenchArgs, ui: &Ui) -> Result<Run, String> {
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
