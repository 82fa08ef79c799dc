-- Deliveries committed but not yet merged into `inbox` (see the SQLite migration). On
-- PostgreSQL publishes still write `inbox` directly, so this table stays empty; it
-- exists so that reads are the same SQL on both stores.
CREATE TABLE inbox_tail (
    user_id      BIGINT NOT NULL,
    seq          BIGINT NOT NULL,
    event_id     TEXT   NOT NULL,
    type         TEXT   NOT NULL,
    published_at BIGINT NOT NULL
);

CREATE UNIQUE INDEX inbox_tail_by_recipient ON inbox_tail (user_id, seq);
