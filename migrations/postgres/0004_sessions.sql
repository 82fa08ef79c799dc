-- Sessions (one per login) and their refresh tokens. Timestamps are microseconds since
-- the Unix epoch. A session's access tokens carry its id; it ends when revoked
-- (revoked_at set) or when expires_at (the refresh deadline, moved on at every rotation)
-- passes.
CREATE TABLE sessions (
    id             TEXT    PRIMARY KEY NOT NULL,
    user_id        BIGINT  NOT NULL,
    created_at     BIGINT  NOT NULL,
    expires_at     BIGINT  NOT NULL,
    revoked_at     BIGINT,
    revoked_reason TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);
-- Servers poll the recent revocations (the cross-server revocation path).
CREATE INDEX sessions_revoked ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX sessions_expires ON sessions (expires_at);

-- Refresh tokens are stored only as SHA-256 hashes. A spent token (spent_at set) is kept
-- until it expires, so presenting it again is recognised as reuse.
CREATE TABLE refresh_tokens (
    hash       TEXT    PRIMARY KEY NOT NULL,
    session_id TEXT    NOT NULL,
    expires_at BIGINT  NOT NULL,
    spent_at   BIGINT
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);
CREATE INDEX refresh_tokens_expires ON refresh_tokens (expires_at);
