//! The Prometheus endpoint (`--metrics-listen`): installs the process-wide recorder with
//! the hub's histogram buckets, adds the process metrics and `activity_hub_build_info`,
//! and serves the text format at `/metrics` only (every other path is 404, so a probe or
//! a scanner does not render the whole registry).
//!
//! What the series mean is owned where they are recorded: [`crate::rpc`] (per call) and
//! [`crate::hub::metrics`] (the actors). This module owns only how they leave the
//! process.

use std::{convert::Infallible, net::SocketAddr};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// The build's identity as a gauge that is always 1: `version`, `target`, `profile`.
pub const BUILD_INFO: &str = "activity_hub_build_info";

/// The one path that serves metrics.
pub const PATH: &str = "/metrics";

/// The Prometheus text exposition format's content type.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Installs the recorder and serves it on `addr`; returns the bound address (port 0
/// picks one). Call once per process, inside the runtime; errors name the flag.
pub async fn serve(addr: SocketAddr, node: &str) -> Result<SocketAddr, String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("--metrics-listen {addr}: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("--metrics-listen {addr}: {e}"))?;
    let handle = install()?;
    let process = metrics_process::Collector::default();
    process.describe();
    build_info(node);
    let scrape = move || {
        process.collect();
        handle.run_upkeep();
        handle.render()
    };
    let scrape = std::sync::Arc::new(scrape);
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "metrics listener: accept failed");
                    continue;
                }
            };
            let scrape = scrape.clone();
            let service = service_fn(move |req| answer(req, scrape.clone()));
            tokio::spawn(async move {
                let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "metrics listener: connection failed");
                }
            });
        }
    });
    Ok(bound)
}

/// The recorder, with explicit buckets for the histograms that have them.
fn install() -> Result<PrometheusHandle, String> {
    use crate::{hub::metrics as hub, rpc};
    let buckets = |e| format!("metrics buckets: {e}");
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(hub::BATCH_SIZE.into()), hub::BATCH_BUCKETS)
        .map_err(buckets)?
        .set_buckets_for_metric(Matcher::Full(hub::COMMIT_SECONDS.into()), hub::COMMIT_BUCKETS)
        .map_err(buckets)?
        .set_buckets_for_metric(Matcher::Full(rpc::HANDLING_SECONDS.into()), rpc::HANDLING_BUCKETS)
        .map_err(buckets)?
        .install_recorder()
        .map_err(|e| format!("installing the metrics recorder: {e}"))
}

/// Sets [`BUILD_INFO`] to 1 with this build's labels and the server's `--node-id`.
fn build_info(node: &str) {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let target = format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS);
    ::metrics::describe_gauge!(BUILD_INFO, "Always 1; the labels name the running build.");
    ::metrics::gauge!(BUILD_INFO,
        "version" => env!("CARGO_PKG_VERSION"),
        "target" => target,
        "profile" => profile,
        "node" => node.to_string())
    .set(1.0);
}

/// `GET /metrics` renders (on a blocking thread: it reads `/proc` and walks every
/// series); anything else is 404 or 405.
async fn answer<F>(
    req: Request<Incoming>,
    scrape: std::sync::Arc<F>,
) -> Result<Response<Full<Bytes>>, Infallible>
where
    F: Fn() -> String + Send + Sync + 'static,
{
    let reply = |status: StatusCode, body: String| {
        let mut res = Response::new(Full::new(Bytes::from(body)));
        *res.status_mut() = status;
        res
    };
    if req.uri().path() != PATH {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            format!("not found: metrics are at {PATH}\n"),
        ));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(reply(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into()));
    }
    let text = tokio::task::spawn_blocking(move || scrape())
        .await
        .unwrap_or_default();
    let mut res = reply(StatusCode::OK, text);
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(TEXT_FORMAT),
    );
    Ok(res)
}
