//! The activity hub: the actors behind `activity.v1` and `UserService.UserActivity`.
//!
//! - [`persistence`]: one actor owns every write to the log. Publishes and acks queue in
//!   its mailbox; a batch closes when the previous commit finishes (or at
//!   `--publish-batch-max`) and commits in one transaction (group commit). Publishers are
//!   answered only after that commit; the committed events then go to the registry.
//!   Retention runs beside it in the background.
//! - [`registry`]: one actor knows which subscription actors exist for which recipient
//!   and routes each committed batch to them, sharing event bodies (`Arc`, `Bytes`), never
//!   waiting on a subscriber. It supervises the subscription and watcher actors, so a
//!   stream that ends or fails is forgotten at once.
//! - [`subscription`]: one actor per Subscribe stream. It replays history from the store
//!   in pages, then takes live events without gap or duplicate at the seam, keeps at most
//!   `window` unacked events in flight and falls back to reading the store when the client
//!   is behind, so its memory is O(window) however far behind the client is.
//! - [`watch`]: one actor per UserActivity stream (user lifecycle notifications).
//! - `supervisor`: the root actor; it links the registry and persistence, declares the
//!   hub failed if either dies, and stops them in order at shutdown.
//! - [`notify`]: on PostgreSQL, servers sharing the database tell each other about
//!   commits, consumer takeovers and user changes with LISTEN/NOTIFY.
//!
//! The hub speaks domain types only: it takes validated [`SubscribeParams`] and
//! [`WatchChange`]s and streams [`subscription::Out`] and [`UserChange`] values, which the
//! edge ([`crate::api`]) converts to and from protobuf. It hears about user writes as the
//! [`ChangeSink`] of [`crate::users::Users`]. Imports [`crate::model`], [`crate::store`],
//! [`crate::users`] (the sink trait), [`crate::error`], [`crate::lifecycle`] and
//! [`crate::limits`] (a metric name).

mod bus;
pub mod metrics;
pub mod notify;
pub mod persistence;
pub mod registry;
pub mod subscription;
mod supervisor;
pub mod watch;

use std::{
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
    time::Duration,
};

use futures_util::Stream;
use tokio_util::sync::CancellationToken;

use crate::{
    error::ApiError,
    lifecycle::ResponseStream,
    model::{SubInfo, SubscribeParams, WatchChange},
    store::{
        events::{AckRecord, NewEvent, Pruned, PublishOutcome, StoredEvent},
        Store,
    },
    users::ChangeSink,
};
use persistence::PersistenceHandle;
use registry::RegistryHandle;
pub use subscription::{ClientInput, SubscriptionHandle};
use supervisor::SupervisorHandle;

/// Hub settings, taken from the server configuration.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Window when a Start says 0.
    pub default_window: u32,
    /// Heartbeat interval of idle streams.
    pub heartbeat_interval: Duration,
    /// Most publishes per commit.
    pub publish_batch_max: usize,
    /// Age limit of events; zero = none.
    pub retention_max_age: Duration,
    /// Per-recipient count limit; zero = none.
    pub retention_max_events: u64,
    /// How often retention runs.
    pub retention_interval: Duration,
    /// Idempotency dedupe window.
    pub idempotency_window: Duration,
    /// SQLite: how often committed deliveries waiting in `inbox_tail` are merged into
    /// `inbox` when fewer than [`MERGE_ROWS`](persistence::MERGE_ROWS) are waiting.
    pub inbox_merge_interval: Duration,
    /// `--cluster-bus`: the NATS URL servers sharing PostgreSQL talk over; `None` =
    /// PostgreSQL NOTIFY (or nobody, on SQLite).
    pub cluster_bus: Option<String>,
}

/// Live counters, for tests and metrics.
#[derive(Debug, Default)]
pub struct HubStats {
    /// Open subscription actors (counted by the registry, so failed actors leave too).
    pub subscriptions: AtomicI64,
    /// Open UserActivity watcher actors.
    pub watchers: AtomicI64,
    /// (watcher, watched user) pairs in place.
    pub watches: AtomicI64,
}

struct Inner {
    store: Store,
    config: HubConfig,
    stats: Arc<HubStats>,
    persistence: PersistenceHandle,
    registry: RegistryHandle,
    supervisor: SupervisorHandle,
    bus: bus::Bus,
    shutdown: CancellationToken,
    /// Woken by other servers' session revocations.
    sessions_wake: std::sync::OnceLock<Arc<tokio::sync::Notify>>,
}

/// Handle to the running hub; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

/// A stream actor's handle, as [`forward_requests`] feeds it the client's half of a call.
pub(crate) trait StreamInput<In>: Send + 'static {
    /// A message from the client; false once the actor has stopped.
    fn input(&self, input: In) -> bool;
    /// The request stream broke (say, an oversized message): end with this status.
    fn broken(&self, status: tonic::Status);
    /// The client went away.
    fn client_gone(&self);
}

/// Feeds the client's half of a bidi call to its stream actor as `convert(request)`, until
/// the client goes away: then `client_gone`. A reset ends it at once; a half-close does
/// not (the server keeps streaming), so it then waits for `client_gone` (the outbox
/// closing). `inbound` is the request stream as the edge decoded it (an error ends the
/// call with that status).
pub(crate) fn forward_requests<Req, In>(
    inbound: impl Stream<Item = Result<Req, tonic::Status>> + Send + 'static,
    client_gone: impl std::future::Future<Output = ()> + Send + 'static,
    actor: impl StreamInput<In>,
    convert: fn(Req) -> In,
) where
    Req: Send + 'static,
    In: 'static,
{
    use futures_util::StreamExt;
    tokio::spawn(async move {
        tokio::pin!(client_gone);
        tokio::pin!(inbound);
        loop {
            let msg = tokio::select! {
                _ = &mut client_gone => break,
                m = inbound.next() => m,
            };
            match msg {
                Some(Ok(req)) => {
                    if !actor.input(convert(req)) {
                        return;
                    }
                }
                // A broken request stream (say, an oversized message) ends the call with
                // its status; if the client is gone, nobody reads it and that is fine.
                Some(Err(status)) => {
                    actor.broken(status);
                    return;
                }
                None => {
                    client_gone.await;
                    break;
                }
            }
        }
        actor.client_gone();
    });
}

/// A user lifecycle change as the hub routes it: shared, since every watcher of the user
/// gets the same one.
pub type UserChange = Arc<crate::model::UserChange>;

impl Hub {
    /// Starts the supervisor, which starts the registry and persistence actors linked to
    /// it (and, on PostgreSQL, the listener for other servers' notifications). `shutdown`
    /// ends every open stream with UNAVAILABLE; [`Hub::shutdown`] stops the actors.
    pub async fn start(
        store: Store,
        config: HubConfig,
        shutdown: CancellationToken,
    ) -> Result<Hub, ApiError> {
        let stats = Arc::new(HubStats::default());
        let origin = uuid::Uuid::now_v7().simple().to_string();
        let bus = bus::Bus::connect(&store, config.cluster_bus.as_deref(), origin).await?;
        let (supervisor, registry, persistence) = SupervisorHandle::start(supervisor::Args {
            store: store.clone(),
            config: config.clone(),
            stats: stats.clone(),
            bus: bus.clone(),
        })
        .await
        .map_err(|e| ApiError::Internal(Box::new(e)))?;
        let hub = Hub {
            inner: Arc::new(Inner {
                store,
                config,
                stats,
                persistence,
                registry,
                supervisor,
                bus,
                shutdown,
                sessions_wake: std::sync::OnceLock::new(),
            }),
        };
        if hub.shared() {
            notify::spawn_listener(hub.clone()).await?;
        }
        Ok(hub)
    }

    /// Counters.
    pub fn stats(&self) -> &HubStats {
        &self.inner.stats
    }

    /// The settings.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Whether other servers may share the store (PostgreSQL), so changes are announced.
    pub(crate) fn shared(&self) -> bool {
        self.inner.bus.shared()
    }

    pub(crate) fn registry(&self) -> &RegistryHandle {
        &self.inner.registry
    }

    pub(crate) fn persistence(&self) -> &PersistenceHandle {
        &self.inner.persistence
    }

    /// Cancelled if one of the hub's actors fails: the hub can no longer serve, and the
    /// server shuts down (see the supervisor's failure policy).
    pub fn failed(&self) -> CancellationToken {
        self.inner.supervisor.failed().clone()
    }

    pub(crate) fn origin(&self) -> &str {
        self.inner.bus.origin()
    }

    pub(crate) fn bus(&self) -> &bus::Bus {
        &self.inner.bus
    }

    pub(crate) fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// Queues a publish for the next commit now (not when the answer is first polled);
    /// the answer resolves once it is committed or failed, UNAVAILABLE if the hub has
    /// stopped. Queueing several before awaiting pipelines them, answered in order.
    pub fn enqueue(
        &self,
        event: NewEvent,
    ) -> impl std::future::Future<Output = Result<PublishOutcome, ApiError>> + Send + 'static {
        let answer = self.inner.persistence.publish(event);
        async move {
            answer
                .await
                .unwrap_or_else(|_| Err(ApiError::Unavailable("the hub is shutting down".into())))
        }
    }

    /// Publishes and returns once committed.
    pub async fn publish(&self, event: NewEvent) -> Result<PublishOutcome, ApiError> {
        self.enqueue(event).await
    }

    /// Opens a subscription: spawns its actor (which registers, resolves the start
    /// position and sends `Subscribed` first) and returns the response stream, each item
    /// converted by `to_wire` (the edge's protobuf conversion: the hub never names it).
    pub async fn subscribe<T: Send + 'static>(
        &self,
        params: SubscribeParams,
        to_wire: fn(subscription::Out) -> Result<T, tonic::Status>,
    ) -> Result<subscription::Opened<T>, ApiError> {
        subscription::open(self.clone(), params, to_wire).await
    }

    /// Reads a page of history.
    pub async fn list_events(
        &self,
        user_id: u64,
        after: u64,
        types: &[String],
        limit: u32,
    ) -> Result<(Vec<StoredEvent>, u64, bool), ApiError> {
        let head = self.inner.store.head_seq(user_id).await?;
        let mut events = self
            .inner
            .store
            .events_page(user_id, after, head, types, limit + 1)
            .await?;
        let has_more = events.len() > limit as usize;
        events.truncate(limit as usize);
        Ok((events, head, has_more))
    }

    /// The stored cursor of a consumer and the recipient's head.
    pub async fn cursor(&self, user_id: u64, consumer_id: &str) -> Result<(u64, u64), ApiError> {
        let acked = self.inner.store.cursor(user_id, consumer_id).await?;
        let head = self.inner.store.head_seq(user_id).await?;
        Ok((acked, head))
    }

    /// The Ack RPC: moves `consumer_id`'s cursor forward to `seq` (cumulative; an older
    /// seq changes nothing) and releases the window of its live stream, on this server or
    /// another. Answers the committed (acked, head) once the cursor is in the store.
    ///
    /// With a live stream here, `seq` may not exceed what that stream sent; without one,
    /// it may not exceed the recipient's head. Both are INVALID_ARGUMENT, naming `seq`.
    pub async fn ack(&self, user_id: u64, consumer_id: &str, seq: u64) -> Result<(u64, u64), ApiError> {
        let live = self
            .inner
            .registry
            .consumer(user_id, consumer_id.to_string())
            .await;
        let answered = match &live {
            Some(stream) => stream.remote_ack(seq).await,
            None => None,
        };
        match answered {
            Some(Err(highest_sent)) => {
                return Err(ApiError::invalid(
                    "seq",
                    format!(
                    "{seq} is above the highest seq sent to consumer {consumer_id}'s stream ({highest_sent})"
                ),
                ))
            }
            // The stream queued its cursor write (with ACK_MODE_NONE it acks by itself).
            Some(Ok(_)) => {}
            None => {
                let head = self.inner.store.head_seq(user_id).await?;
                if seq > head {
                    return Err(ApiError::invalid(
                        "seq",
                        format!("{seq} is above user {user_id}'s newest seq ({head})"),
                    ));
                }
                if seq > 0 {
                    self.inner.persistence.ack(AckRecord {
                        user_id,
                        consumer_id: consumer_id.to_string(),
                        acked_seq: seq,
                    });
                }
            }
        }
        self.flush().await;
        let (acked, head) = self.cursor(user_id, consumer_id).await?;
        let expected = match answered {
            Some(Ok(acked_on_stream)) => acked_on_stream,
            _ => seq,
        };
        if acked < expected {
            return Err(ApiError::Unavailable(
                "the ack could not be committed (the store is failing); retry".into(),
            ));
        }
        if live.is_none() && self.shared() && seq > 0 {
            notify::announce_ack(self.clone(), user_id, consumer_id, seq);
        }
        Ok((acked, head))
    }

    /// Sessions were revoked here: the other servers re-read revocations at once.
    pub fn sessions_revoked(&self) {
        if self.shared() {
            self.inner.bus.send(format!("s|{}|", self.origin()));
        }
    }

    /// What another server's `s` message wakes (the session poller).
    pub fn on_sessions_revoked(&self, wake: Arc<tokio::sync::Notify>) {
        let _ = self.inner.sessions_wake.set(wake);
    }

    pub(crate) fn wake_sessions(&self) {
        if let Some(w) = self.inner.sessions_wake.get() {
            w.notify_one();
        }
    }

    /// Waits until everything queued so far (publishes and acks) is committed.
    pub async fn flush(&self) {
        self.inner.persistence.flush().await;
    }

    /// Runs one retention pass now, as if the clock read `now_micros`.
    pub async fn prune_at(&self, now_micros: i64) -> Result<Pruned, ApiError> {
        Ok(self
            .inner
            .store
            .prune(persistence::retention_policy(&self.inner.config, now_micros))
            .await?)
    }

    /// What each open subscription of `user_id` holds right now (introspection).
    pub async fn inspect(&self, user_id: u64) -> Vec<SubInfo> {
        let mut out = Vec::new();
        for s in self.inner.registry.subscribers(user_id).await {
            out.extend(s.inspect().await);
        }
        out
    }

    /// Tells watchers about a user change (local ones now, other servers via the store).
    pub fn user_changed(&self, change: UserChange) {
        if self.shared() {
            notify::announce_user_change(self.clone(), &change);
        }
        self.inner.registry.user_changed(change);
    }

    /// Opens a UserActivity stream for an authenticated caller. `requests` are the
    /// caller's watch changes, already validated and authorized by the edge; an error in
    /// it ends the stream with that status. The stream carries every change of a watched
    /// user until the client goes, falls too far behind, or shutdown.
    pub async fn watch<T: Send + 'static>(
        &self,
        requests: impl Stream<Item = Result<WatchChange, tonic::Status>> + Send + 'static,
        to_wire: fn(UserChange) -> Result<T, tonic::Status>,
    ) -> Result<ResponseStream<T>, ApiError> {
        watch::open(self.clone(), requests, to_wire).await
    }

    /// Shutdown, once the transport has stopped: awaits the stream actors (up to `grace`
    /// for them to end by themselves; any left are drained), commits what is queued (acks
    /// included), then stops the persistence, registry and supervisor actors and awaits
    /// each. Calling it again does nothing.
    pub async fn shutdown(&self, grace: Duration) {
        let inner = &self.inner;
        inner
            .supervisor
            .shutdown(&inner.registry, &inner.persistence, grace)
            .await;
    }
}

/// The hub hears about every user write: watchers here, and other servers' watchers when
/// the store is shared.
impl ChangeSink for Hub {
    fn listening(&self) -> bool {
        self.inner.stats.watchers.load(Ordering::Relaxed) > 0 || self.shared()
    }

    fn changed(&self, change: UserChange) {
        self.user_changed(change);
    }
}
