//! What servers sharing a PostgreSQL store need of it besides the event log: LISTEN and
//! NOTIFY (the cluster bus when no NATS is configured; sent after commit, never inside
//! the publish transaction, whose commit would otherwise queue behind PostgreSQL's
//! global notify lock), and the reads of the fallback poll that keeps streams live
//! while notifications are lost. On SQLite one server owns the store: all no-ops.

use crate::store::{Db, Store, StoreResult};

impl Store {
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

    /// The heads of `users` that have any (PostgreSQL; empty on SQLite).
    pub(crate) async fn heads_of(&self, users: &[u64]) -> StoreResult<Vec<(u64, u64)>> {
        let Db::Postgres(p) = &self.db else {
            return Ok(Vec::new());
        };
        let ids: Vec<i64> = users.iter().map(|&u| u as i64).collect();
        let rows: Vec<(i64, i64)> =
            sqlx::query_as("SELECT user_id, head_seq FROM heads WHERE user_id = ANY($1)")
                .bind(&ids)
                .fetch_all(p)
                .await?;
        Ok(rows.into_iter().map(|(u, h)| (u as u64, h as u64)).collect())
    }

    /// The stored cursors of `users`' consumers (PostgreSQL; empty on SQLite).
    pub(crate) async fn cursors_of(&self, users: &[u64]) -> StoreResult<Vec<(u64, String, u64)>> {
        let Db::Postgres(p) = &self.db else {
            return Ok(Vec::new());
        };
        let ids: Vec<i64> = users.iter().map(|&u| u as i64).collect();
        let rows: Vec<(i64, String, i64)> =
            sqlx::query_as("SELECT user_id, consumer_id, acked_seq FROM cursors WHERE user_id = ANY($1)")
                .bind(&ids)
                .fetch_all(p)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(u, c, s)| (u as u64, c, s as u64))
            .collect())
    }
}
