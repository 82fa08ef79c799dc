//! Subscriptions: one actor per Subscribe stream, which replays history from the store
//! in pages, then takes live events without gap or duplicate at the seam, keeps at most
//! `window` unacked events in flight and falls back to reading the store when the client
//! is behind, so its memory is O(window) however far behind the client is.
//!
//! - [`window`]: the position and window logic as plain data (`Cursor`), unit-tested.
//! - [`actor`]: the actor: outbox, timers, store reads in tasks that answer by message.
//! - [`handle`]: [`SubscriptionHandle`], the typed way in; callers never build messages.
//!
//! This module holds the stream's parameters, what it writes to its outbox, and [`open`].

mod actor;
mod handle;
mod window;

use ractor::Actor;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

pub use handle::{stub, ClientInput, SubscriptionHandle};

use super::Hub;
use crate::{
    activity::convert,
    error::ApiError,
    lifecycle::{actor_stream, ResponseStream},
    proto::activity::v1::{self as pb, subscribe_response::Msg},
    store::events::StoredEvent,
};

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

/// What the actor writes to its outbox: small (32 bytes) so an idle stream's channel
/// costs little, and events stay shared `Arc`s until the transport task encodes them.
pub enum Out {
    /// The first message.
    Subscribed(Box<pb::Subscribed>),
    /// An event.
    Event(StoredEvent),
    /// A heartbeat: (head seq, time in micros).
    Heartbeat(u64, i64),
}

impl Out {
    fn into_wire(self) -> Result<pb::SubscribeResponse, Status> {
        let msg = match self {
            Out::Subscribed(s) => Msg::Subscribed(*s),
            Out::Event(ev) => Msg::Event(convert::event(&ev)),
            Out::Heartbeat(head_seq, at) => Msg::Heartbeat(pb::Heartbeat {
                head_seq,
                at: Some(convert::timestamp(at)),
            }),
        };
        Ok(pb::SubscribeResponse { msg: Some(msg) })
    }
}

/// The sending side of a subscription's outbox.
pub type Outbox = mpsc::Sender<Out>;

/// Spawns the actor for a validated Start and returns the response stream.
pub(crate) async fn open(hub: Hub, params: SubscribeParams) -> Result<Opened, ApiError> {
    // Explicit: the window bounds what is in flight, so the outbox never fills with
    // events (room for Subscribed and heartbeats on top). None: transport pacing.
    let capacity = match params.ack_mode {
        AckMode::Explicit => params.window as usize + 4,
        AckMode::None => (params.window as usize).clamp(16, 1024),
    };
    let (out, rx) = mpsc::channel(capacity);
    let (term_tx, term_rx) = oneshot::channel();
    let token = hub.shutdown_token().clone();
    if token.is_cancelled() {
        return Err(ApiError::Unavailable("the server is shutting down".into()));
    }
    let registry = hub.registry().cell();
    let closed = out.clone();
    let (actor, _) = Actor::spawn_linked(
        None,
        actor::Subscription,
        actor::Args {
            hub,
            params,
            out,
            terminal: term_tx,
        },
        registry,
    )
    .await
    .map_err(|e| match e {
        ractor::SpawnErr::StartupFailed(inner) => match inner.downcast::<ApiError>() {
            Ok(api) => *api,
            Err(other) => ApiError::Internal(other),
        },
        other => ApiError::Internal(Box::new(other)),
    })?;
    Ok(Opened {
        handle: SubscriptionHandle(actor),
        stream: actor_stream(rx, Out::into_wire, term_rx, token),
        closed,
    })
}

/// An opened subscription.
pub struct Opened {
    /// Its actor (the handler forwards the client's acks to it).
    pub handle: SubscriptionHandle,
    /// The response stream.
    pub stream: ResponseStream<pb::SubscribeResponse>,
    /// A handle on the outbox whose `closed()` resolves when the client is gone.
    pub closed: Outbox,
}
