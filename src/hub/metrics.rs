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
/// Events committed for the recipients of open subscriptions and not yet acknowledged on
/// them (each stream counts its recipient's head minus its acked seq), summed.
pub const LAG: &str = "hub_subscriber_lag_events";
/// Deliveries removed by retention.
pub const PRUNED: &str = "hub_retention_pruned_deliveries_total";
/// 1 while the cluster bus delivers messages (always 1 for a server alone on its store).
pub const BUS_UP: &str = "hub_cluster_bus_up";
/// Messages sent to other servers over the cluster bus.
pub const BUS_SENT: &str = "hub_cluster_messages_sent_total";
/// Messages received from other servers over the cluster bus.
pub const BUS_RECEIVED: &str = "hub_cluster_messages_received_total";
/// Fallback polls of the store for the heads and cursors of this server's streams.
pub const BUS_POLLS: &str = "hub_cluster_polls_total";

/// Buckets of [`BATCH_SIZE`].
pub const BATCH_BUCKETS: &[f64] = &[1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 8192.0];
/// Buckets of [`COMMIT_SECONDS`].
pub const COMMIT_BUCKETS: &[f64] = &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// Describes every hub series and creates it at zero, so dashboards and `rate()` see
/// them from the first scrape rather than from the first event.
pub fn register() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(PUBLISHED, "Events committed (one per publish).");
    describe_counter!(
        DELIVERIES,
        "Deliveries committed (one per recipient of a publish)."
    );
    describe_counter!(DELIVERED, "Events written to subscription streams.");
    describe_gauge!(SUBSCRIPTIONS, "Open Subscribe streams.");
    describe_gauge!(WATCHERS, "Open UserActivity streams.");
    describe_gauge!(
        LAG,
        "Sum over open subscriptions of events committed and not yet acknowledged."
    );
    describe_histogram!(BATCH_SIZE, "Publishes per group commit.");
    describe_histogram!(COMMIT_SECONDS, Unit::Seconds, "Duration of a group commit.");
    describe_counter!(
        COMMIT_FAILURES,
        "Group commits that failed (their publishers got an error)."
    );
    describe_counter!(ACKS, "Cursor updates persisted, after coalescing per consumer.");
    describe_counter!(
        STALLS,
        "Times a subscription fell behind and switched to reading the store."
    );
    describe_counter!(PRUNED, "Deliveries removed by retention.");
    describe_gauge!(
        BUS_UP,
        "1 while the cluster bus (NATS or PostgreSQL NOTIFY) delivers; 0 while servers fall back to polling the store."
    );
    describe_counter!(BUS_SENT, "Messages sent to other servers over the cluster bus.");
    describe_counter!(
        BUS_RECEIVED,
        "Messages received from other servers over the cluster bus."
    );
    describe_counter!(
        BUS_POLLS,
        "Polls of the store for the heads and cursors of this server's streams (the cluster bus's safety net)."
    );
    describe_counter!(crate::limits::RATE_LIMITED, "Calls refused by a rate limit.");
    for c in [
        PUBLISHED,
        DELIVERIES,
        DELIVERED,
        COMMIT_FAILURES,
        ACKS,
        STALLS,
        PRUNED,
        BUS_SENT,
        BUS_RECEIVED,
        BUS_POLLS,
    ] {
        metrics::counter!(c).increment(0);
    }
    for g in [SUBSCRIPTIONS, WATCHERS, LAG] {
        metrics::gauge!(g).increment(0.0);
    }
    metrics::gauge!(BUS_UP).set(1.0);
}

pub(crate) fn bus_up(up: bool) {
    metrics::gauge!(BUS_UP).set(if up { 1.0 } else { 0.0 });
}

pub(crate) fn bus_sent() {
    metrics::counter!(BUS_SENT).increment(1);
}

pub(crate) fn bus_received() {
    metrics::counter!(BUS_RECEIVED).increment(1);
}

pub(crate) fn bus_polled() {
    metrics::counter!(BUS_POLLS).increment(1);
}

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

// The two series every subscription updates per actor message (the deliver path) keep
// their handles instead of looking the name up in the recorder each time. The recorder is
// installed before the hub starts, so the first use sees it.
static DELIVERED_HANDLE: std::sync::OnceLock<metrics::Counter> = std::sync::OnceLock::new();
static LAG_HANDLE: std::sync::OnceLock<metrics::Gauge> = std::sync::OnceLock::new();

pub(crate) fn delivered(n: u64) {
    DELIVERED_HANDLE
        .get_or_init(|| metrics::counter!(DELIVERED))
        .increment(n);
}

/// One stream's lag moved from `was` to `now`.
pub(crate) fn lag(was: u64, now: u64) {
    let g = LAG_HANDLE.get_or_init(|| metrics::gauge!(LAG));
    if now >= was {
        g.increment((now - was) as f64);
    } else {
        g.decrement((was - now) as f64);
    }
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
