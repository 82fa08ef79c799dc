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
pub use crate::model::{AckMode, StartFrom, SubInfo, SubscribeParams};
use crate::{
    error::ApiError,
    lifecycle::{actor_stream, ResponseStream},
    model::Subscribed,
    store::events::StoredEvent,
};

/// What the actor writes to its outbox and the stream yields: small (32 bytes) so an
/// idle stream's channel costs little, and events stay shared `Arc`s until the edge
/// encodes them on the transport's task.
#[derive(Debug)]
pub enum Out {
    /// The first message.
    Subscribed(Box<Subscribed>),
    /// An event.
    Event(StoredEvent),
    /// A heartbeat: (head seq, time in micros).
    Heartbeat(u64, i64),
}

/// The sending side of a subscription's outbox.
pub type Outbox = mpsc::Sender<Out>;

/// Spawns the actor for a validated Start and returns the response stream, whose items
/// `to_wire` converts (on the transport's task) as they leave the outbox.
pub(crate) async fn open<T: Send + 'static>(
    hub: Hub,
    params: SubscribeParams,
    to_wire: fn(Out) -> Result<T, Status>,
) -> Result<Opened<T>, ApiError> {
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
        stream: actor_stream(rx, to_wire, term_rx, token),
        closed,
    })
}

/// An opened subscription.
pub struct Opened<T> {
    /// Its actor (the handler forwards the client's acks to it).
    pub handle: SubscriptionHandle,
    /// The stream, converted by the edge's `to_wire`.
    pub stream: ResponseStream<T>,
    /// A handle on the outbox whose `closed()` resolves when the client is gone.
    pub closed: Outbox,
}
