//! What can go wrong in the store, classified by SQLSTATE / SQLite result code, never by
//! message text: the callers above decide on retries and status codes from this alone.

/// Errors of the store layer, classified by SQLSTATE / SQLite code, never by message text.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint refused the write (e.g. email taken).
    #[error("unique constraint violated")]
    UniqueViolation,
    /// The row does not exist (or is soft-deleted).
    #[error("not found")]
    NotFound,
    /// The database could not be reached, is locked or is overloaded; retrying later may work.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The database is out of space (a full disk, SQLite's page limit, PostgreSQL's
    /// `disk_full`): writes fail until space is freed.
    #[error("store full: {0}")]
    Full(#[source] sqlx::Error),
    /// A stored value could not be decoded (a bug or a hand-edited database).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The connection was lost while COMMIT was under way: whether the transaction
    /// committed is unknown (it was checked and the store could not be reached).
    #[error("connection lost during commit; outcome unknown: {0}")]
    CommitUnknown(#[source] sqlx::Error),
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
            sqlx::Error::Database(db) if is_full(db.as_ref()) => StoreError::Full(e),
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

/// SQLite "full" (13) and PostgreSQL `disk_full` (53100).
fn is_full(db: &dyn sqlx::error::DatabaseError) -> bool {
    match db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        Some(pg) => pg.code() == "53100",
        None => sqlite_primary_code(db) == Some(13),
    }
}

/// SQLite "busy"/"locked" (5, 6), "read-only" (8), "I/O error" (10) and "cannot open"
/// (14), with their extended variants; PostgreSQL class 53 (insufficient resources),
/// 57P01-03 (shutdown), 08 (connection) and 25P03 (idle transaction timeout).
fn is_busy(db: &dyn sqlx::error::DatabaseError) -> bool {
    match db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        Some(pg) => {
            let c = pg.code();
            c.starts_with("53") || c.starts_with("57P") || c.starts_with("08") || c == "25P03"
        }
        None => matches!(sqlite_primary_code(db), Some(5 | 6 | 8 | 10 | 14)),
    }
}

/// The primary result code (the low byte of an extended one) of a SQLite error.
fn sqlite_primary_code(db: &dyn sqlx::error::DatabaseError) -> Option<i32> {
    db.code()?.parse::<i32>().ok().map(|n| n & 0xff)
}

/// Result of store calls.
pub type StoreResult<T> = Result<T, StoreError>;
