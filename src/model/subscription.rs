//! An event subscription in domain terms: the validated Start the hub opens it with, the
//! position it reports first, and what introspection sees of it.

/// Where a subscription starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartFrom {
    /// After the consumer's stored cursor.
    Cursor,
    /// After the current head.
    Latest,
    /// From the oldest retained event.
    Earliest,
    /// After this seq.
    Seq(u64),
}

/// How the client acknowledges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckMode {
    /// Cumulative acks; at most `window` unacked in flight.
    Explicit,
    /// Acked once written to the stream.
    None,
}

/// A validated Start.
#[derive(Clone, Debug)]
pub struct SubscribeParams {
    /// Recipient.
    pub user_id: u64,
    /// Durable consumer, if any.
    pub consumer_id: Option<String>,
    /// Only these types (empty = all), sorted.
    pub types: Vec<String>,
    /// Start position.
    pub start_from: StartFrom,
    /// Max unacked in flight.
    pub window: u32,
    /// Ack mode.
    pub ack_mode: AckMode,
}

/// The first message of a subscription: where it resumes and what the log holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribed {
    /// Recipient.
    pub user_id: u64,
    /// Durable consumer, if any.
    pub consumer_id: Option<String>,
    /// Events after this seq follow.
    pub resume_after: u64,
    /// The newest seq when the stream opened.
    pub head_seq: u64,
    /// The oldest retained seq (head + 1 when the log is empty).
    pub earliest_seq: u64,
    /// Retention removed events the requested start would have included.
    pub truncated: bool,
    /// The position asked for; below `resume_after` only when `truncated`.
    pub requested_after: u64,
}

/// What a subscription holds (introspection for tests and debugging).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubInfo {
    /// Live events waiting in memory for window space.
    pub pending: usize,
    /// Messages written to the outbox but not yet taken by the transport.
    pub queued: usize,
    /// Events sent and not yet acked.
    pub unacked: usize,
    /// The highest seq accounted for.
    pub tail: u64,
    /// The newest seq known to exist.
    pub known_head: u64,
    /// Reading from the store rather than live.
    pub behind: bool,
}
