//! One server endpoint as the client sees it: its channel, its health checker and last
//! verdict, circuit breaker, calls in flight ([`Lease`]) and counters; and which failures
//! say nothing about the request (transient). Which endpoints exist is `discovery`'s
//! business, which one a call takes is `balance`'s.

use std::{
    net::SocketAddr,
    ops::Deref,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::{transport::Channel, Code, Request, Status};

use crate::ClientConfig;

/// A circuit breaker's state, as [`Client::endpoints`](crate::Client::endpoints) reports it.
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
    /// The endpoint URI; for an address resolved from a `dns:` target, `SCHEME://IP:PORT`.
    pub uri: String,
    /// The configured endpoint it comes from (equal to `uri` for a static one, e.g.
    /// `dns:///hub.internal:50051` for a resolved one).
    pub target: String,
    /// Last health check said SERVING.
    pub healthy: bool,
    /// Its breaker.
    pub breaker: BreakerState,
    /// Calls answered by it (any status but a transport failure).
    pub answered: u64,
    /// Calls that failed to reach it or got UNAVAILABLE.
    pub failed: u64,
    /// Unary calls in flight on it now, plus the streams open on it (subscriptions,
    /// user watches): what the `least_pending` policy compares.
    pub in_flight: u64,
}

struct Breaker {
    consecutive: u32,
    open_until: Option<Instant>,
    probing: bool,
}

pub(crate) struct Node {
    pub(crate) uri: String,
    /// The configured endpoint this node comes from.
    pub(crate) target: String,
    /// The address it is pinned to, when it was resolved from DNS.
    pub(crate) addr: Option<SocketAddr>,
    pub(crate) channel: Channel,
    healthy: AtomicBool,
    breaker: Mutex<Breaker>,
    answered: AtomicU64,
    failed: AtomicU64,
    in_flight: AtomicUsize,
    /// Cancelled when the node leaves the client (its name stopped resolving to it) or
    /// the client is dropped: its health checker stops.
    pub(crate) stop: CancellationToken,
    /// Told when the node is ejected (health check failed, breaker opened), so its DNS
    /// target is resolved again without waiting for the refresh interval.
    kick: Option<Arc<Notify>>,
}

impl Node {
    /// A node assumed healthy with a closed breaker until told otherwise.
    pub(crate) fn new(uri: String, channel: Channel) -> Node {
        Node {
            target: uri.clone(),
            uri,
            addr: None,
            channel,
            healthy: AtomicBool::new(true),
            breaker: Mutex::new(Breaker {
                consecutive: 0,
                open_until: None,
                probing: false,
            }),
            answered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            stop: CancellationToken::new(),
            kick: None,
        }
    }

    /// This node as one address of the DNS target `target`: stopped with `stop`,
    /// kicking `kick` when ejected.
    pub(crate) fn resolved(
        mut self,
        target: &str,
        addr: SocketAddr,
        stop: CancellationToken,
        kick: Arc<Notify>,
    ) -> Node {
        self.target = target.to_string();
        self.addr = Some(addr);
        self.stop = stop;
        self.kick = Some(kick);
        self
    }

    /// Stopped along with `stop` (the client's).
    pub(crate) fn stopped_by(mut self, stop: &CancellationToken) -> Node {
        self.stop = stop.child_token();
        self
    }

    /// Its health, breaker and counters now.
    pub(crate) fn status(&self) -> EndpointStatus {
        EndpointStatus {
            uri: self.uri.clone(),
            target: self.target.clone(),
            healthy: self.healthy(),
            breaker: self.state(),
            answered: self.answered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            in_flight: self.in_flight() as u64,
        }
    }

    pub(crate) fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Records a health verdict; turning unhealthy is an ejection.
    pub(crate) fn set_healthy(&self, ok: bool) {
        if self.healthy.swap(ok, Ordering::Relaxed) && !ok {
            self.ejected();
        }
    }

    /// Calls and streams in flight on this node.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn ejected(&self) {
        if let Some(kick) = &self.kick {
            kick.notify_one();
        }
    }

    /// Checks grpc.health.v1 every `interval` (the first check at once) until the node
    /// stops; each verdict goes to [`Node::set_healthy`].
    pub(crate) fn spawn_health_check(self: &Arc<Self>, interval: Duration) {
        use tonic_health::pb::{
            health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
        };
        let node = self.clone();
        tokio::spawn(async move {
            loop {
                let mut req = Request::new(HealthCheckRequest::default());
                req.set_timeout(interval.min(Duration::from_secs(2)));
                let mut health = HealthClient::new(node.channel.clone());
                let check = health.check(req);
                let ok = tokio::select! {
                    _ = node.stop.cancelled() => return,
                    r = check => r.is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32),
                };
                node.set_healthy(ok);
                tokio::select! {
                    _ = node.stop.cancelled() => return,
                    _ = tokio::time::sleep(interval) => {}
                }
            }
        });
    }

    pub(crate) fn state(&self) -> BreakerState {
        let b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        match b.open_until {
            None => BreakerState::Closed,
            Some(t) if Instant::now() < t => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// Whether [`Node::admit`] would let a call through now (without taking the
    /// half-open breaker's one probe).
    pub(crate) fn available(&self) -> bool {
        let b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        match b.open_until {
            None => true,
            Some(t) => Instant::now() >= t && !b.probing,
        }
    }

    /// Whether a call may go here now; a half-open breaker admits one probe at a time.
    pub(crate) fn admit(&self) -> bool {
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

    pub(crate) fn record(&self, reached: bool, cfg: &ClientConfig) {
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
                let opened = b.open_until.is_none();
                b.open_until = Some(Instant::now() + cfg.breaker_cooldown);
                drop(b);
                if opened {
                    self.ejected();
                }
            }
        }
    }
}

/// A call or stream in flight on a node: counted from the pick until it is dropped
/// (a unary call's end; a stream's end or its owner dropping it).
pub(crate) struct Lease(Arc<Node>);

impl Lease {
    pub(crate) fn new(node: Arc<Node>) -> Lease {
        node.in_flight.fetch_add(1, Ordering::Relaxed);
        Lease(node)
    }
}

impl Deref for Lease {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.0
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A failure that says nothing about the request itself: the server was not reached,
/// is going away, or is overloaded. Safe to retry elsewhere for idempotent calls.
pub(crate) fn transient(s: &Status) -> bool {
    matches!(s.code(), Code::Unavailable | Code::Unknown)
        || s.message().contains("transport error")
        // A call cut by its connection closing (e.g. the server was killed) surfaces as
        // CANCELLED with the transport error as its source: not an answer either.
        || std::error::Error::source(s).is_some_and(|e| e.is::<tonic::transport::Error>())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tonic::transport::Endpoint;

    use super::*;

    fn node() -> Node {
        Node::new(
            "http://x".into(),
            Endpoint::from_static("http://127.0.0.1:1").connect_lazy(),
        )
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

    #[tokio::test]
    async fn available_does_not_take_the_half_open_probe() {
        let mut cfg = ClientConfig::new(["http://x"]);
        cfg.breaker_failures = 1;
        cfg.breaker_cooldown = Duration::from_millis(20);
        let n = node();
        n.record(false, &cfg);
        assert!(!n.available(), "open");
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(
            n.available() && n.available(),
            "half open, asking twice takes nothing"
        );
        assert!(n.admit(), "so the probe is still there");
        assert!(!n.available(), "and once taken, the node is not available");
    }

    #[tokio::test]
    async fn a_lease_counts_until_dropped_and_ejection_kicks_once() {
        let kick = Arc::new(Notify::new());
        let n = Arc::new(node().resolved(
            "dns:///x:1",
            "127.0.0.1:1".parse().unwrap(),
            CancellationToken::new(),
            kick.clone(),
        ));
        let (a, b) = (Lease::new(n.clone()), Lease::new(n.clone()));
        assert_eq!(n.status().in_flight, 2);
        drop(a);
        assert_eq!(n.in_flight(), 1);
        drop(b);
        assert_eq!(n.in_flight(), 0);

        n.set_healthy(false);
        tokio::time::timeout(Duration::from_secs(1), kick.notified())
            .await
            .expect("turning unhealthy kicks the resolver");
        n.set_healthy(false);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), kick.notified())
                .await
                .is_err(),
            "staying unhealthy does not kick again"
        );
    }
}
