//! `/metrics`: the hub's Prometheus series, scraped over HTTP from the real binary (the
//! recorder is process-global, so it is tested in a child process).

use std::time::Duration;

use activity_hub::proto::activity::v1::Start;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    activity::{event_req, publish_stream, Sub},
    crash::{admin, free_port, spawn_server_with},
    helpers::{Backend, TestDb},
};

async fn scrape(port: u16) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("metrics listener");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
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
    let db = TestDb::new(Backend::Sqlite).await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (_child, ch) = spawn_server_with(&db, &["--metrics-listen", &listen]).await;
    let (token, me) = admin(&ch).await;
    let mut sub = Sub::open(&ch, &token, Start::default()).await.unwrap();
    let reqs = (0..3).map(|i| event_req(&[me], "t", format!("{i}"))).collect();
    publish_stream(&ch, &token, reqs).await;
    for _ in 0..3 {
        sub.event().await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(port).await;
        let ok = value(&text, "hub_events_published_total") == Some(3.0)
            && value(&text, "hub_deliveries_committed_total") == Some(3.0)
            && value(&text, "hub_events_delivered_total") == Some(3.0)
            && value(&text, "hub_subscriptions_active") == Some(1.0)
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
}
