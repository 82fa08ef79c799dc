//! `/metrics`: the hub's Prometheus series, scraped over HTTP from the real binary (the
//! recorder is process-global, so it is tested in a child process).

use std::time::Duration;

use activity_hub::proto::activity::v1::Start;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    process::Child,
};
use tonic::transport::Channel;

use crate::{
    activity::dsl::{event_req, publish_stream, Sub},
    crash::{admin, free_port, spawn_server_with},
    helpers::{Backend, TestDb},
};

/// `GET path` on the metrics listener: the whole HTTP/1.1 response, head and body.
async fn get(port: u16, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("metrics listener");
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).await.unwrap();
    response
}

/// The real binary on a fresh SQLite store with `extra` flags, serving metrics on a port
/// of its own: the store (kept for the test's length), the process, a channel, the
/// metrics port.
async fn hub_with_metrics(extra: &[&str]) -> (TestDb, Child, Channel, u16) {
    let db = TestDb::new(Backend::Sqlite).await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut flags = vec!["--metrics-listen", &listen];
    flags.extend_from_slice(extra);
    let (child, ch) = spawn_server_with(&db, &flags).await;
    (db, child, ch, port)
}

async fn scrape(port: u16) -> String {
    let body = get(port, "/metrics").await;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    body
}

/// The value of the series whose line starts with `prefix` (name plus labels).
fn value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_metrics_count_real_traffic() {
    let (_db, _child, ch, port) = hub_with_metrics(&[]).await;
    let (token, me) = admin(&ch).await;
    let mut sub = Sub::open(&ch, &token, Start::default()).await.unwrap();
    let reqs = (0..3).map(|i| event_req(&[me], "t", format!("{i}"))).collect();
    publish_stream(&ch, &token, reqs).await;
    let mut last = 0;
    for _ in 0..3 {
        last = sub.event().await.seq;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(port).await;
        let ok = value(&text, "hub_events_published_total") == Some(3.0)
            && value(&text, "hub_deliveries_committed_total") == Some(3.0)
            && value(&text, "hub_events_delivered_total") == Some(3.0)
            && value(&text, "hub_subscriptions_active") == Some(1.0)
            // Delivered, not yet acknowledged.
            && value(&text, "hub_subscriber_lag_events") == Some(3.0)
            && value(&text, "hub_persistence_commit_seconds_count").is_some_and(|n| n >= 1.0)
            && text.contains("hub_persistence_batch_size_bucket{le=\"8192\"}");
        if ok {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics never matched:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sub.ack(last).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while value(&scrape(port).await, "hub_subscriber_lag_events") != Some(0.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "lag did not return to 0 after the ack"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of `name{...}` whose labels include every pair in `labels`.
fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let open = format!("{name}{{");
    text.lines()
        .filter(|l| l.starts_with(&open))
        .find(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The shipped Grafana dashboard's query expressions.
fn dashboard_exprs() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards/activity-hub.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard file"))
            .expect("dashboard is valid JSON");
    fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                        _ => exprs(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    exprs(&json, &mut all);
    assert!(all.len() >= 10, "the dashboard has queries");
    all
}

/// The hub's, the RPC layer's and the process's metric names in `text` (query
/// expressions or a rules file), histogram suffixes taken off.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if ["grpc_server_", "hub_", "process_"]
            .iter()
            .any(|p| word.starts_with(p))
        {
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| word.strip_suffix(s))
                .unwrap_or(word);
            names.insert(base.to_string());
        }
    }
    names
}

/// Metric names referenced by the shipped Grafana dashboard's queries.
fn dashboard_metrics() -> std::collections::BTreeSet<String> {
    metric_names(&dashboard_exprs().join("\n"))
}

/// Metric names the shipped alerting rules query.
fn alert_metrics() -> std::collections::BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards/alerts.yml");
    let names = metric_names(&std::fs::read_to_string(path).expect("alert rules file"));
    assert!(
        names.len() >= 4,
        "the alert rules query the hub's series: {names:?}"
    );
    names
}

/// Per-RPC metrics from the tower layer, counted after real calls (unary OK and error,
/// a bidi stream, a rate-limited Login), and the dashboard checked against the scrape:
/// every series it queries exists, and every hub/grpc series is on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_metrics_count_real_calls_and_the_dashboard_covers_them() {
    use activity_hub::proto::{
        auth::v1::{auth_service_client::AuthServiceClient, login_request::Identifier, LoginRequest},
        user::v1::user_service_client::UserServiceClient,
    };
    let (_db, _child, ch, port) =
        hub_with_metrics(&["--login-rate-limit", "1", "--login-rate-burst", "2"]).await;
    let (token, me) = admin(&ch).await;
    let mut users = UserServiceClient::new(ch.clone());
    for _ in 0..3 {
        users
            .get_user(crate::helpers::authed(crate::helpers::by_id(me), &token))
            .await
            .unwrap();
    }
    let missing = users
        .get_user(crate::helpers::authed(crate::helpers::by_id(999_999), &token))
        .await;
    assert_eq!(missing.unwrap_err().code(), tonic::Code::NotFound);
    let reqs = (0..3).map(|i| event_req(&[me], "t", format!("{i}"))).collect();
    publish_stream(&ch, &token, reqs).await;
    let wrong = || LoginRequest {
        identifier: Some(Identifier::Email(crate::helpers::ADMIN_EMAIL.into())),
        password: "wrong-password".into(),
    };
    let mut auth = AuthServiceClient::new(ch.clone());
    // Burst 2: admin() used one token, this wrong guess the other; the next is limited.
    assert_eq!(
        auth.login(wrong()).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    assert_eq!(
        auth.login(wrong()).await.unwrap_err().code(),
        tonic::Code::ResourceExhausted
    );

    let get = [
        ("grpc_service", "user.v1.UserService"),
        ("grpc_method", "GetUser"),
        ("grpc_type", "unary"),
    ];
    let with = |extra: (&'static str, &'static str)| {
        let mut v = get.to_vec();
        v.push(extra);
        v
    };
    let publish = [
        ("grpc_service", "activity.v1.ActivityService"),
        ("grpc_method", "PublishStream"),
        ("grpc_type", "bidi_stream"),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = scrape(port).await;
        let ok = series(&text, "grpc_server_started_total", &get) == Some(4.0)
            && series(&text, "grpc_server_handled_total", &with(("grpc_code", "OK"))) == Some(3.0)
            && series(
                &text,
                "grpc_server_handled_total",
                &with(("grpc_code", "NotFound")),
            ) == Some(1.0)
            && series(&text, "grpc_server_msg_received_total", &get) == Some(4.0)
            && series(&text, "grpc_server_msg_sent_total", &get) == Some(3.0)
            && series(&text, "grpc_server_handling_seconds_count", &get) == Some(4.0)
            && series(&text, "grpc_server_msg_received_total", &publish) == Some(3.0)
            && series(&text, "grpc_server_msg_sent_total", &publish) == Some(3.0)
            && series(
                &text,
                "grpc_server_handled_total",
                &[("grpc_method", "PublishStream"), ("grpc_code", "OK")],
            ) == Some(1.0)
            && series(
                &text,
                "grpc_server_handled_total",
                &[("grpc_method", "Login"), ("grpc_code", "ResourceExhausted")],
            ) == Some(1.0)
            && series(&text, "hub_rate_limited_total", &[("limit", "login")]) == Some(1.0)
            && series(&text, "grpc_server_handling_seconds_bucket", &with(("le", "60"))) == Some(4.0);
        if ok {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics never matched:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let on_dashboard = dashboard_metrics();
    for name in &on_dashboard {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "the dashboard queries {name}, which the server does not export"
        );
    }
    for name in alert_metrics() {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "dashboards/alerts.yml queries {name}, which the server does not export"
        );
    }
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("# TYPE ").and_then(|l| l.split(' ').next()) {
            if name.starts_with("hub_") || name.starts_with("grpc_server_") {
                assert!(
                    on_dashboard.contains(name),
                    "{name} is exported but not on the dashboard"
                );
            }
        }
    }
}

/// The metrics listener answers `/metrics` with the Prometheus text format and nothing
/// else: any other path is 404, so probes and scanners do not render the registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_at_slash_metrics_only() {
    let (_db, _child, _ch, port) = hub_with_metrics(&[]).await;
    let ok = scrape(port).await;
    assert!(
        ok.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "the Prometheus text format's content type:\n{ok}"
    );
    assert!(ok.contains("# TYPE hub_events_published_total counter"), "{ok}");
    for path in [
        "/",
        "/health",
        "/metrics/",
        "/metrics/x",
        "/favicon.ico",
        "/metricsx",
    ] {
        let res = get(port, path).await;
        assert!(
            res.starts_with("HTTP/1.1 404"),
            "GET {path} must be 404, got:\n{res}"
        );
        assert!(!res.contains("# TYPE"), "GET {path} rendered metrics:\n{res}");
    }
}

/// A scrape carries the process's own series (CPU, memory, descriptors, threads, start
/// time) and `activity_hub_build_info` naming the running version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_metrics_and_build_info_are_scraped() {
    let (_db, _child, _ch, port) = hub_with_metrics(&["--node-id", "hub-7.test"]).await;
    let text = scrape(port).await;
    for (name, at_least) in [
        ("process_cpu_seconds_total", 0.0),
        ("process_resident_memory_bytes", 1_000_000.0),
        ("process_virtual_memory_bytes", 1_000_000.0),
        ("process_open_fds", 3.0),
        ("process_max_fds", 3.0),
        ("process_threads", 2.0),
        ("process_start_time_seconds", 1_700_000_000.0),
    ] {
        let v = value(&text, name).unwrap_or_else(|| panic!("{name} is not in the scrape:\n{text}"));
        assert!(v >= at_least, "{name} = {v}, expected at least {at_least}");
    }
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        series(&text, "activity_hub_build_info", &[("version", version)]),
        Some(1.0),
        "activity_hub_build_info{{version=\"{version}\",...}} 1 is not in the scrape:\n{text}"
    );
    assert!(text.contains("activity_hub_build_info{") && text.contains("profile=\""));
    assert_eq!(
        series(&text, "activity_hub_build_info", &[("node", "hub-7.test")]),
        Some(1.0),
        "--node-id names the server in its metrics:\n{text}"
    );
}

/// A client that drops its own Subscribe stream ends the call as `ClientCanceled`: not a
/// failure in `grpc_server_handled_total`, and left out of the dashboard's failure panel
/// and of the alert's error ratio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_dropping_its_stream_is_not_a_failed_call() {
    let (_db, _child, ch, port) = hub_with_metrics(&[]).await;
    let (token, _) = admin(&ch).await;
    let sub = Sub::open(&ch, &token, Start::default()).await.unwrap();
    // Dropping the response stream resets the HTTP/2 stream (CANCEL) before the request
    // side is closed: the client walked away, as an app closing a screen does.
    let Sub { tx, rx, .. } = sub;
    drop(rx);
    drop(tx);
    let subscribe = |code: &'static str| {
        [
            ("grpc_service", "activity.v1.ActivityService"),
            ("grpc_method", "Subscribe"),
            ("grpc_code", code),
        ]
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = scrape(port).await;
        if series(&text, "grpc_server_handled_total", &subscribe("ClientCanceled")) == Some(1.0) {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dropped Subscribe was never counted as ClientCanceled:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let failures: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("grpc_server_handled_total{") && l.contains("grpc_method=\"Subscribe\""))
        .filter(|l| !l.contains("grpc_code=\"OK\"") && !l.contains("grpc_code=\"ClientCanceled\""))
        .collect();
    assert!(
        failures.is_empty(),
        "a stream the client dropped counted as a failed call: {failures:?}"
    );
    // What the dashboard and the alert count as failures leaves the outcome out.
    let failed_panel = dashboard_exprs()
        .into_iter()
        .find(|e| e.contains("grpc_server_handled_total") && e.contains("grpc_code!"))
        .expect("the dashboard has a failed-calls query");
    assert!(
        failed_panel.contains(r#"grpc_code!~"OK|ClientCanceled""#),
        "the failed-calls panel must leave ClientCanceled out: {failed_panel}"
    );
    let alerts =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards/alerts.yml")).unwrap();
    assert!(
        alerts.contains(r#"grpc_server_handled_total{grpc_code!="ClientCanceled"}"#),
        "the error ratio's total must leave ClientCanceled out"
    );
}
