//! The end of a call, recorded exactly once, however the call ends: answered, refused by
//! this layer, or abandoned by the client (dropped without a status: CANCELLED).

use std::{net::SocketAddr, sync::Arc, time::Instant};

use http::HeaderValue;
use tokio::sync::OwnedSemaphorePermit;
use tonic::Code;
use tracing::Span;

use super::{methods::MethodInfo, span::CallEnd};

/// Records the end of a call when dropped: code (CANCELLED if no status was seen, i.e.
/// the client went away), duration, the span's last fields and one log event. It holds
/// a unary call's load-shedding slot until then.
pub(super) struct Finish {
    pub(super) info: Arc<MethodInfo>,
    pub(super) span: Span,
    pub(super) request_id: HeaderValue,
    pub(super) peer: Option<SocketAddr>,
    pub(super) started: Instant,
    pub(super) code: Option<Code>,
    pub(super) _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Finish {
    fn drop(&mut self) {
        let code = self.code.unwrap_or(Code::Cancelled);
        let elapsed = self.started.elapsed();
        self.info.metrics.handled(code).increment(1);
        self.info.metrics.seconds.record(elapsed.as_secs_f64());
        CallEnd {
            span: &self.span,
            info: &self.info,
            peer: self.peer,
            request_id: &self.request_id,
            code,
            elapsed,
        }
        .log();
    }
}
