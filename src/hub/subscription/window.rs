//! A subscription's position and window, as plain data: no actor, no channel, no store.
//!
//! [`Cursor`] decides, for one stream, what a live event means (take it, skip it, or fall
//! behind), how much may be written now, when to read the store and from where, and what
//! an ack releases. The actor owns the outbox and the store reads; it asks the cursor and
//! tells it what it did. Keeping the decisions here lets them be tested event by event.
//!
//! Position keeping: `tail` is the highest seq this stream has accounted for (sent,
//! filtered out by `types`, or queued in `pending`). A live event is taken only when it
//! is exactly `tail + 1`; anything else means the stream is behind, and it reads the
//! store from `tail` instead (in pages no larger than the free window). Because the actor
//! registers with the registry *before* it reads the head, every event is either routed
//! to it live or visible to its first store read: nothing is lost at the replay/live
//! seam, and the seq checks drop what both paths see.

use std::{collections::VecDeque, sync::Arc};

use super::{AckMode, SubInfo};
use crate::store::events::StoredEvent;

/// Events read from the store per page when catching up.
pub(super) const PAGE: u32 = 256;

/// One store read the stream needs: events of seqs in `(after, upto]`, at most `limit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Read {
    /// Read after this seq (the tail when the read started).
    pub(super) after: u64,
    /// Up to this seq (the newest known when the read started).
    pub(super) upto: u64,
    /// At most this many events (the free window, at most [`PAGE`]).
    pub(super) limit: u32,
}

/// An ack the stream must refuse.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct AckAboveSent {
    /// The highest seq sent so far.
    pub(super) highest_sent: u64,
}

/// The position and window of one subscription.
#[derive(Debug)]
pub(super) struct Cursor {
    window: usize,
    ack_mode: AckMode,
    /// Only these types (empty = all), sorted; shared with the store reads.
    types: Arc<[String]>,
    tail: u64,
    known_head: u64,
    behind: bool,
    /// A store read is in flight; its answer (see [`Cursor::read_done`]) clears it.
    reading: bool,
    pending: VecDeque<StoredEvent>,
    unacked: VecDeque<u64>,
    highest_sent: u64,
    acked: u64,
}

impl Cursor {
    /// A stream that resumes after `resume` while the recipient's head is `head`.
    pub(super) fn new(resume: u64, head: u64, window: u32, ack_mode: AckMode, types: Vec<String>) -> Cursor {
        Cursor {
            window: window as usize,
            ack_mode,
            types: types.into(),
            tail: resume,
            known_head: head,
            behind: head > resume,
            reading: false,
            pending: VecDeque::new(),
            unacked: VecDeque::new(),
            highest_sent: resume,
            acked: resume,
        }
    }

    /// How the client acknowledges.
    pub(super) fn ack_mode(&self) -> AckMode {
        self.ack_mode
    }

    /// The type filter (empty = all), for store reads: cloning it clones a pointer.
    pub(super) fn types(&self) -> &Arc<[String]> {
        &self.types
    }

    /// Accounts for a live (just committed) event. Returns true when it made the stream
    /// fall behind just now (a gap, or no room in `pending`): it is then dropped, and the
    /// store read that follows brings it back.
    pub(super) fn take_live(&mut self, ev: StoredEvent) -> bool {
        self.known_head = self.known_head.max(ev.seq);
        if self.behind || ev.seq <= self.tail {
            return false;
        }
        if ev.seq != self.tail + 1 {
            return self.fall_behind();
        }
        if !self.wants(&ev) {
            self.tail = ev.seq;
            return false;
        }
        if self.pending.len() >= self.window {
            return self.fall_behind();
        }
        self.tail = ev.seq;
        self.pending.push_back(ev);
        false
    }

    /// Another server (or a re-check) says the recipient's head is `head`.
    pub(super) fn head(&mut self, head: u64) {
        self.known_head = self.known_head.max(head);
        if self.known_head > self.tail && self.pending.is_empty() {
            self.behind = true;
        }
    }

    fn fall_behind(&mut self) -> bool {
        !std::mem::replace(&mut self.behind, true)
    }

    fn wants(&self, ev: &StoredEvent) -> bool {
        self.types.is_empty() || self.types.binary_search(&ev.body.event_type).is_ok()
    }

    /// How many more events may be written now, given `transport` free outbox slots.
    pub(super) fn room(&self, transport: usize) -> usize {
        match self.ack_mode {
            AckMode::Explicit => self.window.saturating_sub(self.unacked.len()).min(transport),
            AckMode::None => transport,
        }
    }

    /// The next pending live event, if there is room to write it.
    pub(super) fn next_pending(&mut self, transport: usize) -> Option<StoredEvent> {
        if self.room(transport) == 0 {
            return None;
        }
        self.pending.pop_front()
    }

    /// Records that the event `seq` was written to the client.
    pub(super) fn sent(&mut self, seq: u64) {
        self.highest_sent = seq;
        match self.ack_mode {
            AckMode::Explicit => self.unacked.push_back(seq),
            AckMode::None => self.acked = seq,
        }
    }

    /// Records that the event `seq`, read from the store, was written to the client.
    pub(super) fn sent_from_store(&mut self, seq: u64) {
        self.sent(seq);
        self.tail = seq;
    }

    /// The store read to start now, if the stream is behind, holds no pending live
    /// events, has room, and no read is in flight. Marks the read as in flight.
    pub(super) fn start_read(&mut self, transport: usize) -> Option<Read> {
        let room = self.room(transport);
        if !self.behind || self.reading || !self.pending.is_empty() || room == 0 {
            return None;
        }
        self.reading = true;
        Some(Read {
            after: self.tail,
            upto: self.known_head,
            limit: (room as u32).min(PAGE),
        })
    }

    /// The answer of `read` came back with `got` events, of which the first `written`
    /// were written (each recorded with [`Cursor::sent_from_store`]). A short page
    /// written in full accounts for everything up to `read.upto` (the rest was filtered
    /// out); otherwise the next read continues after the last written event.
    pub(super) fn read_done(&mut self, read: Read, got: usize, written: usize) {
        self.reading = false;
        if written == got && got < read.limit as usize {
            self.tail = self.tail.max(read.upto);
        }
        if self.tail >= self.known_head {
            self.behind = false;
        }
    }

    /// A store read failed or was abandoned; a later pump may start another.
    pub(super) fn read_abandoned(&mut self) {
        self.reading = false;
    }

    /// The client's cumulative ack. `Ok(true)` when it released window slots (the stream
    /// may write more and the cursor should be persisted), `Ok(false)` when it changes
    /// nothing (an old ack, or ACK_MODE_NONE where acks are ignored).
    pub(super) fn ack(&mut self, seq: u64) -> Result<bool, AckAboveSent> {
        if self.ack_mode == AckMode::None {
            return Ok(false);
        }
        if seq > self.highest_sent {
            return Err(AckAboveSent {
                highest_sent: self.highest_sent,
            });
        }
        if seq <= self.acked {
            return Ok(false);
        }
        self.acked = seq;
        while self.unacked.front().is_some_and(|&s| s <= seq) {
            self.unacked.pop_front();
        }
        Ok(true)
    }

    /// The highest seq the client has acknowledged (or, ACK_MODE_NONE, was written).
    pub(super) fn acked(&self) -> u64 {
        self.acked
    }

    /// The newest seq known to exist.
    pub(super) fn known_head(&self) -> u64 {
        self.known_head
    }

    /// Whether something is waiting to be written (pending live events or a read).
    pub(super) fn has_backlog(&self) -> bool {
        self.behind || !self.pending.is_empty()
    }

    /// What the stream holds, with `queued` messages in its outbox.
    pub(super) fn info(&self, queued: usize) -> SubInfo {
        SubInfo {
            pending: self.pending.len(),
            queued,
            unacked: self.unacked.len(),
            tail: self.tail,
            known_head: self.known_head,
            behind: self.behind,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::store::events::EventBody;

    /// Plenty of outbox room: only the window limits.
    const ROOMY: usize = 1_000;

    fn ev(seq: u64, event_type: &str) -> StoredEvent {
        StoredEvent {
            user_id: 7,
            seq,
            body: Arc::new(EventBody {
                event_id: format!("e{seq}"),
                event_type: event_type.into(),
                payload: Bytes::new(),
                content_type: String::new(),
                attributes: Default::default(),
                published_at: 0,
                publisher_id: 1,
            }),
        }
    }

    fn explicit(resume: u64, head: u64, window: u32) -> Cursor {
        Cursor::new(resume, head, window, AckMode::Explicit, Vec::new())
    }

    /// Writes every pending event that fits, as the actor's pump does; returns their seqs.
    fn drain(c: &mut Cursor, transport: usize) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(e) = c.next_pending(transport) {
            c.sent(e.seq);
            out.push(e.seq);
        }
        out
    }

    /// Answers `read` with the seqs `seqs` as the store would, writing what fits in an
    /// outbox with `transport` free slots.
    fn answer(c: &mut Cursor, read: Read, seqs: &[u64], transport: usize) -> Vec<u64> {
        let mut written = Vec::new();
        for &s in seqs {
            if c.room(transport - written.len()) == 0 {
                break;
            }
            c.sent_from_store(s);
            written.push(s);
        }
        c.read_done(read, seqs.len(), written.len());
        written
    }

    #[test]
    fn a_live_stream_takes_the_next_seq_and_drops_what_it_has_seen() {
        let mut c = explicit(5, 5, 10);
        assert!(c.start_read(ROOMY).is_none(), "caught up: nothing to read");
        assert!(!c.take_live(ev(6, "a")));
        assert!(!c.take_live(ev(6, "a")), "a duplicate is no news");
        assert!(!c.take_live(ev(4, "a")), "an old seq is no news");
        assert_eq!(drain(&mut c, ROOMY), vec![6], "6 once, nothing older");
        assert!(!c.info(0).behind);
    }

    #[test]
    fn a_gap_in_live_events_falls_behind_and_reads_from_the_tail() {
        let mut c = explicit(5, 5, 10);
        assert!(c.take_live(ev(7, "a")), "seq 6 is missing: behind");
        assert!(!c.take_live(ev(8, "a")), "already behind: reported once");
        assert_eq!(drain(&mut c, ROOMY), Vec::<u64>::new(), "nothing taken live");
        let read = c.start_read(ROOMY).expect("behind: read the store");
        assert_eq!(
            read,
            Read {
                after: 5,
                upto: 8,
                limit: 10
            }
        );
        assert!(c.start_read(ROOMY).is_none(), "one read at a time");
        assert_eq!(answer(&mut c, read, &[6, 7, 8], ROOMY), vec![6, 7, 8]);
        assert!(!c.info(0).behind, "caught up after the read");
        assert!(!c.take_live(ev(9, "a")));
        assert_eq!(drain(&mut c, ROOMY), vec![9], "live again right after the seam");
    }

    #[test]
    fn live_events_during_a_read_are_left_to_the_next_read_without_gap_or_duplicate() {
        let mut c = explicit(0, 3, 100);
        let read = c.start_read(ROOMY).expect("history to replay");
        assert_eq!((read.after, read.upto), (0, 3));
        // 4 and 5 commit while the read is in flight.
        c.take_live(ev(4, "a"));
        c.take_live(ev(5, "a"));
        assert_eq!(drain(&mut c, ROOMY), Vec::<u64>::new(), "not taken while behind");
        assert_eq!(answer(&mut c, read, &[1, 2, 3], ROOMY), vec![1, 2, 3]);
        assert!(c.info(0).behind, "the head moved on during the read");
        let next = c.start_read(ROOMY).expect("read what committed meanwhile");
        assert_eq!((next.after, next.upto), (3, 5));
        assert_eq!(answer(&mut c, next, &[4, 5], ROOMY), vec![4, 5]);
        assert!(!c.info(0).behind);
        // The registry may still deliver 5 late: it is dropped, 6 is taken.
        c.take_live(ev(5, "a"));
        c.take_live(ev(6, "a"));
        assert_eq!(drain(&mut c, ROOMY), vec![6]);
    }

    #[test]
    fn the_window_bounds_what_is_in_flight_until_acked() {
        let mut c = explicit(0, 0, 3);
        for s in 1..=3 {
            c.take_live(ev(s, "a"));
        }
        assert_eq!(drain(&mut c, ROOMY), vec![1, 2, 3]);
        assert_eq!(c.room(ROOMY), 0, "window full");
        for s in 4..=6 {
            c.take_live(ev(s, "a"));
        }
        assert_eq!(
            drain(&mut c, ROOMY),
            Vec::<u64>::new(),
            "nothing beyond the window"
        );
        assert_eq!(c.info(0).pending, 3, "held while the window is full");
        assert!(c.take_live(ev(7, "a")), "pending full too: drop and fall behind");
        assert_eq!(c.ack(2), Ok(true));
        assert_eq!(c.room(ROOMY), 2, "acking 2 frees exactly 2 slots");
        assert_eq!(drain(&mut c, ROOMY), vec![4, 5]);
        assert_eq!(c.ack(5), Ok(true));
        assert_eq!(drain(&mut c, ROOMY), vec![6]);
        let read = c.start_read(ROOMY).expect("7 was dropped: read it back");
        assert_eq!((read.after, read.limit), (6, 2), "only the free window is read");
        assert_eq!(answer(&mut c, read, &[7], ROOMY), vec![7]);
        assert_eq!(c.info(0).unacked, 2);
    }

    #[test]
    fn the_outbox_limits_room_too() {
        let c = explicit(0, 0, 10);
        assert_eq!(c.room(4), 4);
        let none = Cursor::new(0, 0, 10, AckMode::None, Vec::new());
        assert_eq!(none.room(50), 50, "ACK_MODE_NONE is paced by the transport only");
    }

    #[test]
    fn a_page_cut_short_by_a_full_outbox_continues_after_the_last_written() {
        let mut c = explicit(0, 10, 10);
        let read = c.start_read(5).expect("behind");
        assert_eq!(read.limit, 5);
        // By the time the page arrives only 2 slots are left (a heartbeat took one...).
        let written = answer(&mut c, read, &[1, 2, 3, 4, 5], 2);
        assert_eq!(written, vec![1, 2]);
        assert_eq!(c.info(0).tail, 2, "no jump past what was written");
        assert!(c.info(0).behind);
        assert_eq!(
            c.start_read(ROOMY).map(|r| r.after),
            Some(2),
            "continues without gap"
        );
    }

    #[test]
    fn a_short_page_accounts_for_filtered_out_events_up_to_its_end() {
        let mut c = Cursor::new(0, 10, 100, AckMode::Explicit, vec!["b".into()]);
        let read = c.start_read(ROOMY).expect("behind");
        assert_eq!(answer(&mut c, read, &[4, 9], ROOMY), vec![4, 9]);
        assert_eq!(c.info(0).tail, 10, "1..=10 accounted for");
        assert!(!c.info(0).behind);
        assert!(!c.take_live(ev(11, "a")), "filtered out live, not a gap");
        assert!(!c.take_live(ev(12, "b")));
        assert_eq!(drain(&mut c, ROOMY), vec![12]);
    }

    #[test]
    fn a_full_page_is_followed_by_another_read() {
        let mut c = explicit(0, 600, 1_000);
        let read = c.start_read(ROOMY).expect("behind");
        assert_eq!(read.limit, PAGE, "a page is at most PAGE events");
        let seqs: Vec<u64> = (1..=u64::from(PAGE)).collect();
        answer(&mut c, read, &seqs, ROOMY);
        assert!(c.info(0).behind, "a full page may not be the end");
        assert_eq!(c.start_read(ROOMY).map(|r| r.after), Some(u64::from(PAGE)));
    }

    #[test]
    fn a_newer_head_makes_an_idle_stream_read_but_not_one_with_pending_events() {
        let mut c = explicit(5, 5, 10);
        c.head(8);
        assert!(c.info(0).behind);
        assert_eq!(c.start_read(ROOMY).map(|r| (r.after, r.upto)), Some((5, 8)));

        let mut c = explicit(5, 5, 10);
        c.take_live(ev(6, "a"));
        c.head(9);
        assert!(!c.info(0).behind, "pending live events go first");
        assert_eq!(c.info(0).known_head, 9);
    }

    #[test]
    fn acks_are_cumulative_and_bounded_by_what_was_sent() {
        let mut c = explicit(0, 0, 10);
        for s in 1..=3 {
            c.take_live(ev(s, "a"));
        }
        drain(&mut c, ROOMY);
        assert_eq!(c.ack(4), Err(AckAboveSent { highest_sent: 3 }));
        assert_eq!(c.ack(3), Ok(true));
        assert_eq!(c.ack(2), Ok(false), "an older ack changes nothing");
        assert_eq!(c.acked(), 3);
        assert_eq!(c.info(0).unacked, 0);

        let mut none = Cursor::new(0, 0, 10, AckMode::None, Vec::new());
        none.take_live(ev(1, "a"));
        drain(&mut none, ROOMY);
        assert_eq!(none.acked(), 1, "ACK_MODE_NONE: acked once written");
        assert_eq!(none.ack(99), Ok(false), "and client acks are ignored");
    }

    #[test]
    fn an_abandoned_read_can_be_retried() {
        let mut c = explicit(0, 3, 10);
        assert!(c.start_read(ROOMY).is_some());
        c.read_abandoned();
        assert!(c.start_read(ROOMY).is_some());
    }
}
