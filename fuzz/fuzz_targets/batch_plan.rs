//! The store's batch planning (`store::plan`), driven the way a group commit drives it:
//! the persistence actor closes batches off a queue, `commit_batch` counts deliveries per
//! recipient, bumps the heads in chunked multi-row statements (the store answering each
//! chunk's RETURNING rows in any order), turns the returned heads into first seqs,
//! assigns every publish its seqs and announces the new heads in NOTIFY payloads, which
//! the other servers' listener parses back.
//!
//! Invariants checked: a batch is never empty while anything is queued, stays within its
//! count and byte limits (a lone oversized publish excepted) and takes as much as they
//! allow; draining a queue terminates and takes every publish once; every row is in
//! exactly one chunk, in order, and chunks come in at most log2(CHUNK) + 1 shapes below both engines'
//! bind limits; per recipient the seqs are gap-free, in publish order and start right
//! after the head; a store answer that is missing a head, names an extra user or has a
//! head below its count is an error, never a wrong plan; notification payloads stay under
//! the limit (and PostgreSQL's 8000 bytes), are never empty and carry every recipient's
//! new head exactly once.
#![no_main]

use std::collections::{BTreeMap, BTreeSet, HashMap};

use activity_hub::{
    hub::notify,
    store::plan::{self, CHUNK, NOTIFY_PAYLOAD_MAX},
};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

/// Most columns a chunked statement binds per row (the `events` insert).
const MAX_COLUMNS: usize = 7;
/// SQLite's bind-parameter limit (PostgreSQL's, 65535, is higher).
const SQLITE_BINDS: usize = 32_766;

/// `plan::first_seqs` computes `head - count + 1` before checking the head, which
/// overflows for a head within `count` of `i64::MIN`: a panic in debug builds, and in
/// release a wrapped first seq near `i64::MAX` that passes the check. Reported, with the
/// input `fuzz/seeds/batch_plan/first_seqs_head_i64_min`; until plan.rs checks first, such
/// heads are raised to `i64::MIN + count` (still refused). Set to false once fixed.
const AVOID_FIRST_SEQS_OVERFLOW: bool = false;

#[derive(Arbitrary, Debug)]
struct Batch {
    /// Payload sizes of the queued publishes, in queue order, scaled by `2^size_shift`.
    queue: Vec<u16>,
    size_shift: u8,
    max_count: u16,
    /// The byte limit: 32 MiB (the server's) or this many bytes scaled like the sizes.
    max_bytes: Option<u16>,
    /// Each publish's recipients as offsets from `id_base`, so recipients recur across
    /// publishes; made distinct and ascending, as a validated publish's are.
    publishes: Vec<Vec<u16>>,
    id_base: u64,
    /// Recipients' heads before the commit (cycled through), scaled by `2^head_shift`.
    heads_before: Vec<u32>,
    head_shift: u8,
    /// Seeds the order each chunk's RETURNING rows come back in.
    row_order: u64,
    /// A store that answers wrongly.
    fault: Option<Fault>,
    /// The server's origin tag (a UUID in simple form on a real server).
    origin: u128,
    /// Length of a plain row list to chunk.
    rows: u16,
    /// A wider commit for the notification splitter alone: this many recipients (modulo
    /// 1024: about six payloads), `id_step` apart from `id_base`, heads from `heads_before`.
    notify_users: u16,
    id_step: u32,
}

#[derive(Arbitrary, Debug)]
enum Fault {
    /// One head row is missing.
    Missing(u16),
    /// A head row for a user who got no delivery.
    Extra(u64, i64),
    /// One head row says this instead.
    Wrong(u16, i64),
    /// One head row is within 255 of the smallest (or largest) head a row can hold.
    Edge(u16, bool, u8),
}

fuzz_target!(|b: Batch| {
    closing(&b);
    chunks(usize::from(b.rows) % 5_000);
    commit(&b);
    wide_notifications(&b);
});

fn closing(b: &Batch) {
    let shift = u32::from(b.size_shift % 20);
    let sizes: Vec<usize> = b.queue.iter().map(|&s| usize::from(s) << shift).collect();
    let max_count = usize::from(b.max_count);
    let max_bytes = b.max_bytes.map_or(32 << 20, |m| usize::from(m) << shift);
    let limit = max_count.max(1);
    let mut rest = &sizes[..];
    let mut batches = 0;
    loop {
        let n = plan::close_batch(rest.iter().copied(), max_count, max_bytes);
        if rest.is_empty() {
            assert_eq!(n, 0, "a batch closed on an empty queue");
            break;
        }
        assert!(n >= 1, "an empty batch with {} queued", rest.len());
        assert!(
            n <= rest.len() && n <= limit,
            "{n} taken of {} (limit {limit})",
            rest.len()
        );
        let bytes: usize = rest[..n].iter().sum();
        assert!(
            n == 1 || bytes <= max_bytes,
            "{n} publishes of {bytes} bytes > {max_bytes}"
        );
        if n < rest.len() && n < limit {
            assert!(
                bytes + rest[n] > max_bytes,
                "closed at {n} with room for the next publish"
            );
        }
        rest = &rest[n..];
        batches += 1;
        assert!(batches <= sizes.len());
    }
}

/// `plan::sized_chunks` of `len` rows.
fn chunks(len: usize) {
    let rows: Vec<usize> = (0..len).collect();
    check_chunks(&rows);
}

fn check_chunks<T: PartialEq + std::fmt::Debug>(rows: &[T]) {
    let mut at = 0;
    let mut shapes = BTreeSet::new();
    let mut last = usize::MAX;
    let mut count = 0;
    for chunk in plan::sized_chunks(rows) {
        let n = chunk.len();
        assert!(
            n == CHUNK || (n.is_power_of_two() && n < CHUNK),
            "a chunk of {n} rows"
        );
        assert!(n <= last, "chunk of {n} after one of {last}");
        assert!(
            n * MAX_COLUMNS <= SQLITE_BINDS,
            "{n} rows bind too many parameters"
        );
        assert_eq!(chunk, &rows[at..at + n], "chunk at row {at} is not the next rows");
        at += n;
        last = n;
        shapes.insert(n);
        count += 1;
    }
    assert_eq!(at, rows.len(), "rows left out of every chunk");
    // CHUNK and the powers of two below it: at most log2(CHUNK) + 1 statement shapes.
    assert!(shapes.len() <= CHUNK.trailing_zeros() as usize + 1, "{shapes:?}");
    let len = rows.len();
    assert_eq!(count, len / CHUNK + (len % CHUNK).count_ones() as usize);
}

/// Makes head row `i` say `h`; whether the store's answer is now one to refuse: a head
/// at or above its count is possible (the plan follows it), below it deliveries were lost.
fn wrong(heads: &mut [(u64, i64)], count_of: &HashMap<u64, i64>, i: u16, h: i64) -> bool {
    let i = usize::from(i) % heads.len();
    let n = count_of[&heads[i].0];
    let h = if AVOID_FIRST_SEQS_OVERFLOW {
        h.max(i64::MIN + n)
    } else {
        h
    };
    heads[i].1 = h;
    h < n
}

/// A tiny deterministic shuffle (xorshift), for the RETURNING order.
fn shuffle<T>(v: &mut [T], mut seed: u64) {
    for i in (1..v.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

fn commit(b: &Batch) {
    let publishes: Vec<Vec<u64>> = b
        .publishes
        .iter()
        .map(|p| {
            let set: BTreeSet<u64> = p.iter().map(|&o| b.id_base.wrapping_add(u64::from(o))).collect();
            set.into_iter().collect()
        })
        .collect();
    let lists = || publishes.iter().map(Vec::as_slice);

    // 1. Deliveries per recipient.
    let counts = plan::recipient_counts(lists());
    let mut expected: BTreeMap<u64, i64> = BTreeMap::new();
    for r in publishes.iter().flatten() {
        *expected.entry(*r).or_default() += 1;
    }
    assert_eq!(
        counts,
        expected.into_iter().collect::<Vec<_>>(),
        "counts ascending by recipient"
    );
    check_chunks(&counts);

    // 2. The store adds the counts to the heads, chunk by chunk, and returns the new ones.
    let head_shift = u32::from(b.head_shift % 31); // heads stay below 2^62
    let before = |i: usize| -> i64 {
        let h = b
            .heads_before
            .get(i % b.heads_before.len().max(1))
            .copied()
            .unwrap_or(0);
        i64::from(h) << head_shift
    };
    let before: HashMap<u64, i64> = counts
        .iter()
        .enumerate()
        .map(|(i, (u, _))| (*u, before(i)))
        .collect();
    let mut heads: Vec<(u64, i64)> = Vec::with_capacity(counts.len());
    for (i, chunk) in plan::sized_chunks(&counts).enumerate() {
        let mut rows: Vec<(u64, i64)> = chunk.iter().map(|(u, n)| (*u, before[u] + n)).collect();
        shuffle(&mut rows, b.row_order.wrapping_add(i as u64) | 1);
        heads.extend(rows);
    }

    // 3. First seqs; a wrong answer from the store must be refused, not planned with.
    let count_of: HashMap<u64, i64> = counts.iter().copied().collect();
    let refused = match b.fault {
        None => false,
        Some(Fault::Missing(i)) if !heads.is_empty() => {
            heads.remove(usize::from(i) % heads.len());
            true
        }
        Some(Fault::Extra(u, h)) if !count_of.contains_key(&u) => {
            let at = usize::from(b.rows) % (heads.len() + 1);
            heads.insert(at, (u, h));
            true
        }
        Some(Fault::Wrong(i, h)) if !heads.is_empty() => wrong(&mut heads, &count_of, i, h),
        Some(Fault::Edge(i, low, off)) if !heads.is_empty() => {
            let h = if low {
                i64::MIN + i64::from(off)
            } else {
                i64::MAX - i64::from(off)
            };
            wrong(&mut heads, &count_of, i, h)
        }
        Some(_) => false,
    };
    let result = plan::first_seqs(&counts, &heads);
    if refused {
        assert!(
            result.is_err(),
            "planned with a faulty store answer {:?}",
            b.fault
        );
        return;
    }
    let mut next = result.unwrap_or_else(|e| panic!("refused a good store answer: {e}"));
    let returned: HashMap<u64, i64> = heads.iter().copied().collect();
    assert_eq!(next.len(), counts.len());
    for (u, n) in &counts {
        assert_eq!(next[u] as i64, returned[u] - n + 1, "first seq of user {u}");
        assert!(next[u] >= 1);
    }
    let first = next.clone();

    // 4. Seqs for every delivery, in publish order.
    let deliveries = plan::assign_seqs(lists(), &mut next).expect("every recipient planned");
    assert_eq!(deliveries.len(), publishes.len());
    let mut seen: HashMap<u64, u64> = HashMap::new();
    for (d, p) in deliveries.iter().zip(&publishes) {
        assert_eq!(
            d.iter().map(|(u, _)| *u).collect::<Vec<_>>(),
            *p,
            "deliveries follow recipients"
        );
        for (u, seq) in d {
            let want = first[u] + seen.get(u).copied().unwrap_or(0);
            assert_eq!(
                *seq, want,
                "user {u}: seq {seq}, expected {want} (gap-free, in order)"
            );
            *seen.entry(*u).or_default() += 1;
        }
    }
    for (u, n) in &counts {
        assert_eq!(seen[u], *n as u64);
        assert_eq!(next[u], first[u] + *n as u64, "user {u}'s next free seq");
    }
    // A recipient nobody planned for is an error, not a made-up seq.
    if let Some(stranger) = (0..=u64::from(u8::MAX))
        .map(|o| b.id_base.wrapping_sub(o + 1))
        .find(|u| !next.contains_key(u))
    {
        let mut n2 = next.clone();
        assert!(plan::assign_seqs([[stranger].as_slice()], &mut n2).is_err());
    }

    // 5. The new heads, as the other servers receive them.
    check_notifications(b.origin, &next);
}

fn wide_notifications(b: &Batch) {
    let users = u64::from(b.notify_users % 1024);
    let step = u64::from(b.id_step) + 1;
    let shift = u32::from(b.head_shift % 31);
    let next: HashMap<u64, u64> = (0..users)
        .map(|i| {
            let h = b
                .heads_before
                .get(i as usize % b.heads_before.len().max(1))
                .copied();
            let head = u64::from(h.unwrap_or(0)) << shift;
            (b.id_base.wrapping_add(i * step), head + 1 + i)
        })
        .collect();
    check_notifications(b.origin, &next);
}

/// `next` (each recipient's new head) announced as cluster notifications and parsed
/// back by the receiver's own code.
fn check_notifications(origin: u128, next: &HashMap<u64, u64>) {
    let origin = format!("{origin:032x}");
    let payloads = plan::heads_notifications(&origin, next);
    assert_eq!(payloads.is_empty(), next.is_empty());
    let mut announced: HashMap<u64, u64> = HashMap::new();
    for p in &payloads {
        assert!(
            p.len() <= NOTIFY_PAYLOAD_MAX && p.len() < 8000,
            "a payload of {} bytes",
            p.len()
        );
        let (kind, from, rest) = notify::split(p).expect("kind|origin|rest");
        assert_eq!((kind, from), ("h", origin.as_str()));
        let pairs = notify::parse_heads(rest);
        assert!(!pairs.is_empty(), "an empty notification");
        assert_eq!(
            pairs.len(),
            rest.split(',').count(),
            "an unparsable pair in {rest:?}"
        );
        for (u, head) in pairs {
            assert!(announced.insert(u, head).is_none(), "user {u} announced twice");
        }
    }
    assert_eq!(
        announced.len(),
        next.len(),
        "recipients missing from the notifications"
    );
    for (u, head) in &announced {
        assert_eq!(*head, next[u], "user {u}'s announced head");
    }
}
