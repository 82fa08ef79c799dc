//! The store: one small interface over SQLite (embedded default) and PostgreSQL.
//!
//! Owns the connection pool, migrations and error classification. Every query is written
//! once with `$n` placeholders (both engines accept them) and dispatched to the typed pool
//! by [`dispatch!`], so each query is compiled and type-checked for both backends with no
//! runtime translation layer. It does not know about gRPC or authorization.

pub mod events;
mod users;

use std::{str::FromStr, time::Duration};

use sqlx::{
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous},
};

pub use users::{ListFilter, NewUser, PageStart, UserChanges, UserKey};

/// Errors of the store layer, classified by SQLSTATE / SQLite code, never by message text.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint refused the write (e.g. email taken).
    #[error("unique constraint violated")]
    UniqueViolation,
    /// The row does not exist (or is soft-deleted).
    #[error("not found")]
    NotFound,
    /// The database could not be reached or is overloaded; retrying later may work.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A stored value could not be decoded (a bug or a hand-edited database).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Anything else the database said.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// Migrations failed at start.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::UniqueViolation,
            sqlx::Error::Database(db) if is_busy(db.as_ref()) => StoreError::Unavailable(e),
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e),
            _ => StoreError::Database(e),
        }
    }
}

/// SQLite "busy"/"locked" (codes 5 and 6, with extended variants) and PostgreSQL
/// class 53 (insufficient resources), 57P01-03 (shutdown) and 08 (connection).
fn is_busy(db: &dyn sqlx::error::DatabaseError) -> bool {
    let Some(code) = db.code() else { return false };
    match code.parse::<i32>() {
        Ok(n) => matches!(n & 0xff, 5 | 6),
        Err(_) => code.starts_with("53") || code.starts_with("57P") || code.starts_with("08"),
    }
}

/// Result of store calls.
pub type StoreResult<T> = Result<T, StoreError>;

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

/// Connection settings for [`Store::connect`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// `sqlite://path`, `sqlite::memory:` or `postgres://...`.
    pub url: String,
    /// Upper bound of pooled connections.
    pub max_connections: u32,
    /// How long a caller waits for a free connection before the store counts as unavailable.
    pub acquire_timeout: Duration,
}

/// Handle to the database; cheap to clone and shared by the user service and the hub.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) db: Db,
}

impl Store {
    /// Opens (creating a SQLite file if missing) and migrates the store.
    ///
    /// SQLite runs in WAL mode with `synchronous = FULL` (a committed transaction survives
    /// power loss, not only a process crash), foreign keys on and a busy timeout.
    pub async fn connect(opts: &StoreOptions) -> StoreResult<Store> {
        let url = opts.url.as_str();
        let db = if Backend::of_url(url) == Backend::Postgres {
            let connect = PgConnectOptions::from_str(url).map_err(StoreError::Database)?;
            let pool = PgPoolOptions::new()
                .max_connections(opts.max_connections)
                .acquire_timeout(opts.acquire_timeout)
                .connect_with(connect)
                .await?;
            sqlx::migrate!("migrations/postgres").run(&pool).await?;
            Db::Postgres(pool)
        } else {
            let connect = SqliteConnectOptions::from_str(url)
                .map_err(StoreError::Database)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10))
                // Checkpoints run in the background (Store::checkpoint), not inside a
                // publisher's commit; this larger automatic threshold is only a backstop.
                .pragma("wal_autocheckpoint", "16384")
                // Statement journals of multi-row upserts stay in memory, and a 64 MiB page
                // cache keeps the hot index pages of the log resident.
                .pragma("temp_store", "memory")
                .pragma("cache_size", "-65536");
            let pool = SqlitePoolOptions::new()
                .max_connections(opts.max_connections)
                .acquire_timeout(opts.acquire_timeout)
                .connect_with(connect)
                .await?;
            sqlx::migrate!("migrations/sqlite").run(&pool).await?;
            Db::Sqlite(pool)
        };
        Ok(Store { db })
    }

    /// The engine behind this store.
    pub fn backend(&self) -> Backend {
        match self.db {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
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
        dispatch!(&self.db, p => sqlx::query(sql).bind(key).bind(value).execute(p).await.map(|_| ()))?;
        self.setting(key).await?.ok_or(StoreError::NotFound)
    }

    /// Copies committed WAL pages into the SQLite database file without blocking writers
    /// (PASSIVE), so commits never pay for a checkpoint. A no-op on PostgreSQL.
    pub async fn checkpoint(&self) -> StoreResult<()> {
        if let Db::Sqlite(p) = &self.db {
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(p).await?;
        }
        Ok(())
    }

    /// Closes the pool after in-flight queries finish (SQLite checkpoints its WAL).
    pub async fn close(&self) {
        dispatch!(&self.db, p => p.close().await)
    }
}

/// Microseconds since the Unix epoch: how every timestamp is stored.
pub fn now_micros() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}
