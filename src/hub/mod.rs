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
//! - [`notify`]: on PostgreSQL, servers sharing the database tell each other about
//!   commits, consumer takeovers and user changes with LISTEN/NOTIFY.
//!
//! The hub speaks domain types only: it takes validated [`SubscribeParams`] and
//! [`WatchChange`]s and streams [`subscription::Out`] and [`UserChange`] values, which the
//! edge ([`crate::api`]) converts to and from protobuf. It hears about user writes as the
//! [`ChangeSink`] of [`crate::users::Users`]. Imports [`crate::model`], [`crate::store`],
//! [`crate::users`] (the sink trait), [`crate::error`], [`crate::lifecycle`] and
//! [`crate::limits`] (a metric name).

pub mod metrics;
pub mod notify;
pub mod persistence;
pub mod registry;
pub mod subscription;
pub mod watch;

use std::{
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
    time::Duration,
};

use futures_util::Stream;
use ractor::{Actor, ActorRef};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::{
    error::ApiError,
    lifecycle::ResponseStream,
    model::{SubInfo, SubscribeParams, WatchChange},
    store::{
        events::{NewEvent, Pruned, PublishOutcome, StoredEvent},
        Backend, Store,
    },
    users::ChangeSink,
};
use persistence::{PersistMsg, Persistence};
use registry::{Registry, RegistryMsg};

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
    persistence: ActorRef<PersistMsg>,
    registry: ActorRef<RegistryMsg>,
    origin: String,
    shutdown: CancellationToken,
}

/// Handle to the running hub; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

/// Feeds the client's half of a bidi call to its stream actor as `to_msg(request)`, until
/// the client goes away: then `gone`. A reset ends it at once; a half-close does not (the
/// server keeps streaming), so it then waits for `client_gone` (the outbox closing).
/// `inbound` is the request stream as the edge decoded it (an error ends the call with
/// that status).
pub(crate) fn forward_requests<Req, M>(
    inbound: impl Stream<Item = Result<Req, tonic::Status>> + Send + 'static,
    client_gone: impl std::future::Future<Output = ()> + Send + 'static,
    actor: ActorRef<M>,
    to_msg: fn(Req) -> M,
    failed: fn(tonic::Status) -> M,
    gone: M,
) where
    Req: Send + 'static,
    M: ractor::Message,
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
                    if actor.cast(to_msg(req)).is_err() {
                        return;
                    }
                }
                // A broken request stream (say, an oversized message) ends the call with
                // its status; if the client is gone, nobody reads it and that is fine.
                Some(Err(status)) => {
                    let _ = actor.cast(failed(status));
                    return;
                }
                None => {
                    client_gone.await;
                    break;
                }
            }
        }
        let _ = actor.cast(gone);
    });
}

/// A user lifecycle change as the hub routes it: shared, since every watcher of the user
/// gets the same one.
pub type UserChange = Arc<crate::model::UserChange>;

impl Hub {
    /// Starts the registry and persistence actors (and, on PostgreSQL, the listener for
    /// other servers' notifications). `shutdown` ends every open stream with UNAVAILABLE.
    pub async fn start(
        store: Store,
        config: HubConfig,
        shutdown: CancellationToken,
    ) -> Result<Hub, ApiError> {
        let stats = Arc::new(HubStats::default());
        let origin = uuid::Uuid::now_v7().simple().to_string();
        let (registry, _) = Actor::spawn(None, Registry, (stats.clone(), config.heartbeat_interval))
            .await
            .map_err(|e| ApiError::Internal(Box::new(e)))?;
        let (persistence, _) = Actor::spawn(
            None,
            Persistence,
            persistence::Args {
                store: store.clone(),
                registry: registry.clone(),
                config: config.clone(),
                origin: origin.clone(),
            },
        )
        .await
        .map_err(|e| ApiError::Internal(Box::new(e)))?;
        let hub = Hub {
            inner: Arc::new(Inner {
                store,
                config,
                stats,
                persistence,
                registry,
                origin,
                shutdown,
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
        self.inner.store.backend() == Backend::Postgres
    }

    pub(crate) fn registry(&self) -> &ActorRef<RegistryMsg> {
        &self.inner.registry
    }

    pub(crate) fn persistence(&self) -> &ActorRef<PersistMsg> {
        &self.inner.persistence
    }

    pub(crate) fn origin(&self) -> &str {
        &self.inner.origin
    }

    pub(crate) fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// Queues a publish for the next commit; the receiver resolves once it is committed
    /// (or failed). Queueing several before awaiting pipelines them, answered in order.
    pub fn enqueue(&self, event: NewEvent) -> oneshot::Receiver<Result<PublishOutcome, ApiError>> {
        let (tx, rx) = oneshot::channel();
        if let Err(ractor::MessagingErr::SendErr(PersistMsg::Publish(_, tx))) = self
            .inner
            .persistence
            .cast(PersistMsg::Publish(Arc::new(event), tx))
        {
            let _ = tx.send(Err(ApiError::Unavailable("the hub is shutting down".into())));
        }
        rx
    }

    /// Publishes and returns once committed.
    pub async fn publish(&self, event: NewEvent) -> Result<PublishOutcome, ApiError> {
        self.enqueue(event)
            .await
            .unwrap_or_else(|_| Err(ApiError::Unavailable("the hub is shutting down".into())))
    }

    /// Opens a subscription: spawns its actor (which registers, resolves the start
    /// position and sends `Subscribed` first) and returns the response stream.
    pub async fn subscribe(&self, params: SubscribeParams) -> Result<subscription::Opened, ApiError> {
        subscription::open(self.clone(), params).await
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

    /// Waits until everything queued so far (publishes and acks) is committed.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.persistence.cast(PersistMsg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
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
        let (tx, rx) = oneshot::channel();
        if self
            .inner
            .registry
            .cast(RegistryMsg::Subscribers { user_id, reply: tx })
            .is_err()
        {
            return Vec::new();
        }
        let subs = rx.await.unwrap_or_default();
        let mut out = Vec::with_capacity(subs.len());
        for s in subs {
            let (tx, rx) = oneshot::channel();
            if s.cast(subscription::SubMsg::Inspect(tx)).is_ok() {
                if let Ok(info) = rx.await {
                    out.push(info);
                }
            }
        }
        out
    }

    /// Tells watchers about a user change (local ones now, other servers via the store).
    pub fn user_changed(&self, change: UserChange) {
        if self.shared() {
            notify::announce_user_change(self.clone(), &change);
        }
        let _ = self.inner.registry.cast(RegistryMsg::UserChanged(change));
    }

    /// Opens a UserActivity stream for an authenticated caller. `requests` are the
    /// caller's watch changes, already validated and authorized by the edge; an error in
    /// it ends the stream with that status. The stream carries every change of a watched
    /// user until the client goes, falls too far behind, or shutdown.
    pub async fn watch(
        &self,
        requests: impl Stream<Item = Result<WatchChange, tonic::Status>> + Send + 'static,
    ) -> Result<ResponseStream<UserChange>, ApiError> {
        watch::open(self.clone(), requests).await
    }

    /// Shutdown: waits (up to `grace`) for the stream actors to end, commits what is
    /// queued (acks included) and stops the actors.
    pub async fn shutdown(&self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        while self.inner.stats.subscriptions.load(Ordering::Relaxed) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.flush().await;
        self.inner.persistence.stop(None);
        self.inner.registry.stop(None);
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
