//! PostgreSQL LISTEN/NOTIFY between servers sharing a store: a batch commit announces
//! the recipients' new heads inside its transaction (delivered only if it commits), and
//! the hub listens for the others'. On SQLite one server owns the store: all no-ops.

use std::collections::HashMap;

use crate::store::{
    plan::heads_notifications,
    write::{on_tx, WriteTx},
    Backend, Db, Store, StoreResult,
};

impl Store {
    /// Step 7 of the batch commit: other servers on the same PostgreSQL learn the new
    /// heads at commit. `next` maps each recipient to its next free seq.
    pub(super) async fn notify_heads(
        &self,
        tx: &mut WriteTx,
        origin: &str,
        next: &HashMap<u64, u64>,
    ) -> StoreResult<()> {
        if self.backend() != Backend::Postgres || next.is_empty() {
            return Ok(());
        }
        for payload in heads_notifications(origin, next) {
            on_tx!(tx, c => sqlx::query("SELECT pg_notify($1, $2)")
                .bind(self.notify_channel.as_ref())
                .bind(payload)
                .execute(&mut *c)
                .await
                .map(|_| ()))?;
        }
        Ok(())
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
