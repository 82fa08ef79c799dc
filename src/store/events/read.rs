//! Reading the log: a recipient's head and bounds, history pages, and a consumer's
//! stored cursor. Reads use the readers' pool and never wait for the writer.

use std::sync::Arc;

use bytes::Bytes;
use sqlx::QueryBuilder;

use super::{EventBody, StoredEvent};
use crate::store::{dispatch, Store, StoreError, StoreResult};

type EventRow = (i64, String, String, Vec<u8>, String, String, i64, i64);

fn decode_row(user_id: u64, row: EventRow) -> StoreResult<StoredEvent> {
    let (seq, event_id, event_type, payload, content_type, attributes, published_at, publisher_id) = row;
    let attributes = serde_json::from_str(&attributes)
        .map_err(|e| StoreError::Corrupt(format!("event {event_id} attributes: {e}")))?;
    Ok(StoredEvent {
        user_id,
        seq: seq as u64,
        body: Arc::new(EventBody {
            event_id,
            event_type,
            payload: Bytes::from(payload),
            content_type,
            attributes,
            published_at,
            publisher_id: publisher_id as u64,
        }),
    })
}

impl Store {
    /// The recipient's newest seq (0 when nothing was ever published to them).
    pub async fn head_seq(&self, user_id: u64) -> StoreResult<u64> {
        let sql = "SELECT head_seq FROM heads WHERE user_id = $1";
        let row: Option<(i64,)> =
            dispatch!(&self.db, p => sqlx::query_as(sql).bind(user_id as i64).fetch_optional(p).await)?;
        Ok(row.map_or(0, |(h,)| h as u64))
    }

    /// The recipient's newest seq and oldest retained seq (if any event is retained), in
    /// one round trip.
    pub async fn bounds(&self, user_id: u64) -> StoreResult<(u64, Option<u64>)> {
        // A delivery is in `inbox` or, until merged, in `inbox_tail` (never both).
        let sql = "SELECT (SELECT head_seq FROM heads WHERE user_id = $1), \
                   (SELECT MIN(m) FROM (SELECT MIN(seq) AS m FROM inbox WHERE user_id = $1 \
                    UNION ALL SELECT MIN(seq) FROM inbox_tail WHERE user_id = $1) b)";
        let (head, earliest): (Option<i64>, Option<i64>) =
            dispatch!(&self.db, p => sqlx::query_as(sql).bind(user_id as i64).fetch_one(p).await)?;
        Ok((head.map_or(0, |h| h as u64), earliest.map(|s| s as u64)))
    }

    /// Up to `limit` retained events of `user_id` with `after < seq <= upto`, of the given
    /// types (all when empty), in seq order.
    pub async fn events_page(
        &self,
        user_id: u64,
        after: u64,
        upto: u64,
        types: &[String],
        limit: u32,
    ) -> StoreResult<Vec<StoredEvent>> {
        let rows: Vec<EventRow> = dispatch!(&self.db, p => {
            // The first `limit` of each table (a delivery is in one of them), then the
            // first `limit` of both: each side reads its primary-key range in order.
            let mut q = QueryBuilder::new(
                "SELECT d.seq, e.event_id, e.type, e.payload, e.content_type, e.attributes, \
                 e.published_at, e.publisher_id FROM (",
            );
            for (i, table) in ["inbox", "inbox_tail"].into_iter().enumerate() {
                if i > 0 {
                    q.push(" UNION ALL ");
                }
                q.push(format!("SELECT * FROM (SELECT seq, event_id FROM {table} WHERE user_id = "));
                q.push_bind(user_id as i64);
                q.push(" AND seq > ").push_bind(after.min(i64::MAX as u64) as i64);
                q.push(" AND seq <= ").push_bind(upto.min(i64::MAX as u64) as i64);
                if !types.is_empty() {
                    q.push(" AND type IN (");
                    let mut sep = q.separated(", ");
                    for t in types {
                        sep.push_bind(t.as_str());
                    }
                    q.push(")");
                }
                q.push(" ORDER BY seq LIMIT ").push_bind(i64::from(limit));
                q.push(format!(") {table}_page"));
            }
            q.push(") d JOIN events e ON e.event_id = d.event_id ORDER BY d.seq LIMIT ")
                .push_bind(i64::from(limit));
            q.build_query_as().fetch_all(p).await
        })?;
        rows.into_iter().map(|r| decode_row(user_id, r)).collect()
    }

    /// The stored position of a durable consumer (0 = never acked).
    pub async fn cursor(&self, user_id: u64, consumer_id: &str) -> StoreResult<u64> {
        let sql = "SELECT acked_seq FROM cursors WHERE user_id = $1 AND consumer_id = $2";
        let row: Option<(i64,)> = dispatch!(&self.db, p => sqlx::query_as(sql)
            .bind(user_id as i64).bind(consumer_id).fetch_optional(p).await)?;
        Ok(row.map_or(0, |(s,)| s as u64))
    }
}
