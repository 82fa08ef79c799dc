-- Users and server settings. Timestamps are microseconds since the Unix epoch.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    email         TEXT    NOT NULL,
    email_norm    TEXT    NOT NULL,
    username      TEXT    NOT NULL,
    username_norm TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    first_name    TEXT    NOT NULL DEFAULT '',
    last_name     TEXT    NOT NULL DEFAULT '',
    status        INTEGER NOT NULL,
    roles         INTEGER NOT NULL,
    avatar_url    TEXT    NOT NULL DEFAULT '',
    bio           TEXT    NOT NULL DEFAULT '',
    preferences   TEXT    NOT NULL DEFAULT '{}',
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    last_login    INTEGER,
    deleted_at    INTEGER,
    version       INTEGER NOT NULL DEFAULT 1
);

-- Uniqueness among non-deleted users (status 4 = deleted), enforced by the database.
CREATE UNIQUE INDEX users_email_live ON users (email_norm) WHERE status <> 4;
CREATE UNIQUE INDEX users_username_live ON users (username_norm) WHERE status <> 4;
CREATE INDEX users_status_id ON users (status, id);
