//! The activity log: batched publish commits, history pages, cursors and retention.
//!
//! [`Store::commit_batch`] is the only writer of `events`, `inbox`, `heads` and `cursors`
//! and is called by the persistence actor alone, one batch at a time per server, on the
//! store's writer inside a [`WriteConn`]: a batch commits whole or leaves no trace. All
//! the multi-row statements are built with `QueryBuilder`, which emits each engine's own
//! placeholders, in chunks below both engines' bind-parameter limits (see [`super::plan`]).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use bytes::Bytes;
use sqlx::QueryBuilder;

use super::{
    dispatch,
    plan::{assign_seqs, first_seqs, heads_notifications, recipient_counts, sized_chunks},
    Backend, Db, Store, StoreError, StoreResult, WriteConn,
};

/// A validated publish, ready to commit.
#[derive(Debug)]
pub struct NewEvent {
    /// Distinct recipients, ascending.
    pub recipients: Vec<u64>,
    /// The event type.
    pub event_type: String,
    /// Opaque payload.
    pub payload: Bytes,
    /// MIME type of the payload.
    pub content_type: String,
    /// String attributes.
    pub attributes: BTreeMap<String, String>,
    /// The publishing user.
    pub publisher_id: u64,
    /// Deduplication key; empty = none.
    pub idempotency_key: String,
}

/// An event as stored once and shared (never copied) by every delivery of it.
#[derive(Debug)]
pub struct EventBody {
    /// UUIDv7 text.
    pub event_id: String,
    /// The event type.
    pub event_type: String,
    /// Opaque payload (reference-counted).
    pub payload: Bytes,
    /// MIME type.
    pub content_type: String,
    /// Attributes.
    pub attributes: BTreeMap<String, String>,
    /// Commit time, microseconds since the epoch.
    pub published_at: i64,
    /// The publisher.
    pub publisher_id: u64,
}

/// One recipient's copy of an event: its seq and the shared body.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    /// The recipient.
    pub user_id: u64,
    /// Its seq in the recipient's stream.
    pub seq: u64,
    /// The shared body.
    pub body: Arc<EventBody>,
}

/// The result of one publish within a batch.
#[derive(Debug)]
pub enum PublishOutcome {
    /// Stored now; `deliveries` lists (recipient, seq) ascending by recipient.
    Committed {
        /// The stored body.
        body: Arc<EventBody>,
        /// (recipient, seq) pairs.
        deliveries: Vec<(u64, u64)>,
    },
    /// The idempotency key matched an earlier publish.
    Duplicate {
        /// The first event's id.
        event_id: String,
        /// The first event's deliveries.
        deliveries: Vec<(u64, u64)>,
    },
    /// A recipient does not exist (the first missing one, in request order).
    MissingRecipient(u64),
}

/// A committed event and its (recipient, seq) deliveries.
pub type Committed = (Arc<EventBody>, Vec<(u64, u64)>);

/// A cumulative ack to persist.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AckRecord {
    /// The recipient.
    pub user_id: u64,
    /// The durable consumer.
    pub consumer_id: String,
    /// Everything up to this seq is done.
    pub acked_seq: u64,
}

/// What one retention pass removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Inbox rows (deliveries) removed.
    pub deliveries: u64,
    /// Event bodies removed.
    pub events: u64,
}

/// Retention limits; `None` = unlimited.
#[derive(Clone, Copy, Debug)]
pub struct RetentionPolicy {
    /// Events committed before this time (micros) are pruned.
    pub cutoff_micros: Option<i64>,
    /// Keep at most this many newest events per recipient.
    pub max_per_recipient: Option<u64>,
    /// Idempotency keys older than this (micros) are forgotten.
    pub idempotency_cutoff_micros: i64,
}

type EventRow = (i64, String, String, Vec<u8>, String, String, i64, i64);

fn decode_row(user_id: u64, row: EventRow) -> StoreResult<StoredEvent> {
    let (seq, event_id, event_type, payload, content_type, attributes, published_at, publisher_id) = row;
    let attributes = serde_json::from_str(&attributes)
        .map_err(|e| StoreError::Corrupt(format!("event {event_id} attributes: {e}")))?;
    Ok(StoredEvent {
        user_id,
        seq: seq as u64,
        body: Arc::new(EventBody {
            event_id,
            event_type,
            payload: Bytes::from(payload),
            content_type,
            attributes,
            published_at,
            publisher_id: publisher_id as u64,
        }),
    })
}

/// A UUIDv7 whose time part is `micros` (ms precision) and the rest random.
fn event_id_at(micros: i64) -> String {
    // The thread-local RNG, not the OS one: no syscall per event.
    let random: [u8; 10] = rand::random();
    let ms = micros.max(0) as u64 / 1000;
    uuid::Builder::from_unix_timestamp_millis(ms, &random)
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// The smallest UUIDv7 text of the millisecond containing `micros`: every event id below
/// it was committed before that millisecond.
fn event_id_floor(micros: i64) -> String {
    let ms = (micros.max(0) as u64) / 1000;
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    uuid::Uuid::from_bytes(b).hyphenated().to_string()
}

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
        origin: &str,
    ) -> StoreResult<Vec<PublishOutcome>> {
        let shared = self.backend() == Backend::Postgres;
        let channel = self.notify_channel.clone();
        // The body is an async block so that `?` ends the transaction, not the function:
        // its result passes through `track` either way.
        let r = dispatch!(&self.writer, p => async {
            let mut tx = WriteConn::begin(p).await?;
            let mut outcomes: Vec<Option<PublishOutcome>> = (0..items.len()).map(|_| None).collect();

            // 1. Idempotency: keys seen earlier (within the window) or earlier in this batch.
            let mut batch_keys: HashMap<(u64, &str), usize> = HashMap::new();
            let mut dup_of: Vec<Option<usize>> = vec![None; items.len()];
            for (i, it) in items.iter().enumerate() {
                if it.idempotency_key.is_empty() {
                    continue;
                }
                if let Some(&first) = batch_keys.get(&(it.publisher_id, it.idempotency_key.as_str())) {
                    dup_of[i] = Some(first);
                    continue;
                }
                let row: Option<(String, String)> = sqlx::query_as(
                    "SELECT event_id, deliveries FROM idempotency \
                     WHERE publisher_id = $1 AND key = $2 AND created_at >= $3",
                )
                .bind(it.publisher_id as i64)
                .bind(&it.idempotency_key)
                .bind(idempotency_cutoff)
                .fetch_optional(&mut *tx)
                .await?;
                match row {
                    Some((event_id, deliveries)) => {
                        outcomes[i] = Some(duplicate(event_id, &deliveries)?);
                    }
                    None => {
                        batch_keys.insert((it.publisher_id, it.idempotency_key.as_str()), i);
                    }
                }
            }

            // 2. Every recipient must be a live user.
            let wanted: Vec<i64> = {
                let mut set = HashSet::new();
                for (i, it) in items.iter().enumerate() {
                    if outcomes[i].is_none() && dup_of[i].is_none() {
                        set.extend(it.recipients.iter().map(|&r| r as i64));
                    }
                }
                let mut v: Vec<i64> = set.into_iter().collect();
                v.sort_unstable();
                v
            };
            let mut live: HashSet<u64> = HashSet::with_capacity(wanted.len());
            for chunk in sized_chunks(&wanted) {
                let mut q = QueryBuilder::new("SELECT id FROM users WHERE status <> 4 AND id IN (");
                let mut sep = q.separated(", ");
                for id in chunk {
                    sep.push_bind(*id);
                }
                q.push(")");
                let rows: Vec<(i64,)> = q.build_query_as().fetch_all(&mut *tx).await?;
                live.extend(rows.into_iter().map(|(id,)| id as u64));
            }
            for (i, it) in items.iter().enumerate() {
                if outcomes[i].is_some() || dup_of[i].is_some() {
                    continue;
                }
                if let Some(&missing) = it.recipients.iter().find(|r| !live.contains(r)) {
                    outcomes[i] = Some(PublishOutcome::MissingRecipient(missing));
                    if !it.idempotency_key.is_empty() {
                        batch_keys.remove(&(it.publisher_id, it.idempotency_key.as_str()));
                    }
                }
            }

            // 3. Claim new idempotency keys. Losing a race with another server on the same
            //    PostgreSQL makes this publish a duplicate of the winner's.
            for (i, it) in items.iter().enumerate() {
                if it.idempotency_key.is_empty() || outcomes[i].is_some() || dup_of[i].is_some() {
                    continue;
                }
                // fetch_all, not fetch_optional: a RETURNING statement must run to
                // completion (sqlx's SQLite driver would otherwise leave it mid-step).
                let claimed: Vec<(String,)> = sqlx::query_as(
                    "INSERT INTO idempotency (publisher_id, key, event_id, deliveries, created_at) \
                     VALUES ($1, $2, '', '[]', $3) \
                     ON CONFLICT (publisher_id, key) DO UPDATE SET event_id = '', deliveries = '[]', \
                     created_at = excluded.created_at WHERE idempotency.created_at < $4 \
                     RETURNING key",
                )
                .bind(it.publisher_id as i64)
                .bind(&it.idempotency_key)
                .bind(now)
                .bind(idempotency_cutoff)
                .fetch_all(&mut *tx)
                .await?;
                if claimed.is_empty() {
                    let (event_id, deliveries): (String, String) = sqlx::query_as(
                        "SELECT event_id, deliveries FROM idempotency WHERE publisher_id = $1 AND key = $2",
                    )
                    .bind(it.publisher_id as i64)
                    .bind(&it.idempotency_key)
                    .fetch_one(&mut *tx)
                    .await?;
                    outcomes[i] = Some(duplicate(event_id, &deliveries)?);
                }
            }

            // 4. Assign seqs: bump each recipient's head once for the whole batch, in
            //    ascending recipient order (a fixed lock order across servers).
            let fresh: Vec<usize> = (0..items.len())
                .filter(|&i| outcomes[i].is_none() && dup_of[i].is_none())
                .collect();
            let counts = recipient_counts(fresh.iter().map(|&i| items[i].recipients.as_slice()));
            let mut heads: Vec<(u64, i64)> = Vec::with_capacity(counts.len());
            for chunk in sized_chunks(&counts) {
                let mut q = QueryBuilder::new("INSERT INTO heads (user_id, head_seq) ");
                q.push_values(chunk, |mut b, (u, n)| {
                    b.push_bind(*u as i64).push_bind(*n);
                });
                q.push(
                    " ON CONFLICT (user_id) DO UPDATE SET head_seq = heads.head_seq + excluded.head_seq \
                     RETURNING user_id, head_seq",
                );
                let rows: Vec<(i64, i64)> = q.build_query_as().fetch_all(&mut *tx).await?;
                heads.extend(rows.into_iter().map(|(u, h)| (u as u64, h)));
            }
            let mut next = first_seqs(&counts, &heads).map_err(StoreError::Corrupt)?;
            let planned = assign_seqs(fresh.iter().map(|&i| items[i].recipients.as_slice()), &mut next)
                .map_err(StoreError::Corrupt)?;

            // 5. Event bodies and deliveries.
            let mut bodies: Vec<(usize, Committed)> = Vec::with_capacity(fresh.len());
            for (&i, deliveries) in fresh.iter().zip(planned) {
                let it = &items[i];
                let body = Arc::new(EventBody {
                    event_id: event_id_at(now),
                    event_type: it.event_type.clone(),
                    payload: it.payload.clone(),
                    content_type: it.content_type.clone(),
                    attributes: it.attributes.clone(),
                    published_at: now,
                    publisher_id: it.publisher_id,
                });
                bodies.push((i, (body, deliveries)));
            }
            for chunk in sized_chunks(&bodies) {
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
                q.build().execute(&mut *tx).await?;
            }
            let rows: Vec<(u64, u64, &EventBody)> = bodies
                .iter()
                .flat_map(|(_, (body, d))| d.iter().map(move |(u, s)| (*u, *s, body.as_ref())))
                .collect();
            for chunk in sized_chunks(&rows) {
                let mut q = QueryBuilder::new("INSERT INTO inbox (user_id, seq, event_id, type, published_at) ");
                q.push_values(chunk, |mut b, (u, s, body)| {
                    b.push_bind(*u as i64)
                        .push_bind(*s as i64)
                        .push_bind(body.event_id.as_str())
                        .push_bind(body.event_type.as_str())
                        .push_bind(body.published_at);
                });
                q.build().execute(&mut *tx).await?;
            }
            for (i, (body, deliveries)) in &bodies {
                let it = &items[*i];
                if it.idempotency_key.is_empty() {
                    continue;
                }
                sqlx::query("UPDATE idempotency SET event_id = $1, deliveries = $2 WHERE publisher_id = $3 AND key = $4")
                    .bind(body.event_id.as_str())
                    .bind(serde_json::to_string(deliveries).unwrap_or_default())
                    .bind(it.publisher_id as i64)
                    .bind(&it.idempotency_key)
                    .execute(&mut *tx)
                    .await?;
            }

            // 6. Acks: forward only.
            for chunk in sized_chunks(acks) {
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
                q.build().execute(&mut *tx).await?;
            }

            // 7. Other servers on the same PostgreSQL learn the new heads at commit.
            if shared && !next.is_empty() {
                for payload in heads_notifications(origin, &next) {
                    sqlx::query("SELECT pg_notify($1, $2)")
                        .bind(channel.as_ref())
                        .bind(payload)
                        .execute(&mut *tx)
                        .await?;
                }
            }

            let commit = tx.commit().await;
            Ok::<_, StoreError>((outcomes, dup_of, bodies, commit))
        }.await);
        let r = match r {
            Ok((outcomes, dup_of, bodies, Ok(()))) => Ok((outcomes, dup_of, bodies)),
            Ok((outcomes, dup_of, bodies, Err(StoreError::CommitUnknown(e)))) => {
                // Ask the store whether the batch's first event is there: all of the batch
                // or none of it is.
                let first = bodies
                    .first()
                    .and_then(|(_, (body, d))| Some((body.event_id.clone(), d.first()?.0)));
                match first {
                    Some((id, user)) => match self.batch_committed(&id, user).await {
                        Some(true) => {
                            tracing::warn!(error = %e, "connection lost during commit; the batch was committed");
                            Ok((outcomes, dup_of, bodies))
                        }
                        Some(false) => Err(StoreError::Unavailable(e)),
                        None => Err(StoreError::CommitUnknown(e)),
                    },
                    None => Err(StoreError::Unavailable(e)),
                }
            }
            Ok((_, _, _, Err(e))) | Err(e) => Err(e),
        };
        let (mut outcomes, dup_of, bodies) = self.track(r)?;
        for (i, (body, deliveries)) in bodies {
            outcomes[i] = Some(PublishOutcome::Committed { body, deliveries });
        }
        let mut out = Vec::with_capacity(items.len());
        for i in 0..items.len() {
            let o = match (outcomes[i].take(), dup_of[i]) {
                (Some(o), _) => o,
                (None, Some(first)) => match &out.get(first) {
                    Some(PublishOutcome::Committed { body, deliveries }) => PublishOutcome::Duplicate {
                        event_id: body.event_id.clone(),
                        deliveries: deliveries.clone(),
                    },
                    Some(PublishOutcome::Duplicate { event_id, deliveries }) => PublishOutcome::Duplicate {
                        event_id: event_id.clone(),
                        deliveries: deliveries.clone(),
                    },
                    Some(PublishOutcome::MissingRecipient(r)) => PublishOutcome::MissingRecipient(*r),
                    None => return Err(StoreError::Corrupt("duplicate before its original".into())),
                },
                (None, None) => return Err(StoreError::Corrupt("publish without outcome".into())),
            };
            out.push(o);
        }
        Ok(out)
    }

    /// Whether the batch holding `event_id` (one of whose recipients is `user_id`) was
    /// committed, asking until the store answers or the verify window passes (`None`:
    /// still unknown). PostgreSQL finishes a COMMIT whose client went away, so the check
    /// first waits for that transaction to end: it held the recipient's `heads` row lock.
    async fn batch_committed(&self, event_id: &str, user_id: u64) -> Option<bool> {
        let Db::Postgres(pool) = &self.db else {
            return Some(false);
        };
        let deadline = tokio::time::Instant::now() + self.verify_window;
        let lock_ms = self.verify_window.as_millis().max(100);
        loop {
            let r: StoreResult<bool> = async {
                let mut tx = WriteConn::begin(pool).await?;
                sqlx::query(&format!("SET LOCAL lock_timeout = '{lock_ms}ms'"))
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("SELECT head_seq FROM heads WHERE user_id = $1 FOR SHARE")
                    .bind(user_id as i64)
                    .fetch_optional(&mut *tx)
                    .await?;
                let found: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM events WHERE event_id = $1")
                    .bind(event_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(found.is_some())
            }
            .await;
            match r {
                Ok(found) => return Some(found),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    tracing::warn!(error = %e, "could not learn whether a commit happened");
                    return None;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
    }

    /// The recipient's newest seq (0 when nothing was ever published to them).
    pub async fn head_seq(&self, user_id: u64) -> StoreResult<u64> {
        let sql = "SELECT head_seq FROM heads WHERE user_id = $1";
        let row: Option<(i64,)> =
            dispatch!(&self.db, p => sqlx::query_as(sql).bind(user_id as i64).fetch_optional(p).await)?;
        Ok(row.map_or(0, |(h,)| h as u64))
    }

    /// The recipient's newest seq and oldest retained seq (if any event is retained), in
    /// one round trip.
    pub async fn bounds(&self, user_id: u64) -> StoreResult<(u64, Option<u64>)> {
        let sql = "SELECT (SELECT head_seq FROM heads WHERE user_id = $1), \
                   (SELECT MIN(seq) FROM inbox WHERE user_id = $1)";
        let (head, earliest): (Option<i64>, Option<i64>) =
            dispatch!(&self.db, p => sqlx::query_as(sql).bind(user_id as i64).fetch_one(p).await)?;
        Ok((head.map_or(0, |h| h as u64), earliest.map(|s| s as u64)))
    }

    /// Up to `limit` retained events of `user_id` with `after < seq <= upto`, of the given
    /// types (all when empty), in seq order.
    pub async fn events_page(
        &self,
        user_id: u64,
        after: u64,
        upto: u64,
        types: &[String],
        limit: u32,
    ) -> StoreResult<Vec<StoredEvent>> {
        let rows: Vec<EventRow> = dispatch!(&self.db, p => {
            let mut q = QueryBuilder::new(
                "SELECT i.seq, e.event_id, e.type, e.payload, e.content_type, e.attributes, \
                 e.published_at, e.publisher_id FROM inbox i JOIN events e ON e.event_id = i.event_id \
                 WHERE i.user_id = ",
            );
            q.push_bind(user_id as i64);
            q.push(" AND i.seq > ").push_bind(after.min(i64::MAX as u64) as i64);
            q.push(" AND i.seq <= ").push_bind(upto.min(i64::MAX as u64) as i64);
            if !types.is_empty() {
                q.push(" AND i.type IN (");
                let mut sep = q.separated(", ");
                for t in types {
                    sep.push_bind(t.as_str());
                }
                q.push(")");
            }
            q.push(" ORDER BY i.seq LIMIT ").push_bind(i64::from(limit));
            q.build_query_as().fetch_all(p).await
        })?;
        rows.into_iter().map(|r| decode_row(user_id, r)).collect()
    }

    /// The stored position of a durable consumer (0 = never acked).
    pub async fn cursor(&self, user_id: u64, consumer_id: &str) -> StoreResult<u64> {
        let sql = "SELECT acked_seq FROM cursors WHERE user_id = $1 AND consumer_id = $2";
        let row: Option<(i64,)> = dispatch!(&self.db, p => sqlx::query_as(sql)
            .bind(user_id as i64).bind(consumer_id).fetch_optional(p).await)?;
        Ok(row.map_or(0, |(s,)| s as u64))
    }

    /// One retention pass, in short transactions of at most [`CHUNK`] rows so publishes
    /// interleave with it.
    pub async fn prune(&self, policy: RetentionPolicy) -> StoreResult<Pruned> {
        let mut pruned = Pruned::default();
        if let Some(max) = policy.max_per_recipient {
            let sql = "SELECT user_id, head_seq FROM heads WHERE head_seq > $1";
            let over: Vec<(i64, i64)> =
                dispatch!(&self.db, p => sqlx::query_as(sql).bind(max as i64).fetch_all(p).await)?;
            for (user, head) in over {
                let sql = "DELETE FROM inbox WHERE user_id = $1 AND seq <= $2";
                let n = dispatch!(&self.writer, p => sqlx::query(sql).bind(user).bind(head - max as i64)
                    .execute(p).await.map(|r| r.rows_affected()));
                let n = self.track(n.map_err(StoreError::from))?;
                pruned.deliveries += n;
            }
        }
        if let Some(cutoff) = policy.cutoff_micros {
            // Without an index on time (it cost ~40% of publish throughput): a recipient's
            // seqs are in commit order, so its expired deliveries are a prefix of its inbox.
            // One read finds the recipients whose oldest delivery expired (an index probe
            // each); for each, the first unexpired seq bounds a primary-key range delete.
            let sql = "SELECT h.user_id FROM heads h WHERE \
                       (SELECT i.published_at FROM inbox i WHERE i.user_id = h.user_id \
                        ORDER BY i.seq LIMIT 1) < $1";
            let expired: Vec<(i64,)> =
                dispatch!(&self.db, p => sqlx::query_as(sql).bind(cutoff).fetch_all(p).await)?;
            for (user,) in expired {
                let sql = "SELECT seq FROM inbox WHERE user_id = $1 AND published_at >= $2 \
                           ORDER BY seq LIMIT 1";
                let keep: Option<(i64,)> = dispatch!(&self.db, p => sqlx::query_as(sql)
                    .bind(user).bind(cutoff).fetch_optional(p).await)?;
                let below = keep.map_or(i64::MAX, |(s,)| s);
                let sql = "DELETE FROM inbox WHERE user_id = $1 AND seq < $2";
                let n = dispatch!(&self.writer, p => sqlx::query(sql).bind(user).bind(below)
                    .execute(p).await.map(|r| r.rows_affected()));
                let n = self.track(n.map_err(StoreError::from))?;
                pruned.deliveries += n;
            }
            let floor = event_id_floor(cutoff);
            loop {
                let sql = "DELETE FROM events WHERE event_id IN \
                           (SELECT event_id FROM events WHERE event_id < $1 LIMIT 1000)";
                let n = dispatch!(&self.writer, p => sqlx::query(sql).bind(floor.as_str())
                    .execute(p).await.map(|r| r.rows_affected()));
                let n = self.track(n.map_err(StoreError::from))?;
                pruned.events += n;
                if n < 1000 {
                    break;
                }
            }
        }
        let sql = "DELETE FROM idempotency WHERE created_at < $1";
        let r = dispatch!(&self.writer, p => sqlx::query(sql).bind(policy.idempotency_cutoff_micros)
            .execute(p).await.map(|_| ()));
        self.track(r.map_err(StoreError::from))?;
        Ok(pruned)
    }

    /// A LISTEN connection (PostgreSQL only; `None` on SQLite, where one server owns the store).
    pub(crate) async fn listener(&self) -> StoreResult<Option<sqlx::postgres::PgListener>> {
        match &self.db {
            Db::Postgres(p) => Ok(Some(sqlx::postgres::PgListener::connect_with(p).await?)),
            Db::Sqlite(_) => Ok(None),
        }
    }

    /// NOTIFY the other servers (PostgreSQL only).
    pub(crate) async fn notify(&self, payload: &str) -> StoreResult<()> {
        if let Db::Postgres(p) = &self.db {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(self.notify_channel.as_ref())
                .bind(payload)
                .execute(p)
                .await?;
        }
        Ok(())
    }
}

fn duplicate(event_id: String, deliveries: &str) -> StoreResult<PublishOutcome> {
    let deliveries: Vec<(u64, u64)> = serde_json::from_str(deliveries)
        .map_err(|e| StoreError::Corrupt(format!("idempotency deliveries of {event_id}: {e}")))?;
    Ok(PublishOutcome::Duplicate { event_id, deliveries })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_order_by_commit_time() {
        let t = 1_700_000_000_123_456;
        let id = event_id_at(t);
        assert!(event_id_floor(t) <= id, "floor of its own ms is not above it");
        assert!(id < event_id_floor(t + 1000), "an id is below the next ms floor");
        assert!(event_id_at(t - 5000) < event_id_floor(t));
    }
}
