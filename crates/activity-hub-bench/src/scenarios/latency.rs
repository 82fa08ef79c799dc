//! `latency`: see [`crate::Scenario`].

use super::*;

/// Publish -> deliver latency at a fixed rate, one recipient per event (round robin).
pub(super) async fn latency(t: &Target, a: &BenchArgs, ui: &Ui) -> Result<Run, String> {
    let n = subscribers(a);
    let total = (a.rate as f64 * a.duration.as_secs_f64()).round().max(1.0) as u64;
    let (channels, users) = subscriber_setup(t, a, n).await?;
    prefill(t, a, &users, ui).await?;
    let start = starts(AckMode::Explicit, StartFrom::Latest, "");
    let progress = Some((ui, "opening subscriptions"));
    let subs = open_subs(t, a, &channels, &users, start, OPEN_BURST, progress).await?;
    let base = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    // Event k goes to users[k % n]: user i gets total / n, plus one if i < total % n.
    let index: std::collections::HashMap<u64, u64> =
        users.iter().enumerate().map(|(i, &u)| (u, i as u64)).collect();
    let mine = |sub: &Sub| {
        sub.subscribed.resume_after + total / n as u64 + u64::from(index[&sub.user] < total % n as u64)
    };
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
    let pace = Pace {
        rate: a.rate,
        begin: base.elapsed().as_micros() as u64,
    };
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent = 0u64;
    while sent < total && !crate::stop::requested() {
        tick.tick().await;
        let due = pace.due(base);
        while sent < due.min(total) {
            // Stamped with when it was due, not when it went out.
            let at = pace.due_at(sent);
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
        failed: sent.saturating_sub(answered),
        ..Default::default()
    };
    let _subs = collect(&mut run, seen, &first);
    latency_figures(&mut run, sent, publish_secs, delivered.load(Ordering::Relaxed));
    run.first_error = first.take();
    Ok(run)
}
