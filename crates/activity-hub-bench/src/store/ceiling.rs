//! `--ceiling`: the publish scenario's rows written by the smallest program that can
//! write them, to gauge how much of the hub's publish rate the store itself allows.
//!
//! Per batch of `--streams x --inflight` events (the most the publishers keep in flight,
//! so the largest batch the hub's group commit can form), one transaction: the
//! recipients' heads advanced (`INSERT .. ON CONFLICT .. RETURNING`, ascending), one
//! `events` row per event and one delivery row per delivery (SQLite: into `inbox_tail`,
//! merged into `inbox` by the hub's slices between commits once 65,536 wait there;
//! PostgreSQL: `inbox`), in
//! multi-row statements of
//! at most 4,096 rows, bound like the hub binds them; on SQLite, a passive WAL
//! checkpoint every 250 ms from a second connection, as the hub runs it. Nothing else:
//! no recipient check, no idempotency, no gRPC, no actors.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use sqlx::QueryBuilder;

use super::{event_id, now_micros, Conn};

/// The hub's `MERGE_ROWS`: deliveries waiting in `inbox_tail` that start a merge pass.
const MERGE_ROWS: u64 = 65_536;

/// The hub's `MERGE_SLICE`: most deliveries one merge transaction moves.
const MERGE_SLICE: u64 = 2_048;

/// One slice of the hub's merge pass (SQLite): the tail's deliveries of whole recipients
/// from `from` on, about [`MERGE_SLICE`] of them, into `inbox` in key order, in one
/// transaction, by the same SQL. The recipient the next slice starts at, if any.
async fn merge_slice(conn: &mut Conn, from: i64) -> Result<Option<i64>, String> {
    let Conn::Sqlite(c) = conn else {
        return Ok(None);
    };
    let mut tx = sqlx::Connection::begin(c)
        .await
        .map_err(|e| format!("BEGIN: {e}"))?;
    let err = |e: sqlx::Error| format!("merge: {e}");
    let (first,): (Option<i64>,) = sqlx::query_as("SELECT MIN(user_id) FROM inbox_tail WHERE user_id >= $1")
        .bind(from)
        .fetch_one(&mut *tx)
        .await
        .map_err(err)?;
    let Some(first) = first else {
        return Ok(None);
    };
    let past: Option<(i64,)> = sqlx::query_as(
        "SELECT user_id FROM inbox_tail WHERE user_id >= $1 ORDER BY user_id, seq LIMIT 1 OFFSET $2",
    )
    .bind(first)
    .bind(MERGE_SLICE as i64)
    .fetch_optional(&mut *tx)
    .await
    .map_err(err)?;
    let upto = past.map(|(u,)| if u == first { first + 1 } else { u });
    let end = upto.unwrap_or(i64::MAX);
    sqlx::query(
        "INSERT INTO inbox (user_id, seq, event_id, type, published_at) \
         SELECT user_id, seq, event_id, type, published_at FROM inbox_tail \
         WHERE user_id >= $1 AND user_id < $2 ORDER BY user_id, seq",
    )
    .bind(first)
    .bind(end)
    .execute(&mut *tx)
    .await
    .map_err(err)?;
    sqlx::query("DELETE FROM inbox_tail WHERE user_id >= $1 AND user_id < $2")
        .bind(first)
        .bind(end)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
    tx.commit().await.map_err(|e| format!("COMMIT: {e}"))?;
    Ok(upto)
}

/// Rows per multi-row statement (the hub's `store::plan::CHUNK`).
const CHUNK: usize = 4096;

/// The store the ceiling writes to, thrown away afterwards.
pub(crate) struct CeilingStore {
    /// Its URL (SQLite file) or the URL of the database holding its schema.
    pub(crate) url: String,
    /// PostgreSQL: the schema it lives in (dropped at the end).
    pub(crate) schema: Option<String>,
}

impl CeilingStore {
    /// A fresh store beside the hub's: a SQLite file in `dir`, or a new schema in
    /// `database_url`'s PostgreSQL database.
    pub(crate) async fn create(
        dir: &std::path::Path,
        database_url: Option<&str>,
        tag: &str,
    ) -> Result<Self, String> {
        let store = match database_url.filter(|u| super::is_postgres(u)) {
            Some(url) => {
                let schema = format!("bench_ceiling_{tag}");
                let mut c = Conn::open(url, 0).await?;
                c.exec(&format!("CREATE SCHEMA {schema}")).await?;
                CeilingStore {
                    url: with_search_path(url, &schema),
                    schema: Some(schema),
                }
            }
            None => CeilingStore {
                url: format!("sqlite://{}", dir.join("ceiling.db").display()),
                schema: None,
            },
        };
        Conn::open(&store.url, 32).await?.migrate().await?;
        Ok(store)
    }

    /// Drops the PostgreSQL schema (the SQLite file goes with its folder).
    pub(crate) async fn drop_schema(&self, database_url: Option<&str>) {
        if let (Some(schema), Some(url)) = (&self.schema, database_url) {
            if let Ok(mut c) = Conn::open(url, 0).await {
                let _ = c.exec(&format!("DROP SCHEMA {schema} CASCADE")).await;
            }
        }
    }
}

/// `url` with `options=-c search_path=SCHEMA` added.
fn with_search_path(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}")
}

/// What the ceiling writes, and how.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shape {
    /// Recipients, user ids 1..=n.
    pub(crate) recipients: u64,
    /// Events.
    pub(crate) total: u64,
    /// Events per transaction.
    pub(crate) batch: u64,
    pub(crate) payload_size: usize,
    /// The writer's page cache.
    pub(crate) cache_mib: u64,
    /// `synchronous = FULL` (else NORMAL; PostgreSQL: `synchronous_commit`).
    pub(crate) fsync_each_commit: bool,
}

/// Writes `total` events to `store` round robin over `recipients` (user ids 1..=n), in
/// batches of `batch`; counts committed events in `done`. Returns how long it took.
pub(crate) async fn write(
    store: &CeilingStore,
    shape: &Shape,
    done: Arc<AtomicU64>,
) -> Result<Duration, String> {
    let Shape {
        recipients,
        total,
        batch,
        payload_size,
        cache_mib,
        fsync_each_commit,
    } = *shape;
    let mut conn = Conn::open_with(&store.url, cache_mib, fsync_each_commit).await?;
    let checkpointer = match &conn {
        Conn::Sqlite(_) => {
            let mut cp = Conn::open(&store.url, 1).await?;
            Some(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    let _ = cp.exec("PRAGMA wal_checkpoint(PASSIVE)").await;
                }
            }))
        }
        Conn::Postgres(_) => None,
    };
    let payload = vec![b'x'; payload_size];
    let start = Instant::now();
    let mut g = 0u64;
    // As the hub's persistence actor: a pass starts once MERGE_ROWS wait in the tail,
    // and its slices take turns with the commits.
    let mut tail = 0u64;
    let mut pass: Option<i64> = None;
    let result = async {
        while g < total {
            let n = batch.min(total - g);
            commit(&mut conn, g, n, recipients, &payload).await?;
            g += n;
            done.fetch_add(n, Ordering::Relaxed);
            tail += n;
            if pass.is_none() && tail >= MERGE_ROWS {
                pass = Some(0);
                tail = 0;
            }
            if let Some(from) = pass {
                pass = merge_slice(&mut conn, from).await?;
            }
        }
        Ok::<_, String>(start.elapsed())
    }
    .await;
    if let Some(cp) = checkpointer {
        cp.abort();
    }
    result
}

/// The transaction of [`commit`] on one kind of connection: heads advanced (each
/// recipient's first new seq read back), the events rows, the inbox rows.
macro_rules! batch {
    ($c:expr, $table:expr, $counts:expr, $ids:expr, $recipient:expr, $payload:expr, $now:expr) => {{
        let mut tx = sqlx::Connection::begin($c).await.map_err(|e| format!("BEGIN: {e}"))?;
        let mut next: BTreeMap<i64, i64> = BTreeMap::new();
        for chunk in $counts.chunks(CHUNK) {
            let mut q = QueryBuilder::new("INSERT INTO heads (user_id, head_seq) ");
            q.push_values(chunk, |mut b, (u, c)| {
                b.push_bind(*u).push_bind(*c);
            });
            q.push(
                " ON CONFLICT (user_id) DO UPDATE SET head_seq = heads.head_seq + excluded.head_seq \
                 RETURNING user_id, head_seq",
            );
            let got: Vec<(i64, i64)> = q
                .build_query_as()
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| format!("heads: {e}"))?;
            let by_user: BTreeMap<i64, i64> = chunk.iter().copied().collect();
            for (u, head) in got {
                next.insert(u, head - by_user[&u] + 1);
            }
        }
        for chunk in $ids.chunks(CHUNK) {
            let mut q = QueryBuilder::new(
                "INSERT INTO events (event_id, type, payload, content_type, attributes, published_at, publisher_id) ",
            );
            q.push_values(chunk, |mut b, id| {
                b.push_bind(id.as_str())
                    .push_bind("bench.publish")
                    .push_bind($payload)
                    .push_bind("")
                    .push_bind("{}")
                    .push_bind($now)
                    .push_bind(0i64);
            });
            q.build()
                .execute(&mut *tx)
                .await
                .map_err(|e| format!("events: {e}"))?;
        }
        let mut deliveries: Vec<(i64, i64, &str)> = Vec::with_capacity($ids.len());
        for (k, id) in $ids.iter().enumerate() {
            let u = $recipient(k);
            let seq = next.get_mut(&u).ok_or("no head returned for a recipient")?;
            deliveries.push((u, *seq, id.as_str()));
            *seq += 1;
        }
        for chunk in deliveries.chunks(CHUNK) {
            let mut q = QueryBuilder::new(format!(
                "INSERT INTO {} (user_id, seq, event_id, type, published_at) ",
                $table
            ));
            q.push_values(chunk, |mut b, (u, s, id)| {
                b.push_bind(*u)
                    .push_bind(*s)
                    .push_bind(*id)
                    .push_bind("bench.publish")
                    .push_bind($now);
            });
            q.build()
                .execute(&mut *tx)
                .await
                .map_err(|e| format!("inbox: {e}"))?;
        }
        tx.commit().await.map_err(|e| format!("COMMIT: {e}"))
    }};
}

/// One batch: events `first..first + n`, event `g` to recipient `g % recipients + 1`.
async fn commit(conn: &mut Conn, first: u64, n: u64, recipients: u64, payload: &[u8]) -> Result<(), String> {
    let now = now_micros();
    let ms = (now / 1000) as u64;
    let mut counts: BTreeMap<i64, i64> = BTreeMap::new();
    for g in first..first + n {
        *counts.entry((g % recipients + 1) as i64).or_default() += 1;
    }
    let counts: Vec<(i64, i64)> = counts.into_iter().collect();
    // As the hub assigns them: the commit's millisecond, random bits, ascending.
    let mut ids: Vec<String> = (first..first + n).map(|_| event_id(ms, rand::random())).collect();
    ids.sort_unstable();
    let recipient = |k: usize| ((first + k as u64) % recipients + 1) as i64;
    match conn {
        Conn::Sqlite(c) => batch!(c, "inbox_tail", counts, ids, recipient, payload, now),
        Conn::Postgres(c) => batch!(c, "inbox", counts, ids, recipient, payload, now),
    }
}
