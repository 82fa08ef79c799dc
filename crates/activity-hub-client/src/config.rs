//! How a [`crate::Client`] connects and behaves, why a call failed, and the retry
//! delays.

use std::time::Duration;

use tonic::{transport::ClientTlsConfig, Status};

use crate::{Balance, Resolver};

/// How a [`Client`](crate::Client) connects and behaves.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The servers: each `http://HOST:PORT` or `https://HOST:PORT` (one server), or
    /// `dns:///NAME:PORT` (also spelled `dns://NAME:PORT`): every address NAME resolves
    /// to (A and AAAA records), followed as they change; `https` when [`tls`](Self::tls)
    /// is set, with certificates checked against NAME.
    pub endpoints: Vec<String>,
    /// How calls and streams are spread over the endpoints that are up.
    pub balance: Balance,
    /// How often `dns:` names are resolved again (they also are soon after one of their
    /// addresses is ejected or a resolution failed). The system resolver does not report
    /// the records' TTL: set this to about the TTL.
    pub dns_refresh: Duration,
    /// What resolves `dns:` names (default: the system's resolver).
    pub resolver: Resolver,
    /// Bearer token sent with every call (see also [`Client::set_token`](crate::Client::set_token)).
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
    /// Defaults for `endpoints`: round robin, 5 s deadlines, 4 attempts, backoff
    /// 50 ms..2 s, breaker opens after 3 failures for 2 s, health checked every 2 s, DNS
    /// names resolved again every 30 s.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(endpoints: I) -> ClientConfig {
        ClientConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            balance: Balance::RoundRobin,
            dns_refresh: Duration::from_secs(30),
            resolver: Resolver::system(),
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

    /// This configuration with balancing policy `balance`.
    pub fn with_balance(mut self, balance: Balance) -> ClientConfig {
        self.balance = balance;
        self
    }

    /// This configuration with `dns:` names resolved again every `every`.
    pub fn with_dns_refresh(mut self, every: Duration) -> ClientConfig {
        self.dns_refresh = every;
        self
    }

    /// This configuration with `dns:` names resolved by `resolve(name, port)` instead of
    /// the system resolver (service discovery of the application's own, tests).
    pub fn with_resolver(
        mut self,
        resolve: impl Fn(&str, u16) -> crate::Resolution + Send + Sync + 'static,
    ) -> ClientConfig {
        self.resolver = Resolver::new(resolve);
        self
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

/// The delay before retry or reconnect number `attempt`: exponential up to
/// `max_backoff`, with full jitter.
pub(crate) fn backoff(cfg: &ClientConfig, attempt: u32) -> Duration {
    let cap = cfg
        .initial_backoff
        .saturating_mul(1u32 << attempt.min(16))
        .min(cfg.max_backoff);
    // Full jitter: a random delay in [0, cap], so clients that failed together do not
    // come back together.
    cap.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

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
