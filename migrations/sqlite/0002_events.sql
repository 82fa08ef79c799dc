-- The activity log. Timestamps are microseconds since the Unix epoch.
--
-- An event is stored once in `events` (payload included) and referenced once per
-- recipient from `inbox`, where it gets that recipient's gap-free `seq`. `heads` holds
-- each recipient's newest seq; the persistence actor bumps it in the same transaction
-- that inserts the inbox rows, so seq order is commit order.

-- event_id is a UUIDv7 whose time part is the commit time (ms): ordering by event_id is
-- ordering by age, which retention uses instead of a separate index.
CREATE TABLE events (
    event_id     TEXT    PRIMARY KEY NOT NULL,
    type         TEXT    NOT NULL,
    payload      BLOB    NOT NULL,
    content_type TEXT    NOT NULL,
    attributes   TEXT    NOT NULL,
    published_at INTEGER NOT NULL,
    publisher_id INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE inbox (
    user_id      INTEGER NOT NULL,
    seq          INTEGER NOT NULL,
    event_id     TEXT    NOT NULL,
    type         TEXT    NOT NULL,
    published_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, seq)
) WITHOUT ROWID;

CREATE TABLE heads (
    user_id  INTEGER PRIMARY KEY NOT NULL,
    head_seq INTEGER NOT NULL
);

-- Durable consumer positions; acked_seq only moves forward.
CREATE TABLE cursors (
    user_id     INTEGER NOT NULL,
    consumer_id TEXT    NOT NULL,
    acked_seq   INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (user_id, consumer_id)
) WITHOUT ROWID;

-- Publish deduplication: (publisher, key) -> the first event and its deliveries.
CREATE TABLE idempotency (
    publisher_id INTEGER NOT NULL,
    key          TEXT    NOT NULL,
    event_id     TEXT    NOT NULL,
    deliveries   TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (publisher_id, key)
) WITHOUT ROWID;
