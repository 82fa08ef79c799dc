//! The group commit: a batch of publishes and acks in one write transaction, one
//! function per step. [`Store::commit_batch`] reads as the list of steps; [`Batch`]
//! carries what the steps decide about each publish.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use sqlx::QueryBuilder;

use super::{ids::event_id_at, AckRecord, Committed, EventBody, NewEvent, PublishOutcome};
use crate::store::{
    plan::{assign_seqs, first_seqs, recipient_counts, sized_chunks},
    write::{on_tx, WriteTx},
    Store, StoreError, StoreResult,
};

impl Store {
    /// Commits a batch of publishes and acks in one transaction and returns one outcome
    /// per publish, in order. Recipients' seqs are assigned here, gap-free and in commit
    /// order; publishes whose recipients do not all exist are skipped (their outcome
    /// says which one is missing) without failing the others.
    pub async fn commit_batch(
        &self,
        items: &[Arc<NewEvent>],
        acks: &[AckRecord],
        now: i64,
        idempotency_cutoff: i64,
    ) -> StoreResult<Vec<PublishOutcome>> {
        let mut batch = Batch::new(items);
        // Every way the write ends, committed or not, passes through `track`.
        let written = self.write_batch(&mut batch, acks, now, idempotency_cutoff).await;
        self.track(written)?;
        Ok(batch.into_outcomes())
    }

    /// The steps of the commit, in order. A failed step ends the transaction (the
    /// [`WriteTx`] is dropped: nothing of the batch is kept).
    async fn write_batch(
        &self,
        batch: &mut Batch<'_>,
        acks: &[AckRecord],
        now: i64,
        idempotency_cutoff: i64,
    ) -> StoreResult<()> {
        let mut tx = WriteTx::begin(&self.writer).await?;
        batch.find_earlier_keys(&mut tx, idempotency_cutoff).await?;
        batch.refuse_missing_recipients(&mut tx).await?;
        batch.claim_keys(&mut tx, now, idempotency_cutoff).await?;
        let (_, planned) = batch.advance_heads(&mut tx).await?;
        batch.make_bodies(now, planned);
        batch.insert_events(&mut tx).await?;
        batch.insert_deliveries(&mut tx).await?;
        batch.record_keys(&mut tx).await?;
        apply_acks(&mut tx, acks, now).await?;
        match tx.commit().await {
            Err(StoreError::CommitUnknown(e)) => self.settle_unknown_commit(batch, e).await,
            done => done,
        }
    }
}

/// Each recipient's next free seq.
type NextSeqs = HashMap<u64, u64>;

/// One publish's (recipient, seq) pairs.
type Deliveries = Vec<(u64, u64)>;

/// One batch's publishes and what the steps decided about each.
pub(super) struct Batch<'a> {
    pub(super) items: &'a [Arc<NewEvent>],
    /// Outcomes decided before the insert: duplicates of earlier publishes, refusals.
    pub(super) outcomes: Vec<Option<PublishOutcome>>,
    /// Publishes repeating the idempotency key of an earlier one in this batch: its index.
    pub(super) dup_of: Vec<Option<usize>>,
    /// The publishes this batch stores, by index, with their bodies and deliveries.
    pub(super) bodies: Vec<(usize, Committed)>,
}

impl<'a> Batch<'a> {
    fn new(items: &'a [Arc<NewEvent>]) -> Batch<'a> {
        Batch {
            items,
            outcomes: (0..items.len()).map(|_| None).collect(),
            dup_of: vec![None; items.len()],
            bodies: Vec::new(),
        }
    }

    /// Whether publish `i` is still to be stored (no outcome decided, no earlier twin).
    pub(super) fn is_fresh(&self, i: usize) -> bool {
        self.outcomes[i].is_none() && self.dup_of[i].is_none()
    }

    /// The indexes of the publishes still to be stored.
    fn fresh(&self) -> Vec<usize> {
        (0..self.items.len()).filter(|&i| self.is_fresh(i)).collect()
    }

    /// Step 2: every recipient must be a live user. A publish naming one who is not is
    /// refused (its outcome names the first missing recipient; a later publish in the
    /// batch repeating its key shares that outcome).
    async fn refuse_missing_recipients(&mut self, tx: &mut WriteTx) -> StoreResult<()> {
        let wanted: Vec<i64> = {
            let mut set = HashSet::new();
            for i in self.fresh() {
                set.extend(self.items[i].recipients.iter().map(|&r| r as i64));
            }
            let mut v: Vec<i64> = set.into_iter().collect();
            v.sort_unstable();
            v
        };
        let mut live: HashSet<u64> = HashSet::with_capacity(wanted.len());
        for chunk in sized_chunks(&wanted) {
            // Usually every recipient is live: one count answers that, instead of a row
            // per recipient (each row costs more to hand back than to look up).
            let (count,): (i64,) = on_tx!(tx, c => {
                live_users("count(*)", chunk).build_query_as().fetch_one(&mut *c).await
            })?;
            if count as usize == chunk.len() {
                live.extend(chunk.iter().map(|&id| id as u64));
                continue;
            }
            let rows: Vec<(i64,)> = on_tx!(tx, c => {
                live_users("id", chunk).build_query_as().fetch_all(&mut *c).await
            })?;
            live.extend(rows.into_iter().map(|(id,)| id as u64));
        }
        for i in self.fresh() {
            let it = &self.items[i];
            if let Some(&missing) = it.recipients.iter().find(|r| !live.contains(r)) {
                self.outcomes[i] = Some(PublishOutcome::MissingRecipient(missing));
            }
        }
        Ok(())
    }

    /// Step 4: bumps each recipient's head once for the whole batch, in ascending
    /// recipient order (a fixed lock order across servers), and plans each fresh
    /// publish's (recipient, seq) deliveries. Returns each recipient's next free seq
    /// after the batch, and the deliveries in the order of [`Batch::fresh`].
    async fn advance_heads(&self, tx: &mut WriteTx) -> StoreResult<(NextSeqs, Vec<Deliveries>)> {
        let fresh = self.fresh();
        let recipients = || fresh.iter().map(|&i| self.items[i].recipients.as_slice());
        let counts = recipient_counts(recipients());
        let mut heads: Vec<(u64, i64)> = Vec::with_capacity(counts.len());
        for chunk in sized_chunks(&counts) {
            let rows: Vec<(i64, i64)> = on_tx!(tx, c => {
                let mut q = QueryBuilder::new("INSERT INTO heads (user_id, head_seq) ");
                q.push_values(chunk, |mut b, (u, n)| {
                    b.push_bind(*u as i64).push_bind(*n);
                });
                q.push(
                    " ON CONFLICT (user_id) DO UPDATE SET head_seq = heads.head_seq + excluded.head_seq \
                     RETURNING user_id, head_seq",
                );
                q.build_query_as().fetch_all(&mut *c).await
            })?;
            heads.extend(rows.into_iter().map(|(u, h)| (u as u64, h)));
        }
        let mut next = first_seqs(&counts, &heads).map_err(StoreError::Corrupt)?;
        let planned = assign_seqs(recipients(), &mut next).map_err(StoreError::Corrupt)?;
        Ok((next, planned))
    }

    /// Step 5a: the bodies of the fresh publishes (ids in commit-time order), paired with
    /// their `planned` deliveries.
    fn make_bodies(&mut self, now: i64, planned: Vec<Deliveries>) {
        let fresh = self.fresh();
        // Ascending in publish order: the batch's rows go onto the right edge of the
        // events index one after another instead of splitting its pages at random.
        let mut ids: Vec<String> = fresh.iter().map(|_| event_id_at(now)).collect();
        ids.sort_unstable();
        self.bodies = Vec::with_capacity(fresh.len());
        for ((i, deliveries), event_id) in fresh.into_iter().zip(planned).zip(ids) {
            let it = &self.items[i];
            let body = Arc::new(EventBody {
                event_id,
                event_type: it.event_type.clone(),
                payload: it.payload.clone(),
                content_type: it.content_type.clone(),
                attributes: it.attributes.clone(),
                published_at: now,
                publisher_id: it.publisher_id,
            });
            self.bodies.push((i, (body, deliveries)));
        }
    }

    /// Step 5b: one `events` row per stored publish.
    async fn insert_events(&self, tx: &mut WriteTx) -> StoreResult<()> {
        for chunk in sized_chunks(&self.bodies) {
            on_tx!(tx, c => {
                let mut q = QueryBuilder::new(
                    "INSERT INTO events (event_id, type, payload, content_type, attributes, published_at, publisher_id) ",
                );
                q.push_values(chunk, |mut b, (_, (body, _))| {
                    b.push_bind(body.event_id.as_str())
                        .push_bind(body.event_type.as_str())
                        .push_bind(body.payload.as_ref())
                        .push_bind(body.content_type.as_str())
                        .push_bind(serde_json::to_string(&body.attributes).unwrap_or_else(|_| "{}".into()))
                        .push_bind(body.published_at)
                        .push_bind(body.publisher_id as i64);
                });
                q.build().execute(&mut *c).await.map(|_| ())
            })?;
        }
        Ok(())
    }

    /// Step 5c: one row per delivery, in `inbox` or `inbox_tail` (see
    /// [`WriteTx::deliveries_table`]).
    async fn insert_deliveries(&self, tx: &mut WriteTx) -> StoreResult<()> {
        let table = tx.deliveries_table();
        let rows: Vec<(u64, u64, &EventBody)> = self
            .bodies
            .iter()
            .flat_map(|(_, (body, d))| d.iter().map(move |(u, s)| (*u, *s, body.as_ref())))
            .collect();
        for chunk in sized_chunks(&rows) {
            on_tx!(tx, c => {
                let mut q = QueryBuilder::new(format!(
                    "INSERT INTO {table} (user_id, seq, event_id, type, published_at) "
                ));
                q.push_values(chunk, |mut b, (u, s, body)| {
                    b.push_bind(*u as i64)
                        .push_bind(*s as i64)
                        .push_bind(body.event_id.as_str())
                        .push_bind(body.event_type.as_str())
                        .push_bind(body.published_at);
                });
                q.build().execute(&mut *c).await.map(|_| ())
            })?;
        }
        Ok(())
    }

    /// After a commit: one outcome per publish, in order. A publish that repeated an
    /// earlier one's key in this batch gets that one's outcome as a duplicate. It cannot
    /// fail: what is committed is answered as committed. (Every publish has an outcome
    /// from the steps, a body, or a twin earlier in the batch: `dup_of[i] < i`.)
    fn into_outcomes(self) -> Vec<PublishOutcome> {
        let Batch {
            items,
            mut outcomes,
            dup_of,
            bodies,
            ..
        } = self;
        for (i, (body, deliveries)) in bodies {
            outcomes[i] = Some(PublishOutcome::Committed { body, deliveries });
        }
        let mut out = Vec::with_capacity(items.len());
        for i in 0..items.len() {
            let o = match (outcomes[i].take(), dup_of[i]) {
                (Some(o), _) => o,
                (None, Some(first)) => match &out[first] {
                    PublishOutcome::Committed { body, deliveries } => PublishOutcome::Duplicate {
                        event_id: body.event_id.clone(),
                        deliveries: deliveries.clone(),
                    },
                    PublishOutcome::Duplicate { event_id, deliveries } => PublishOutcome::Duplicate {
                        event_id: event_id.clone(),
                        deliveries: deliveries.clone(),
                    },
                    PublishOutcome::MissingRecipient(r) => PublishOutcome::MissingRecipient(*r),
                },
                (None, None) => unreachable!("publish {i} has neither an outcome, a body nor a twin"),
            };
            out.push(o);
        }
        out
    }
}

/// `SELECT {what} FROM users` over the live users among `ids`.
fn live_users<'a, DB>(what: &str, ids: &'a [i64]) -> QueryBuilder<'a, DB>
where
    DB: sqlx::Database,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut q = QueryBuilder::new(format!("SELECT {what} FROM users WHERE status <> 4 AND id IN ("));
    let mut sep = q.separated(", ");
    for id in ids {
        sep.push_bind(*id);
    }
    q.push(")");
    q
}

/// Step 6: acks move cursors forward only.
async fn apply_acks(tx: &mut WriteTx, acks: &[AckRecord], now: i64) -> StoreResult<()> {
    for chunk in sized_chunks(acks) {
        on_tx!(tx, c => {
            let mut q = QueryBuilder::new("INSERT INTO cursors (user_id, consumer_id, acked_seq, updated_at) ");
            q.push_values(chunk, |mut b, a| {
                b.push_bind(a.user_id as i64)
                    .push_bind(a.consumer_id.as_str())
                    .push_bind(a.acked_seq as i64)
                    .push_bind(now);
            });
            q.push(
                " ON CONFLICT (user_id, consumer_id) DO UPDATE SET acked_seq = excluded.acked_seq, \
                 updated_at = excluded.updated_at WHERE cursors.acked_seq < excluded.acked_seq",
            );
            q.build().execute(&mut *c).await.map(|_| ())
        })?;
    }
    Ok(())
}
