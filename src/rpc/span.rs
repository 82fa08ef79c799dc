//! One `rpc` span per call (target `activity_hub::rpc`, level DEBUG) and the one log
//! event that ends it. The span carries service, method, peer and request id from the
//! start, and later the user id (recorded by authentication), status code and duration;
//! with OpenTelemetry on, a W3C `traceparent` in the metadata becomes its parent.

use std::{net::SocketAddr, time::Duration};

use http::{HeaderValue, Request};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tracing::{field::Empty, Span};

use super::{methods::MethodInfo, metrics::Outcome};

/// The span of the call `req` to `info`.
pub(super) fn call_span<B>(
    req: &Request<B>,
    info: &MethodInfo,
    peer: Option<SocketAddr>,
    request_id: &HeaderValue,
    propagate_trace_context: bool,
) -> Span {
    // DEBUG, like tower-http's default: formatting a span per call costs ~10% of a
    // trivial call's throughput, so it exists only when logs or OTLP ask for it.
    // Failures are logged at WARN with the same fields either way (see `log_end`).
    let span = tracing::debug_span!(
        target: "activity_hub::rpc",
        "rpc",
        service = info.service,
        method = info.method,
        peer = peer.map(tracing::field::display),
        request_id = request_id.to_str().unwrap_or_default(),
        user_id = Empty,
        grpc_code = Empty,
        duration_ms = Empty,
        otel.name = req.uri().path(),
        otel.kind = "server",
    );
    if propagate_trace_context {
        crate::telemetry::set_parent_from(&span, req.headers());
    }
    span
}

/// The client's address, over plain TCP or TLS.
pub(super) fn peer<B>(req: &Request<B>) -> Option<SocketAddr> {
    let ext = req.extensions();
    ext.get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
        })
}

/// What the end of a call logs.
pub(super) struct CallEnd<'a> {
    pub(super) span: &'a Span,
    pub(super) info: &'a MethodInfo,
    pub(super) peer: Option<SocketAddr>,
    pub(super) request_id: &'a HeaderValue,
    pub(super) outcome: Outcome,
    pub(super) elapsed: Duration,
}

impl CallEnd<'_> {
    /// Records code and duration on the span and logs the end: WARN for a server-side
    /// failure, DEBUG otherwise. With the span disabled, only failures are logged, with
    /// the span's fields on the event itself.
    pub(super) fn log(self) {
        let failed = self.outcome.is_server_failure();
        if self.span.is_disabled() {
            if failed {
                tracing::warn!(
                    target: "activity_hub::rpc",
                    service = self.info.service,
                    method = self.info.method,
                    peer = self.peer.map(tracing::field::display),
                    request_id = self.request_id.to_str().unwrap_or_default(),
                    grpc_code = self.outcome.name(),
                    duration_ms = self.elapsed.as_secs_f64() * 1000.0,
                    "rpc failed"
                );
            }
            return;
        }
        self.span.record("grpc_code", self.outcome.name());
        self.span
            .record("duration_ms", self.elapsed.as_secs_f64() * 1000.0);
        let _in = self.span.enter();
        if failed {
            tracing::warn!(target: "activity_hub::rpc", "rpc failed")
        } else {
            tracing::debug!(target: "activity_hub::rpc", "rpc finished")
        }
    }
}
