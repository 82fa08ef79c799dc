//! Token-bucket rate limits (governor): one bucket per authenticated user for every RPC,
//! and one per peer address + login identifier for Login, so guessing passwords is slow
//! while other users and other addresses are not affected.
//!
//! A refused call gets RESOURCE_EXHAUSTED with a `retry-after-ms` metadata hint (see
//! [`ApiError::RateLimited`]) and counts in `hub_rate_limited_total{limit}`.

use std::{net::IpAddr, num::NonZeroU32, sync::Arc, time::Duration};

use governor::{
    clock::{Clock, DefaultClock},
    DefaultKeyedRateLimiter, Quota, RateLimiter,
};
use metrics::Counter;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;

/// Rejections by rate limits, labelled `limit="user"` or `limit="login"`.
pub const RATE_LIMITED: &str = "hub_rate_limited_total";

/// How often idle buckets are forgotten (a full bucket carries no information).
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Longest identifier kept as a Login bucket key (longer ones are cut, not refused here).
const MAX_KEY_CHARS: usize = 320;

/// The server's rate limiters.
pub struct RateLimits {
    user: Option<DefaultKeyedRateLimiter<u64>>,
    login: Option<DefaultKeyedRateLimiter<(IpAddr, String)>>,
    clock: DefaultClock,
    user_rejected: Counter,
    login_rejected: Counter,
}

/// `None` when `rate` is 0 (limit off).
fn quota(rate: u32, burst: u32, per: fn(NonZeroU32) -> Quota) -> Option<Quota> {
    let rate = NonZeroU32::new(rate)?;
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Some(per(rate).allow_burst(burst))
}

impl RateLimits {
    /// `user_per_sec` calls per second per user (burst `user_burst`); `login_per_min`
    /// attempts per minute per peer address and identifier (burst `login_burst`). A zero
    /// rate turns that limit off.
    pub fn new(user_per_sec: u32, user_burst: u32, login_per_min: u32, login_burst: u32) -> Arc<RateLimits> {
        Arc::new(RateLimits {
            user: quota(user_per_sec, user_burst, Quota::per_second).map(RateLimiter::keyed),
            login: quota(login_per_min, login_burst, Quota::per_minute).map(RateLimiter::keyed),
            clock: DefaultClock::default(),
            user_rejected: metrics::counter!(RATE_LIMITED, "limit" => "user"),
            login_rejected: metrics::counter!(RATE_LIMITED, "limit" => "login"),
        })
    }

    /// Takes one token from `user`'s bucket.
    pub fn check_user(&self, user: u64) -> Result<(), ApiError> {
        let Some(limiter) = &self.user else {
            return Ok(());
        };
        limiter.check_key(&user).map_err(|not_until| {
            self.user_rejected.increment(1);
            ApiError::RateLimited {
                what: "too many calls for this user",
                retry_after: not_until.wait_time_from(self.clock.now()),
            }
        })
    }

    /// Takes one token from the bucket of (`peer`, `identifier`); the identifier is
    /// compared case-insensitively, as Login compares emails.
    pub fn check_login(&self, peer: Option<IpAddr>, identifier: &str) -> Result<(), ApiError> {
        let Some(limiter) = &self.login else {
            return Ok(());
        };
        let ip = peer.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let id: String = identifier
            .trim()
            .chars()
            .take(MAX_KEY_CHARS)
            .flat_map(char::to_lowercase)
            .collect();
        limiter.check_key(&(ip, id)).map_err(|not_until| {
            self.login_rejected.increment(1);
            ApiError::RateLimited {
                what: "too many login attempts for this identifier from this address",
                retry_after: not_until.wait_time_from(self.clock.now()),
            }
        })
    }

    /// Forgets refilled buckets every minute until `stop`, so memory follows the active
    /// users and addresses rather than every one ever seen.
    pub fn spawn_sweeper(self: &Arc<Self>, stop: CancellationToken) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let Some(me) = me.upgrade() else { return };
                if let Some(l) = &me.user {
                    l.retain_recent();
                    l.shrink_to_fit();
                }
                if let Some(l) = &me.login {
                    l.retain_recent();
                    l.shrink_to_fit();
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_over_the_burst_is_refused_with_a_retry_hint_and_others_are_not() {
        let l = RateLimits::new(1, 3, 0, 0);
        for _ in 0..3 {
            l.check_user(7).unwrap();
        }
        match l.check_user(7) {
            Err(ApiError::RateLimited { retry_after, .. }) => {
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1))
            }
            other => panic!("expected RateLimited, got {other:?}"),
        }
        l.check_user(8).unwrap();
        l.check_login(None, "anyone").unwrap();
    }

    #[test]
    fn login_buckets_are_per_address_and_identifier() {
        let l = RateLimits::new(0, 0, 1, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        l.check_login(Some(a), "Alice@x.io").unwrap();
        l.check_login(Some(a), "alice@x.io").unwrap();
        assert!(
            l.check_login(Some(a), "ALICE@x.io").is_err(),
            "same key, case-insensitive"
        );
        l.check_login(Some(b), "alice@x.io").unwrap();
        l.check_login(Some(a), "bob@x.io").unwrap();
        l.check_user(1).unwrap();
    }
}
