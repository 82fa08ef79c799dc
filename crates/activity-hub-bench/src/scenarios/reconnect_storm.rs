//! `reconnect-storm`: see [`crate::Scenario`].

use super::*;

/// N durable subscribers drop at once and resume at once.
pub(super) async fn reconnect_storm(t: &Target, a: &BenchArgs, ui: &Ui) -> Result<Run, String> {
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
