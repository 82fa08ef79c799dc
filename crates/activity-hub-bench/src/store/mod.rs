//! The hub's store seen from outside: [`prefill`] loads a store with deliveries before a
//! run, [`ceiling`] measures how fast the store itself takes the publish scenario's rows.
//!
//! Both write the hub's own schema (its migrations, embedded here) with SQL only: no
//! gRPC, no actors, no hub code.

use std::{str::FromStr, time::Duration};

use sqlx::{
    postgres::PgConnectOptions,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous},
    Connection, PgConnection, SqliteConnection,
};

pub(crate) mod ceiling;
pub(crate) mod prefill;

/// One connection to a hub store.
pub(crate) enum Conn {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

/// Whether `url` names a PostgreSQL store.
pub(crate) fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres:") || url.starts_with("postgresql:")
}

impl Conn {
    /// Connects with the hub's own settings (SQLite: WAL, `synchronous = FULL`, or
    /// `NORMAL` with `fsync_each_commit` false,
    /// `wal_autocheckpoint = 16384`, `temp_store = memory`, a writer cache of
    /// `cache_mib`), waiting up to 30 s for a lock another process holds.
    pub(crate) async fn open(url: &str, cache_mib: u64) -> Result<Conn, String> {
        Self::open_with(url, cache_mib, true).await
    }

    /// [`Conn::open`], fsyncing each commit or not (PostgreSQL: `synchronous_commit`).
    pub(crate) async fn open_with(
        url: &str,
        cache_mib: u64,
        fsync_each_commit: bool,
    ) -> Result<Conn, String> {
        let err = |e: sqlx::Error| format!("{}: {e}", redact(url));
        if is_postgres(url) {
            let mut opts = PgConnectOptions::from_str(url).map_err(err)?;
            if !fsync_each_commit {
                opts = opts.options([("synchronous_commit", "off")]);
            }
            Ok(Conn::Postgres(
                PgConnection::connect_with(&opts).await.map_err(err)?,
            ))
        } else {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(err)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(if fsync_each_commit {
                    SqliteSynchronous::Full
                } else {
                    SqliteSynchronous::Normal
                })
                .busy_timeout(Duration::from_secs(30))
                .pragma("wal_autocheckpoint", "16384")
                .pragma("temp_store", "memory")
                .pragma("cache_size", format!("-{}", cache_mib * 1024));
            Ok(Conn::Sqlite(
                SqliteConnection::connect_with(&opts).await.map_err(err)?,
            ))
        }
    }

    /// Runs the hub's migrations (the ceiling's fresh store).
    pub(crate) async fn migrate(&mut self) -> Result<(), String> {
        let r = match self {
            Conn::Sqlite(c) => sqlx::migrate!("../../migrations/sqlite").run(c).await,
            Conn::Postgres(c) => sqlx::migrate!("../../migrations/postgres").run(c).await,
        };
        r.map_err(|e| format!("migrating the ceiling's store: {e}"))
    }

    /// Runs one statement with no binds.
    pub(crate) async fn exec(&mut self, sql: &str) -> Result<u64, String> {
        let r = match self {
            Conn::Sqlite(c) => sqlx::query(sql).execute(c).await.map(|r| r.rows_affected()),
            Conn::Postgres(c) => sqlx::query(sql).execute(c).await.map(|r| r.rows_affected()),
        };
        r.map_err(|e| format!("{}: {e}", first_line(sql)))
    }
}

/// A database URL without its password, for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

fn first_line(sql: &str) -> &str {
    sql.trim().lines().next().unwrap_or("")
}

/// A UUIDv7-shaped event id (the hub's `events.event_id` text) whose time part is `ms`
/// and whose tail is `n`: ids of one `ms` sort by `n`, and all sort below the hub's
/// ids of any later millisecond.
pub(crate) fn event_id(ms: u64, n: u64) -> String {
    format!(
        "{:08x}-{:04x}-7000-8000-{:012x}",
        ms >> 16,
        ms & 0xffff,
        n & 0xffff_ffff_ffff
    )
}

/// Microseconds since the Unix epoch.
pub(crate) fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_sort_like_the_hubs() {
        let ms = 1_764_000_000_123u64;
        let a = event_id(ms, 1);
        let b = event_id(ms, 2);
        let later = event_id(ms + 1, 0);
        assert!(a < b && b < later, "{a} {b} {later}");
        assert_eq!(a.len(), 36);
        // The hub's own id of that millisecond (uuid's UUIDv7 layout) shares the prefix.
        assert!(a.starts_with(&format!("{:08x}-{:04x}-7", ms >> 16, ms & 0xffff)));
    }

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
    }
}
