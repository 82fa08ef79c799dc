//! The write transaction guard: a failed write leaves nothing behind.
//!
//! A multi-statement write runs on a [`WriteConn`], which closes its connection instead
//! of returning it to the pool unless the transaction committed: a COMMIT that failed
//! (full disk, lost connection) can never leave a transaction open for the next caller to
//! write into. [`WriteTx`] is the same guard over either backend, for writes whose steps
//! are functions of their own (the batch commit).

use std::ops::{Deref, DerefMut};

use sqlx::{pool::PoolConnection, Database, Postgres, Sqlite};

use super::{Db, StoreError, StoreResult};

/// A connection inside a write transaction. Unless [`commit`](WriteConn::commit)
/// succeeds, the connection is closed when this is dropped (the database rolls the
/// transaction back) instead of going back to the pool: a failed COMMIT or a statement
/// that failed half-way never leaves an open transaction for the next caller.
pub(crate) struct WriteConn<DB: Database> {
    conn: Option<PoolConnection<DB>>,
}

impl<DB: Database> WriteConn<DB> {
    /// Takes a connection from `pool` and begins a write transaction on it: `BEGIN
    /// IMMEDIATE` on SQLite (the write lock now, so no statement fails later on a stale
    /// snapshot), `BEGIN` on PostgreSQL.
    pub(crate) async fn begin(pool: &sqlx::Pool<DB>) -> StoreResult<WriteConn<DB>>
    where
        for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
        for<'q> <DB as Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    {
        let begin = if DB::NAME == "SQLite" {
            "BEGIN IMMEDIATE"
        } else {
            "BEGIN"
        };
        let mut conn = WriteConn {
            conn: Some(pool.acquire().await?),
        };
        sqlx::query(begin).execute(&mut *conn).await?;
        Ok(conn)
    }

    /// Commits; only then does the connection go back to the pool.
    pub(crate) async fn commit(mut self) -> StoreResult<()>
    where
        for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
        for<'q> <DB as Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    {
        match sqlx::query("COMMIT").execute(&mut *self).await {
            Ok(_) => {
                drop(self.conn.take());
                Ok(())
            }
            // No answer from a database server: the COMMIT may have been applied. (An
            // embedded SQLite either committed or did not: its error says which.)
            Err(e @ (sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_)))
                if DB::NAME != "SQLite" =>
            {
                Err(StoreError::CommitUnknown(e))
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl<DB: Database> Deref for WriteConn<DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        self.conn.as_ref().expect("connection present until commit")
    }
}

impl<DB: Database> DerefMut for WriteConn<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        self.conn.as_mut().expect("connection present until commit")
    }
}

impl<DB: Database> Drop for WriteConn<DB> {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            conn.close_on_drop();
        }
    }
}

/// A [`WriteConn`] on whichever backend the store runs: a write transaction that can be
/// handed from one step function to the next. [`on_tx!`] runs a statement on it.
pub(crate) enum WriteTx {
    Sqlite(WriteConn<Sqlite>),
    Postgres(WriteConn<Postgres>),
}

impl WriteTx {
    /// Begins a write transaction on the store's writer (see [`WriteConn::begin`]).
    pub(crate) async fn begin(writer: &Db) -> StoreResult<WriteTx> {
        Ok(match writer {
            Db::Sqlite(p) => WriteTx::Sqlite(WriteConn::begin(p).await?),
            Db::Postgres(p) => WriteTx::Postgres(WriteConn::begin(p).await?),
        })
    }

    /// Where a commit writes its deliveries: on SQLite the small, append-mostly
    /// `inbox_tail` that a background pass merges into `inbox`
    /// ([`Store::merge_inbox_tail`](super::Store::merge_inbox_tail)); on PostgreSQL,
    /// where several servers write and read, `inbox` itself.
    pub(crate) fn deliveries_table(&self) -> &'static str {
        match self {
            WriteTx::Sqlite(_) => "inbox_tail",
            WriteTx::Postgres(_) => "inbox",
        }
    }

    /// Commits (see [`WriteConn::commit`]: a lost answer is [`StoreError::CommitUnknown`]).
    pub(crate) async fn commit(self) -> StoreResult<()> {
        match self {
            WriteTx::Sqlite(c) => c.commit().await,
            WriteTx::Postgres(c) => c.commit().await,
        }
    }
}

/// Runs `$body` with `$c` bound to the backend's connection inside a [`WriteTx`]. Like
/// [`dispatch!`](super::dispatch), the body is expanded (and type-checked) once per driver.
macro_rules! on_tx {
    ($tx:expr, $c:ident => $body:expr) => {
        match $tx {
            $crate::store::write::WriteTx::Sqlite(conn) => {
                let $c = &mut **conn;
                $body
            }
            $crate::store::write::WriteTx::Postgres(conn) => {
                let $c = &mut **conn;
                $body
            }
        }
    };
}
pub(crate) use on_tx;
