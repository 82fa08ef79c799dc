//! The layer every call passes through on its way to a service (a tower [`Layer`] on the
//! tonic server). Per call it:
//!
//! - takes the request id from `x-request-id` metadata (or makes one) and echoes it in
//!   the response headers;
//! - opens one `rpc` span (target `activity_hub::rpc`, level DEBUG) with service, method, peer,
//!   request id, and later the user id (recorded by authentication), status code and
//!   duration; with OpenTelemetry on, a W3C `traceparent` in the metadata becomes its
//!   parent;
//! - records the grpc-ecosystem metrics `grpc_server_started_total`,
//!   `grpc_server_handled_total`, `grpc_server_handling_seconds`,
//!   `grpc_server_msg_received_total` and `grpc_server_msg_sent_total` (labels
//!   `grpc_service`, `grpc_method`, `grpc_type`, and `grpc_code` on `handled`), with
//!   pre-registered handles, so the hot path does no label hashing;
//! - for unary calls only: sheds load beyond `--max-concurrent-unary` with UNAVAILABLE,
//!   and ends the call with DEADLINE_EXCEEDED at the client's `grpc-timeout` or
//!   `--unary-timeout`, dropping the handler so its store work is cancelled. Streams are
//!   never timed out by the server;
//! - turns tonic's OUT_OF_RANGE "message length too large" into RESOURCE_EXHAUSTED naming
//!   the limit and the flag that sets it.
//!
//! Method names and kinds come from the compiled descriptor sets, so a new RPC is
//! instrumented without touching this file; unknown paths share one `unknown` label so a
//! scanner cannot grow the label set.

use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use metrics::{Counter, Histogram};
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{
    body::Body as TonicBody,
    transport::server::{TcpConnectInfo, TlsConnectInfo},
    Code, Status,
};
use tower::{Layer, Service};
use tracing::{field::Empty, Span};

/// Calls started, by service, method and type.
pub const STARTED: &str = "grpc_server_started_total";
/// Calls finished, by service, method, type and code.
pub const HANDLED: &str = "grpc_server_handled_total";
/// Call duration in seconds, from headers received to the status sent.
pub const HANDLING_SECONDS: &str = "grpc_server_handling_seconds";
/// Request messages received.
pub const MSG_RECEIVED: &str = "grpc_server_msg_received_total";
/// Response messages sent.
pub const MSG_SENT: &str = "grpc_server_msg_sent_total";
/// Buckets of [`HANDLING_SECONDS`]: 100 µs to 60 s (streams land in the top buckets).
pub const HANDLING_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0,
];

/// The request id metadata key, read from requests and set on responses.
pub const REQUEST_ID: &str = "x-request-id";
// Header names made once: looking a `&str` name up parses it on every call.
static REQUEST_ID_H: HeaderName = HeaderName::from_static(REQUEST_ID);
static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// Longest client-supplied request id kept; longer or non-printable ones are replaced.
const MAX_REQUEST_ID: usize = 128;

/// The four gRPC call shapes, labelled as grpc-ecosystem's `grpc_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RpcKind {
    /// One request, one response.
    Unary,
    /// A request stream, one response.
    ClientStream,
    /// One request, a response stream.
    ServerStream,
    /// Both directions stream.
    BidiStream,
}

impl RpcKind {
    fn label(self) -> &'static str {
        match self {
            RpcKind::Unary => "unary",
            RpcKind::ClientStream => "client_stream",
            RpcKind::ServerStream => "server_stream",
            RpcKind::BidiStream => "bidi_stream",
        }
    }
}

/// grpc-go's names for the codes, as the grpc-ecosystem metrics label them.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// One RPC method and its metric handles.
pub struct MethodInfo {
    /// Fully qualified service, e.g. `user.v1.UserService`.
    pub service: &'static str,
    /// Method name, e.g. `GetUser`.
    pub method: &'static str,
    /// Call shape.
    pub kind: RpcKind,
    started: Counter,
    received: Counter,
    sent: Counter,
    seconds: Histogram,
    handled: [OnceLock<Counter>; 17],
}

impl MethodInfo {
    fn new(service: &'static str, method: &'static str, kind: RpcKind) -> MethodInfo {
        let labels = [
            ("grpc_service", service),
            ("grpc_method", method),
            ("grpc_type", kind.label()),
        ];
        MethodInfo {
            service,
            method,
            kind,
            started: metrics::counter!(STARTED, &labels),
            received: metrics::counter!(MSG_RECEIVED, &labels),
            sent: metrics::counter!(MSG_SENT, &labels),
            seconds: metrics::histogram!(HANDLING_SECONDS, &labels),
            handled: Default::default(),
        }
    }

    fn handled(&self, code: Code) -> &Counter {
        self.handled[code as usize].get_or_init(|| {
            metrics::counter!(HANDLED,
                "grpc_service" => self.service,
                "grpc_method" => self.method,
                "grpc_type" => self.kind.label(),
                "grpc_code" => code_name(code))
        })
    }
}

/// Every served method by path (`/package.Service/Method`).
pub struct MethodTable {
    by_path: HashMap<String, Arc<MethodInfo>>,
    unknown: Arc<MethodInfo>,
}

impl MethodTable {
    /// Reads services and methods from encoded `FileDescriptorSet`s. Names are leaked
    /// once (a few dozen short strings for the life of the process) so labels are
    /// `&'static str`.
    pub fn from_descriptor_sets(sets: &[&[u8]]) -> Result<MethodTable, prost::DecodeError> {
        use prost::Message as _;
        let mut by_path = HashMap::new();
        for set in sets {
            let set = prost_types::FileDescriptorSet::decode(*set)?;
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for svc in file.service {
                    let svc_name = svc.name.unwrap_or_default();
                    let full = if package.is_empty() {
                        svc_name
                    } else {
                        format!("{package}.{svc_name}")
                    };
                    let service: &'static str = Box::leak(full.into_boxed_str());
                    for m in svc.method {
                        let name = m.name.unwrap_or_default();
                        let path = format!("/{service}/{name}");
                        let kind = match (
                            m.client_streaming.unwrap_or(false),
                            m.server_streaming.unwrap_or(false),
                        ) {
                            (false, false) => RpcKind::Unary,
                            (true, false) => RpcKind::ClientStream,
                            (false, true) => RpcKind::ServerStream,
                            (true, true) => RpcKind::BidiStream,
                        };
                        let method: &'static str = Box::leak(name.into_boxed_str());
                        by_path.insert(path, Arc::new(MethodInfo::new(service, method, kind)));
                    }
                }
            }
        }
        use metrics::{describe_counter, describe_histogram, Unit};
        describe_counter!(STARTED, "RPCs started on the server.");
        describe_counter!(HANDLED, "RPCs completed on the server, by status code.");
        describe_histogram!(
            HANDLING_SECONDS,
            Unit::Seconds,
            "RPC duration until the status was sent."
        );
        describe_counter!(MSG_RECEIVED, "Request messages received.");
        describe_counter!(MSG_SENT, "Response messages sent.");
        Ok(MethodTable {
            by_path,
            unknown: Arc::new(MethodInfo::new("unknown", "unknown", RpcKind::Unary)),
        })
    }

    /// The method at `path`, or the shared `unknown` entry.
    pub fn get(&self, path: &str) -> &Arc<MethodInfo> {
        self.by_path.get(path).unwrap_or(&self.unknown)
    }
}

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

struct Shared {
    table: MethodTable,
    unary: Arc<Semaphore>,
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
                unary: Arc::new(Semaphore::new(opts.max_concurrent_unary)),
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
        info.started.increment(1);
        let request_id = request_id(req.headers());
        let peer = peer(&req);
        // DEBUG, like tower-http's default: formatting a span per call costs ~10% of a
        // trivial call's throughput, so it exists only when logs or OTLP ask for it.
        // Failures are logged at WARN with the same fields either way (see `Finish`).
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
        if shared.opts.propagate_trace_context {
            crate::telemetry::set_parent_from(&span, req.headers());
        }
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
            match shared.unary.clone().try_acquire_owned() {
                Ok(p) => finish._permit = Some(p),
                Err(_) => {
                    let status = Status::unavailable(format!(
                        "server overloaded: {} unary calls in flight (--max-concurrent-unary); retry with backoff",
                        shared.opts.max_concurrent_unary
                    ));
                    let res = respond(status, request_id, finish, &shared);
                    return RpcFuture {
                        inner: None,
                        deadline: None,
                        ready: Some(res),
                        pending: None,
                        span,
                    };
                }
            }
            let client = grpc_timeout(req.headers());
            deadline = match (client, shared.opts.unary_timeout) {
                (Some(c), Some(s)) if s < c => Some((s, Limit::Server)),
                (Some(c), _) => Some((c, Limit::Client)),
                (None, Some(s)) => Some((s, Limit::Server)),
                (None, None) => None,
            };
        }
        let received = info.received.clone();
        let req = req.map(|b| {
            TonicBody::new(Inbound {
                inner: b,
                frames: Frames::default(),
                received,
            })
        });
        let call = {
            let _in = span.enter();
            self.inner.call(req)
        };
        RpcFuture {
            inner: Some(call),
            deadline: deadline
                .and_then(|(after, limit)| started.checked_add(after - limit.lead(after)))
                .map(|at| tokio::time::sleep_until(at.into())),
            ready: None,
            pending: Some(Pending {
                finish,
                request_id,
                deadline,
                shared,
            }),
            span,
        }
    }
}

/// What a running call needs once it is answered.
struct Pending {
    finish: Finish,
    request_id: HeaderValue,
    deadline: Option<(Duration, Limit)>,
    shared: Arc<Shared>,
}

pin_project! {
    /// The response future of [`Rpc`]: the inner call, raced against the unary deadline
    /// when there is one (no allocation, no timer otherwise).
    pub struct RpcFuture<F> {
        #[pin]
        inner: Option<F>,
        #[pin]
        deadline: Option<tokio::time::Sleep>,
        ready: Option<Response<RpcBody>>,
        pending: Option<Pending>,
        span: Span,
    }
}

impl<F, E> Future for RpcFuture<F>
where
    F: Future<Output = Result<Response<TonicBody>, E>>,
{
    type Output = Result<Response<RpcBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(res) = this.ready.take() {
            return Poll::Ready(Ok(res));
        }
        let _in = this.span.enter();
        if let Some(inner) = this.inner.as_mut().as_pin_mut() {
            if let Poll::Ready(res) = inner.poll(cx) {
                this.inner.set(None);
                let res = res?;
                let Some(Pending {
                    finish,
                    request_id,
                    shared,
                    ..
                }) = this.pending.take()
                else {
                    return Poll::Pending;
                };
                return Poll::Ready(Ok(wrap(res, request_id, finish, &shared)));
            }
        }
        if let Some(sleep) = this.deadline.as_pin_mut() {
            if sleep.poll(cx).is_ready() {
                // Dropping the handler here cancels the store work it has not done yet.
                this.inner.set(None);
                if let Some(Pending {
                    finish,
                    request_id,
                    deadline: Some((after, limit)),
                    shared,
                }) = this.pending.take()
                {
                    let status = Status::deadline_exceeded(match limit {
                        Limit::Client => format!("the client's deadline of {after:?} (grpc-timeout) passed"),
                        Limit::Server => {
                            format!("the call ran past the server's --unary-timeout of {after:?}")
                        }
                    });
                    return Poll::Ready(Ok(respond(status, request_id, finish, &shared)));
                }
            }
        }
        Poll::Pending
    }
}

/// Which deadline applies to a unary call.
#[derive(Clone, Copy)]
enum Limit {
    Client,
    Server,
}

impl Limit {
    /// The client's deadline is answered a little early (2 ms, or a quarter of a short
    /// deadline): tonic runs its own timer on `grpc-timeout` outside this layer and would
    /// end the call with CANCELLED at the same instant; answering first gives the client
    /// the right code, and gives it before the client's own timer fires.
    fn lead(self, deadline: Duration) -> Duration {
        match self {
            Limit::Client => (deadline / 4).min(Duration::from_millis(2)),
            Limit::Server => Duration::ZERO,
        }
    }
}

/// The response of a call, answered by the server with `status` (no handler response).
fn respond(
    status: Status,
    request_id: HeaderValue,
    finish: Finish,
    shared: &Arc<Shared>,
) -> Response<RpcBody> {
    wrap(status.into_http(), request_id, finish, shared)
}

/// Tags a response with the request id, reads (and if need be rewrites) a status already
/// in its headers, and wraps its body to count messages and finish the call.
fn wrap(
    res: Response<TonicBody>,
    request_id: HeaderValue,
    mut finish: Finish,
    shared: &Arc<Shared>,
) -> Response<RpcBody> {
    let (mut parts, inner) = res.into_parts();
    finish.code = status_in(&mut parts.headers, shared);
    parts.headers.insert(REQUEST_ID_H.clone(), request_id);
    Response::from_parts(
        parts,
        RpcBody {
            inner,
            frames: Frames::default(),
            opts: shared.clone(),
            finish: Some(finish),
        },
    )
}

/// The client's `x-request-id` when it is printable ASCII of a sane length, else a fresh
/// random one (128 bits, hex).
fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&REQUEST_ID_H) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= MAX_REQUEST_ID && b.iter().all(u8::is_ascii_graphic) {
            return v.clone();
        }
    }
    // Hex by hand: `format!` showed up in profiles of trivial calls.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let id: u128 = rand::random();
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[((id >> (124 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&out).unwrap_or(HeaderValue::from_static("unknown"))
}

fn peer<B>(req: &Request<B>) -> Option<SocketAddr> {
    let ext = req.extensions();
    ext.get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
        })
}

/// `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(&GRPC_TIMEOUT)?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The status in `map` (response headers of a trailers-only response, or trailers), with
/// tonic's OUT_OF_RANGE for oversized messages rewritten to RESOURCE_EXHAUSTED.
fn status_in(map: &mut HeaderMap, opts: &Shared) -> Option<Code> {
    let code = Code::from_bytes(map.get(&GRPC_STATUS)?.as_bytes());
    if code != Code::OutOfRange {
        return Some(code);
    }
    let message = map.get(&GRPC_MESSAGE).map(|m| m.as_bytes()).unwrap_or_default();
    let has = |needle: &str| {
        let encoded = needle.replace(' ', "%20");
        let hay = message;
        [needle.as_bytes(), encoded.as_bytes()]
            .iter()
            .any(|n| hay.windows(n.len()).any(|w| w == *n))
    };
    let replacement = if has("decoded message length too large") {
        Status::resource_exhausted(format!(
            "request message larger than the server's limit of {} bytes (--max-decode-message-bytes)",
            opts.opts.max_decode_message_bytes
        ))
    } else if has("encoded message length too large") {
        Status::resource_exhausted(format!(
            "response message larger than the server's limit of {} bytes (--max-encode-message-bytes); ask for less per call",
            opts.opts.max_encode_message_bytes
        ))
    } else {
        return Some(code);
    };
    let _ = replacement.add_header(map);
    Some(Code::ResourceExhausted)
}

/// Counts gRPC messages in a byte stream by their 5-byte prefixes (flag, length).
#[derive(Default)]
struct Frames {
    head: [u8; 5],
    have: usize,
    skip: usize,
}

impl Frames {
    /// Messages whose prefix completed in `buf`.
    fn feed(&mut self, mut buf: &[u8]) -> u64 {
        let mut n = 0;
        while !buf.is_empty() {
            if self.skip > 0 {
                let k = self.skip.min(buf.len());
                self.skip -= k;
                buf = &buf[k..];
                continue;
            }
            let k = (5 - self.have).min(buf.len());
            self.head[self.have..self.have + k].copy_from_slice(&buf[..k]);
            self.have += k;
            buf = &buf[k..];
            if self.have == 5 {
                n += 1;
                self.have = 0;
                let h = self.head;
                self.skip = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
            }
        }
        n
    }
}

pin_project! {
    /// A request body that counts the messages it carries.
    struct Inbound {
        #[pin]
        inner: TonicBody,
        frames: Frames,
        received: Counter,
    }
}

impl Body for Inbound {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                let n = this.frames.feed(data);
                if n > 0 {
                    this.received.increment(n);
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Records the end of a call when dropped: code (CANCELLED if no status was seen, i.e.
/// the client went away), duration, the span's last fields and one log event.
struct Finish {
    info: Arc<MethodInfo>,
    span: Span,
    request_id: HeaderValue,
    peer: Option<SocketAddr>,
    started: Instant,
    code: Option<Code>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Finish {
    fn drop(&mut self) {
        let code = self.code.unwrap_or(Code::Cancelled);
        let elapsed = self.started.elapsed();
        self.info.handled(code).increment(1);
        self.info.seconds.record(elapsed.as_secs_f64());
        let failed = matches!(code, Code::Internal | Code::Unknown | Code::DataLoss);
        if self.span.is_disabled() {
            if failed {
                tracing::warn!(
                    target: "activity_hub::rpc",
                    service = self.info.service,
                    method = self.info.method,
                    peer = self.peer.map(tracing::field::display),
                    request_id = self.request_id.to_str().unwrap_or_default(),
                    grpc_code = code_name(code),
                    duration_ms = elapsed.as_secs_f64() * 1000.0,
                    "rpc failed"
                );
            }
            return;
        }
        self.span.record("grpc_code", code_name(code));
        self.span.record("duration_ms", elapsed.as_secs_f64() * 1000.0);
        let _in = self.span.enter();
        if failed {
            tracing::warn!(target: "activity_hub::rpc", "rpc failed")
        } else {
            tracing::debug!(target: "activity_hub::rpc", "rpc finished")
        }
    }
}

pin_project! {
    /// A response body that counts messages, reads (and if need be rewrites) the status in
    /// the trailers, and finishes the call when it ends or is dropped.
    pub struct RpcBody {
        #[pin]
        inner: TonicBody,
        frames: Frames,
        opts: Arc<Shared>,
        finish: Option<Finish>,
    }
}

impl Body for RpcBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = this.frames.feed(data);
                    if let (Some(f), true) = (this.finish.as_ref(), n > 0) {
                        f.info.sent.increment(n);
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                match frame.into_trailers() {
                    Ok(mut trailers) => {
                        if let Some(f) = this.finish.as_mut() {
                            f.code = status_in(&mut trailers, this.opts);
                        }
                        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                    }
                    Err(other) => Poll::Ready(Some(Ok(other))),
                }
            }
            Poll::Ready(None) => {
                this.finish.take();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(status))) => {
                if let Some(f) = this.finish.as_mut() {
                    f.code = Some(status.code());
                }
                Poll::Ready(Some(Err(status)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_counted_across_chunk_boundaries() {
        let msg = |len: u32| {
            let mut v = vec![0u8];
            v.extend_from_slice(&len.to_be_bytes());
            v.extend(std::iter::repeat_n(7u8, len as usize));
            v
        };
        let mut all = msg(3);
        all.extend(msg(0));
        all.extend(msg(300));
        let mut f = Frames::default();
        let mut n = 0;
        for chunk in all.chunks(4) {
            n += f.feed(chunk);
        }
        assert_eq!(n, 3);
        assert_eq!(Frames::default().feed(&all), 3);
    }

    #[test]
    fn grpc_timeout_units() {
        let mut h = HeaderMap::new();
        for (v, d) in [
            ("100m", Some(Duration::from_millis(100))),
            ("2S", Some(Duration::from_secs(2))),
            ("1H", Some(Duration::from_secs(3600))),
            ("5u", Some(Duration::from_micros(5))),
            ("123456789m", None),
            ("10x", None),
            ("m", None),
        ] {
            h.insert("grpc-timeout", HeaderValue::from_static(v));
            assert_eq!(grpc_timeout(&h), d, "{v}");
        }
    }

    #[test]
    fn request_ids_are_kept_when_sane_and_made_otherwise() {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(REQUEST_ID, HeaderValue::from_static("has space"));
        let made = request_id(&h);
        assert_eq!(made.len(), 32);
        assert_ne!(made, request_id(&HeaderMap::new()), "fresh ids differ");
    }

    #[test]
    fn method_kinds_come_from_the_descriptors() {
        let t = MethodTable::from_descriptor_sets(&[crate::proto::FILE_DESCRIPTOR_SET]).unwrap();
        let k = |p: &str| t.get(p).kind;
        assert_eq!(k("/user.v1.UserService/GetUser"), RpcKind::Unary);
        assert_eq!(k("/user.v1.UserService/StreamUsers"), RpcKind::ServerStream);
        assert_eq!(k("/activity.v1.ActivityService/Subscribe"), RpcKind::BidiStream);
        assert_eq!(t.get("/x.Y/Z").service, "unknown");
    }
}
