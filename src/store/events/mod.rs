//! The activity log: its types, and the store's operations on it, one concept a module:
//!
//! - `commit`: [`commit_batch`], the group commit of publishes and acks, step by step,
//!   with `idempotency` (keys seen before, claimed, recorded) and `verify` (what
//!   happened to a batch whose COMMIT lost its answer);
//! - `notify`: PostgreSQL LISTEN/NOTIFY of new heads between servers sharing a store;
//! - `read`: heads, history pages and cursors (a recipient's deliveries from `inbox` and,
//!   until merged, `inbox_tail`);
//! - `merge`: SQLite's merge of `inbox_tail` into `inbox`, a slice of whole recipients
//!   per transaction;
//! - `retention`: pruning old deliveries, events and idempotency keys;
//! - `ids`: event ids (UUIDv7 in commit-time order).
//!
//! [`commit_batch`] is the only writer of `events`, `heads`, `cursors` and of deliveries
//! (`inbox` on PostgreSQL, `inbox_tail` on SQLite, which only the merge moves on) and is
//! called by the persistence actor alone, one batch at a time per server, on the store's
//! writer inside one write transaction: a batch commits whole or leaves no trace. All the
//! multi-row statements are built with `QueryBuilder`, which emits each engine's own
//! placeholders, in chunks below both engines' bind-parameter limits (see
//! [`super::plan`]).
//!
//! [`commit_batch`]: super::Store::commit_batch

mod commit;
mod idempotency;
mod ids;
mod merge;
mod notify;
mod read;
mod retention;
mod verify;

use std::{collections::BTreeMap, sync::Arc};

use bytes::Bytes;

/// A validated publish, ready to commit.
#[derive(Debug)]
pub struct NewEvent {
    /// Distinct recipients, ascending.
    pub recipients: Vec<u64>,
    /// The event type.
    pub event_type: String,
    /// Opaque payload.
    pub payload: Bytes,
    /// MIME type of the payload.
    pub content_type: String,
    /// String attributes.
    pub attributes: BTreeMap<String, String>,
    /// The publishing user.
    pub publisher_id: u64,
    /// Deduplication key; empty = none.
    pub idempotency_key: String,
}

/// An event as stored once and shared (never copied) by every delivery of it.
#[derive(Debug)]
pub struct EventBody {
    /// UUIDv7 text.
    pub event_id: String,
    /// The event type.
    pub event_type: String,
    /// Opaque payload (reference-counted).
    pub payload: Bytes,
    /// MIME type.
    pub content_type: String,
    /// Attributes.
    pub attributes: BTreeMap<String, String>,
    /// Commit time, microseconds since the epoch.
    pub published_at: i64,
    /// The publisher.
    pub publisher_id: u64,
}

/// One recipient's copy of an event: its seq and the shared body.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    /// The recipient.
    pub user_id: u64,
    /// Its seq in the recipient's stream.
    pub seq: u64,
    /// The shared body.
    pub body: Arc<EventBody>,
}

/// The result of one publish within a batch.
#[derive(Debug)]
pub enum PublishOutcome {
    /// Stored now; `deliveries` lists (recipient, seq) ascending by recipient.
    Committed {
        /// The stored body.
        body: Arc<EventBody>,
        /// (recipient, seq) pairs.
        deliveries: Vec<(u64, u64)>,
    },
    /// The idempotency key matched an earlier publish.
    Duplicate {
        /// The first event's id.
        event_id: String,
        /// The first event's deliveries.
        deliveries: Vec<(u64, u64)>,
    },
    /// A recipient does not exist (the first missing one, in request order).
    MissingRecipient(u64),
}

/// A committed event and its (recipient, seq) deliveries.
pub type Committed = (Arc<EventBody>, Vec<(u64, u64)>);

/// A cumulative ack to persist.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AckRecord {
    /// The recipient.
    pub user_id: u64,
    /// The durable consumer.
    pub consumer_id: String,
    /// Everything up to this seq is done.
    pub acked_seq: u64,
}

/// What one retention pass removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Inbox rows (deliveries) removed.
    pub deliveries: u64,
    /// Event bodies removed.
    pub events: u64,
}

/// Retention limits; `None` = unlimited.
#[derive(Clone, Copy, Debug)]
pub struct RetentionPolicy {
    /// Events committed before this time (micros) are pruned.
    pub cutoff_micros: Option<i64>,
    /// Keep at most this many newest events per recipient.
    pub max_per_recipient: Option<u64>,
    /// Idempotency keys older than this (micros) are forgotten.
    pub idempotency_cutoff_micros: i64,
}
