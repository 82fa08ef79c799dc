//! `broadcast`: see [`crate::Scenario`].

use super::*;

/// `events` events, each to all subscribers; deliveries/s and publish -> deliver latency.
pub(super) async fn broadcast(t: &Target, a: &BenchArgs, ui: &Ui) -> Result<Run, String> {
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
    let readers = spawn_readers(
        subs,
        |s| s.subscribed.resume_after + events,
        ack_every,
        a,
        base,
        &delivered,
    );
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
