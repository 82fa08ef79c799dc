//! The persistence actor: group commit of publishes and acks, and background retention.
//!
//! Publishes queue in the mailbox while a commit runs; when it finishes, everything
//! queued (up to `--publish-batch-max` publishes, plus every pending ack, coalesced per
//! consumer) goes into the next transaction. One commit is in flight at a time, so seqs
//! are assigned in commit order and a pipelined publisher's requests commit in order.
//! The commit itself runs in a task so the mailbox keeps filling meanwhile.
//!
//! It is linked to the hub's supervisor (see `supervisor`); callers use
//! [`PersistenceHandle`], the message enum is private.

use std::{collections::BTreeMap, sync::Arc};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SpawnErr};
use tokio::{sync::oneshot, task::JoinHandle};

use super::{registry::RegistryHandle, HubConfig};
use crate::{
    error::ApiError,
    store::{
        events::{AckRecord, NewEvent, PublishOutcome, RetentionPolicy},
        now_micros,
        plan::close_batch,
        Backend, Store, StoreError,
    },
};

type Reply = oneshot::Sender<Result<PublishOutcome, ApiError>>;

/// Most payload bytes in one commit: bounds a batch's memory when payloads are large.
const BATCH_BYTES: usize = 32 << 20;

/// SQLite: once this many committed deliveries wait in `inbox_tail`, the next write is a
/// merge pass into `inbox` (see `Store::merge_inbox_tail`). It bounds the tail, whose
/// pages every commit touches, and sets how many deliveries share one rewrite of a
/// recipient's `inbox` page.
pub(crate) const MERGE_ROWS: u64 = 65_536;

/// Deliveries one merge transaction moves at most (whole recipients, so one recipient
/// with more moves alone): bounds how long a publish waits behind a merge.
const MERGE_SLICE: u64 = 2_048;

/// Messages of the persistence actor.
enum Msg {
    /// Commit this event; answer when committed.
    Publish(Arc<NewEvent>, Reply),
    /// Persist a consumer's cumulative ack (coalesced; forward only).
    Ack(AckRecord),
    /// Answer once everything queued before it is committed.
    Flush(oneshot::Sender<()>),
    /// The commit task finished, having written this many deliveries.
    Committed(u64),
    /// Timer: merge `inbox_tail` into `inbox` if anything waits there (SQLite).
    MergeTick,
    /// A merge slice finished: `Ok` with the recipient the pass goes on from (`None`:
    /// the pass is done), or `Err` when the slice failed.
    Merged(Result<Option<u64>, StoreError>),
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
pub(crate) struct Args {
    pub(crate) store: Store,
    pub(crate) registry: RegistryHandle,
    pub(crate) config: HubConfig,
    /// Told of each commit's new heads, after the commit.
    pub(crate) bus: super::bus::Bus,
}

/// The running persistence actor.
#[derive(Clone)]
pub(crate) struct PersistenceHandle(ActorRef<Msg>);

impl PersistenceHandle {
    /// Spawns the actor linked to `supervisor`.
    pub(crate) async fn spawn(args: Args, supervisor: ActorCell) -> Result<(Self, JoinHandle<()>), SpawnErr> {
        let (actor, join) = Actor::spawn_linked(None, Persistence, args, supervisor).await?;
        Ok((PersistenceHandle(actor), join))
    }

    /// The actor, for supervision.
    pub(crate) fn cell(&self) -> ActorCell {
        self.0.get_cell()
    }

    /// Queues a publish for the next commit; the receiver resolves once it is committed
    /// (or failed), or is dropped unanswered if the actor has stopped. Queueing several
    /// before awaiting pipelines them, answered in order.
    pub(crate) fn publish(&self, event: NewEvent) -> oneshot::Receiver<Result<PublishOutcome, ApiError>> {
        let (tx, rx) = oneshot::channel();
        // A stopped actor drops the message, and with it `tx`: the caller sees that.
        let _ = self.0.cast(Msg::Publish(Arc::new(event), tx));
        rx
    }

    /// Persists a consumer's cumulative ack with the next commit (coalesced per consumer).
    pub(crate) fn ack(&self, ack: AckRecord) {
        let _ = self.0.cast(Msg::Ack(ack));
    }

    /// Waits until everything queued so far (publishes and acks) is committed; at once if
    /// the actor has stopped.
    pub(crate) async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.0.cast(Msg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// The actor.
struct Persistence;

/// Its state.
struct State {
    args: Args,
    queue: Vec<(Arc<NewEvent>, Reply)>,
    acks: BTreeMap<(u64, String), u64>,
    flushes: Vec<oneshot::Sender<()>>,
    committing: bool,
    /// Deliveries committed to `inbox_tail` since the last merge (SQLite; an estimate:
    /// unknown at start, so the first tick merges whatever an earlier run left).
    tail_rows: u64,
    /// A merge pass in progress: the recipient its next slice starts at.
    merge_from: Option<u64>,
    pruning: bool,
    checkpointing: bool,
}

impl Actor for Persistence {
    type Msg = Msg;
    type State = State;
    type Arguments = Args;

    async fn pre_start(&self, myself: ActorRef<Msg>, args: Args) -> Result<State, ActorProcessingErr> {
        myself.send_interval(args.config.retention_interval, || Msg::Prune);
        myself.send_interval(std::time::Duration::from_millis(250), || Msg::Checkpoint);
        if args.store.backend() == Backend::Sqlite {
            myself.send_interval(args.config.inbox_merge_interval, || Msg::MergeTick);
        }
        Ok(State {
            args,
            queue: Vec::new(),
            acks: BTreeMap::new(),
            flushes: Vec::new(),
            committing: false,
            tail_rows: 1,
            merge_from: None,
            pruning: false,
            checkpointing: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Msg>,
        msg: Msg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            Msg::Publish(ev, reply) => {
                state.queue.push((ev, reply));
                state.kick(&myself);
            }
            Msg::Ack(a) => {
                let slot = state.acks.entry((a.user_id, a.consumer_id)).or_insert(0);
                *slot = (*slot).max(a.acked_seq);
                state.kick(&myself);
            }
            Msg::Flush(tx) => {
                if !state.committing && state.queue.is_empty() && state.acks.is_empty() {
                    let _ = tx.send(());
                } else {
                    state.flushes.push(tx);
                    state.kick(&myself);
                }
            }
            Msg::Committed(deliveries) => {
                state.committing = false;
                state.tail_rows += deliveries;
                let merges = state.args.store.backend() == Backend::Sqlite;
                if merges && state.merge_from.is_none() && state.tail_rows >= MERGE_ROWS {
                    state.start_pass();
                }
                state.next(&myself, true);
            }
            Msg::MergeTick => {
                if state.merge_from.is_none() && state.tail_rows > 0 {
                    state.start_pass();
                    state.next(&myself, true);
                }
            }
            Msg::Merged(result) => {
                state.committing = false;
                state.merge_from = match result {
                    Ok(next) => next,
                    // Retried by the next tick; reads take deliveries from both tables.
                    Err(e) => {
                        tracing::warn!(error = %e, "merging the inbox tail failed; will retry");
                        state.tail_rows = state.tail_rows.max(1);
                        None
                    }
                };
                state.next(&myself, false);
            }
            Msg::Prune => {
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
                        let _ = me.cast(Msg::Pruned);
                    });
                }
            }
            Msg::Pruned => state.pruning = false,
            Msg::Checkpoint => {
                if !state.checkpointing {
                    state.checkpointing = true;
                    let store = state.args.store.clone();
                    let me = myself.clone();
                    tokio::spawn(async move {
                        if let Err(e) = store.checkpoint().await {
                            tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
                        }
                        let _ = me.cast(Msg::Checkpointed);
                    });
                }
            }
            Msg::Checkpointed => state.checkpointing = false,
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
    /// Begins a merge pass over everything in `inbox_tail` now (rows committed during the
    /// pass behind its position wait for the next one).
    fn start_pass(&mut self) {
        self.merge_from = Some(0);
        self.tail_rows = 0;
    }

    /// The writer's next job once it is free: commits and merge slices take turns, so a
    /// pass never holds publishes back for more than one slice. With nothing to do,
    /// flushes are answered.
    fn next(&mut self, myself: &ActorRef<Msg>, after_commit: bool) {
        if self.committing {
            return;
        }
        let queued = !self.queue.is_empty() || !self.acks.is_empty();
        match self.merge_from {
            Some(from) if after_commit || !queued => self.merge_slice(myself, from),
            _ if queued => self.kick(myself),
            _ => {
                for f in self.flushes.drain(..) {
                    let _ = f.send(());
                }
            }
        }
    }

    /// Moves the next slice of `inbox_tail` (at most [`MERGE_SLICE`] deliveries, whole
    /// recipients from `from` on) into `inbox`. It takes the writer like a commit does.
    fn merge_slice(&mut self, myself: &ActorRef<Msg>, from: u64) {
        self.committing = true;
        let store = self.args.store.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let result = store.merge_inbox_tail(from, MERGE_SLICE).await.map(|(moved, next)| {
                if moved > 0 {
                    tracing::debug!(deliveries = moved, from, took = ?started.elapsed(), "inbox tail slice merged");
                }
                next
            });
            let _ = me.cast(Msg::Merged(result));
        });
    }

    /// Starts a commit of what is queued unless one is running.
    fn kick(&mut self, myself: &ActorRef<Msg>) {
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
        let bus = self.args.bus.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            let (items, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let now = now_micros();
            let cutoff = now.saturating_sub(window.as_micros() as i64);
            let started = std::time::Instant::now();
            let mut written = 0u64;
            match store.commit_batch(&items, &acks, now, cutoff).await {
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
                    written = deliveries as u64;
                    super::metrics::committed(committed.len(), deliveries, acks.len(), started.elapsed());
                    if !committed.is_empty() {
                        bus.committed(&committed);
                        registry.committed(committed);
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
                        StoreError::Unavailable(_) => {
                            ApiError::Unavailable("the commit failed; nothing was stored; retry".into())
                        }
                        // Not the store's availability (a corrupt row, an unclassified
                        // database error): a retry would meet it again.
                        _ => ApiError::Internal(format!("commit failed: {e}").into()),
                    };
                    for reply in replies {
                        let _ = reply.send(Err(answer()));
                    }
                    // Acks are retried with the next commit, after a pause so a store
                    // outage does not turn into a busy loop.
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    for a in acks {
                        let _ = me.cast(Msg::Ack(a));
                    }
                }
            }
            let _ = me.cast(Msg::Committed(written));
        });
    }
}
