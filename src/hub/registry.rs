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
//! removed at once, so no stale routing entry outlives its stream.

use std::{
    collections::{HashMap, HashSet},
    sync::{atomic::Ordering, Arc},
};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::oneshot;

use super::{subscription::SubMsg, watch::WatchMsg, HubStats, UserChange};
use crate::store::events::{Committed, StoredEvent};

/// Messages of the registry.
pub enum RegistryMsg {
    /// A subscription actor starts; replies once routing to it is in place.
    Register {
        /// Recipient.
        user_id: u64,
        /// Durable consumer, if any: an older stream with the same one is replaced.
        consumer: Option<String>,
        /// The actor.
        sub: ActorRef<SubMsg>,
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
    /// The subscription actors of a recipient (introspection).
    Subscribers {
        /// Recipient.
        user_id: u64,
        /// Answer.
        reply: oneshot::Sender<Vec<ActorRef<SubMsg>>>,
    },
    /// A watcher starts watching `target` (0 = everyone).
    Watch {
        /// Watched user or 0.
        target: u64,
        /// The watcher.
        watcher: ActorRef<WatchMsg>,
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

/// The actor.
pub struct Registry;

/// Its state.
pub struct State {
    stats: Arc<HubStats>,
    subs: HashMap<u64, Vec<ActorRef<SubMsg>>>,
    by_id: HashMap<ActorId, (u64, Option<String>)>,
    consumers: HashMap<(u64, String), ActorRef<SubMsg>>,
    watchers: HashMap<u64, Vec<ActorRef<WatchMsg>>>,
    watcher_targets: HashMap<ActorId, HashSet<u64>>,
}

impl Actor for Registry {
    type Msg = RegistryMsg;
    type State = State;
    /// Counters and the heartbeat interval.
    type Arguments = (Arc<HubStats>, std::time::Duration);

    async fn pre_start(
        &self,
        myself: ActorRef<RegistryMsg>,
        (stats, heartbeat): (Arc<HubStats>, std::time::Duration),
    ) -> Result<State, ActorProcessingErr> {
        // One timer for all streams, not one per stream: idle streams stay cheap.
        myself.send_interval(heartbeat, || RegistryMsg::Tick);
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
        _myself: ActorRef<RegistryMsg>,
        msg: RegistryMsg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RegistryMsg::Register {
                user_id,
                consumer,
                sub,
                reply,
            } => {
                if let Some(c) = &consumer {
                    if let Some(old) = state.consumers.insert((user_id, c.clone()), sub.clone()) {
                        let _ = old.cast(SubMsg::Replaced);
                    }
                }
                state.subs.entry(user_id).or_default().push(sub.clone());
                state.by_id.insert(sub.get_id(), (user_id, consumer));
                state.stats.subscriptions.fetch_add(1, Ordering::Relaxed);
                state.report();
                let _ = reply.send(());
            }
            RegistryMsg::Committed(batch) => state.route(batch),
            RegistryMsg::Heads(heads) => {
                for (user, head) in heads {
                    for s in state.subs.get(&user).into_iter().flatten() {
                        let _ = s.cast(SubMsg::Head(head));
                    }
                }
            }
            RegistryMsg::Tick => {
                for s in state.subs.values().flatten() {
                    let _ = s.cast(SubMsg::Tick);
                }
            }
            RegistryMsg::Recheck => {
                for s in state.subs.values().flatten() {
                    let _ = s.cast(SubMsg::Recheck);
                }
            }
            RegistryMsg::ReplaceConsumer { user_id, consumer } => {
                if let Some(old) = state.consumers.remove(&(user_id, consumer)) {
                    let _ = old.cast(SubMsg::Replaced);
                }
            }
            RegistryMsg::Subscribers { user_id, reply } => {
                let _ = reply.send(state.subs.get(&user_id).cloned().unwrap_or_default());
            }
            RegistryMsg::Watch { target, watcher } => {
                let id = watcher.get_id();
                if state.watcher_targets.entry(id).or_default().insert(target) {
                    state.watchers.entry(target).or_default().push(watcher);
                    state.stats.watches.fetch_add(1, Ordering::Relaxed);
                }
            }
            RegistryMsg::Unwatch { target, watcher } => {
                if state
                    .watcher_targets
                    .get_mut(&watcher)
                    .is_some_and(|t| t.remove(&target))
                {
                    state.remove_watch(target, watcher);
                }
            }
            RegistryMsg::WatcherStarted(id) => {
                state.watcher_targets.entry(id).or_default();
                state.stats.watchers.fetch_add(1, Ordering::Relaxed);
                state.report();
            }
            RegistryMsg::UserChanged(change) => {
                let mut sent = HashSet::new();
                for target in [change.user_id, 0] {
                    for w in state.watchers.get(&target).into_iter().flatten() {
                        if sent.insert(w.get_id()) {
                            let _ = w.cast(WatchMsg::Change(change.clone()));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<RegistryMsg>,
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
                let _ = only.cast(SubMsg::Live(events));
            } else {
                for s in subs {
                    let _ = s.cast(SubMsg::Live(events.clone()));
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
                list.retain(|s| s.get_id() != id);
                if list.is_empty() {
                    self.subs.remove(&user);
                }
            }
            if let Some(c) = consumer {
                let key = (user, c);
                if self.consumers.get(&key).is_some_and(|s| s.get_id() == id) {
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
            list.retain(|w| w.get_id() != id);
            self.stats
                .watches
                .fetch_sub((before - list.len()) as i64, Ordering::Relaxed);
            if list.is_empty() {
                self.watchers.remove(&target);
            }
        }
    }
}
