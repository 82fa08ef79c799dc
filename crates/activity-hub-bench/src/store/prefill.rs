//! `--prefill N`: N deliveries written straight into a store before a run, one recipient
//! per event, spread round robin over the run's recipients, as the hub would have
//! stored them (an `events` row each, an `inbox` row per delivery with the recipient's
//! next seq, `heads` advanced to match).
//!
//! The rows are generated inside the database (a recursive CTE), in key order: ten
//! million deliveries take about a minute, not the hours the hub's own publish path
//! would need at the rates it is measured at. The recipients must be new users (no
//! deliveries yet): their seqs start at 1.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use super::{event_id, is_postgres, now_micros, Conn};

/// Rows per statement (and per transaction).
const ROWS: u64 = 200_000;

/// Writes `n` deliveries (`payload_size`-byte payloads) for `users` into the store at
/// `url`, counting them in `done`. The event ids are older than any the hub will
/// assign from now on, so the prefilled events sort before the run's.
pub(crate) async fn prefill(
    url: &str,
    users: &[u64],
    n: u64,
    payload_size: usize,
    done: Arc<AtomicU64>,
) -> Result<(), String> {
    if n == 0 || users.is_empty() {
        return Ok(());
    }
    let pg = is_postgres(url);
    let mut conn = Conn::open(url, 32).await?;
    let now = now_micros();
    // One millisecond before now: below every id the hub assigns during the run.
    let ms = (now / 1000 - 1) as u64;
    let prefix = &event_id(ms, 0)[..24];
    let id_of = |expr: &str| {
        if pg {
            format!("'{prefix}' || lpad(to_hex(({expr})::bigint), 12, '0')")
        } else {
            format!("printf('{prefix}%012x', {expr})")
        }
    };
    let payload = if pg {
        format!("convert_to(repeat('x', {payload_size}), 'UTF8')")
    } else {
        format!("zeroblob({payload_size})")
    };
    let count = users.len() as u64;

    // Events g = 0..n, in id order.
    let mut lo = 0;
    while lo < n {
        let hi = (lo + ROWS).min(n);
        conn.exec(&format!(
            "WITH RECURSIVE s(g) AS (SELECT {lo} UNION ALL SELECT g + 1 FROM s WHERE g + 1 < {hi}) \
             INSERT INTO events (event_id, type, payload, content_type, attributes, published_at, publisher_id) \
             SELECT {id}, 'bench.prefill', {payload}, '', '{{}}', {now}, 0 FROM s",
            id = id_of("g"),
        ))
        .await?;
        done.fetch_add((hi - lo) / 2, Ordering::Relaxed);
        lo = hi;
    }

    // Inbox rows in (user, seq) order: user i gets events g = (seq - 1) * count + i.
    let per_user = n.div_ceil(count);
    let users_per_chunk = (ROWS / per_user).max(1) as usize;
    let mut order: Vec<(usize, u64)> = users.iter().copied().enumerate().collect();
    order.sort_unstable_by_key(|&(_, u)| u);
    for chunk in order.chunks(users_per_chunk) {
        let values: Vec<String> = chunk.iter().map(|(i, u)| format!("({i}, {u})")).collect();
        let rows = conn
            .exec(&format!(
                "WITH RECURSIVE s(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM s WHERE k < {per_user}), \
                 u(idx, user_id) AS (VALUES {values}) \
                 INSERT INTO inbox (user_id, seq, event_id, type, published_at) \
                 SELECT u.user_id, s.k, {id}, 'bench.prefill', {now} FROM u, s \
                 WHERE (s.k - 1) * {count} + u.idx < {n} ORDER BY u.user_id, s.k",
                values = values.join(", "),
                id = id_of(&format!("(s.k - 1) * {count} + u.idx")),
            ))
            .await?;
        done.fetch_add(rows - rows / 2, Ordering::Relaxed);
    }

    // Heads: user i got n / count deliveries, one more if i < n % count.
    for chunk in users.iter().enumerate().collect::<Vec<_>>().chunks(1000) {
        let values: Vec<String> = chunk
            .iter()
            .map(|(i, u)| format!("({u}, {})", n / count + u64::from((*i as u64) < n % count)))
            .collect();
        conn.exec(&format!(
            "INSERT INTO heads (user_id, head_seq) VALUES {} \
             ON CONFLICT (user_id) DO UPDATE SET head_seq = heads.head_seq + excluded.head_seq",
            values.join(", ")
        ))
        .await?;
    }
    if !pg {
        // The run starts with an empty WAL, as a long-running hub's would be.
        conn.exec("PRAGMA wal_checkpoint(TRUNCATE)").await?;
    } else {
        conn.exec("ANALYZE events, inbox, heads").await?;
    }
    Ok(())
}
