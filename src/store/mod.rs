//! The store: one small interface over SQLite (embedded default) and PostgreSQL.
//!
//! Owns the connection pools, migrations, error classification and the health of writes.
//! Every query is written once with `$n` placeholders (both engines accept them) and
//! dispatched to the typed pool by [`dispatch!`], so each query is compiled and
//! type-checked for both backends with no runtime translation layer. It does not know
//! about gRPC or authorization.
//!
//! **One writer.** On SQLite every write (publish batches, acks, retention, user changes,
//! the write probe) goes through one pooled connection, `writer`, so the hub's own writers
//! queue for it instead of colliding on SQLite's lock (`database is locked`), and write
//! transactions begin `IMMEDIATE`, so none can fail half-way on a stale snapshot. Readers
//! use the other pool; in WAL mode they never wait for the writer. On PostgreSQL both are
//! the same pool: row locks order concurrent writers.
//!
//! **A failed write leaves nothing behind**: see the `write` module.
//!
//! Submodules: `error` (classification), `write` (the write transaction guard),
//! [`events`] (the activity log), [`plan`] (the pure planning of a batch commit), `users`, `sessions` (logins and
//! their refresh tokens).

mod error;
pub mod events;
pub mod plan;
mod sessions;
mod users;
mod write;

use std::{
    str::FromStr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use sqlx::{
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous},
};
use tokio::sync::watch;

pub use error::{StoreError, StoreResult};
pub use sessions::{Revocation, Rotation};
pub use users::{ListFilter, NewUser, PageStart, UserChanges, UserKey};
pub(crate) use write::WriteConn;

/// The typed pools; [`dispatch!`] runs the same query text on either.
#[derive(Clone, Debug)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$p` bound to the concrete pool of either backend. The body is
/// expanded twice, so it is type-checked against both drivers.
macro_rules! dispatch {
    ($db:expr, $p:ident => $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite($p) => $body,
            $crate::store::Db::Postgres($p) => $body,
        }
    };
}
pub(crate) use dispatch;

/// Which engine a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file: one server owns it.
    Sqlite,
    /// PostgreSQL: several servers may share it.
    Postgres,
}

impl Backend {
    /// The backend a store URL selects: `postgres://` / `postgresql://`, else SQLite.
    pub fn of_url(url: &str) -> Backend {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }
}

/// What a commit survives before the publish is answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// The default. SQLite: `synchronous = FULL`, the WAL is fsynced at every commit;
    /// PostgreSQL: the server's `synchronous_commit` (on by default). An answered publish
    /// survives a power loss or an OS crash.
    #[default]
    PowerLoss,
    /// SQLite: `synchronous = NORMAL`, the WAL is fsynced at checkpoints only;
    /// PostgreSQL: `synchronous_commit = off` for the hub's writes. An answered publish
    /// survives the hub's process crashing, but a power loss or OS crash (on PostgreSQL:
    /// also a crash of the database server) can lose the last commits before their
    /// fsync - the guarantee NATS JetStream gives by default. Seqs stay gap-free either
    /// way: what is lost is a suffix of the log, never a hole in it.
    ProcessCrash,
}

/// Connection settings for [`Store::connect`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// `sqlite://path` or `postgres://...`.
    pub url: String,
    /// Upper bound of pooled connections (on SQLite, the writer's included).
    pub max_connections: u32,
    /// How long a call waits for the store (a free connection, a new connection to a
    /// PostgreSQL server that is down, SQLite's write lock held by another process)
    /// before it fails with [`StoreError::Unavailable`].
    pub acquire_timeout: Duration,
    /// SQLite's page caches, all connections together, in KiB: half for the writer (the
    /// hot index pages of the log), half shared by the readers.
    pub cache_kib: u64,
    /// What an answered commit survives.
    pub durability: Durability,
}

impl StoreOptions {
    /// The options for `url` with the server's defaults.
    pub fn new(url: impl Into<String>) -> StoreOptions {
        StoreOptions {
            url: url.into(),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(1),
            cache_kib: DEFAULT_CACHE_KIB,
            durability: Durability::PowerLoss,
        }
    }
}

/// The default total of SQLite's page caches: 64 MiB.
pub const DEFAULT_CACHE_KIB: u64 = 64 * 1024;

/// Whether writes to the store currently work, as the last write (or probe) found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteHealth {
    /// The last write committed.
    Ok,
    /// The last write failed for lack of space.
    Full,
    /// The last write failed because the store could not be reached or was locked.
    Unavailable,
}

/// SQLite's `max_page_count` limit applied to every new writer connection (0 = none):
/// the test hook behind [`Store::limit_sqlite_pages`].
#[derive(Debug, Default)]
struct PageLimit(AtomicU64);

/// Handle to the database; cheap to clone and shared by the user service and the hub.
#[derive(Clone, Debug)]
pub struct Store {
    /// Reads (and on PostgreSQL, writes too).
    pub(crate) db: Db,
    /// Every write: one connection on SQLite, the same pool as `db` on PostgreSQL.
    pub(crate) writer: Db,
    health: Arc<watch::Sender<WriteHealth>>,
    page_limit: Arc<PageLimit>,
    /// How long a commit whose outcome is unknown keeps asking the store what happened.
    pub(crate) verify_window: Duration,
    /// The LISTEN/NOTIFY channel of this deployment (PostgreSQL).
    pub(crate) notify_channel: Arc<str>,
}

impl Store {
    /// Opens (creating a SQLite file if missing) and migrates the store.
    ///
    /// SQLite runs in WAL mode with `synchronous = FULL` (a committed transaction survives
    /// power loss, not only a process crash), foreign keys on and a busy timeout equal to
    /// the acquire timeout: within the hub nothing waits for SQLite's lock (one writer),
    /// so a lock held longer belongs to another process and the store counts as unavailable.
    pub async fn connect(opts: &StoreOptions) -> StoreResult<Store> {
        let url = opts.url.as_str();
        let page_limit = Arc::new(PageLimit::default());
        let (db, writer) = if Backend::of_url(url) == Backend::Postgres {
            let mut connect = PgConnectOptions::from_str(url).map_err(StoreError::Database)?;
            if opts.durability == Durability::ProcessCrash {
                connect = connect.options([("synchronous_commit", "off")]);
            }
            let pool = PgPoolOptions::new()
                .max_connections(opts.max_connections)
                .acquire_timeout(opts.acquire_timeout)
                .connect_with(connect)
                .await?;
            sqlx::migrate!("migrations/postgres").run(&pool).await?;
            (Db::Postgres(pool.clone()), Db::Postgres(pool))
        } else {
            let readers = opts.max_connections.saturating_sub(1).max(1);
            let writer_cache = (opts.cache_kib / 2).max(1024);
            let reader_cache = (opts.cache_kib / 2 / u64::from(readers)).max(256);
            let connect = SqliteConnectOptions::from_str(url)
                .map_err(StoreError::Database)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(match opts.durability {
                    Durability::PowerLoss => SqliteSynchronous::Full,
                    Durability::ProcessCrash => SqliteSynchronous::Normal,
                })
                .foreign_keys(true)
                .busy_timeout(opts.acquire_timeout)
                // Checkpoints run in the background (Store::checkpoint), not inside a
                // publisher's commit; this larger automatic threshold is only a backstop.
                .pragma("wal_autocheckpoint", "16384")
                // Statement journals of multi-row upserts stay in memory.
                .pragma("temp_store", "memory")
                // Rows a statement returns (a batch's new heads: one per recipient) are
                // handed from SQLite's thread to the caller through a channel of this
                // many; the default 50 makes the thread wait for the caller every 50.
                .row_buffer_size(plan::CHUNK)
                // Every multi-row shape of every statement stays prepared (see
                // `plan::sized_chunks`).
                .statement_cache_capacity(256);
            let writer_opts = connect.clone().pragma("cache_size", format!("-{writer_cache}"));
            let reader_opts = connect.pragma("cache_size", format!("-{reader_cache}"));
            let limit = page_limit.clone();
            let writer = SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(opts.acquire_timeout)
                .after_connect(move |conn, _| {
                    let pages = limit.0.load(Ordering::Relaxed);
                    Box::pin(async move {
                        if pages > 0 {
                            sqlx::query(&format!("PRAGMA max_page_count = {pages}"))
                                .execute(conn)
                                .await?;
                        }
                        Ok(())
                    })
                })
                .connect_with(writer_opts)
                .await?;
            sqlx::migrate!("migrations/sqlite").run(&writer).await?;
            let pool = SqlitePoolOptions::new()
                .max_connections(readers)
                .acquire_timeout(opts.acquire_timeout)
                .connect_with(reader_opts)
                .await?;
            (Db::Sqlite(pool), Db::Sqlite(writer))
        };
        let mut store = Store {
            db,
            writer,
            health: Arc::new(watch::channel(WriteHealth::Ok).0),
            page_limit,
            verify_window: (opts.acquire_timeout * 3).max(Duration::from_secs(1)),
            notify_channel: Arc::from(""),
        };
        if store.backend() == Backend::Postgres {
            // NOTIFY channels are database-wide: deployments in other schemas of the same
            // database must not hear this one's heads. Servers sharing these tables share
            // the id, so they share the channel.
            let fresh = uuid::Uuid::now_v7().simple().to_string();
            let id = store.setting_or_insert("deployment_id", &fresh).await?;
            let id: String = id.chars().filter(char::is_ascii_alphanumeric).take(32).collect();
            store.notify_channel = Arc::from(format!("activity_hub_{id}"));
        }
        Ok(store)
    }

    /// The LISTEN/NOTIFY channel of this deployment (empty on SQLite).
    pub fn notify_channel(&self) -> &str {
        &self.notify_channel
    }

    /// The engine behind this store.
    pub fn backend(&self) -> Backend {
        match self.db {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// What the writer's commits survive, as the database reports it (SQLite's
    /// `synchronous` on the writer connection, PostgreSQL's `synchronous_commit` on a
    /// pooled one): the setting in effect, not the one asked for.
    pub async fn durability(&self) -> StoreResult<Durability> {
        match &self.writer {
            Db::Sqlite(p) => {
                let (level,): (i64,) = sqlx::query_as("PRAGMA synchronous").fetch_one(p).await?;
                // 2 = FULL, 3 = EXTRA: fsync at every commit; 1 = NORMAL, 0 = OFF.
                Ok(if level >= 2 {
                    Durability::PowerLoss
                } else {
                    Durability::ProcessCrash
                })
            }
            Db::Postgres(p) => {
                let (v,): (String,) = sqlx::query_as("SHOW synchronous_commit").fetch_one(p).await?;
                Ok(if v == "off" {
                    Durability::ProcessCrash
                } else {
                    Durability::PowerLoss
                })
            }
        }
    }

    /// Watches whether writes work: set by every write the store makes and by [`probe`].
    ///
    /// [`probe`]: Store::probe
    pub fn write_health(&self) -> watch::Receiver<WriteHealth> {
        self.health.subscribe()
    }

    /// Records what a write's result says about the store, and passes the result on.
    pub(crate) fn track<T>(&self, r: StoreResult<T>) -> StoreResult<T> {
        let now = match &r {
            Ok(_) => WriteHealth::Ok,
            Err(StoreError::Full(_)) => WriteHealth::Full,
            Err(StoreError::Unavailable(_) | StoreError::CommitUnknown(_)) => WriteHealth::Unavailable,
            // Anything else (a unique key taken, a refused row) says nothing about
            // whether the store can write.
            Err(_) => return r,
        };
        self.health.send_if_modified(|h| std::mem::replace(h, now) != now);
        r
    }

    /// Tries a small write transaction that allocates and frees some pages: whether the
    /// store can write now (it is reachable, not locked and not full). Its result updates
    /// [`write_health`](Store::write_health).
    pub async fn probe(&self) -> StoreResult<()> {
        let filler = "x".repeat(PROBE_BYTES);
        let r = dispatch!(&self.writer, p => async {
            let mut conn = WriteConn::begin(p).await?;
            sqlx::query(
                "INSERT INTO settings (key, value) VALUES ('write_probe', $1) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(filler.as_str())
            .execute(&mut *conn)
            .await?;
            sqlx::query("DELETE FROM settings WHERE key = 'write_probe'").execute(&mut *conn).await?;
            conn.commit().await
        }.await);
        self.track(r)
    }

    /// Checks that the store answers (a trivial read). An unreachable store is recorded in
    /// [`write_health`](Store::write_health) as unavailable; an answer changes nothing
    /// there, since only a write shows that writes work.
    pub async fn ping(&self) -> StoreResult<()> {
        let r: StoreResult<()> =
            dispatch!(&self.db, p => sqlx::query("SELECT 1").execute(p).await.map(|_| ()))
                .map_err(StoreError::from);
        match r {
            Err(StoreError::Unavailable(_)) => self.track(r),
            other => other,
        }
    }

    /// Reads a server setting.
    pub async fn setting(&self, key: &str) -> StoreResult<Option<String>> {
        let sql = "SELECT value FROM settings WHERE key = $1";
        let v: Option<(String,)> =
            dispatch!(&self.db, p => sqlx::query_as(sql).bind(key).fetch_optional(p).await)?;
        Ok(v.map(|(v,)| v))
    }

    /// Stores `value` under `key` unless a value is already there; returns the value that
    /// is stored afterwards. Safe when several servers start at once.
    pub async fn setting_or_insert(&self, key: &str, value: &str) -> StoreResult<String> {
        let sql = "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING";
        let r =
            dispatch!(&self.writer, p => sqlx::query(sql).bind(key).bind(value).execute(p).await.map(|_| ()));
        self.track(r.map_err(StoreError::from))?;
        self.setting(key).await?.ok_or(StoreError::NotFound)
    }

    /// Copies committed WAL pages into the SQLite database file without blocking writers
    /// (PASSIVE), so commits never pay for a checkpoint. A no-op on PostgreSQL. It runs on
    /// a reader connection: a checkpoint takes no write lock.
    pub async fn checkpoint(&self) -> StoreResult<()> {
        if let Db::Sqlite(p) = &self.db {
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(p).await?;
        }
        Ok(())
    }

    /// Test hook (fault injection): limits the SQLite database to `pages` pages (`None`
    /// lifts the limit), on the writer connection now and on any it opens later, so the
    /// store behaves as if its disk were full. SQLite never shrinks the limit below the
    /// file's current size. A no-op on PostgreSQL.
    #[doc(hidden)]
    pub async fn limit_sqlite_pages(&self, pages: Option<u64>) -> StoreResult<()> {
        // SQLite's own upper bound for the limit (SQLITE_MAX_PAGE_COUNT).
        let n = pages.unwrap_or(0xFFFF_FFFE);
        self.page_limit.0.store(pages.unwrap_or(0), Ordering::Relaxed);
        if let Db::Sqlite(p) = &self.writer {
            sqlx::query(&format!("PRAGMA max_page_count = {n}"))
                .execute(p)
                .await?;
        }
        Ok(())
    }

    /// Closes the pools after in-flight queries finish (SQLite checkpoints its WAL).
    pub async fn close(&self) {
        dispatch!(&self.db, p => p.close().await);
        dispatch!(&self.writer, p => p.close().await);
    }
}

/// Bytes the write probe writes (and deletes): several pages, so a store that cannot
/// grow fails it.
const PROBE_BYTES: usize = 64 * 1024;

/// Microseconds since the Unix epoch: how every timestamp is stored.
pub fn now_micros() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}
