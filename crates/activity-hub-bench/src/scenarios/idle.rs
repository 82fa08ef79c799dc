//! `idle`: see [`crate::Scenario`].

use super::*;

/// Server RSS per idle subscription.
pub(super) async fn idle(t: &Target, a: &BenchArgs, ui: &Ui) -> Result<Run, String> {
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
    tokio::select! {
        _ = tokio::time::sleep(a.duration) => {}
        _ = crate::stop::wait() => {}
    }
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
