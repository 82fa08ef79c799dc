//! [`Client`]: the pool of endpoints (static ones and those `discovery` resolves from
//! DNS, each with its health checker), the bearer token, and unary calls with deadlines
//! and retries over the endpoint `balance` picks. The typed calls are in `calls`, streams
//! in `subscription`.

use std::sync::{atomic::AtomicUsize, Arc, RwLock};

use activity_hub_proto::AUTHORIZATION;
use tokio_util::sync::CancellationToken;
use tonic::{metadata::MetadataValue, transport::Channel, Request, Status};

use crate::{
    config::backoff,
    discovery::{self, Pool},
    endpoint::transient,
    ClientConfig, ClientError, EndpointStatus,
};

pub(crate) struct Inner {
    pub(crate) cfg: ClientConfig,
    pub(crate) pool: Pool,
    /// The round-robin counter.
    pub(crate) next: AtomicUsize,
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
    /// used once it comes up) and a health checker per endpoint. `dns:` names are
    /// resolved once before this returns; one that does not resolve yet is tried again
    /// in the background (calls fail UNAVAILABLE while no endpoint at all is known).
    ///
    /// Errors: [`ClientError::Config`] for no endpoints, a malformed one, or bad TLS.
    pub async fn connect(cfg: ClientConfig) -> Result<Client, ClientError> {
        if cfg.endpoints.is_empty() {
            return Err(ClientError::Config("at least one endpoint is required".into()));
        }
        let stop = CancellationToken::new();
        let pool = Pool::new(&cfg, &stop)?;
        let token = RwLock::new(cfg.token.clone());
        let client = Client {
            inner: Arc::new(Inner {
                cfg,
                pool,
                next: AtomicUsize::new(0),
                token,
                session: Default::default(),
                stop,
            }),
        };
        let inner = &client.inner;
        for node in inner.pool.nodes().iter() {
            node.spawn_health_check(inner.cfg.health_interval);
        }
        let names = inner.pool.dns_targets();
        futures_util::future::join_all(names.iter().map(|&t| discovery::resolve(inner, t))).await;
        for t in names {
            discovery::spawn_resolver(inner, t);
        }
        client.spawn_refresher();
        Ok(client)
    }

    /// Replaces the bearer token sent with every call.
    pub fn set_token(&self, token: Option<String>) {
        *self.inner.token.write().unwrap_or_else(|e| e.into_inner()) = token;
    }

    /// Each endpoint's health, breaker and counters, in list order (a `dns:` target's
    /// addresses in the order of its last resolution).
    pub fn endpoints(&self) -> Vec<EndpointStatus> {
        self.inner.pool.nodes().iter().map(|n| n.status()).collect()
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
            let generation = self.inner.session.generation();
            let res = match self.pick() {
                Ok(node) => {
                    let mut req = self.request(msg.clone());
                    req.set_timeout(self.inner.cfg.deadline);
                    let res = call(node.channel.clone(), req).await;
                    node.record(!matches!(&res, Err(s) if transient(s)), &self.inner.cfg);
                    res
                }
                Err(none) => Err(none),
            };
            let failed = matches!(&res, Err(s) if transient(s));
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
