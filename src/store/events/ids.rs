//! Event ids: UUIDv7 text whose time part is the commit time, so ids sort in commit
//! order and retention can delete every body older than a time by id alone.

/// A UUIDv7 whose time part is `micros` (ms precision) and the rest random.
pub(super) fn event_id_at(micros: i64) -> String {
    // The thread-local RNG, not the OS one: no syscall per event.
    let random: [u8; 10] = rand::random();
    let ms = micros.max(0) as u64 / 1000;
    uuid::Builder::from_unix_timestamp_millis(ms, &random)
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// The smallest UUIDv7 text of the millisecond containing `micros`: every event id below
/// it was committed before that millisecond.
pub(super) fn event_id_floor(micros: i64) -> String {
    let ms = (micros.max(0) as u64) / 1000;
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    uuid::Uuid::from_bytes(b).hyphenated().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_order_by_commit_time() {
        let t = 1_700_000_000_123_456;
        let id = event_id_at(t);
        assert!(event_id_floor(t) <= id, "floor of its own ms is not above it");
        assert!(id < event_id_floor(t + 1000), "an id is below the next ms floor");
        assert!(event_id_at(t - 5000) < event_id_floor(t));
    }
}
