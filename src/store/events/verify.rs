//! A batch whose COMMIT lost its answer (the connection to PostgreSQL broke under way):
//! the store is asked whether the batch is there, since all of it or none of it is.

use super::commit::Batch;
use crate::store::{Db, Store, StoreError, StoreResult, WriteConn};

impl Store {
    /// The result of a batch whose COMMIT ended in `e` with the outcome unknown: `Ok` if
    /// its first event is stored (so is the rest), UNAVAILABLE if it is not (nothing was
    /// kept), still [`StoreError::CommitUnknown`] if the store cannot tell in time. A
    /// batch that stored no event (only acks or duplicates) counts as not committed.
    pub(super) async fn settle_unknown_commit(&self, batch: &Batch<'_>, e: sqlx::Error) -> StoreResult<()> {
        let first = batch
            .bodies
            .first()
            .and_then(|(_, (body, d))| Some((body.event_id.clone(), d.first()?.0)));
        match first {
            Some((id, user)) => match self.batch_committed(&id, user).await {
                Some(true) => {
                    tracing::warn!(error = %e, "connection lost during commit; the batch was committed");
                    Ok(())
                }
                Some(false) => Err(StoreError::Unavailable(e)),
                None => Err(StoreError::CommitUnknown(e)),
            },
            None => Err(StoreError::Unavailable(e)),
        }
    }

    /// Whether the batch holding `event_id` (one of whose recipients is `user_id`) was
    /// committed, asking until the store answers or the verify window passes (`None`:
    /// still unknown). PostgreSQL finishes a COMMIT whose client went away, so the check
    /// first waits for that transaction to end: it held the recipient's `heads` row lock.
    async fn batch_committed(&self, event_id: &str, user_id: u64) -> Option<bool> {
        let Db::Postgres(pool) = &self.db else {
            return Some(false);
        };
        let deadline = tokio::time::Instant::now() + self.verify_window;
        let lock_ms = self.verify_window.as_millis().max(100);
        loop {
            let r: StoreResult<bool> = async {
                let mut tx = WriteConn::begin(pool).await?;
                sqlx::query(&format!("SET LOCAL lock_timeout = '{lock_ms}ms'"))
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("SELECT head_seq FROM heads WHERE user_id = $1 FOR SHARE")
                    .bind(user_id as i64)
                    .fetch_optional(&mut *tx)
                    .await?;
                let found: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM events WHERE event_id = $1")
                    .bind(event_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(found.is_some())
            }
            .await;
            match r {
                Ok(found) => return Some(found),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    tracing::warn!(error = %e, "could not learn whether a commit happened");
                    return None;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
    }
}
