//! `broadcast`: see [`crate::Scenario`].

use super::*;

/// `events` events, each to all subscribers; deliveries/s and publish -> deliver latency.
pub(super) async fn broadcast(t: &Target, a: &BenchArgs, ui: &Ui) -> Result<Run, String> {
    let n = subscribers(a);
    let events = a.events.unwrap_or(200);
    let subs = subscribe_all(t, a, ui, n, events).await?;
    let first = FirstError::default();
    let publisher = tokio::spawn(publisher(t, a, &subs.users, events, subs.base, &first).await?);
    let bar = ui.count("delivering", n as u64 * events, subs.delivered.clone());
    let seen = join_all(subs.readers).await?;
    let secs = subs.base.elapsed();
    bar.done();
    let mut run = Run::default();
    run.failed += publisher.await.map_err(|e| format!("publisher: {e}"))?;
    let _subs = collect(&mut run, seen, &first);
    delivery_figures(&mut run, subs.delivered.load(Ordering::Relaxed), secs);
    run.first_error = first.take();
    Ok(run)
}
