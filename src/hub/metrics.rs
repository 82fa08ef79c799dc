//! The hub's Prometheus metrics. Names are declared here once; the actors record through
//! these functions. Without an installed recorder (tests, embedding) they cost nothing.

use std::time::Duration;

/// Events committed (one per publish, not per recipient).
pub const PUBLISHED: &str = "hub_events_published_total";
/// Deliveries committed (one per recipient).
pub const DELIVERIES: &str = "hub_deliveries_committed_total";
/// Events written to subscription streams.
pub const DELIVERED: &str = "hub_events_delivered_total";
/// Open subscription streams.
pub const SUBSCRIPTIONS: &str = "hub_subscriptions_active";
/// Open UserActivity streams.
pub const WATCHERS: &str = "hub_watchers_active";
/// Publishes per commit.
pub const BATCH_SIZE: &str = "hub_persistence_batch_size";
/// Commit duration.
pub const COMMIT_SECONDS: &str = "hub_persistence_commit_seconds";
/// Failed commits.
pub const COMMIT_FAILURES: &str = "hub_persistence_commit_failures_total";
/// Cumulative acks persisted (after coalescing per consumer).
pub const ACKS: &str = "hub_acks_persisted_total";
/// Times a subscription fell behind (window full or transport slow) and switched to
/// reading the store.
pub const STALLS: &str = "hub_subscription_stalls_total";
/// Deliveries removed by retention.
pub const PRUNED: &str = "hub_retention_pruned_deliveries_total";

/// Buckets of [`BATCH_SIZE`].
pub const BATCH_BUCKETS: &[f64] = &[1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 8192.0];
/// Buckets of [`COMMIT_SECONDS`].
pub const COMMIT_BUCKETS: &[f64] = &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

pub(crate) fn committed(publishes: usize, deliveries: usize, acks: usize, took: Duration) {
    metrics::counter!(PUBLISHED).increment(publishes as u64);
    metrics::counter!(DELIVERIES).increment(deliveries as u64);
    metrics::counter!(ACKS).increment(acks as u64);
    metrics::histogram!(BATCH_SIZE).record(publishes as f64);
    metrics::histogram!(COMMIT_SECONDS).record(took.as_secs_f64());
}

pub(crate) fn commit_failed() {
    metrics::counter!(COMMIT_FAILURES).increment(1);
}

pub(crate) fn delivered(n: u64) {
    metrics::counter!(DELIVERED).increment(n);
}

pub(crate) fn stalled() {
    metrics::counter!(STALLS).increment(1);
}

pub(crate) fn pruned(deliveries: u64) {
    metrics::counter!(PRUNED).increment(deliveries);
}

pub(crate) fn streams(subscriptions: i64, watchers: i64) {
    metrics::gauge!(SUBSCRIPTIONS).set(subscriptions as f64);
    metrics::gauge!(WATCHERS).set(watchers as f64);
}
