//! Merging `inbox_tail` into `inbox` on SQLite (see `migrations/sqlite/0003_inbox_tail.sql`
//! for why commits write the tail).

use crate::store::{
    write::{on_tx, WriteTx},
    Db, Store, StoreResult,
};

impl Store {
    /// Moves the deliveries in `inbox_tail` of the recipients from `from` on into
    /// `inbox`, in (recipient, seq) order, whole recipients, about `max` deliveries (more
    /// when one recipient alone has more), in one write transaction: a delivery is in
    /// exactly one of the two tables at any time, and a failed slice leaves both as they
    /// were. Returns how many moved and the recipient the next slice starts at (`None`:
    /// none is left). On PostgreSQL, where commits write `inbox` directly, there is
    /// nothing to move.
    pub async fn merge_inbox_tail(&self, from: u64, max: u64) -> StoreResult<(u64, Option<u64>)> {
        if !matches!(self.writer, Db::Sqlite(_)) {
            return Ok((0, None));
        }
        let from = from.min(i64::MAX as u64) as i64;
        let moved = async {
            let mut tx = WriteTx::begin(&self.writer).await?;
            let (first,): (Option<i64>,) = on_tx!(&mut tx, c => sqlx::query_as(
                "SELECT MIN(user_id) FROM inbox_tail WHERE user_id >= $1",
            )
            .bind(from)
            .fetch_one(&mut *c)
            .await)?;
            let Some(first) = first else {
                tx.commit().await?;
                return Ok((0, None));
            };
            // The recipient of the delivery just past `max`: the slice ends before it, or
            // after `first` when that one recipient alone has more than `max`.
            let past: Option<(i64,)> = on_tx!(&mut tx, c => sqlx::query_as(
                "SELECT user_id FROM inbox_tail WHERE user_id >= $1 ORDER BY user_id, seq LIMIT 1 OFFSET $2",
            )
            .bind(first)
            .bind(max.min(i64::MAX as u64) as i64)
            .fetch_optional(&mut *c)
            .await)?;
            let upto = past.map(|(u,)| if u == first { first + 1 } else { u });
            let end = upto.unwrap_or(i64::MAX);
            let n = on_tx!(&mut tx, c => sqlx::query(
                "INSERT INTO inbox (user_id, seq, event_id, type, published_at) \
                 SELECT user_id, seq, event_id, type, published_at FROM inbox_tail \
                 WHERE user_id >= $1 AND user_id < $2 ORDER BY user_id, seq",
            )
            .bind(first)
            .bind(end)
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected()))?;
            if n > 0 {
                on_tx!(&mut tx, c => sqlx::query("DELETE FROM inbox_tail WHERE user_id >= $1 AND user_id < $2")
                    .bind(first)
                    .bind(end)
                    .execute(&mut *c)
                    .await
                    .map(|_| ()))?;
            }
            tx.commit().await?;
            Ok((n, upto.map(|u| u as u64)))
        }
        .await;
        self.track(moved)
    }
}
