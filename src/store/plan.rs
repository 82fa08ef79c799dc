//! Batch planning: the pure decisions behind a group commit, kept apart from the SQL so
//! they can be unit-tested and fuzzed on their own.
//!
//! - [`close_batch`]: how many queued publishes go into the next commit.
//! - [`sized_chunks`]: how a batch's rows split into multi-row statements.
//! - [`recipient_counts`] and [`assign_seqs`]: each recipient's new seqs, gap-free and in
//!   publish order, from the heads the store returns.
//! - [`heads_notifications`]: the new heads as cluster notifications (NOTIFY or NATS).

use std::collections::{BTreeMap, HashMap};

/// Rows per multi-row statement: 7 columns x 4096 stays under SQLite's 32766 binds (and
/// PostgreSQL's 65535). Fewer, larger statements: each one is a round trip between the
/// commit task and SQLite's thread, which waits meanwhile.
pub const CHUNK: usize = 4096;

/// Largest NOTIFY payload written (PostgreSQL refuses 8000 bytes and above).
pub const NOTIFY_PAYLOAD_MAX: usize = 7000;

/// How many of the queued publishes, whose payload sizes `sizes` yields in queue order,
/// the next commit takes: at most `max_count` and at most `max_bytes` of payload, but
/// always at least one when anything is queued (a single publish larger than `max_bytes`
/// still commits, alone).
pub fn close_batch(sizes: impl IntoIterator<Item = usize>, max_count: usize, max_bytes: usize) -> usize {
    let mut n = 0;
    let mut bytes = 0usize;
    for size in sizes {
        if n == max_count.max(1) || (n > 0 && bytes.saturating_add(size) > max_bytes) {
            break;
        }
        bytes = bytes.saturating_add(size);
        n += 1;
    }
    n
}

/// Splits `v` into chunks of [`CHUNK`] rows and then powers of two (2048, 1024, ..., 1),
/// so a multi-row statement comes in at most 13 shapes per table and every shape stays in
/// the driver's prepared-statement cache instead of being parsed again for each batch.
pub fn sized_chunks<T>(v: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = v;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = if rest.len() >= CHUNK {
            CHUNK
        } else {
            1 << (usize::BITS - 1 - rest.len().leading_zeros())
        };
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Some(head)
    })
}

/// How many new deliveries each recipient gets from the publishes `recipients` lists,
/// ascending by recipient (the order heads are locked in, the same on every server).
pub fn recipient_counts<'a>(recipients: impl IntoIterator<Item = &'a [u64]>) -> Vec<(u64, i64)> {
    let mut counts: BTreeMap<u64, i64> = BTreeMap::new();
    for rs in recipients {
        for r in rs {
            *counts.entry(*r).or_default() += 1;
        }
    }
    counts.into_iter().collect()
}

/// Each recipient's first new seq, from the heads the store returned after adding
/// `counts` to them: `(user, new_head)` pairs. A recipient missing from `heads` (a bug
/// in the store) is an error naming it.
pub fn first_seqs(counts: &[(u64, i64)], heads: &[(u64, i64)]) -> Result<HashMap<u64, u64>, String> {
    let by_user: HashMap<u64, i64> = counts.iter().copied().collect();
    let mut next = HashMap::with_capacity(counts.len());
    for (u, head) in heads {
        let n = by_user
            .get(u)
            .copied()
            .ok_or_else(|| format!("head returned for user {u}, who got no delivery"))?;
        // Checked before any arithmetic: a head near i64::MIN from a wrong answer must be
        // an error, not an overflow (found by the batch_plan fuzz target).
        if n < 1 || *head < n {
            return Err(format!(
                "user {u}: head {head} is below the {n} deliveries just added"
            ));
        }
        next.insert(*u, (head - n + 1) as u64);
    }
    if let Some((u, _)) = counts.iter().find(|(u, _)| !next.contains_key(u)) {
        return Err(format!("no head returned for user {u}"));
    }
    Ok(next)
}

/// The (recipient, seq) deliveries of each publish, in order, taking seqs from `next`
/// (each recipient's next free seq, advanced here). Every recipient of `recipients` must
/// be in `next` (as [`first_seqs`] makes it from [`recipient_counts`] of the same lists).
pub fn assign_seqs<'a>(
    recipients: impl IntoIterator<Item = &'a [u64]>,
    next: &mut HashMap<u64, u64>,
) -> Result<Vec<Vec<(u64, u64)>>, String> {
    recipients
        .into_iter()
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    let s = next
                        .get_mut(r)
                        .ok_or_else(|| format!("no seq planned for user {r}"))?;
                    let seq = *s;
                    *s += 1;
                    Ok((*r, seq))
                })
                .collect()
        })
        .collect()
}

/// `h|<origin>|user:head,...` messages of at most [`NOTIFY_PAYLOAD_MAX`] bytes, one
/// item per (recipient, new head).
pub fn heads_notifications(origin: &str, heads: &HashMap<u64, u64>) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = format!("h|{origin}|");
    let base = cur.len();
    for (u, head) in heads {
        let item = format!("{u}:{head}");
        if cur.len() > base && cur.len() + item.len() + 1 > NOTIFY_PAYLOAD_MAX {
            out.push(std::mem::replace(&mut cur, format!("h|{origin}|")));
        }
        if cur.len() > base {
            cur.push(',');
        }
        cur.push_str(&item);
    }
    if cur.len() > base {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_come_in_few_shapes() {
        let v: Vec<u32> = (0..9_000).collect();
        let sizes: Vec<usize> = sized_chunks(&v).map(<[u32]>::len).collect();
        assert_eq!(sizes, vec![4096, 4096, 512, 256, 32, 8]);
        assert_eq!(sized_chunks(&v).flatten().count(), v.len());
        assert_eq!(sized_chunks::<u32>(&[]).count(), 0);
    }

    #[test]
    fn a_batch_closes_at_count_or_bytes_but_never_empty() {
        assert_eq!(close_batch([10, 10, 10], 2, 1000), 2);
        assert_eq!(close_batch([10, 10, 10], 10, 25), 2);
        assert_eq!(
            close_batch([5000, 1], 10, 100),
            1,
            "an oversized publish commits alone"
        );
        assert_eq!(close_batch([], 10, 100), 0);
        assert_eq!(
            close_batch([1, 1], 0, 100),
            1,
            "a zero count still makes progress"
        );
    }

    #[test]
    fn seqs_continue_each_head_in_publish_order() {
        let a: &[u64] = &[1, 2];
        let b: &[u64] = &[2];
        let counts = recipient_counts([a, b]);
        assert_eq!(counts, vec![(1, 1), (2, 2)]);
        // The store had head 4 for user 1 and 0 for user 2 before adding the counts.
        let mut next = first_seqs(&counts, &[(1, 5), (2, 2)]).unwrap();
        let d = assign_seqs([a, b], &mut next).unwrap();
        assert_eq!(d, vec![vec![(1, 5), (2, 1)], vec![(2, 2)]]);
        assert!(
            first_seqs(&counts, &[(1, 5)]).is_err(),
            "a head missing is an error"
        );
        assert!(
            first_seqs(&counts, &[(1, 5), (2, 1)]).is_err(),
            "a head below its count"
        );
        assert!(
            first_seqs(&[(1, 1)], &[(1, i64::MIN)]).is_err(),
            "no overflow on a wild head"
        );
        assert!(
            first_seqs(&[(1, 3)], &[(1, i64::MIN)]).is_err(),
            "no overflow on a wild head"
        );
    }

    #[test]
    fn notifications_stay_under_the_payload_limit() {
        let next: HashMap<u64, u64> = (0..5_000u64).map(|u| (u64::MAX - u, u)).collect();
        let msgs = heads_notifications("origin-1", &next);
        assert!(msgs.len() > 1);
        let mut seen = 0;
        for m in &msgs {
            assert!(m.len() <= NOTIFY_PAYLOAD_MAX, "{}", m.len());
            let body = m.strip_prefix("h|origin-1|").unwrap();
            seen += body.split(',').count();
        }
        assert_eq!(seen, next.len());
    }
}
