//! `soak`: churn of subscriptions, publishes and logins for `--duration` after `--warmup`,
//! watching the server's resident memory (issue 11, bounded memory).
//!
//! Each round opens `--subscribers` subscriptions on fresh connections, one per user
//! (the first `--durable` percent are durable consumers: explicit acks, resuming from
//! their cursor; the others start from the latest event with `--ack`), publishes
//! `--events` events spread round robin over them (one recipient each) on one
//! PublishStream, reads every one, checking that each subscriber's seqs run on from where
//! it left off, in order and without a gap, and closes it all; meanwhile `--logins` users
//! are created and logged in at the hub's real password-hash costs. The server's VmRSS is
//! sampled every second from /proc/PID/status, and at the end of warm-up (the start
//! figure) and of the last round (the end figure).

use super::*;

mod churn;

use crate::{report::mib, target::proc_status_bytes};
use churn::Churn;

/// Events per round unless `--events` says otherwise.
const DEFAULT_EVENTS: u64 = 2_000;
/// The durable subscribers' consumer id.
const CONSUMER: &str = "soak";
/// How often the server's RSS is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// How many of `n` subscribers are durable consumers.
fn durable_count(a: &BenchArgs, n: usize) -> usize {
    (n * a.durable as usize + 50) / 100
}

/// The soak's line in the report.
pub(super) fn shape(a: &BenchArgs, n: usize, ack: &str) -> String {
    let durable = durable_count(a, n);
    let pace = match a.rounds_per_minute {
        0 => "back to back".to_string(),
        r => format!("at most {r}/min"),
    };
    format!(
        "rounds ({pace}) of: {n} subscriptions on fresh connections ({durable} durable consumers \
         resuming from their cursor, {} from latest with {ack}), {} events spread over them, all \
         read, all closed; {} users created and logged in; {:?} after {:?} warm-up",
        n - durable,
        a.events.unwrap_or(DEFAULT_EVENTS),
        super::logins(a),
        a.duration,
        a.warmup
    )
}

/// What a phase (warm-up, or the measured churn) did.
struct Tally {
    rounds: u64,
    published: u64,
    delivered: u64,
    redelivered: u64,
    lost: u64,
    failed: u64,
    logins: u64,
    /// Publish -> deliver, microseconds (redeliveries after a resume left out).
    latency: Histogram<u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            rounds: 0,
            published: 0,
            delivered: 0,
            redelivered: 0,
            lost: 0,
            failed: 0,
            logins: 0,
            latency: histogram(),
        }
    }
}

/// Stops the RSS sampler when the run ends, however it ends.
struct Sampler(Option<tokio::task::JoinHandle<()>>);

impl Drop for Sampler {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

/// Server RSS over the run: (seconds since the first round, bytes).
type Samples = Arc<Mutex<Vec<(f64, u64)>>>;

/// Churn, then RSS at the start and the end of the measured part, its slope, and what
/// was lost.
pub(super) async fn soak(t: &Target, a: &BenchArgs, ui: &Ui) -> Result<Run, String> {
    let n = subscribers(a);
    let channel = t.channel().await?;
    ui.say(&format!("creating {n} users"));
    let users = Arc::new(t.create_users(&channel, n).await?);
    drop(channel);
    let mut churn = Churn {
        t,
        a,
        index: users.iter().enumerate().map(|(i, &u)| (u, i)).collect(),
        users,
        durable: durable_count(a, n),
        last: vec![0; n],
        events: a.events.unwrap_or(DEFAULT_EVENTS),
        base: Instant::now(),
        first: FirstError::default(),
        rounds: Arc::new(AtomicU64::new(0)),
        received: Arc::new(AtomicU64::new(0)),
        broken: None,
    };

    let began = Instant::now();
    let samples: Samples = Arc::default();
    let rss_now = Arc::new(AtomicU64::new(0));
    let pid = t.pid();
    let sample = {
        let (samples, rss_now) = (samples.clone(), rss_now.clone());
        move || {
            let b = proc_status_bytes(pid?, "VmRSS")?;
            rss_now.store(b, Ordering::Relaxed);
            let at = began.elapsed().as_secs_f64();
            samples.lock().expect("not poisoned").push((at, b));
            Some(b)
        }
    };
    let _sampler = Sampler(pid.map(|_| {
        let sample = sample.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            loop {
                tick.tick().await;
                sample();
            }
        })
    }));
    let counters = (churn.rounds.clone(), churn.received.clone(), rss_now.clone());
    let progress = |what: &str, length: Duration| {
        let (rounds, received, rss_now) = counters.clone();
        ui.timed_with(what, length, move || {
            let rss = match rss_now.load(Ordering::Relaxed) {
                0 => String::new(),
                b => format!(", server RSS {:.1} MiB", mib(b)),
            };
            format!(
                "{} rounds, {} events received{rss}",
                rounds.load(Ordering::Relaxed),
                received.load(Ordering::Relaxed)
            )
        })
    };
    let slot = match a.rounds_per_minute {
        0 => Duration::ZERO,
        r => Duration::from_secs_f64(60.0 / r as f64),
    };
    let mut next = Instant::now();

    let mut warm = Tally::new();
    let bar = progress(&format!("warming up for {:?}", a.warmup), a.warmup);
    churn.phase(began + a.warmup, slot, &mut next, &mut warm).await?;
    bar.done();
    let measured_from = began.elapsed();
    let start = sample();
    let start_file = pid.and_then(|p| proc_status_bytes(p, "RssFile"));

    let mut tally = Tally::new();
    let bar = progress(&format!("churning for {:?}", a.duration), a.duration);
    churn
        .phase(Instant::now() + a.duration, slot, &mut next, &mut tally)
        .await?;
    let measured = began.elapsed() - measured_from;
    bar.done();
    let end = sample();
    let end_file = pid.and_then(|p| proc_status_bytes(p, "RssFile"));

    let mut run = Run {
        failed: warm.failed + tally.failed,
        lost: warm.lost + tally.lost,
        redelivered: warm.redelivered + tally.redelivered,
        ..Default::default()
    };
    let f = &mut run.figures;
    f.push(Figure::info(
        "rounds",
        "rounds after warm-up",
        tally.rounds as f64,
    ));
    f.push(Figure::info(
        "rounds_per_min",
        "rounds/min",
        tally.rounds as f64 / (measured.as_secs_f64() / 60.0).max(1e-9),
    ));
    f.push(Figure::info(
        "events_published",
        "events published after warm-up",
        tally.published as f64,
    ));
    f.push(Figure::info(
        "events_delivered",
        "events delivered after warm-up",
        tally.delivered as f64,
    ));
    f.push(Figure::info(
        "logins",
        "users created and logged in after warm-up",
        tally.logins as f64,
    ));
    f.push(Figure::info(
        "warmup_rounds",
        "warm-up rounds",
        warm.rounds as f64,
    ));
    let series = std::mem::take(&mut *samples.lock().expect("not poisoned"));
    match (start, end) {
        (Some(start), Some(end)) => {
            let from = measured_from.as_secs_f64();
            let window: Vec<(f64, f64)> = series
                .iter()
                .filter(|(t, _)| *t >= from)
                .map(|&(t, b)| ((t - from) / 60.0, mib(b)))
                .collect();
            let peak = series.iter().map(|s| s.1).max().unwrap_or(end);
            let lowest = window.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
            let highest = window.iter().map(|p| p.1).fold(0.0, f64::max);
            let growth = (end as f64 / start as f64 - 1.0) * 100.0;
            f.push(Figure::less(
                "rss_start_mib",
                "server RSS after warm-up (start), MiB",
                mib(start),
            ));
            f.push(Figure::less(
                "rss_end_mib",
                "server RSS at the end, MiB",
                mib(end),
            ));
            f.push(Figure::less(
                "rss_peak_mib",
                "server RSS peak (warm-up included), MiB",
                mib(peak),
            ));
            f.push(Figure::info(
                "rss_min_mib",
                "server RSS min after warm-up, MiB",
                lowest,
            ));
            f.push(Figure::info(
                "rss_max_mib",
                "server RSS max after warm-up, MiB",
                highest,
            ));
            f.push(Figure::less(
                "rss_slope_mib_per_min",
                "server RSS slope after warm-up (least squares), MiB/min",
                slope(&window).unwrap_or(f64::NAN),
            ));
            f.push(Figure::less(
                "rss_growth_pct",
                "server RSS growth, end vs start, %",
                growth,
            ));
            if let (Some(sf), Some(ef)) = (start_file, end_file) {
                run.notes.push(format!(
                    "RSS start -> end: anonymous {:.1} -> {:.1} MiB, file-backed {:.1} -> {:.1} MiB \
                     ({} samples, one a second)",
                    mib(start.saturating_sub(sf)),
                    mib(end.saturating_sub(ef)),
                    mib(sf),
                    mib(ef),
                    series.len()
                ));
            }
            if growth > a.max_growth {
                run.over_budget.push(format!(
                    "server RSS grew {growth:.1}% ({:.1} -> {:.1} MiB) over {:.0?} of churn after \
                     warm-up: more than --max-growth {}%",
                    mib(start),
                    mib(end),
                    measured,
                    a.max_growth
                ));
            }
            run.rss = series;
            run.measured_from = Some(measured_from.as_secs_f64());
        }
        _ => run
            .notes
            .push("server RSS not visible: it is not a process on this machine (pass --server-pid)".into()),
    }
    if let Some(r) = churn.broken {
        run.notes.push(format!(
            "the churn stopped after round {r}, which failed or lost events (see the first failure)"
        ));
    }
    run.latency = Some(tally.latency);
    run.latency_label = "publish -> deliver";
    run.first_error = churn.first.take();
    Ok(run)
}

/// The least-squares slope of `points` (y per x); none for fewer than two distinct x.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (points.len() >= 2 && sxx > 0.0).then(|| sxy / sxx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_squares_slope() {
        assert_eq!(slope(&[]), None);
        assert_eq!(slope(&[(1.0, 5.0)]), None);
        assert_eq!(slope(&[(1.0, 5.0), (1.0, 6.0)]), None);
        let line: Vec<(f64, f64)> = (0..10).map(|x| (x as f64, 3.0 + 0.5 * x as f64)).collect();
        assert!((slope(&line).unwrap() - 0.5).abs() < 1e-12);
        // Noise around a flat line: slope near 0.
        let flat = [(0.0, 10.0), (1.0, 11.0), (2.0, 9.0), (3.0, 10.0)];
        assert!(slope(&flat).unwrap().abs() < 0.5);
    }
}
