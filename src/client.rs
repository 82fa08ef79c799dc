//! A Rust client for activity-hub: several endpoints with client-side load balancing,
//! health checks, a circuit breaker per endpoint, retries with backoff for idempotent
//! calls, per-call deadlines, bearer tokens, TLS, and a [`Subscription`] stream that
//! survives disconnects and resumes exactly after the last event it yielded.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use activity_hub::client::{Client, ClientConfig, SubscribeOptions};
//! use futures_util::StreamExt;
//!
//! let client = Client::connect(ClientConfig::new(["http://127.0.0.1:50051"])).await?;
//! let token = client.login("admin@example.com", "admin-password").await?;
//! client.set_token(Some(token));
//! let mut events = client.subscribe(SubscribeOptions::consumer("phone"));
//! while let Some(event) = events.next().await {
//!     let event = event?;
//!     println!("{} {}", event.seq, event.r#type);
//!     events.ack(event.seq);
//! }
//! # Ok(()) }
//! ```

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, RwLock,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures_util::Stream;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::{
    metadata::MetadataValue,
    transport::{Channel, ClientTlsConfig, Endpoint},
    Code, Request, Status,
};

use crate::proto::{
    activity::v1::{
        self as apb, activity_service_client::ActivityServiceClient, subscribe_request, subscribe_response,
    },
    auth::v1::{auth_service_client::AuthServiceClient, login_request::Identifier, LoginRequest},
    user::v1::{self as upb, get_user_request, user_service_client::UserServiceClient},
};

/// How a [`Client`] connects and behaves.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `http://HOST:PORT` or `https://HOST:PORT`, one per server.
    pub endpoints: Vec<String>,
    /// Bearer token sent with every call (see also [`Client::set_token`]).
    pub token: Option<String>,
    /// TLS settings for `https://` endpoints (CA, client identity for mTLS, domain).
    pub tls: Option<ClientTlsConfig>,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// HTTP/2 keepalive pings (also while idle), so a dead server is noticed.
    pub keepalive: Duration,
    /// Deadline of each unary call unless the call sets its own.
    pub deadline: Duration,
    /// Attempts of an idempotent call (first try included).
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt up to `max_backoff`, with full jitter.
    pub initial_backoff: Duration,
    /// Largest retry / reconnect delay.
    pub max_backoff: Duration,
    /// Consecutive failures that open an endpoint's circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker skips its endpoint before one probe call is let through.
    pub breaker_cooldown: Duration,
    /// How often each endpoint's grpc.health.v1 status is checked.
    pub health_interval: Duration,
}

impl ClientConfig {
    /// Defaults for `endpoints`: 5 s deadlines, 4 attempts, backoff 50 ms..2 s, breaker
    /// opens after 3 failures for 2 s, health checked every 2 s.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(endpoints: I) -> ClientConfig {
        ClientConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            token: None,
            tls: None,
            connect_timeout: Duration::from_secs(3),
            keepalive: Duration::from_secs(20),
            deadline: Duration::from_secs(5),
            max_attempts: 4,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(2),
            health_interval: Duration::from_secs(2),
        }
    }
}

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The configuration cannot work (no endpoints, a bad URI, TLS).
    #[error("client configuration: {0}")]
    Config(String),
    /// The server answered with an error status (after retries, when allowed).
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] Status),
}

/// A circuit breaker's state, as [`Client::endpoints`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Skipped until the cooldown passes.
    Open,
    /// One probe call is allowed; its outcome closes or re-opens the breaker.
    HalfOpen,
}

/// One endpoint's state and counters.
#[derive(Clone, Debug)]
pub struct EndpointStatus {
    /// The endpoint URI.
    pub uri: String,
    /// Last health check said SERVING.
    pub healthy: bool,
    /// Its breaker.
    pub breaker: BreakerState,
    /// Calls answered by it (any status but a transport failure).
    pub answered: u64,
    /// Calls that failed to reach it or got UNAVAILABLE.
    pub failed: u64,
}

struct Breaker {
    consecutive: u32,
    open_until: Option<Instant>,
    probing: bool,
}

struct Node {
    uri: String,
    channel: Channel,
    healthy: AtomicBool,
    breaker: Mutex<Breaker>,
    answered: AtomicU64,
    failed: AtomicU64,
}

impl Node {
    fn state(&self) -> BreakerState {
        let b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        match b.open_until {
            None => BreakerState::Closed,
            Some(t) if Instant::now() < t => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// Whether a call may go here now; a half-open breaker admits one probe at a time.
    fn admit(&self) -> bool {
        let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        match b.open_until {
            None => true,
            Some(t) if Instant::now() < t => false,
            Some(_) if b.probing => false,
            Some(_) => {
                b.probing = true;
                true
            }
        }
    }

    fn record(&self, reached: bool, cfg: &ClientConfig) {
        let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        b.probing = false;
        if reached {
            self.answered.fetch_add(1, Ordering::Relaxed);
            b.consecutive = 0;
            b.open_until = None;
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
            b.consecutive += 1;
            if b.consecutive >= cfg.breaker_failures || b.open_until.is_some() {
                b.open_until = Some(Instant::now() + cfg.breaker_cooldown);
            }
        }
    }
}

struct Inner {
    cfg: ClientConfig,
    nodes: Vec<Node>,
    next: AtomicUsize,
    token: RwLock<Option<String>>,
    stop: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A connection to one or several activity-hub servers. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// A failure that says nothing about the request itself: the server was not reached,
/// is going away, or is overloaded. Safe to retry elsewhere for idempotent calls.
fn transient(s: &Status) -> bool {
    matches!(s.code(), Code::Unavailable | Code::Unknown)
        || s.message().contains("transport error")
        // A call cut by its connection closing (e.g. the server was killed) surfaces as
        // CANCELLED with the transport error as its source: not an answer either.
        || std::error::Error::source(s).is_some_and(|e| e.is::<tonic::transport::Error>())
}

impl Client {
    /// Channels to every endpoint (connected lazily, so a server that is down now is
    /// used once it comes up) and a health checker per endpoint.
    pub async fn connect(cfg: ClientConfig) -> Result<Client, ClientError> {
        if cfg.endpoints.is_empty() {
            return Err(ClientError::Config("at least one endpoint is required".into()));
        }
        let mut nodes = Vec::new();
        for uri in &cfg.endpoints {
            let mut ep = Endpoint::from_shared(uri.clone())
                .map_err(|e| ClientError::Config(format!("endpoint {uri}: {e}")))?
                .connect_timeout(cfg.connect_timeout)
                .http2_keep_alive_interval(cfg.keepalive)
                .keep_alive_timeout(cfg.keepalive)
                .keep_alive_while_idle(true)
                .tcp_nodelay(true);
            if let Some(tls) = &cfg.tls {
                ep = ep
                    .tls_config(tls.clone())
                    .map_err(|e| ClientError::Config(format!("endpoint {uri}: TLS: {e}")))?;
            }
            nodes.push(Node {
                uri: uri.clone(),
                channel: ep.connect_lazy(),
                healthy: AtomicBool::new(true),
                breaker: Mutex::new(Breaker {
                    consecutive: 0,
                    open_until: None,
                    probing: false,
                }),
                answered: AtomicU64::new(0),
                failed: AtomicU64::new(0),
            });
        }
        let token = RwLock::new(cfg.token.clone());
        let client = Client {
            inner: Arc::new(Inner {
                cfg,
                nodes,
                next: AtomicUsize::new(0),
                token,
                stop: CancellationToken::new(),
            }),
        };
        client.spawn_health_checks();
        Ok(client)
    }

    fn spawn_health_checks(&self) {
        use tonic_health::pb::{
            health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
        };
        for i in 0..self.inner.nodes.len() {
            let weak = Arc::downgrade(&self.inner);
            let stop = self.inner.stop.clone();
            tokio::spawn(async move {
                loop {
                    let Some(inner) = weak.upgrade() else { return };
                    let interval = inner.cfg.health_interval;
                    let node = &inner.nodes[i];
                    let mut req = Request::new(HealthCheckRequest::default());
                    req.set_timeout(interval.min(Duration::from_secs(2)));
                    let ok = HealthClient::new(node.channel.clone())
                        .check(req)
                        .await
                        .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32);
                    node.healthy.store(ok, Ordering::Relaxed);
                    drop(inner);
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(interval) => {}
                    }
                }
            });
        }
    }

    /// Replaces the bearer token sent with every call.
    pub fn set_token(&self, token: Option<String>) {
        *self.inner.token.write().unwrap_or_else(|e| e.into_inner()) = token;
    }

    /// Each endpoint's health, breaker and counters.
    pub fn endpoints(&self) -> Vec<EndpointStatus> {
        self.inner
            .nodes
            .iter()
            .map(|n| EndpointStatus {
                uri: n.uri.clone(),
                healthy: n.healthy.load(Ordering::Relaxed),
                breaker: n.state(),
                answered: n.answered.load(Ordering::Relaxed),
                failed: n.failed.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// The next endpoint, round robin over healthy ones whose breaker admits a call;
    /// if none does, over all of them (a wrong "all down" verdict must not stop traffic).
    fn pick(&self) -> usize {
        let n = self.inner.nodes.len();
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        for k in 0..n {
            let i = (start + k) % n;
            let node = &self.inner.nodes[i];
            if node.healthy.load(Ordering::Relaxed) && node.admit() {
                return i;
            }
        }
        for k in 0..n {
            let i = (start + k) % n;
            if self.inner.nodes[i].admit() {
                return i;
            }
        }
        start % n
    }

    /// `msg` with the bearer token, if there is one.
    fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        let token = self.inner.token.read().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = token
            .as_deref()
            .and_then(|t| MetadataValue::try_from(format!("Bearer {t}")).ok())
        {
            req.metadata_mut().insert("authorization", v);
        }
        req
    }

    /// Sends `msg` through `call` to an endpoint with the configured deadline; an
    /// idempotent call that fails transiently is retried on the next endpoint after a
    /// backoff, up to `max_attempts`.
    async fn unary<M, T, F, Fut>(&self, idempotent: bool, msg: M, call: F) -> Result<T, ClientError>
    where
        M: Clone,
        F: Fn(Channel, Request<M>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let attempts = if idempotent {
            self.inner.cfg.max_attempts.max(1)
        } else {
            1
        };
        let mut attempt = 0;
        loop {
            let node = &self.inner.nodes[self.pick()];
            let mut req = self.request(msg.clone());
            req.set_timeout(self.inner.cfg.deadline);
            let res = call(node.channel.clone(), req).await;
            let failed = matches!(&res, Err(s) if transient(s));
            node.record(!failed, &self.inner.cfg);
            attempt += 1;
            match res {
                Ok(r) => return Ok(r.into_inner()),
                Err(_) if failed && attempt < attempts => {
                    tokio::time::sleep(backoff(&self.inner.cfg, attempt)).await;
                }
                Err(s) => return Err(s.into()),
            }
        }
    }

    /// Logs in by email (or username, when `identifier` has no `@`); returns the token.
    pub async fn login(&self, identifier: &str, password: &str) -> Result<String, ClientError> {
        let id = if identifier.contains('@') {
            Identifier::Email(identifier.into())
        } else {
            Identifier::Username(identifier.into())
        };
        let msg = LoginRequest {
            identifier: Some(id),
            password: password.into(),
        };
        // Login is safe to retry: it has no effect but a last-login time.
        let r = self
            .unary(true, msg, |ch, r| async move {
                AuthServiceClient::new(ch).login(r).await
            })
            .await?;
        Ok(r.access_token)
    }

    /// GetUser by id (retried on transient failures).
    pub async fn get_user(&self, id: u64) -> Result<upb::User, ClientError> {
        self.find_user(get_user_request::Identifier::UserId(id)).await
    }

    /// Publishes one event. Without an `idempotency_key` the client makes one, so the
    /// publish can be retried safely (the hub answers a repeat with the first event's
    /// deliveries and `duplicate = true`); pass `retry = false` to send it once only.
    pub async fn publish(
        &self,
        mut req: apb::PublishRequest,
        retry: bool,
    ) -> Result<apb::PublishResponse, ClientError> {
        if retry && req.idempotency_key.is_empty() {
            req.idempotency_key = uuid::Uuid::now_v7().to_string();
        }
        let idempotent = retry && !req.idempotency_key.is_empty();
        self.unary(idempotent, req, |ch, r| async move {
            ActivityServiceClient::new(ch).publish(r).await
        })
        .await
    }

    /// A page of a user's events (retried on transient failures).
    pub async fn list_events(
        &self,
        req: apb::ListEventsRequest,
    ) -> Result<apb::ListEventsResponse, ClientError> {
        self.unary(true, req, |ch, r| async move {
            ActivityServiceClient::new(ch).list_events(r).await
        })
        .await
    }

    /// A user by id, email or username (retried on transient failures).
    pub async fn find_user(
        &self,
        identifier: get_user_request::Identifier,
    ) -> Result<upb::User, ClientError> {
        let msg = upb::GetUserRequest {
            identifier: Some(identifier),
        };
        self.unary(true, msg, |ch, r| async move {
            UserServiceClient::new(ch).get_user(r).await
        })
        .await
    }

    /// Creates a user (sent once: a blind retry could meet its own ALREADY_EXISTS).
    pub async fn create_user(&self, msg: upb::CreateUserRequest) -> Result<upb::User, ClientError> {
        self.unary(false, msg, |ch, r| async move {
            UserServiceClient::new(ch).create_user(r).await
        })
        .await
    }

    /// Sets the given fields (idempotent: retried on transient failures).
    pub async fn update_user(&self, msg: upb::UpdateUserRequest) -> Result<upb::User, ClientError> {
        self.unary(true, msg, |ch, r| async move {
            UserServiceClient::new(ch).update_user(r).await
        })
        .await
    }

    /// Deletes a user (sent once).
    pub async fn delete_user(&self, id: u64) -> Result<(), ClientError> {
        let msg = upb::GetUserRequest {
            identifier: Some(get_user_request::Identifier::UserId(id)),
        };
        self.unary(false, msg, |ch, r| async move {
            UserServiceClient::new(ch).delete_user(r).await
        })
        .await
    }

    /// A page of users (retried on transient failures).
    pub async fn list_users(
        &self,
        msg: upb::ListUsersRequest,
    ) -> Result<upb::ListUsersResponse, ClientError> {
        self.unary(true, msg, |ch, r| async move {
            UserServiceClient::new(ch).list_users(r).await
        })
        .await
    }

    /// grpc.health.v1 status of every endpoint, checked now: `(uri, status name)`.
    pub async fn health(&self) -> Vec<(String, String)> {
        use tonic_health::pb::{
            health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
        };
        let mut out = Vec::new();
        for node in &self.inner.nodes {
            let mut req = self.request(HealthCheckRequest::default());
            req.set_timeout(self.inner.cfg.deadline);
            let status = match HealthClient::new(node.channel.clone()).check(req).await {
                Ok(r) => ServingStatus::try_from(r.into_inner().status)
                    .map(|s| s.as_str_name().to_string())
                    .unwrap_or_else(|_| "UNKNOWN".into()),
                Err(s) => format!("UNREACHABLE ({})", s.message()),
            };
            out.push((node.uri.clone(), status));
        }
        out
    }

    /// Opens a subscription that reconnects by itself; see [`Subscription`].
    pub fn subscribe(&self, opts: SubscribeOptions) -> Subscription {
        // Room for one window of events between the connection and the application.
        let room = if opts.window == 0 {
            256
        } else {
            opts.window as usize
        };
        let (tx, rx) = mpsc::channel(room);
        let (ack_tx, ack_rx) = watch::channel(0u64);
        let stop = CancellationToken::new();
        tokio::spawn(run_subscription(
            self.clone(),
            opts.clone(),
            tx,
            ack_rx,
            stop.clone(),
        ));
        Subscription {
            rx,
            acks: ack_tx,
            auto_ack: opts.auto_ack,
            _stop: stop.drop_guard(),
        }
    }
}

fn backoff(cfg: &ClientConfig, attempt: u32) -> Duration {
    let cap = cfg
        .initial_backoff
        .saturating_mul(1u32 << attempt.min(16))
        .min(cfg.max_backoff);
    // Full jitter: a random delay in [0, cap], so clients that failed together do not
    // come back together.
    cap.mul_f64(rand::random::<f64>())
}

/// What to subscribe to.
#[derive(Clone, Debug, Default)]
pub struct SubscribeOptions {
    /// Whose events; 0 = the caller.
    pub user_id: u64,
    /// Durable cursor name (a device, a service); resumption across restarts uses it.
    pub consumer_id: String,
    /// Only these event types; empty = all.
    pub types: Vec<String>,
    /// Where the first connection starts (later ones resume after the last event
    /// yielded); `Unspecified` = the cursor with a consumer id, else the newest.
    pub start_from: apb::StartFrom,
    /// With `StartFrom::Seq`: events after this seq.
    pub after_seq: u64,
    /// Unacked events in flight (0 = the server's default).
    pub window: u32,
    /// Ack every event as the application takes it from the stream.
    pub auto_ack: bool,
}

impl SubscribeOptions {
    /// The caller's own events on a durable consumer, acked by the application.
    pub fn consumer(consumer_id: impl Into<String>) -> SubscribeOptions {
        SubscribeOptions {
            consumer_id: consumer_id.into(),
            ..Default::default()
        }
    }
}

/// A stream of events that survives disconnects: when the connection or the server
/// goes away, it reconnects (with backoff, to any endpoint) and resumes right after the
/// last event it yielded, so the application sees every event once, in order, with no
/// gap. Acks are cumulative: [`Subscription::ack`] the last event processed (or set
/// [`SubscribeOptions::auto_ack`]). It ends with an error only for failures a reconnect
/// cannot fix (bad request, permission, another stream took over the consumer).
pub struct Subscription {
    rx: mpsc::Receiver<Result<apb::Event, Status>>,
    acks: watch::Sender<u64>,
    auto_ack: bool,
    _stop: tokio_util::sync::DropGuard,
}

impl Subscription {
    /// Acknowledges every event up to `seq` (cumulative; lower values are ignored).
    pub fn ack(&self, seq: u64) {
        self.acks.send_if_modified(|v| {
            if seq > *v {
                *v = seq;
                true
            } else {
                false
            }
        });
    }
}

impl Stream for Subscription {
    type Item = Result<apb::Event, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(Ok(ev))) = &item {
            if self.auto_ack {
                self.ack(ev.seq);
            }
        }
        item
    }
}

/// Whether a subscription should reconnect after `s` rather than give up. Rate limits
/// (RESOURCE_EXHAUSTED with `retry-after-ms`) are waited out, not fatal.
fn reconnectable(s: &Status) -> bool {
    transient(s)
        || matches!(
            s.code(),
            Code::Cancelled | Code::DeadlineExceeded | Code::Internal | Code::ResourceExhausted
        )
}

/// The server's `retry-after-ms` hint, if any.
fn retry_after(s: &Status) -> Option<Duration> {
    let v = s.metadata().get(crate::error::RETRY_AFTER_MS)?.to_str().ok()?;
    Some(Duration::from_millis(v.parse().ok()?))
}

async fn run_subscription(
    client: Client,
    opts: SubscribeOptions,
    tx: mpsc::Sender<Result<apb::Event, Status>>,
    mut acks: watch::Receiver<u64>,
    stop: CancellationToken,
) {
    // The last seq handed to the application: later connections resume right after it.
    let mut last: Option<u64> = None;
    let mut attempt = 0u32;
    loop {
        let start = apb::Start {
            user_id: opts.user_id,
            consumer_id: opts.consumer_id.clone(),
            types: opts.types.clone(),
            start_from: match last {
                Some(_) => apb::StartFrom::Seq as i32,
                None => opts.start_from as i32,
            },
            after_seq: last.unwrap_or(opts.after_seq),
            window: opts.window,
            ack_mode: apb::AckMode::Explicit as i32,
        };
        let i = client.pick();
        let node = &client.inner.nodes[i];
        let (req_tx, req_rx) = mpsc::channel(64);
        let _ = req_tx
            .send(apb::SubscribeRequest {
                msg: Some(subscribe_request::Msg::Start(start)),
            })
            .await;
        // A stream has no deadline.
        let req = client.request(tokio_stream::wrappers::ReceiverStream::new(req_rx));
        let mut api = ActivityServiceClient::new(node.channel.clone());
        let opened = tokio::select! {
            _ = stop.cancelled() => return,
            r = api.subscribe(req) => r,
        };
        let failure = match opened {
            Err(s) => s,
            Ok(res) => {
                let mut inbound = res.into_inner();
                let mut acked = 0u64;
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        changed = acks.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            let seq = *acks.borrow_and_update();
                            if seq > acked {
                                acked = seq;
                                let ack = apb::SubscribeRequest {
                                    msg: Some(subscribe_request::Msg::Ack(apb::Ack { seq })),
                                };
                                let _ = req_tx.send(ack).await;
                            }
                        }
                        msg = inbound.message() => match msg {
                            Ok(Some(apb::SubscribeResponse { msg: Some(subscribe_response::Msg::Event(ev)) })) => {
                                if last.is_some_and(|l| ev.seq <= l) {
                                    continue;
                                }
                                last = Some(ev.seq);
                                if tx.send(Ok(ev)).await.is_err() {
                                    return;
                                }
                            }
                            Ok(Some(apb::SubscribeResponse { msg: Some(subscribe_response::Msg::Subscribed(s)) })) => {
                                attempt = 0;
                                node.record(true, &client.inner.cfg);
                                if last.is_none() {
                                    last = Some(s.resume_after);
                                }
                                // Acks given while disconnected are sent on this stream.
                                let seq = *acks.borrow();
                                if seq > acked && seq <= s.resume_after {
                                    acked = seq;
                                    let ack = apb::SubscribeRequest {
                                        msg: Some(subscribe_request::Msg::Ack(apb::Ack { seq })),
                                    };
                                    let _ = req_tx.send(ack).await;
                                }
                            }
                            Ok(Some(_)) => {}
                            Ok(None) => break Status::unavailable("the server ended the stream"),
                            Err(s) => break s,
                        }
                    }
                }
            }
        };
        if !reconnectable(&failure) {
            let _ = tx.send(Err(failure)).await;
            return;
        }
        if transient(&failure) {
            node.record(false, &client.inner.cfg);
        }
        attempt += 1;
        let wait = backoff(&client.inner.cfg, attempt).max(retry_after(&failure).unwrap_or_default());
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.inner.cfg.endpoints)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn node() -> Node {
        Node {
            uri: "http://x".into(),
            channel: Endpoint::from_static("http://127.0.0.1:1").connect_lazy(),
            healthy: AtomicBool::new(true),
            breaker: Mutex::new(Breaker {
                consecutive: 0,
                open_until: None,
                probing: false,
            }),
            answered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    #[tokio::test]
    async fn the_breaker_opens_after_n_failures_and_probes_once_after_the_cooldown() {
        let mut cfg = ClientConfig::new(["http://x"]);
        cfg.breaker_failures = 3;
        cfg.breaker_cooldown = Duration::from_millis(50);
        let n = node();
        for _ in 0..2 {
            assert!(n.admit());
            n.record(false, &cfg);
        }
        assert_eq!(
            n.state(),
            BreakerState::Closed,
            "two failures are below the threshold"
        );
        n.record(false, &cfg);
        assert_eq!(n.state(), BreakerState::Open);
        assert!(!n.admit(), "open: skipped");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(n.state(), BreakerState::HalfOpen);
        assert!(n.admit(), "one probe goes through");
        assert!(!n.admit(), "and only one at a time");
        n.record(false, &cfg);
        assert_eq!(n.state(), BreakerState::Open, "a failed probe re-opens it");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(n.admit());
        n.record(true, &cfg);
        assert_eq!(n.state(), BreakerState::Closed, "a good probe closes it");
        assert!(n.admit() && n.admit());
    }

    #[test]
    fn a_rate_limited_subscription_waits_and_reconnects_a_refused_one_ends() {
        let limited = Status::from(crate::error::ApiError::RateLimited {
            what: "too many calls for this user",
            retry_after: Duration::from_millis(750),
        });
        assert!(reconnectable(&limited));
        assert_eq!(retry_after(&limited), Some(Duration::from_millis(750)));
        assert!(reconnectable(&Status::unavailable("shutting down")));
        assert!(!reconnectable(&Status::permission_denied("no")));
        assert!(!reconnectable(&Status::aborted("replaced by a newer stream")));
        assert!(!reconnectable(&Status::invalid_argument("start.after_seq")));
    }

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let mut cfg = ClientConfig::new(["http://x"]);
        cfg.initial_backoff = Duration::from_millis(10);
        cfg.max_backoff = Duration::from_millis(100);
        for attempt in 0..20 {
            let d = backoff(&cfg, attempt);
            let cap = Duration::from_millis(10 * (1u64 << attempt.min(16))).min(cfg.max_backoff);
            assert!(d <= cap, "attempt {attempt}: {d:?} > {cap:?}");
        }
        let spread: BTreeSet<u128> = (0..50).map(|_| backoff(&cfg, 5).as_micros()).collect();
        assert!(spread.len() > 10, "jittered");
    }
}
