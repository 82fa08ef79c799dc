//! The persistence actor: group commit of publishes and acks, and background retention.
//!
//! Publishes queue in the mailbox while a commit runs; when it finishes, everything
//! queued (up to `--publish-batch-max` publishes, plus every pending ack, coalesced per
//! consumer) goes into the next transaction. One commit is in flight at a time, so seqs
//! are assigned in commit order and a pipelined publisher's requests commit in order.
//! The commit itself runs in a task so the mailbox keeps filling meanwhile.

use std::{collections::BTreeMap, sync::Arc};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;

use super::{registry::RegistryMsg, HubConfig};
use crate::{
    error::ApiError,
    store::{
        events::{AckRecord, NewEvent, PublishOutcome, RetentionPolicy},
        now_micros,
        plan::close_batch,
        Store, StoreError,
    },
};

type Reply = oneshot::Sender<Result<PublishOutcome, ApiError>>;

/// Most payload bytes in one commit: bounds a batch's memory when payloads are large.
const BATCH_BYTES: usize = 32 << 20;

/// Messages of the persistence actor.
pub enum PersistMsg {
    /// Commit this event; answer when committed.
    Publish(Arc<NewEvent>, Reply),
    /// Persist a consumer's cumulative ack (coalesced; forward only).
    Ack(AckRecord),
    /// Answer once everything queued before it is committed.
    Flush(oneshot::Sender<()>),
    /// The commit task finished.
    Committed,
    /// Timer: run retention.
    Prune,
    /// The retention task finished.
    Pruned,
    /// Timer: checkpoint the SQLite WAL in the background.
    Checkpoint,
    /// The checkpoint finished.
    Checkpointed,
}

/// Start-up arguments.
pub struct Args {
    pub(crate) store: Store,
    pub(crate) registry: ActorRef<RegistryMsg>,
    pub(crate) config: HubConfig,
    pub(crate) origin: String,
}

/// The actor.
pub struct Persistence;

/// Its state.
pub struct State {
    args: Args,
    queue: Vec<(Arc<NewEvent>, Reply)>,
    acks: BTreeMap<(u64, String), u64>,
    flushes: Vec<oneshot::Sender<()>>,
    committing: bool,
    pruning: bool,
    checkpointing: bool,
}

impl Actor for Persistence {
    type Msg = PersistMsg;
    type State = State;
    type Arguments = Args;

    async fn pre_start(&self, myself: ActorRef<PersistMsg>, args: Args) -> Result<State, ActorProcessingErr> {
        myself.send_interval(args.config.retention_interval, || PersistMsg::Prune);
        myself.send_interval(std::time::Duration::from_millis(250), || PersistMsg::Checkpoint);
        Ok(State {
            args,
            queue: Vec::new(),
            acks: BTreeMap::new(),
            flushes: Vec::new(),
            committing: false,
            pruning: false,
            checkpointing: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<PersistMsg>,
        msg: PersistMsg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PersistMsg::Publish(ev, reply) => {
                state.queue.push((ev, reply));
                state.kick(&myself);
            }
            PersistMsg::Ack(a) => {
                let slot = state.acks.entry((a.user_id, a.consumer_id)).or_insert(0);
                *slot = (*slot).max(a.acked_seq);
                state.kick(&myself);
            }
            PersistMsg::Flush(tx) => {
                if !state.committing && state.queue.is_empty() && state.acks.is_empty() {
                    let _ = tx.send(());
                } else {
                    state.flushes.push(tx);
                    state.kick(&myself);
                }
            }
            PersistMsg::Committed => {
                state.committing = false;
                if state.queue.is_empty() && state.acks.is_empty() {
                    for f in state.flushes.drain(..) {
                        let _ = f.send(());
                    }
                } else {
                    state.kick(&myself);
                }
            }
            PersistMsg::Prune => {
                if !state.pruning {
                    state.pruning = true;
                    let store = state.args.store.clone();
                    let policy = retention_policy(&state.args.config, now_micros());
                    let me = myself.clone();
                    tokio::spawn(async move {
                        match store.prune(policy).await {
                            Ok(p) if p.deliveries + p.events > 0 => {
                                super::metrics::pruned(p.deliveries);
                                tracing::debug!(
                                    deliveries = p.deliveries,
                                    events = p.events,
                                    "retention pruned"
                                )
                            }
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "retention pass failed; will retry"),
                        }
                        let _ = me.cast(PersistMsg::Pruned);
                    });
                }
            }
            PersistMsg::Pruned => state.pruning = false,
            PersistMsg::Checkpoint => {
                if !state.checkpointing {
                    state.checkpointing = true;
                    let store = state.args.store.clone();
                    let me = myself.clone();
                    tokio::spawn(async move {
                        if let Err(e) = store.checkpoint().await {
                            tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
                        }
                        let _ = me.cast(PersistMsg::Checkpointed);
                    });
                }
            }
            PersistMsg::Checkpointed => state.checkpointing = false,
        }
        Ok(())
    }
}

/// The retention limits of `config` as of `now` (micros).
pub(crate) fn retention_policy(config: &HubConfig, now: i64) -> RetentionPolicy {
    RetentionPolicy {
        cutoff_micros: (!config.retention_max_age.is_zero())
            .then(|| now.saturating_sub(config.retention_max_age.as_micros() as i64)),
        max_per_recipient: (config.retention_max_events > 0).then_some(config.retention_max_events),
        idempotency_cutoff_micros: now.saturating_sub(config.idempotency_window.as_micros() as i64),
    }
}

impl State {
    /// Starts a commit of what is queued unless one is running.
    fn kick(&mut self, myself: &ActorRef<PersistMsg>) {
        if self.committing || (self.queue.is_empty() && self.acks.is_empty()) {
            return;
        }
        self.committing = true;
        // Close the batch at the configured count or at BATCH_BYTES of payload, whichever
        // comes first (always at least one publish).
        let n = close_batch(
            self.queue.iter().map(|(ev, _)| ev.payload.len()),
            self.args.config.publish_batch_max,
            BATCH_BYTES,
        );
        let batch: Vec<(Arc<NewEvent>, Reply)> = self.queue.drain(..n).collect();
        let acks: Vec<AckRecord> = std::mem::take(&mut self.acks)
            .into_iter()
            .map(|((user_id, consumer_id), acked_seq)| AckRecord {
                user_id,
                consumer_id,
                acked_seq,
            })
            .collect();
        let store = self.args.store.clone();
        let registry = self.args.registry.clone();
        let window = self.args.config.idempotency_window;
        let origin = self.args.origin.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            let (items, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let now = now_micros();
            let cutoff = now.saturating_sub(window.as_micros() as i64);
            let started = std::time::Instant::now();
            match store.commit_batch(&items, &acks, now, cutoff, &origin).await {
                Ok(outcomes) => {
                    let committed: Vec<_> = outcomes
                        .iter()
                        .filter_map(|o| match o {
                            PublishOutcome::Committed { body, deliveries } => {
                                Some((body.clone(), deliveries.clone()))
                            }
                            _ => None,
                        })
                        .collect();
                    let deliveries: usize = committed.iter().map(|(_, d)| d.len()).sum();
                    super::metrics::committed(committed.len(), deliveries, acks.len(), started.elapsed());
                    if !committed.is_empty() {
                        let _ = registry.cast(RegistryMsg::Committed(committed));
                    }
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Err(e) => {
                    // Nothing of the batch was committed (the store rolled it back and
                    // its connection was discarded), so every publish in it is answered
                    // with the error and none of it reaches a subscriber.
                    tracing::warn!(error = %e, publishes = items.len(), acks = acks.len(), "commit failed");
                    super::metrics::commit_failed();
                    let answer = || match e {
                        StoreError::Full(_) => ApiError::ResourceExhausted(
                            "the store is full; nothing was stored; retry later".into(),
                        ),
                        StoreError::CommitUnknown(_) => ApiError::Unavailable(
                            "the store went away during the commit: whether these publishes were \
                             stored is unknown; retry with the same idempotency_key"
                                .into(),
                        ),
                        _ => ApiError::Unavailable("the commit failed; nothing was stored; retry".into()),
                    };
                    for reply in replies {
                        let _ = reply.send(Err(answer()));
                    }
                    // Acks are retried with the next commit, after a pause so a store
                    // outage does not turn into a busy loop.
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    for a in acks {
                        let _ = me.cast(PersistMsg::Ack(a));
                    }
                }
            }
            let _ = me.cast(PersistMsg::Committed);
        });
    }
}
