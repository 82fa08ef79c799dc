//! The idempotency steps of the batch commit: a publish whose (publisher, key) was seen
//! within the window, earlier or in this batch, is a duplicate of the first one and
//! stores nothing. Keys are looked up, claimed, and finally recorded with the event they
//! stand for, all inside the batch's transaction.

use std::collections::HashMap;

use super::{commit::Batch, PublishOutcome};
use crate::store::{
    write::{on_tx, WriteTx},
    StoreError, StoreResult,
};

impl<'a> Batch<'a> {
    /// Step 1: keys seen earlier (within the window) make their publish a duplicate of
    /// the stored one; a key seen earlier in this batch points its publish at the first.
    pub(super) async fn find_earlier_keys(
        &mut self,
        tx: &mut WriteTx,
        idempotency_cutoff: i64,
    ) -> StoreResult<()> {
        let items = self.items;
        // Keys first seen in this batch, and the publish that carries each.
        let mut batch_keys: HashMap<(u64, &str), usize> = HashMap::new();
        for (i, it) in items.iter().enumerate() {
            if it.idempotency_key.is_empty() {
                continue;
            }
            if let Some(&first) = batch_keys.get(&(it.publisher_id, it.idempotency_key.as_str())) {
                self.dup_of[i] = Some(first);
                continue;
            }
            let row: Option<(String, String)> = on_tx!(tx, c => sqlx::query_as(
                "SELECT event_id, deliveries FROM idempotency \
                 WHERE publisher_id = $1 AND key = $2 AND created_at >= $3",
            )
            .bind(it.publisher_id as i64)
            .bind(&it.idempotency_key)
            .bind(idempotency_cutoff)
            .fetch_optional(&mut *c)
            .await)?;
            match row {
                Some((event_id, deliveries)) => {
                    self.outcomes[i] = Some(duplicate(event_id, &deliveries)?);
                }
                None => {
                    batch_keys.insert((it.publisher_id, it.idempotency_key.as_str()), i);
                }
            }
        }
        Ok(())
    }

    /// Step 3: claims the new keys. Losing a race with another server on the same
    /// PostgreSQL makes this publish a duplicate of the winner's.
    pub(super) async fn claim_keys(
        &mut self,
        tx: &mut WriteTx,
        now: i64,
        idempotency_cutoff: i64,
    ) -> StoreResult<()> {
        for (i, it) in self.items.iter().enumerate() {
            if it.idempotency_key.is_empty() || !self.is_fresh(i) {
                continue;
            }
            // fetch_all, not fetch_optional: a RETURNING statement must run to
            // completion (sqlx's SQLite driver would otherwise leave it mid-step).
            let claimed: Vec<(String,)> = on_tx!(tx, c => sqlx::query_as(
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
            .fetch_all(&mut *c)
            .await)?;
            if claimed.is_empty() {
                let (event_id, deliveries): (String, String) = on_tx!(tx, c => sqlx::query_as(
                    "SELECT event_id, deliveries FROM idempotency WHERE publisher_id = $1 AND key = $2",
                )
                .bind(it.publisher_id as i64)
                .bind(&it.idempotency_key)
                .fetch_one(&mut *c)
                .await)?;
                self.outcomes[i] = Some(duplicate(event_id, &deliveries)?);
            }
        }
        Ok(())
    }

    /// Step 5d: each claimed key now names its stored event and deliveries.
    pub(super) async fn record_keys(&self, tx: &mut WriteTx) -> StoreResult<()> {
        for (i, (body, deliveries)) in &self.bodies {
            let it = &self.items[*i];
            if it.idempotency_key.is_empty() {
                continue;
            }
            on_tx!(tx, c => sqlx::query(
                "UPDATE idempotency SET event_id = $1, deliveries = $2 WHERE publisher_id = $3 AND key = $4",
            )
            .bind(body.event_id.as_str())
            .bind(serde_json::to_string(deliveries).unwrap_or_default())
            .bind(it.publisher_id as i64)
            .bind(&it.idempotency_key)
            .execute(&mut *c)
            .await
            .map(|_| ()))?;
        }
        Ok(())
    }
}

/// The outcome of a publish whose key names `event_id` with `deliveries` (JSON).
fn duplicate(event_id: String, deliveries: &str) -> StoreResult<PublishOutcome> {
    let deliveries: Vec<(u64, u64)> = serde_json::from_str(deliveries)
        .map_err(|e| StoreError::Corrupt(format!("idempotency deliveries of {event_id}: {e}")))?;
    Ok(PublishOutcome::Duplicate { event_id, deliveries })
}
