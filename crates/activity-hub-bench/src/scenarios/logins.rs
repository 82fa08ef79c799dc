//! `logins`: see [`crate::Scenario`]. A burst of password hashing, the largest memory a
//! hub takes per call (19 MiB per Argon2id hash at OWASP's costs): with
//! `--memory-settle`, whether the server gives it back.

use super::*;
use activity_hub_client::proto::auth::v1::auth_service_client::AuthServiceClient;

/// `--logins` users created (in BulkCreateUsers calls), then every one logged in at
/// once, one call each, over `--connections` connections [1].
pub(super) async fn logins(t: &Target, a: &BenchArgs, ui: &Ui) -> Result<Run, String> {
    let n = super::logins(a);
    let channels = t.channels(a.connections.unwrap_or(1)).await?;
    ui.say(&format!("creating {n} users"));
    let requests = t.create_logins(&channels[0], n).await?;
    let ok = Arc::new(AtomicU64::new(0));
    let bar = ui.count("logging in, all at once", n as u64, ok.clone());
    let first = FirstError::default();
    let began = Instant::now();
    let mut tasks = JoinSet::new();
    for (i, req) in requests.into_iter().enumerate() {
        let mut auth = AuthServiceClient::new(channels[i % channels.len()].clone());
        let (ok, first) = (ok.clone(), first.clone());
        tasks.spawn(async move {
            let sent = Instant::now();
            let r = auth.login(req).await;
            let took = sent.elapsed().as_micros() as u64;
            match r {
                Ok(_) => {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                Err(s) => first.set(|| format!("Login: {}", status_text(&s))),
            }
            vec![took]
        });
    }
    let samples = join_all(tasks).await?;
    let secs = began.elapsed();
    bar.done();
    let mut run = Run::default();
    let done = ok.load(Ordering::Relaxed);
    run.figures
        .push(Figure::more("logins_per_sec", "Logins/s", per_sec(done, secs)));
    run.figures
        .push(Figure::info("logins", "Logins answered OK", done as f64));
    run.failed = n as u64 - done;
    run.latency = Some(histogram_of(&samples));
    run.latency_label = "Login call latency";
    run.first_error = first.take();
    Ok(run)
}
