//! The layer every call passes through on its way to a service (a tower [`Layer`] on the
//! tonic server). This file is the layer itself and the order of the steps; each concern
//! lives in its own module:
//!
//! - `request_id`: takes the request id from `x-request-id` metadata (or makes one); the
//!   response headers echo it;
//! - `span`: one `rpc` span (target `activity_hub::rpc`, level DEBUG) with service,
//!   method, peer, request id, and later the user id (recorded by authentication), status
//!   code and duration; with OpenTelemetry on, a W3C `traceparent` in the metadata
//!   becomes its parent;
//! - `metrics`: the grpc-ecosystem metrics `grpc_server_started_total`,
//!   `grpc_server_handled_total`, `grpc_server_handling_seconds`,
//!   `grpc_server_msg_received_total` and `grpc_server_msg_sent_total` (labels
//!   `grpc_service`, `grpc_method`, `grpc_type`, and `grpc_code` on `handled`: a grpc
//!   code, or `ClientCanceled` when the client went away before a status was sent, which
//!   is no failure of the server), with pre-registered handles, so the hot path does no
//!   label hashing;
//! - `shed` and `deadline`, for unary calls only: sheds load beyond
//!   `--max-concurrent-unary` with UNAVAILABLE, and ends the call with DEADLINE_EXCEEDED
//!   at the client's `grpc-timeout` or `--unary-timeout`, dropping the handler so its
//!   store work is cancelled. Streams are never timed out by the server;
//! - `status`: turns tonic's OUT_OF_RANGE "message length too large" into
//!   RESOURCE_EXHAUSTED naming the limit and the flag that sets it;
//! - `finish`: records the end of every call once (metrics, span fields, one log event);
//! - `response`: the response future and body that carry a call to its end.
//!
//! Method names and kinds come from the compiled descriptor sets (`methods`), so a new
//! RPC is instrumented without touching this layer; unknown paths share one `unknown`
//! label so a scanner cannot grow the label set.

mod deadline;
mod finish;
mod methods;
mod metrics;
mod request_id;
mod response;
mod shed;
mod span;
mod status;

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use http::{Request, Response};
use tonic::body::Body as TonicBody;
use tower::{Layer, Service};

use self::{
    deadline::Deadline,
    finish::Finish,
    metrics::Inbound,
    response::{respond, Pending},
    shed::UnaryGate,
};
pub use self::{
    methods::{MethodInfo, MethodTable, RpcKind},
    metrics::{
        code_name, CLIENT_CANCELED, HANDLED, HANDLING_BUCKETS, HANDLING_SECONDS, MSG_RECEIVED, MSG_SENT,
        STARTED,
    },
    request_id::REQUEST_ID,
    response::{RpcBody, RpcFuture},
};

/// Settings of [`RpcLayer`].
pub struct RpcOptions {
    /// Unary calls served at once; more are shed with UNAVAILABLE.
    pub max_concurrent_unary: usize,
    /// Server-side cap on a unary call's duration (`None`: only the client's deadline).
    pub unary_timeout: Option<Duration>,
    /// Largest request message (named in RESOURCE_EXHAUSTED messages).
    pub max_decode_message_bytes: usize,
    /// Largest response message.
    pub max_encode_message_bytes: usize,
    /// Whether spans take their parent from W3C `traceparent` metadata.
    pub propagate_trace_context: bool,
}

/// What every call of one layer shares.
struct Shared {
    table: MethodTable,
    unary: UnaryGate,
    opts: RpcOptions,
}

/// The layer; see the module documentation.
#[derive(Clone)]
pub struct RpcLayer {
    shared: Arc<Shared>,
}

impl RpcLayer {
    /// A layer over the methods in `table`.
    pub fn new(table: MethodTable, opts: RpcOptions) -> RpcLayer {
        RpcLayer {
            shared: Arc::new(Shared {
                table,
                unary: UnaryGate::new(opts.max_concurrent_unary),
                opts,
            }),
        }
    }
}

impl<S> Layer<S> for RpcLayer {
    type Service = Rpc<S>;

    fn layer(&self, inner: S) -> Rpc<S> {
        Rpc {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service [`RpcLayer`] wraps around the routes.
#[derive(Clone)]
pub struct Rpc<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<Request<TonicBody>> for Rpc<S>
where
    S: Service<Request<TonicBody>, Response = Response<TonicBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<RpcBody>;
    type Error = S::Error;
    type Future = RpcFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<TonicBody>) -> Self::Future {
        let started = Instant::now();
        let shared = self.shared.clone();
        let info = shared.table.get(req.uri().path()).clone();
        info.metrics.started.increment(1);
        let request_id = request_id::request_id(req.headers());
        let peer = span::peer(&req);
        let span = span::call_span(
            &req,
            &info,
            peer,
            &request_id,
            shared.opts.propagate_trace_context,
        );
        let mut finish = Finish {
            info: info.clone(),
            span: span.clone(),
            request_id: request_id.clone(),
            peer,
            started,
            code: None,
            _permit: None,
        };
        let mut deadline = None;
        if info.kind == RpcKind::Unary {
            match shared.unary.admit() {
                Ok(permit) => finish._permit = Some(permit),
                Err(status) => {
                    let res = respond(status, request_id, finish, &shared);
                    return RpcFuture::answered(res, span);
                }
            }
            deadline = Deadline::of(req.headers(), shared.opts.unary_timeout);
        }
        let received = info.metrics.received.clone();
        let req = req.map(|b| TonicBody::new(Inbound::new(b, received)));
        let call = {
            let _in = span.enter();
            self.inner.call(req)
        };
        let timer = deadline.and_then(|d| d.timer(started));
        let pending = Pending {
            finish,
            request_id,
            deadline,
            shared,
        };
        RpcFuture::running(call, timer, pending, span)
    }
}
