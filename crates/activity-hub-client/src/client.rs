//! [`Client`]: channels to every endpoint, a health checker per endpoint, round-robin
//! balancing over healthy endpoints whose breaker admits a call, the bearer token, and
//! unary calls with deadlines and retries. The typed calls are in `calls`, streams in
//! `subscription`.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, RwLock,
    },
    time::Duration,
};

use activity_hub_proto::AUTHORIZATION;
use tokio_util::sync::CancellationToken;
use tonic::{
    metadata::MetadataValue,
    transport::{Channel, Endpoint},
    Request, Status,
};

use crate::{
    config::backoff,
    endpoint::{transient, Node},
    ClientConfig, ClientError, EndpointStatus,
};

pub(crate) struct Inner {
    pub(crate) cfg: ClientConfig,
    pub(crate) nodes: Vec<Node>,
    next: AtomicUsize,
    token: RwLock<Option<String>>,
    pub(crate) session: crate::session::SessionSlot,
    pub(crate) stop: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A connection to one or several activity-hub servers. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
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
            nodes.push(Node::new(uri.clone(), ep.connect_lazy()));
        }
        let token = RwLock::new(cfg.token.clone());
        let client = Client {
            inner: Arc::new(Inner {
                cfg,
                nodes,
                next: AtomicUsize::new(0),
                token,
                session: Default::default(),
                stop: CancellationToken::new(),
            }),
        };
        client.spawn_health_checks();
        client.spawn_refresher();
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
        self.inner.nodes.iter().map(Node::status).collect()
    }

    /// The next endpoint, round robin over healthy ones whose breaker admits a call;
    /// if none does, over all of them (a wrong "all down" verdict must not stop traffic).
    pub(crate) fn pick(&self) -> usize {
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
    pub(crate) fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        let token = self.inner.token.read().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = token
            .as_deref()
            .and_then(|t| MetadataValue::try_from(format!("Bearer {t}")).ok())
        {
            req.metadata_mut().insert(AUTHORIZATION, v);
        }
        req
    }

    /// Sends `msg` through `call` to an endpoint with the configured deadline; an
    /// idempotent call that fails transiently is retried on the next endpoint after a
    /// backoff, up to `max_attempts`. With a session installed, a call refused
    /// UNAUTHENTICATED refreshes the session once and is sent again (it was refused, so
    /// it had no effect).
    pub(crate) async fn unary<M, T, F, Fut>(
        &self,
        idempotent: bool,
        msg: M,
        call: F,
    ) -> Result<T, ClientError>
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
        let mut refreshed = false;
        loop {
            let node = &self.inner.nodes[self.pick()];
            let generation = self.inner.session.generation();
            let mut req = self.request(msg.clone());
            req.set_timeout(self.inner.cfg.deadline);
            let res = call(node.channel.clone(), req).await;
            let failed = matches!(&res, Err(s) if transient(s));
            node.record(!failed, &self.inner.cfg);
            attempt += 1;
            match res {
                Ok(r) => return Ok(r.into_inner()),
                Err(s)
                    if s.code() == tonic::Code::Unauthenticated
                        && !refreshed
                        && self.inner.session.active() =>
                {
                    refreshed = true;
                    if self.refresh_after(Some(generation)).await.is_err() {
                        return Err(s.into());
                    }
                }
                Err(_) if failed && attempt < attempts => {
                    tokio::time::sleep(backoff(&self.inner.cfg, attempt)).await;
                }
                Err(s) => return Err(s.into()),
            }
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
