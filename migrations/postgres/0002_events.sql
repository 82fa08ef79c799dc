-- The activity log. Timestamps are microseconds since the Unix epoch.
--
-- An event is stored once in `events` (payload included) and referenced once per
-- recipient from `inbox`, where it gets that recipient's gap-free `seq`. `heads` holds
-- each recipient's newest seq; the persistence actor bumps it in the same transaction
-- that inserts the inbox rows (recipients locked in ascending id order, so concurrent
-- servers never deadlock), so seq order is commit order.

-- event_id is a UUIDv7 whose time part is the commit time (ms): ordering by event_id is
-- ordering by age, which retention uses instead of a separate index.
CREATE TABLE events (
    event_id     TEXT   PRIMARY KEY NOT NULL,
    type         TEXT   NOT NULL,
    payload      BYTEA  NOT NULL,
    content_type TEXT   NOT NULL,
    attributes   TEXT   NOT NULL,
    published_at BIGINT NOT NULL,
    publisher_id BIGINT NOT NULL
);

CREATE TABLE inbox (
    user_id      BIGINT NOT NULL,
    seq          BIGINT NOT NULL,
    event_id     TEXT   NOT NULL,
    type         TEXT   NOT NULL,
    published_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, seq)
);

CREATE TABLE heads (
    user_id  BIGINT PRIMARY KEY NOT NULL,
    head_seq BIGINT NOT NULL
);

-- Durable consumer positions; acked_seq only moves forward.
CREATE TABLE cursors (
    user_id     BIGINT NOT NULL,
    consumer_id TEXT   NOT NULL,
    acked_seq   BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (user_id, consumer_id)
);

-- Publish deduplication: (publisher, key) -> the first event and its deliveries.
CREATE TABLE idempotency (
    publisher_id BIGINT NOT NULL,
    key          TEXT   NOT NULL,
    event_id     TEXT   NOT NULL,
    deliveries   TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (publisher_id, key)
);
