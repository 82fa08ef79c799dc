-- Deliveries committed but not yet merged into `inbox`.
--
-- `inbox` is clustered by (user_id, seq): with deliveries spread over many recipients,
-- each one lands on a page of its own, and a commit rewrote (and the WAL copied) about
-- one 4 KiB page per delivery - the store's own limit, falling fast once `inbox` outgrows
-- the page cache. A publish commit now appends its deliveries here instead: a small table
-- whose pages stay in the cache. The persistence actor merges it into `inbox` in the
-- background, in (user_id, seq) order, one transaction per pass (insert, then delete), so
-- each recipient's page is rewritten once per pass rather than once per delivery. Reads
-- take a recipient's deliveries from both tables; a delivery is in exactly one of them.
CREATE TABLE inbox_tail (
    user_id      INTEGER NOT NULL,
    seq          INTEGER NOT NULL,
    event_id     TEXT    NOT NULL,
    type         TEXT    NOT NULL,
    published_at INTEGER NOT NULL
);

CREATE UNIQUE INDEX inbox_tail_by_recipient ON inbox_tail (user_id, seq);
