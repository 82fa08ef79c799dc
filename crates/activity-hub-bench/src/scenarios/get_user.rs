//! `get-user`: see [`crate::Scenario`].

use super::*;

/// Unary GetUser by id with a bearer token, `concurrency` calls in flight per connection.
pub(super) async fn get_user(t: &Target, a: &BenchArgs, ui: &Ui) -> Result<Run, String> {
    let channels = t.channels(a.connections.unwrap_or(4)).await?;
    let users = Arc::new(t.create_users(&channels[0], 100).await?);
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first = FirstError::default();
    let start = Instant::now();
    let measure_from = start + a.warmup;
    let end = measure_from + a.duration;
    let mut tasks = JoinSet::new();
    for (c, ch) in channels.iter().enumerate() {
        for j in 0..a.concurrency {
            let mut client = UserServiceClient::new(ch.clone());
            let (auth, users, ok, failed, first) =
                (t.auth(), users.clone(), ok.clone(), failed.clone(), first.clone());
            let mut k = c * a.concurrency + j;
            tasks.spawn(async move {
                let mut samples = Vec::new();
                loop {
                    let sent = Instant::now();
                    if sent >= end || crate::stop::requested() {
                        return samples;
                    }
                    k += 1;
                    let req = GetUserRequest {
                        identifier: Some(Identifier::UserId(users[k % users.len()])),
                    };
                    let r = client.get_user(auth.req(req)).await;
                    if sent < measure_from {
                        continue;
                    }
                    samples.push(sent.elapsed().as_micros() as u64);
                    match r {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(s) => {
                            first.set(|| format!("GetUser: {}", status_text(&s)));
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            });
        }
    }
    let bar = ui.timed("calling GetUser", a.warmup + a.duration, ok.clone());
    let samples = join_all(tasks).await?;
    bar.done();
    let mut run = Run::default();
    let done = ok.load(Ordering::Relaxed);
    // The whole --duration, or the part of it before Ctrl-C.
    let measured = Instant::now().min(end).saturating_duration_since(measure_from);
    run.figures.push(Figure::more(
        "requests_per_sec",
        "GetUser calls/s",
        per_sec(done, measured),
    ));
    run.figures
        .push(Figure::info("requests", "calls answered OK", done as f64));
    run.failed = failed.load(Ordering::Relaxed);
    run.latency = Some(histogram_of(&samples));
    run.latency_label = "GetUser call latency";
    run.first_error = first.take();
    Ok(run)
}
