//! The end of a call, recorded exactly once, however the call ends: answered, refused by
//! this layer, or abandoned by the client (dropped without a status: `ClientCanceled`,
//! which is not a failure of the server).

use std::{net::SocketAddr, sync::Arc, time::Instant};

use http::HeaderValue;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Span;

use super::{methods::MethodInfo, metrics::Outcome, span::CallEnd};

/// Records the end of a call when dropped: its outcome (`ClientCanceled` if no status
/// was seen, i.e. the client went away), duration, the span's last fields and one log event. It holds
/// a unary call's load-shedding slot until then.
pub(super) struct Finish {
    pub(super) info: Arc<MethodInfo>,
    pub(super) span: Span,
    pub(super) request_id: HeaderValue,
    pub(super) peer: Option<SocketAddr>,
    pub(super) started: Instant,
    pub(super) code: Option<tonic::Code>,
    pub(super) _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Finish {
    fn drop(&mut self) {
        let outcome = self.code.map_or(Outcome::ClientCanceled, Outcome::Status);
        let elapsed = self.started.elapsed();
        self.info.metrics.handled(outcome).increment(1);
        self.info.metrics.seconds.record(elapsed.as_secs_f64());
        CallEnd {
            span: &self.span,
            info: &self.info,
            peer: self.peer,
            request_id: &self.request_id,
            outcome,
            elapsed,
        }
        .log();
    }
}
