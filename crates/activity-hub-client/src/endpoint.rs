//! One server endpoint as the client sees it: its channel, last health verdict, circuit
//! breaker and counters; and which failures say nothing about the request (transient).

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Mutex,
    },
    time::Instant,
};

use tonic::{transport::Channel, Code, Status};

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

pub(crate) struct Node {
    pub(crate) uri: String,
    pub(crate) channel: Channel,
    pub(crate) healthy: AtomicBool,
    breaker: Mutex<Breaker>,
    answered: AtomicU64,
    failed: AtomicU64,
}

impl Node {
    /// A node assumed healthy with a closed breaker until told otherwise.
    pub(crate) fn new(uri: String, channel: Channel) -> Node {
        Node {
            uri,
            channel,
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

    /// Its health, breaker and counters now.
    pub(crate) fn status(&self) -> EndpointStatus {
        EndpointStatus {
            uri: self.uri.clone(),
            healthy: self.healthy.load(Ordering::Relaxed),
            breaker: self.state(),
            answered: self.answered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn state(&self) -> BreakerState {
        let b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        match b.open_until {
            None => BreakerState::Closed,
            Some(t) if Instant::now() < t => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
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
                b.open_until = Some(Instant::now() + cfg.breaker_cooldown);
            }
        }
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
}
