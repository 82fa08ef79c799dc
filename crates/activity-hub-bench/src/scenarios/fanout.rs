//! `fanout`: see [`crate::Scenario`].

use super::*;

/// Per-user fan-out: every subscriber is its own recipient and gets `events` events;
/// the events go out one recipient each, round robin, over the publish scenario's
/// pipelined streams. Deliveries/s and publish -> deliver latency.
pub(super) async fn fanout(t: &Target, a: &BenchArgs, ui: &Ui) -> Result<Run, String> {
    let n = subscribers(a);
    let events = a.events.unwrap_or(200);
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
        |s| s.subscribed.resume_after + events,
        ack_every,
        a,
        base,
        &delivered,
    );
    let first = FirstError::default();
    let total = n as u64 * events;
    let publishers = spawn_publishers(t, a, &users, total, Some(base), "bench.fanout", &first).await?;
    let bar = ui.count("delivering", total, delivered.clone());
    let seen = join_all(readers).await?;
    let secs = base.elapsed();
    bar.done();
    let published = join_all(publishers.tasks).await?;
    let mut run = Run {
        failed: published.iter().map(|(_, failed)| failed).sum(),
        ..Default::default()
    };
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
