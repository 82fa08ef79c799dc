//! Retention: pruning deliveries beyond the per-recipient count or older than the age
//! limit, the event bodies no delivery needs any more, and expired idempotency keys.

use super::{ids::event_id_floor, Pruned, RetentionPolicy};
use crate::store::{dispatch, Store, StoreError, StoreResult};

/// Most rows one retention transaction deletes, so publishes never wait long for it.
const CHUNK: usize = 1000;

impl Store {
    /// One retention pass, in short transactions of at most [`CHUNK`] rows so publishes
    /// interleave with it.
    pub async fn prune(&self, policy: RetentionPolicy) -> StoreResult<Pruned> {
        let mut pruned = Pruned::default();
        if let Some(max) = policy.max_per_recipient {
            let sql = "SELECT user_id, head_seq FROM heads WHERE head_seq > $1";
            let over: Vec<(i64, i64)> =
                dispatch!(&self.db, p => sqlx::query_as(sql).bind(max as i64).fetch_all(p).await)?;
            for (user, head) in over {
                for table in ["inbox", "inbox_tail"] {
                    let sql = format!("DELETE FROM {table} WHERE user_id = $1 AND seq <= $2");
                    let n = dispatch!(&self.writer, p => sqlx::query(&sql).bind(user).bind(head - max as i64)
                        .execute(p).await.map(|r| r.rows_affected()));
                    let n = self.track(n.map_err(StoreError::from))?;
                    pruned.deliveries += n;
                }
            }
        }
        if let Some(cutoff) = policy.cutoff_micros {
            // Without an index on time (it cost ~40% of publish throughput): a recipient's
            // seqs are in commit order, so its expired deliveries are a prefix of its inbox.
            // One read finds the recipients whose oldest delivery expired (an index probe
            // each); for each, the first unexpired seq bounds a primary-key range delete.
            let sql = "SELECT h.user_id FROM heads h WHERE \
                       (SELECT i.published_at FROM inbox i WHERE i.user_id = h.user_id \
                        ORDER BY i.seq LIMIT 1) < $1";
            let expired: Vec<(i64,)> =
                dispatch!(&self.db, p => sqlx::query_as(sql).bind(cutoff).fetch_all(p).await)?;
            for (user,) in expired {
                let sql = "SELECT seq FROM inbox WHERE user_id = $1 AND published_at >= $2 \
                           ORDER BY seq LIMIT 1";
                let keep: Option<(i64,)> = dispatch!(&self.db, p => sqlx::query_as(sql)
                    .bind(user).bind(cutoff).fetch_optional(p).await)?;
                let below = keep.map_or(i64::MAX, |(s,)| s);
                let sql = "DELETE FROM inbox WHERE user_id = $1 AND seq < $2";
                let n = dispatch!(&self.writer, p => sqlx::query(sql).bind(user).bind(below)
                    .execute(p).await.map(|r| r.rows_affected()));
                let n = self.track(n.map_err(StoreError::from))?;
                pruned.deliveries += n;
            }
            // Deliveries not merged yet are young, unless the age limit is shorter than a
            // merge pass: the tail is small, so one scan of it settles that.
            let sql = "DELETE FROM inbox_tail WHERE published_at < $1";
            let n = dispatch!(&self.writer, p => sqlx::query(sql).bind(cutoff)
                .execute(p).await.map(|r| r.rows_affected()));
            pruned.deliveries += self.track(n.map_err(StoreError::from))?;
            let floor = event_id_floor(cutoff);
            loop {
                let sql = format!(
                    "DELETE FROM events WHERE event_id IN \
                     (SELECT event_id FROM events WHERE event_id < $1 LIMIT {CHUNK})"
                );
                let n = dispatch!(&self.writer, p => sqlx::query(&sql).bind(floor.as_str())
                    .execute(p).await.map(|r| r.rows_affected()));
                let n = self.track(n.map_err(StoreError::from))?;
                pruned.events += n;
                if n < CHUNK as u64 {
                    break;
                }
            }
        }
        let sql = "DELETE FROM idempotency WHERE created_at < $1";
        let r = dispatch!(&self.writer, p => sqlx::query(sql).bind(policy.idempotency_cutoff_micros)
            .execute(p).await.map(|_| ()));
        self.track(r.map_err(StoreError::from))?;
        Ok(pruned)
    }
}
