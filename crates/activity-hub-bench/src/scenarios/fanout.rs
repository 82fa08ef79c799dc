//! `fanout`: see [`crate::Scenario`].

use super::*;

/// Per-user fan-out: every subscriber is its own recipient and gets `events` events;
/// the events go out one recipient each, round robin, over the publish scenario's
/// pipelined streams. Deliveries/s and publish -> deliver latency.
pub(super) async fn fanout(t: &Target, a: &BenchArgs, ui: &Ui) -> Result<Run, String> {
    let n = subscribers(a);
    let events = a.events.unwrap_or(200);
    let subs = subscribe_all(t, a, ui, n, events).await?;
    let first = FirstError::default();
    let total = n as u64 * events;
    let publishers =
        spawn_publishers(t, a, &subs.users, total, Some(subs.base), "bench.fanout", &first).await?;
    let bar = ui.count("delivering", total, subs.delivered.clone());
    let seen = join_all(subs.readers).await?;
    let secs = subs.base.elapsed();
    bar.done();
    let published = join_all(publishers.tasks).await?;
    let mut run = Run {
        failed: published.iter().map(|(_, failed)| failed).sum(),
        ..Default::default()
    };
    let _subs = collect(&mut run, seen, &first);
    delivery_figures(&mut run, subs.delivered.load(Ordering::Relaxed), secs);
    run.first_error = first.take();
    Ok(run)
}
