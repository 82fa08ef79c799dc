//! The registry actor: which stream actors exist for which recipient, and routing.
//!
//! State lives in the actor (plain `HashMap`s, no locks): every change and every routed
//! batch is one mailbox message, so routing never races a registration. A committed
//! batch becomes at most one message per subscription actor, carrying `Arc`ed bodies;
//! the registry never waits on a subscriber (mailbox sends do not block, and each
//! subscriber keeps its own memory bounded by dropping what it cannot hold and reading it
//! back from the store later).
//!
//! The registry supervises the stream actors it knows: when one stops or fails it is
//! removed at once, so no stale routing entry outlives its stream. It is itself linked to
//! the hub's supervisor (see `supervisor`). Callers use [`RegistryHandle`]; the message
//! enum is private.

use std::{
    collections::{HashMap, HashSet},
    sync::{atomic::Ordering, Arc},
};

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SpawnErr, SupervisionEvent};
use tokio::{sync::oneshot, task::JoinHandle, time::Instant};

use super::{subscription::SubscriptionHandle, watch::WatcherHandle, HubStats, UserChange};
use crate::{
    error::ApiError,
    store::events::{Committed, StoredEvent},
};

/// Messages of the registry.
enum Msg {
    /// A subscription actor starts; replies once routing to it is in place.
    Register {
        /// Recipient.
        user_id: u64,
        /// Durable consumer, if any: an older stream with the same one is replaced.
        consumer: Option<String>,
        /// The actor.
        sub: SubscriptionHandle,
        /// Answered when registered.
        reply: oneshot::Sender<()>,
    },
    /// A batch committed on this server: (body, [(recipient, seq)]).
    Committed(Vec<Committed>),
    /// Another server committed events for these recipients: (recipient, head).
    Heads(Vec<(u64, u64)>),
    /// Notifications from other servers may have been missed: every subscriber re-reads
    /// its head.
    Recheck,
    /// Another server opened a stream for this consumer: end ours.
    ReplaceConsumer {
        /// Recipient.
        user_id: u64,
        /// Consumer.
        consumer: String,
    },
    /// The cluster bus's safety net: read the heads and cursors of every recipient with a
    /// stream here from `store`, as if every message about them had arrived.
    Poll(crate::store::Store),
    /// The live stream of a durable consumer on this server, if any.
    Consumer {
        /// Recipient.
        user_id: u64,
        /// Consumer.
        consumer: String,
        /// Answer.
        reply: oneshot::Sender<Option<SubscriptionHandle>>,
    },
    /// The subscription actors of a recipient (introspection).
    Subscribers {
        /// Recipient.
        user_id: u64,
        /// Answer.
        reply: oneshot::Sender<Vec<SubscriptionHandle>>,
    },
    /// A watcher starts watching `target` (0 = everyone).
    Watch {
        /// Watched user or 0.
        target: u64,
        /// The watcher.
        watcher: WatcherHandle,
    },
    /// A watcher stops watching `target`.
    Unwatch {
        /// Watched user or 0.
        target: u64,
        /// The watcher.
        watcher: ActorId,
    },
    /// A watcher actor starts (counted; supervised).
    WatcherStarted(ActorId),
    /// A user changed.
    UserChanged(UserChange),
    /// Heartbeat timer: every subscription checks whether it was idle.
    Tick,
}

/// The running registry. Sends never wait on it (except the two methods that ask for an
/// answer); a stopped registry ignores them, which only happens during shutdown.
#[derive(Clone)]
pub struct RegistryHandle(ActorRef<Msg>);

impl RegistryHandle {
    /// Spawns the registry, linked to `supervisor` when given (the hub's supervisor; the
    /// benchmarks run it alone). `heartbeat` paces the one timer that drives every
    /// stream's heartbeats.
    #[doc(hidden)] // public for benches/micro.rs
    pub async fn spawn(
        stats: Arc<HubStats>,
        heartbeat: std::time::Duration,
        supervisor: Option<ActorCell>,
    ) -> Result<(RegistryHandle, JoinHandle<()>), SpawnErr> {
        let (actor, join) = match supervisor {
            Some(s) => Actor::spawn_linked(None, Registry, (stats, heartbeat), s).await?,
            None => Actor::spawn(None, Registry, (stats, heartbeat)).await?,
        };
        Ok((RegistryHandle(actor), join))
    }

    /// The actor, for linking stream actors to it (so it learns when they stop).
    pub(crate) fn cell(&self) -> ActorCell {
        self.0.get_cell()
    }

    /// Routes `user_id`'s events to `sub` from now on (replacing an older stream of the
    /// same durable `consumer`); returns once routing is in place.
    #[doc(hidden)] // public for benches/micro.rs
    pub async fn register(
        &self,
        user_id: u64,
        consumer: Option<String>,
        sub: SubscriptionHandle,
    ) -> Result<(), ApiError> {
        let gone = || ApiError::Unavailable("the hub is shutting down".into());
        let (reply, registered) = oneshot::channel();
        self.0
            .cast(Msg::Register {
                user_id,
                consumer,
                sub,
                reply,
            })
            .map_err(|_| gone())?;
        registered.await.map_err(|_| gone())
    }

    /// A batch committed on this server: route it to the recipients' subscriptions.
    #[doc(hidden)] // public for benches/micro.rs
    pub fn committed(&self, batch: Vec<Committed>) {
        let _ = self.0.cast(Msg::Committed(batch));
    }

    /// Another server committed events for these recipients: (recipient, head).
    pub(crate) fn heads(&self, heads: Vec<(u64, u64)>) {
        let _ = self.0.cast(Msg::Heads(heads));
    }

    /// Notifications from other servers may have been missed: every subscription
    /// re-reads its head.
    pub(crate) fn recheck(&self) {
        let _ = self.0.cast(Msg::Recheck);
    }

    /// Another server opened a stream for this durable consumer: end ours.
    pub(crate) fn replace_consumer(&self, user_id: u64, consumer: String) {
        let _ = self.0.cast(Msg::ReplaceConsumer { user_id, consumer });
    }

    /// Reads the heads and cursors of this server's streams from `store` (in a task) and
    /// routes them like the bus's messages.
    pub(crate) fn poll(&self, store: crate::store::Store) {
        let _ = self.0.cast(Msg::Poll(store));
    }

    /// The live stream of `consumer` of `user_id` on this server, if any.
    pub(crate) async fn consumer(&self, user_id: u64, consumer: String) -> Option<SubscriptionHandle> {
        let (reply, rx) = oneshot::channel();
        self.0
            .cast(Msg::Consumer {
                user_id,
                consumer,
                reply,
            })
            .ok()?;
        rx.await.ok().flatten()
    }

    /// The subscriptions of `user_id` right now (empty if the registry has stopped).
    pub(crate) async fn subscribers(&self, user_id: u64) -> Vec<SubscriptionHandle> {
        let (reply, rx) = oneshot::channel();
        if self.0.cast(Msg::Subscribers { user_id, reply }).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// A watcher actor started (it is counted until it stops).
    pub(crate) fn watcher_started(&self, watcher: ActorId) {
        let _ = self.0.cast(Msg::WatcherStarted(watcher));
    }

    /// `watcher` watches `target` (0 = everyone) from now on.
    pub(crate) fn watch(&self, target: u64, watcher: WatcherHandle) {
        let _ = self.0.cast(Msg::Watch { target, watcher });
    }

    /// `watcher` stops watching `target`.
    pub(crate) fn unwatch(&self, target: u64, watcher: ActorId) {
        let _ = self.0.cast(Msg::Unwatch { target, watcher });
    }

    /// A user changed: tell the watchers of that user and of everyone.
    pub(crate) fn user_changed(&self, change: UserChange) {
        let _ = self.0.cast(Msg::UserChanged(change));
    }

    /// Waits until every stream actor (the registry's children) has stopped, until
    /// `deadline`; those still running then are drained (their queued acks are handled,
    /// and each persists its cursor as it stops) and awaited briefly. Shutdown calls this
    /// once the transport has closed, so no new stream can start meanwhile.
    pub(crate) async fn await_streams(&self, deadline: Instant) {
        for stream in self.0.get_children() {
            let left = deadline.saturating_duration_since(Instant::now());
            if stream.wait(Some(left)).await.is_err() {
                if let Err(e) = stream.drain_and_wait(Some(STREAM_STOP_LIMIT)).await {
                    tracing::warn!(actor = %stream.get_id(), error = %e, "stream actor did not stop; killing it");
                    stream.kill();
                }
            }
        }
    }

    /// Stops the registry (it does not wait; the supervisor awaits its join handle).
    #[doc(hidden)] // public for benches/micro.rs
    pub fn stop(&self) {
        self.0.stop(None);
    }
}

/// How long a stream actor still running after the shutdown grace may take to drain.
const STREAM_STOP_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The actor.
struct Registry;

/// Its state.
struct State {
    stats: Arc<HubStats>,
    subs: HashMap<u64, Vec<SubscriptionHandle>>,
    by_id: HashMap<ActorId, (u64, Option<String>)>,
    consumers: HashMap<(u64, String), SubscriptionHandle>,
    watchers: HashMap<u64, Vec<WatcherHandle>>,
    watcher_targets: HashMap<ActorId, HashSet<u64>>,
}

impl Actor for Registry {
    type Msg = Msg;
    type State = State;
    /// Counters and the heartbeat interval.
    type Arguments = (Arc<HubStats>, std::time::Duration);

    async fn pre_start(
        &self,
        myself: ActorRef<Msg>,
        (stats, heartbeat): (Arc<HubStats>, std::time::Duration),
    ) -> Result<State, ActorProcessingErr> {
        // One timer for all streams, not one per stream: idle streams stay cheap.
        myself.send_interval(heartbeat, || Msg::Tick);
        Ok(State {
            stats,
            subs: HashMap::new(),
            by_id: HashMap::new(),
            consumers: HashMap::new(),
            watchers: HashMap::new(),
            watcher_targets: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Msg>,
        msg: Msg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            Msg::Register {
                user_id,
                consumer,
                sub,
                reply,
            } => {
                if let Some(c) = &consumer {
                    if let Some(old) = state.consumers.insert((user_id, c.clone()), sub.clone()) {
                        old.replaced();
                    }
                }
                state.subs.entry(user_id).or_default().push(sub.clone());
                state.by_id.insert(sub.id(), (user_id, consumer));
                state.stats.subscriptions.fetch_add(1, Ordering::Relaxed);
                state.report();
                let _ = reply.send(());
            }
            Msg::Committed(batch) => state.route(batch),
            Msg::Heads(heads) => {
                for (user, head) in heads {
                    for s in state.subs.get(&user).into_iter().flatten() {
                        s.head(head);
                    }
                }
            }
            Msg::Tick => {
                for s in state.subs.values().flatten() {
                    s.tick();
                }
            }
            Msg::Recheck => {
                for s in state.subs.values().flatten() {
                    s.recheck();
                }
            }
            Msg::ReplaceConsumer { user_id, consumer } => {
                if let Some(old) = state.consumers.remove(&(user_id, consumer)) {
                    old.replaced();
                }
            }
            Msg::Poll(store) => {
                let users: Vec<u64> = state.subs.keys().copied().collect();
                let consumers = state.consumers.clone();
                if !users.is_empty() {
                    tokio::spawn(poll(store, myself.clone(), users, consumers));
                }
            }
            Msg::Consumer {
                user_id,
                consumer,
                reply,
            } => {
                let _ = reply.send(state.consumers.get(&(user_id, consumer)).cloned());
            }
            Msg::Subscribers { user_id, reply } => {
                let _ = reply.send(state.subs.get(&user_id).cloned().unwrap_or_default());
            }
            Msg::Watch { target, watcher } => {
                let id = watcher.id();
                if state.watcher_targets.entry(id).or_default().insert(target) {
                    state.watchers.entry(target).or_default().push(watcher);
                    state.stats.watches.fetch_add(1, Ordering::Relaxed);
                }
            }
            Msg::Unwatch { target, watcher } => {
                if state
                    .watcher_targets
                    .get_mut(&watcher)
                    .is_some_and(|t| t.remove(&target))
                {
                    state.remove_watch(target, watcher);
                }
            }
            Msg::WatcherStarted(id) => {
                state.watcher_targets.entry(id).or_default();
                state.stats.watchers.fetch_add(1, Ordering::Relaxed);
                state.report();
            }
            Msg::UserChanged(change) => {
                let mut sent = HashSet::new();
                for target in [change.user_id, 0] {
                    for w in state.watchers.get(&target).into_iter().flatten() {
                        if sent.insert(w.id()) {
                            w.change(change.clone());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Msg>,
        event: SupervisionEvent,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => state.forget(cell.get_id()),
            SupervisionEvent::ActorFailed(cell, err) => {
                tracing::error!(actor = %cell.get_id(), error = %err, "stream actor failed");
                state.forget(cell.get_id());
            }
            _ => {}
        }
        Ok(())
    }
}

impl State {
    fn route(&mut self, batch: Vec<Committed>) {
        let mut per_user: HashMap<u64, Vec<StoredEvent>> = HashMap::new();
        for (body, deliveries) in batch {
            for (user_id, seq) in deliveries {
                if self.subs.contains_key(&user_id) {
                    per_user.entry(user_id).or_default().push(StoredEvent {
                        user_id,
                        seq,
                        body: body.clone(),
                    });
                }
            }
        }
        for (user, events) in per_user {
            let subs = &self.subs[&user];
            if let [only] = subs.as_slice() {
                only.live(events);
            } else {
                for s in subs {
                    s.live(events.clone());
                }
            }
        }
    }

    fn report(&self) {
        super::metrics::streams(
            self.stats.subscriptions.load(Ordering::Relaxed),
            self.stats.watchers.load(Ordering::Relaxed),
        );
    }

    fn forget(&mut self, id: ActorId) {
        if let Some((user, consumer)) = self.by_id.remove(&id) {
            if let Some(list) = self.subs.get_mut(&user) {
                list.retain(|s| s.id() != id);
                if list.is_empty() {
                    self.subs.remove(&user);
                }
            }
            if let Some(c) = consumer {
                let key = (user, c);
                if self.consumers.get(&key).is_some_and(|s| s.id() == id) {
                    self.consumers.remove(&key);
                }
            }
            self.stats.subscriptions.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(targets) = self.watcher_targets.remove(&id) {
            for t in targets {
                self.remove_watch(t, id);
            }
            self.stats.watchers.fetch_sub(1, Ordering::Relaxed);
        }
        self.report();
    }

    fn remove_watch(&mut self, target: u64, id: ActorId) {
        if let Some(list) = self.watchers.get_mut(&target) {
            let before = list.len();
            list.retain(|w| w.id() != id);
            self.stats
                .watches
                .fetch_sub((before - list.len()) as i64, Ordering::Relaxed);
            if list.is_empty() {
                self.watchers.remove(&target);
            }
        }
    }
}

#[cfg(test)]
mod tests;

/// Recipients per poll query.
const POLL_CHUNK: usize = 5_000;

/// One poll of the store: new heads go to the registry as [`Msg::Heads`] (streams take
/// only heads above what they know), stored cursors of live consumers to their streams
/// as acks made elsewhere (ignored unless ahead).
async fn poll(
    store: crate::store::Store,
    registry: ActorRef<Msg>,
    users: Vec<u64>,
    consumers: HashMap<(u64, String), SubscriptionHandle>,
) {
    for chunk in users.chunks(POLL_CHUNK) {
        match store.heads_of(chunk).await {
            Ok(heads) if !heads.is_empty() => {
                let _ = registry.cast(Msg::Heads(heads));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "polling the heads failed");
                return;
            }
        }
    }
    if consumers.is_empty() {
        return;
    }
    let mut owners: Vec<u64> = consumers.keys().map(|(u, _)| *u).collect();
    owners.sort_unstable();
    owners.dedup();
    for chunk in owners.chunks(POLL_CHUNK) {
        match store.cursors_of(chunk).await {
            Ok(cursors) => {
                for (user, consumer, acked) in cursors {
                    if let Some(stream) = consumers.get(&(user, consumer)) {
                        stream.acked_elsewhere(acked);
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "polling the cursors failed");
                return;
            }
        }
    }
}
