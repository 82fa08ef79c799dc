//! The load tool, run as the real binaries at toy sizes through `activity-hub bench`
//! (which runs `activity-hub-bench` from its own folder, so these also check that hand-off): every
//! scenario against a hub it starts itself (SQLite, or the PostgreSQL under test) and the
//! bare baseline, and against a hub that is already running (`--server`). The counts it
//! reports come from what its subscribers received, so they are checked exactly.

use std::{process::Stdio, time::Duration};

use serde_json::Value;

use activity_hub::proto::user::v1::{user_service_client::UserServiceClient, ListUsersRequest, UserStatus};

use crate::{
    crash::{admin, free_port, spawn_server_on},
    helpers::{authed, Backend, TestDb},
};

struct Out {
    code: i32,
    json: Value,
    stderr: String,
}

async fn bench(args: &[&str]) -> Out {
    let tool = std::path::Path::new(env!("CARGO_BIN_EXE_activity-hub")).with_file_name("activity-hub-bench");
    assert!(
        tool.is_file(),
        "{} is missing: run the workspace's tests (`cargo test` at the top), which build it",
        tool.display()
    );
    let home = tempfile::tempdir().unwrap();
    let o = tokio::process::Command::new(env!("CARGO_BIN_EXE_activity-hub"))
        .arg("bench")
        .args(args)
        .args(["--json", "--quiet"])
        .env_remove("HUB_TOKEN")
        .env_remove("HUB_SERVER")
        .env("XDG_CONFIG_HOME", home.path())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let o = tokio::time::timeout(Duration::from_secs(120), o)
        .await
        .expect("the bench finishes")
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    Out {
        code: o.status.code().unwrap_or(-1),
        json: serde_json::from_str(&stdout).unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    }
}

fn ok(o: &Out) -> &Value {
    assert_eq!(o.code, 0, "bench failed: {}\n{}", o.stderr, o.json);
    assert_eq!(o.json["clean"], Value::Bool(true), "{}", o.json);
    &o.json["runs"]
}

fn figure(run: &Value, key: &str) -> f64 {
    run["figures"][key]
        .as_f64()
        .unwrap_or_else(|| panic!("no figure {key} in {run}"))
}

crate::dual!(fanout_delivers_every_event_to_every_subscriber);

async fn fanout_delivers_every_event_to_every_subscriber(b: Backend) {
    let db = TestDb::new(b).await;
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("fanout.svg");
    let out = dir.path().join("fanout.json");
    let o = bench(&[
        "fanout",
        "--subscribers",
        "30",
        "--events",
        "10",
        "--ack-every",
        "3",
        "--database-url",
        &db.url,
        "--baseline",
        "--plot",
        plot.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
    .await;
    let runs = ok(&o);
    for who in ["hub", "baseline"] {
        let run = &runs[who];
        assert_eq!(figure(run, "deliveries"), 300.0, "{who}: {run}");
        assert_eq!(run["latency_ms"]["count"], 300, "{who}: one latency per delivery");
        assert_eq!(run["lost"], 0);
        assert!(figure(run, "deliveries_per_sec") > 0.0);
    }
    let ratio = o.json["ratios_hub_over_baseline"]["deliveries_per_sec"]
        .as_f64()
        .unwrap();
    let expected =
        figure(&runs["hub"], "deliveries_per_sec") / figure(&runs["baseline"], "deliveries_per_sec");
    assert!((ratio - expected).abs() < 1e-9, "{ratio} vs {expected}");
    // The file holds the same report as stdout; the plot has both series.
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(written, o.json);
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.contains("<svg"), "{svg}");
    let texts: Vec<&str> = svg.lines().map(str::trim).collect();
    assert!(
        texts.contains(&"hub") && texts.contains(&"baseline"),
        "legend: {svg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_without_acks_delivers_every_event_to_everyone() {
    let o = bench(&[
        "broadcast",
        "--subscribers",
        "20",
        "--events",
        "15",
        "--ack",
        "none",
    ])
    .await;
    let runs = ok(&o);
    assert_eq!(figure(&runs["hub"], "deliveries"), 300.0);
    assert!(runs.get("baseline").is_none(), "no baseline unless asked");
    assert!(o.json["shape"]
        .as_str()
        .unwrap()
        .contains("to all of 20 subscribers"));
}

crate::dual!(publish_on_a_prefilled_store_beside_its_ceiling);

/// `--prefill` writes deliveries as the hub would have (gap-free seqs from 1, heads to
/// match: the publishes after it would collide with them otherwise), and `--ceiling`
/// writes the same publish rows to a store of its own.
async fn publish_on_a_prefilled_store_beside_its_ceiling(b: Backend) {
    let db = TestDb::new(b).await;
    let o = bench(&[
        "publish",
        "--events",
        "1500",
        "--recipients",
        "30",
        "--prefill",
        "3001",
        "--ceiling",
        "--database-url",
        &db.url,
    ])
    .await;
    let runs = ok(&o);
    assert_eq!(figure(&runs["hub"], "events"), 1500.0, "{}", o.json);
    assert_eq!(figure(&runs["ceiling"], "events"), 1500.0, "{}", o.json);
    let ratio = o.json["ratios_hub_over"]["ceiling"]["events_per_sec"]
        .as_f64()
        .unwrap();
    let expected = figure(&runs["hub"], "events_per_sec") / figure(&runs["ceiling"], "events_per_sec");
    assert!((ratio - expected).abs() < 1e-9, "{ratio} vs {expected}");
    assert!(o.json["shape"]
        .as_str()
        .unwrap()
        .contains("prefilled with 3001 deliveries"));

    // The hub's store: 3001 + 1500 deliveries over 30 recipients (and none for the
    // admin), each recipient's seqs 1..=head with no gap (merged into `inbox` or still in
    // `inbox_tail`).
    let (rows, heads, gappy, users): (i64, i64, i64, i64) = match b {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
            sqlx::query_as(STORE_SHAPE).fetch_one(&pool).await.unwrap()
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            sqlx::query_as(STORE_SHAPE).fetch_one(&pool).await.unwrap()
        }
    };
    assert_eq!((rows, heads, gappy, users), (4501, 4501, 0, 30));
}

/// Deliveries, the sum of heads, recipients whose seqs have a gap, recipients.
const STORE_SHAPE: &str = "WITH d AS (SELECT user_id, seq FROM inbox \
     UNION ALL SELECT user_id, seq FROM inbox_tail) SELECT \
     (SELECT count(*) FROM d), \
     (SELECT CAST(sum(head_seq) AS BIGINT) FROM heads), \
     (SELECT count(*) FROM (SELECT user_id FROM d GROUP BY user_id \
         HAVING max(seq) <> count(*) OR min(seq) <> 1) g), \
     (SELECT count(*) FROM heads)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_after_a_prefill_delivers_from_the_prefilled_heads() {
    // Subscribers start from the latest event: the prefilled heads. Every event of the
    // run arrives after them, none lost, none failed.
    let o = bench(&[
        "latency",
        "--subscribers",
        "7",
        "--rate",
        "300",
        "--duration",
        "1s",
        "--prefill",
        "2000",
    ])
    .await;
    let run = &ok(&o)["hub"];
    assert_eq!(figure(run, "deliveries"), 300.0, "{run}");
    assert_eq!(run["lost"], 0);
}

/// A NATS server with JetStream: this machine's on 4222, else one started from
/// `nats-server` on a free port (kept until the value drops); `None` when neither is
/// there, and the test says it was skipped.
async fn nats() -> Option<(String, Option<tokio::process::Child>, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    if tokio::net::TcpStream::connect("127.0.0.1:4222").await.is_ok() {
        return Some(("nats://127.0.0.1:4222".into(), None, dir));
    }
    let port = free_port();
    let child = tokio::process::Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.path())
        .kill_on_drop(true)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(child) = child else {
        eprintln!("skipped: no NATS on 127.0.0.1:4222 and no nats-server binary to start");
        return None;
    };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Some((format!("nats://127.0.0.1:{port}"), Some(child), dir));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nats-server did not start on port {port}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jetstream_peer_runs_the_same_shapes() {
    let Some((url, _server, _dir)) = nats().await else {
        return;
    };
    let o = bench(&[
        "publish",
        "--events",
        "700",
        "--recipients",
        "20",
        "--peer",
        "nats",
        "--nats-url",
        &url,
    ])
    .await;
    let runs = ok(&o);
    assert_eq!(figure(&runs["jetstream"], "events"), 700.0, "{}", o.json);
    assert_eq!(runs["jetstream"]["latency_ms"]["count"], 700);
    assert!(
        o.json["ratios_hub_over"]["jetstream"]["events_per_sec"]
            .as_f64()
            .unwrap()
            > 0.0
    );

    let o = bench(&[
        "fanout",
        "--subscribers",
        "10",
        "--events",
        "6",
        "--ack-every",
        "4",
        "--peer",
        "nats",
        "--nats-url",
        &url,
    ])
    .await;
    let runs = ok(&o);
    for who in ["hub", "jetstream"] {
        assert_eq!(figure(&runs[who], "deliveries"), 60.0, "{who}: {}", o.json);
        assert_eq!(runs[who]["lost"], 0);
    }
}

crate::dual!(reconnect_storm_resumes_every_subscriber_losing_nothing);

async fn reconnect_storm_resumes_every_subscriber_losing_nothing(b: Backend) {
    let db = TestDb::new(b).await;
    let o = bench(&[
        "reconnect-storm",
        "--subscribers",
        "25",
        "--events",
        "4",
        "--database-url",
        &db.url,
        "--baseline",
    ])
    .await;
    let runs = ok(&o);
    for who in ["hub", "baseline"] {
        let run = &runs[who];
        assert_eq!(run["lost"], 0, "{who}: {run}");
        // After resuming each gets the 4 it missed and the 4 published live, plus any
        // it had acked whose ack the drop overtook (counted as redelivered).
        let redelivered = run["redelivered"].as_f64().unwrap();
        assert_eq!(
            figure(run, "events_after_resume"),
            25.0 * 8.0 + redelivered,
            "{who}: {run}"
        );
        assert_eq!(
            run["latency_ms"]["count"], 25,
            "{who}: a catch-up time per subscriber"
        );
        assert!(figure(run, "caught_up_ms") >= figure(run, "reconnect_ms"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_user_counts_answered_calls() {
    let o = bench(&[
        "get-user",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--connections",
        "1",
        "--concurrency",
        "4",
        "--baseline",
    ])
    .await;
    let runs = ok(&o);
    for who in ["hub", "baseline"] {
        let run = &runs[who];
        let calls = figure(run, "requests");
        assert!(calls > 0.0, "{who}: {run}");
        assert_eq!(run["latency_ms"]["count"].as_f64().unwrap(), calls, "{who}");
        assert!(
            (figure(run, "requests_per_sec") - calls).abs() < 1e-6,
            "1s window: {run}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_commits_every_event() {
    let o = bench(&[
        "publish",
        "--events",
        "3001",
        "--streams",
        "2",
        "--recipients",
        "7",
    ])
    .await;
    let runs = ok(&o);
    assert_eq!(figure(&runs["hub"], "events"), 3001.0);
    assert_eq!(runs["hub"]["latency_ms"]["count"], 3001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_delivers_at_the_asked_rate() {
    let o = bench(&[
        "latency",
        "--subscribers",
        "7",
        "--rate",
        "200",
        "--duration",
        "1s",
    ])
    .await;
    let run = &ok(&o)["hub"];
    assert_eq!(figure(run, "deliveries"), 200.0, "{run}");
    assert_eq!(run["latency_ms"]["count"], 200);
    let rate = figure(run, "publish_rate");
    assert!(rate > 100.0 && rate < 400.0, "paced near 200/s: {rate}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_reports_server_memory_per_subscription() {
    let o = bench(&["idle", "--subscribers", "300", "--duration", "200ms"]).await;
    let run = &ok(&o)["hub"];
    assert_eq!(figure(run, "open"), 300.0);
    assert!(figure(run, "rss_bytes_per_subscription") > 0.0, "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_churns_losing_nothing_and_reports_server_memory() {
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("soak.svg");
    let o = bench(&[
        "soak",
        "--subscribers",
        "12",
        "--events",
        "30",
        "--logins",
        "1",
        "--warmup",
        "300ms",
        "--duration",
        "2s",
        "--rounds-per-minute",
        "0",
        // No memory verdict in a test: only that the figures are there and add up.
        "--max-growth",
        "100000",
        // Cheap hashing: a debug build takes seconds per hash at the real costs.
        "--hub-arg=--password-hash-memory-kib=64",
        "--hub-arg=--password-hash-iterations=1",
        "--plot",
        plot.to_str().unwrap(),
    ])
    .await;
    let run = &ok(&o)["hub"];
    assert_eq!(run["lost"], 0, "{run}");
    let rounds = figure(run, "rounds");
    assert!(rounds >= 1.0, "{run}");
    // Every round publishes 30 events and each of them reaches its subscriber.
    assert_eq!(figure(run, "events_published"), rounds * 30.0, "{run}");
    assert_eq!(figure(run, "events_delivered"), rounds * 30.0, "{run}");
    assert_eq!(figure(run, "logins"), rounds, "{run}");
    assert_eq!(run["latency_ms"]["count"].as_f64().unwrap(), rounds * 30.0);
    assert!(figure(run, "warmup_rounds") >= 1.0, "{run}");

    let (start, end) = (figure(run, "rss_start_mib"), figure(run, "rss_end_mib"));
    let (low, high) = (figure(run, "rss_min_mib"), figure(run, "rss_max_mib"));
    assert!(start > 1.0 && end > 1.0, "a server has megabytes: {run}");
    assert!(
        low <= start && start <= high && low <= end && end <= high,
        "{run}"
    );
    assert!(figure(run, "rss_peak_mib") >= high, "{run}");
    let growth = figure(run, "rss_growth_pct");
    assert!((growth - (end / start - 1.0) * 100.0).abs() < 0.01, "{run}");
    assert!(figure(run, "rss_slope_mib_per_min").is_finite(), "{run}");
    let series = run["rss_mib_over_time"].as_array().unwrap();
    assert!(series.len() >= 2, "start and end at least: {run}");
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.contains("server RSS"), "{svg}");
}

/// How many active users the server has.
async fn active_users(ch: &tonic::transport::Channel, token: &str) -> u32 {
    UserServiceClient::new(ch.clone())
        .list_users(authed(
            ListUsersRequest {
                status: UserStatus::Active as i32,
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .total
}

/// `logins` creates its users, logs every one in at once, and with `--memory-settle`
/// reports the server's RSS before, at the end and after settling, against the bound
/// `--memory-settle-within` set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_logs_everyone_in_at_once_and_reports_memory_settling() {
    let o = bench(&[
        "logins",
        "--logins",
        "6",
        "--memory-settle",
        "20s",
        "--memory-settle-within",
        "32",
        // Cheap hashing: a debug build takes seconds per hash at the real costs.
        "--hub-arg=--password-hash-memory-kib=64",
        "--hub-arg=--password-hash-iterations=1",
    ])
    .await;
    let run = &ok(&o)["hub"];
    assert_eq!(figure(run, "logins"), 6.0, "{run}");
    assert_eq!(run["latency_ms"]["count"].as_f64().unwrap(), 6.0, "{run}");
    assert_eq!(figure(run, "rss_settle_within_mib"), 32.0, "{run}");
    assert!(
        figure(run, "rss_before_mib") > 1.0,
        "a server has megabytes: {run}"
    );
    assert!(
        figure(run, "rss_hwm_mib") >= figure(run, "rss_before_mib"),
        "the peak is at least where it began: {run}"
    );
    assert!(figure(run, "rss_settle_secs").is_finite(), "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_measures_a_running_server_and_finds_its_process() {
    let db = TestDb::new(Backend::Sqlite).await;
    let port = free_port();
    let (_server, ch) = spawn_server_on(port, &db, &[], Stdio::inherit()).await;
    let (token, _) = admin(&ch).await;
    let url = format!("http://127.0.0.1:{port}");
    let o = bench(&[
        "idle",
        "--server",
        &url,
        "--token",
        &token,
        "--subscribers",
        "200",
        "--duration",
        "200ms",
    ])
    .await;
    let run = &ok(&o)["hub"];
    assert_eq!(figure(run, "open"), 200.0);
    // The server's process was found from its listening port.
    assert!(figure(run, "rss_bytes") > 0.0, "{run}");

    // Its users are deleted afterwards unless asked to keep them.
    let active = || active_users(&ch, &token);
    assert_eq!(active().await, 1, "only the admin is left");
    let o = bench(&[
        "publish",
        "--server",
        &url,
        "--token",
        &token,
        "--events",
        "10",
        "--recipients",
        "3",
        "--keep-users",
    ])
    .await;
    ok(&o);
    assert_eq!(active().await, 4, "--keep-users keeps them");

    // Without a token it says how to give one.
    let o = bench(&["get-user", "--server", &url]).await;
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("--server needs an admin's token"),
        "{}",
        o.stderr
    );
}

/// The load tool takes its server from HUB_SERVER (as `HOST:PORT`, like the client
/// commands), and Ctrl-C (SIGINT) ends the run with a partial report marked as such,
/// exit code 130, and the users it created removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_reports_what_ran_and_removes_the_users_from_hub_server() {
    let db = TestDb::new(Backend::Sqlite).await;
    let port = free_port();
    let (_server, ch) = spawn_server_on(port, &db, &[], Stdio::inherit()).await;
    let (token, _) = admin(&ch).await;
    let active = || active_users(&ch, &token);
    let tool = std::path::Path::new(env!("CARGO_BIN_EXE_activity-hub")).with_file_name("activity-hub-bench");
    let home = tempfile::tempdir().unwrap();
    let child = tokio::process::Command::new(tool)
        .args([
            "get-user",
            "--duration",
            "10m",
            "--warmup",
            "0s",
            "--json",
            "--quiet",
        ])
        .env("HUB_SERVER", format!("127.0.0.1:{port}"))
        .env("HUB_TOKEN", &token)
        .env("XDG_CONFIG_HOME", home.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the load tool runs");
    // Its users appear once it is set up; then let it measure for a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while active().await < 101 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bench created its users"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = child.id().expect("running").to_string();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let o = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("it winds down after Ctrl-C")
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{stderr}");
    let report: Value = serde_json::from_slice(&o.stdout).expect("a JSON report");
    assert_eq!(report["interrupted"], true);
    assert!(figure(&report["runs"]["hub"], "requests") > 0.0, "{report}");
    assert!(
        figure(&report["runs"]["hub"], "requests_per_sec") > 0.0,
        "{report}"
    );
    assert_eq!(report["runs"]["hub"]["failed"], 0, "{report}");
    assert_eq!(active().await, 1, "the bench's users were removed");
}

#[tokio::test]
async fn bad_flags_are_refused_naming_the_flag() {
    for (args, needle) in [
        (&["latency", "--rate", "0"][..], "--rate must be at least 1"),
        (
            &["fanout", "--subscribers", "0"][..],
            "--subscribers must be at least 1",
        ),
        (
            &["publish", "--payload-size", "4"][..],
            "--payload-size must be at least 8",
        ),
        (
            &["publish", "--server", "https://hub.example:443"][..],
            "plaintext",
        ),
        (&["soak", "--durable", "101"][..], "--durable is a percentage"),
        (&["soak", "--baseline"][..], "soak has no --baseline"),
        (&["logins", "--logins", "0"][..], "--logins must be at least 1"),
    ] {
        let o = bench(args).await;
        assert_eq!(o.code, 2, "{args:?}: {}", o.stderr);
        assert!(o.stderr.contains(needle), "{args:?}: {}", o.stderr);
    }
}
