//! The traffic shapes. Each runs against one [`Target`] and returns a [`Run`]: figures,
//! a latency histogram (microseconds) and what went wrong (failed calls, lost events).
//!
//! Publish -> deliver latency is measured inside this process: the first 8 bytes of each
//! payload carry the time the event was *meant* to be sent (microseconds since the run's
//! base instant), so a publisher that falls behind its schedule does not hide the delay
//! (no coordinated omission).

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use tokio::{sync::mpsc, task::JoinSet};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{transport::Channel, Streaming};

use super::{
    report::{Figure, Report, Run},
    target::{Auth, Kind, Target},
    Acks, BenchArgs, Scenario,
};
use activity_hub_client::{
    proto::{
        activity::v1::{
            activity_service_client::ActivityServiceClient, subscribe_request, subscribe_response, Ack,
            AckMode, PublishRequest, Start, StartFrom, SubscribeRequest, SubscribeResponse, Subscribed,
        },
        user::v1::{get_user_request::Identifier, user_service_client::UserServiceClient, GetUserRequest},
    },
    OpenStream,
};

mod broadcast;
mod common;
mod fanout;
mod get_user;
mod idle;
mod latency;
mod logins;
mod publish;
mod reconnect_storm;
mod soak;

use crate::ui::Ui;
use common::*;
pub(crate) use common::{
    delivery_figures, histogram_of, join_all, latency_figures, per_sec, stamp_of, stamped, Pace,
};
use publish::spawn_publishers;

/// Most recipients of one publish (the hub's default `--max-recipients`).
const RECIPIENTS_PER_PUBLISH: usize = 10_000;
/// Subscriptions opened at once while setting up (a storm opens all at once).
const OPEN_BURST: usize = 256;

/// Runs the chosen scenario against the hub and, with `--baseline`, the baseline.
pub(crate) async fn run(a: &BenchArgs) -> Result<Report, String> {
    let mut report = Report::new(a.scenario, shape(a), settings(a));
    let kinds = [Kind::Hub]
        .into_iter()
        .chain(a.baseline.then_some(Kind::Baseline))
        .chain(a.ceiling.then_some(Kind::Ceiling))
        .chain(a.peer.map(|_| Kind::Nats));
    for kind in kinds {
        // After Ctrl-C, only what already ran is reported.
        if crate::stop::requested() {
            break;
        }
        let ui = Ui {
            quiet: a.quiet,
            who: kind.name(),
        };
        ui.say(&format!("starting: {}", report.shape));
        let run = match kind {
            Kind::Ceiling => ceiling(a, &ui).await.map_err(|e| format!("ceiling: {e}"))?,
            Kind::Nats => crate::nats::run(a, &ui)
                .await
                .map_err(|e| format!("jetstream: {e}"))?,
            Kind::Hub | Kind::Baseline => served(kind, a, &ui).await?,
        };
        report.runs.push((kind, run));
    }
    Ok(report)
}

/// The scenario against a server: the hub, or the bare baseline.
async fn served(kind: Kind, a: &BenchArgs, ui: &Ui) -> Result<Run, String> {
    let t = Target::start(kind, a).await?;
    let rss_before = t.rss_bytes();
    let result = match a.scenario {
        Scenario::GetUser => get_user::get_user(&t, a, ui).await,
        Scenario::Publish => publish::publish(&t, a, ui).await,
        Scenario::Fanout => fanout::fanout(&t, a, ui).await,
        Scenario::Broadcast => broadcast::broadcast(&t, a, ui).await,
        Scenario::Latency => latency::latency(&t, a, ui).await,
        Scenario::Idle => idle::idle(&t, a, ui).await,
        Scenario::ReconnectStorm => reconnect_storm::reconnect_storm(&t, a, ui).await,
        Scenario::Soak => soak::soak(&t, a, ui).await,
        Scenario::Logins => logins::logins(&t, a, ui).await,
        Scenario::ServeBaseline => unreachable!("served before any scenario runs"),
    };
    let result = match (result, rss_before) {
        (Ok(mut run), Some(before)) if !a.memory_settle.is_zero() => {
            settle(&t, &mut run, before, a, ui).await;
            Ok(run)
        }
        (r, _) => r,
    };
    if !t.started_here() && !a.keep_users {
        ui.say("deleting the users the bench created (--keep-users keeps them)");
        match t.remove_users().await {
            Ok(0) => {}
            Ok(n) => ui.say(&format!("{n} bench users could not be deleted")),
            Err(e) => ui.say(&format!("could not delete the bench users: {e}")),
        }
    }
    result.map_err(|e| {
        let log = t.log_tail();
        if log.is_empty() {
            format!("{}: {e}", kind.name())
        } else {
            format!("{}: {e}\nits last log lines:\n{log}", kind.name())
        }
    })
}

/// `--memory-settle`: samples the server's RSS every 250 ms for up to `limit` after the
/// scenario; adds its RSS before, its peak so far, at the end of the scenario and at the
/// end of the watch, and how long it took to come back within `--memory-settle-within`
/// of where it began (a note and `over_budget` when it never did).
async fn settle(t: &Target, run: &mut Run, before: u64, a: &BenchArgs, ui: &Ui) {
    let limit = a.memory_settle;
    let within = a.memory_settle_within << 20;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let end = t.rss_bytes().unwrap_or(0);
    ui.say(&format!(
        "watching server RSS for up to {limit:?}: {:.1} MiB before, {:.1} MiB now",
        mib(before),
        mib(end)
    ));
    let start = Instant::now();
    let mut now = end;
    let mut settled = None;
    loop {
        if now <= before + within {
            settled = Some(start.elapsed());
            break;
        }
        if start.elapsed() >= limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        now = t.rss_bytes().unwrap_or(now);
    }
    run.figures.push(Figure::info(
        "rss_before_mib",
        "server RSS before, MiB",
        mib(before),
    ));
    run.figures.push(Figure::info(
        "rss_hwm_mib",
        "server RSS peak since it started (VmHWM), MiB",
        mib(t.peak_rss_bytes().unwrap_or(0)),
    ));
    run.figures.push(Figure::info(
        "rss_end_mib",
        "server RSS at the end, MiB",
        mib(end),
    ));
    run.figures.push(Figure::info(
        "rss_settled_mib",
        "server RSS after settling, MiB",
        mib(now),
    ));
    run.figures.push(Figure::info(
        "rss_settle_within_mib",
        "RSS must come back within, MiB",
        a.memory_settle_within as f64,
    ));
    let secs = settled.map_or(f64::NAN, |d| d.as_secs_f64());
    run.figures.push(Figure::less(
        "rss_settle_secs",
        "seconds until RSS came back within that of before",
        secs,
    ));
    if settled.is_none() {
        run.over_budget.push(format!(
            "server RSS still {:.1} MiB above its {:.1} MiB before the scenario after {limit:?}",
            mib(now.saturating_sub(before)),
            mib(before)
        ));
    }
}

/// `--prefill`: the started hub's store loaded with deliveries for `users` (nothing for
/// the baseline, which keeps no store).
pub(super) async fn prefill(t: &Target, a: &BenchArgs, users: &[u64], ui: &Ui) -> Result<(), String> {
    if a.prefill == 0 || t.kind != Kind::Hub {
        return Ok(());
    }
    let url = t
        .database_url()
        .ok_or("--prefill writes into the store of a hub this run started")?;
    prefill_store(url, users, a, ui).await
}

/// `--prefill` deliveries for `users` into the store at `url`, with a progress bar.
async fn prefill_store(url: &str, users: &[u64], a: &BenchArgs, ui: &Ui) -> Result<(), String> {
    if a.prefill == 0 {
        return Ok(());
    }
    let done = Arc::new(AtomicU64::new(0));
    let bar = ui.count("prefilling the store", a.prefill, done.clone());
    crate::store::prefill::prefill(url, users, a.prefill, a.payload_size, done).await?;
    bar.done();
    Ok(())
}

/// `--ceiling`: the publish scenario's rows written straight to a fresh store of the
/// same kind (prefilled the same way first).
async fn ceiling(a: &BenchArgs, ui: &Ui) -> Result<Run, String> {
    use crate::store::ceiling::{write, CeilingStore, Shape};
    let tag = format!("{:08x}", rand::random::<u32>());
    let dir = std::env::temp_dir().join(format!("activity-hub-ceiling-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let store = CeilingStore::create(&dir, a.database_url.as_deref(), &tag).await?;
    let recipients = a.recipients as u64;
    let users: Vec<u64> = (1..=recipients).collect();
    let result = async {
        prefill_store(&store.url, &users, a, ui).await?;
        let total = a.events.unwrap_or(200_000);
        let batch = (a.streams * a.inflight) as u64;
        let done = Arc::new(AtomicU64::new(0));
        let bar = ui.count("writing", total, done.clone());
        let shape = Shape {
            recipients,
            total,
            batch,
            payload_size: a.payload_size,
            // The started hub's writer cache (half its default --db-cache-mib).
            cache_mib: 32,
            fsync_each_commit: a.durability == crate::args::Durability::PowerLoss,
        };
        let secs = write(&store, &shape, done.clone()).await?;
        bar.done();
        let n = done.load(Ordering::Relaxed);
        let mut run = Run::default();
        run.figures.push(Figure::more(
            "events_per_sec",
            "events/s committed",
            per_sec(n, secs),
        ));
        run.figures
            .push(Figure::info("events", "events committed", n as f64));
        run.notes
            .push(format!("batches of {batch} events, one transaction each"));
        Ok::<_, String>(run)
    }
    .await;
    store.drop_schema(a.database_url.as_deref()).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Users created and logged in: per soak round, or all at once (`logins`).
fn logins(a: &BenchArgs) -> usize {
    a.logins.unwrap_or(match a.scenario {
        Scenario::Logins => 50,
        _ => 2,
    })
}

fn subscribers(a: &BenchArgs) -> usize {
    a.subscribers.unwrap_or(match a.scenario {
        Scenario::Idle => 10_000,
        Scenario::Soak => 200,
        _ => 1_000,
    })
}

/// ", store prefilled with N deliveries" when it was.
fn prefilled(a: &BenchArgs) -> String {
    if a.prefill == 0 {
        String::new()
    } else {
        format!(", store prefilled with {} deliveries", a.prefill)
    }
}

/// The flags that shaped the run, for the JSON report.
fn settings(a: &BenchArgs) -> serde_json::Value {
    serde_json::json!({
        "server": a.server.as_deref().unwrap_or("started"),
        // The kind of store only: a URL may carry a password.
        "store": match (&a.server, &a.database_url) {
            (Some(_), _) => "unknown",
            (None, None) => "temporary sqlite",
            (None, Some(url)) if url.starts_with("postgres") => "postgres",
            (None, Some(_)) => "sqlite",
        },
        "hub_args": a.hub_args,
        "connections": a.connections,
        "concurrency": a.concurrency,
        "streams": a.streams,
        "inflight": a.inflight,
        "streams_per_connection": a.streams_per_connection,
        "subscribers": subscribers(a),
        "events": a.events,
        "recipients": a.recipients,
        "prefill": a.prefill,
        "durability": format!("{:?}", a.durability),
        "ceiling": a.ceiling,
        "peer": a.peer.map(|p| format!("{p:?}").to_lowercase()),
        "rate": a.rate,
        "duration_ms": a.duration.as_millis() as u64,
        "warmup_ms": a.warmup.as_millis() as u64,
        "payload_size": a.payload_size,
        "ack": format!("{:?}", a.ack).to_lowercase(),
        "ack_every": a.ack_every,
        "baseline": a.baseline,
        "durable_pct": a.durable,
        "logins": logins(a),
        "rounds_per_minute": a.rounds_per_minute,
        "max_growth_pct": a.max_growth,
        "memory_settle_ms": a.memory_settle.as_millis() as u64,
        "memory_settle_within_mib": a.memory_settle_within,
    })
}

/// One line saying what traffic the run makes.
fn shape(a: &BenchArgs) -> String {
    let n = subscribers(a);
    let ack = match a.ack {
        Acks::Explicit => format!("explicit acks every {}", a.ack_every),
        Acks::None => "ACK_MODE_NONE".into(),
    };
    match a.scenario {
        Scenario::GetUser => format!(
            "GetUser by id with a bearer token, {} connections x {} in flight, {:?} after {:?} warm-up",
            a.connections.unwrap_or(4),
            a.concurrency,
            a.duration,
            a.warmup
        ),
        Scenario::Publish => format!(
            "{} events over {} PublishStream streams ({} in flight each), one recipient each, round robin over {}, {} B payloads{}",
            a.events.unwrap_or(200_000),
            a.streams,
            a.inflight,
            a.recipients,
            a.payload_size,
            prefilled(a)
        ),
        Scenario::Fanout => format!(
            "per-user fan-out: {n} subscribers, each its own recipient, {} events each ({} in all, one recipient per event, round robin over {} PublishStream streams x {} in flight), {ack}, {} B payloads{}",
            a.events.unwrap_or(200),
            n as u64 * a.events.unwrap_or(200),
            a.streams,
            a.inflight,
            a.payload_size,
            prefilled(a)
        ),
        Scenario::Broadcast => format!(
            "{} events each to all of {n} subscribers, {ack}, {} B payloads",
            a.events.unwrap_or(200),
            a.payload_size
        ),
        Scenario::Latency => format!(
            "{} events/s for {:?}, each to one of {n} subscribers (round robin), explicit acks{}",
            a.rate,
            a.duration,
            prefilled(a)
        ),
        Scenario::Idle => format!("{n} idle subscriptions held for {:?}", a.duration),
        Scenario::ReconnectStorm => format!(
            "{n} durable subscribers get {e} events, drop at once, miss {e}, resume at once while {e} more are published",
            e = a.events.unwrap_or(20)
        ),
        Scenario::Soak => soak::shape(a, n, &ack),
        Scenario::Logins => format!(
            "{} users created, then all logged in at once (Argon2id at the hub's costs)",
            logins(a)
        ),
        Scenario::ServeBaseline => String::new(),
    }
}
