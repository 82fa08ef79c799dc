//! Sessions and their refresh tokens: start, rotate (with reuse detection), revoke, and
//! the recent revocations other servers poll.
//!
//! A refresh token is stored only as its SHA-256 hash; the caller hashes. Rotation is
//! one write transaction that spends the presented token only if it is still unspent
//! (a conditional UPDATE, so two racing rotations cannot both win) and inserts its
//! successor; a spent token presented again revokes its session.

use super::{dispatch, Store, StoreError, StoreResult, WriteConn};

/// What presenting a refresh token did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The token was live: it is spent now and `new_hash` is the session's token.
    Rotated {
        /// The session.
        session_id: String,
        /// Its user.
        user_id: u64,
    },
    /// The token had been spent already: the session is revoked now (or was before).
    Reused {
        /// The session.
        session_id: String,
        /// Its user.
        user_id: u64,
    },
    /// The token was live but its session had ended; it is spent now.
    Ended,
    /// No such token, or it expired.
    Invalid,
}

/// Why a session ended, as stored (for operators reading the table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revocation {
    /// Logout.
    Logout,
    /// A spent refresh token was presented again.
    RefreshReuse,
    /// The user changed their password (their other sessions end).
    PasswordChanged,
    /// An admin set the user's password.
    PasswordSet,
    /// The user was suspended, deactivated or deleted.
    UserDisabled,
}

impl Revocation {
    fn as_str(self) -> &'static str {
        match self {
            Revocation::Logout => "logout",
            Revocation::RefreshReuse => "refresh token reused",
            Revocation::PasswordChanged => "password changed",
            Revocation::PasswordSet => "password set by an admin",
            Revocation::UserDisabled => "user disabled",
        }
    }
}

impl Store {
    /// Starts session `id` of `user_id` whose first refresh token hashes to
    /// `refresh_hash`; both expire at `expires_at`.
    pub async fn create_session(
        &self,
        id: &str,
        user_id: u64,
        refresh_hash: &str,
        now: i64,
        expires_at: i64,
    ) -> StoreResult<()> {
        let r = dispatch!(&self.writer, p => async {
            let mut tx = WriteConn::begin(p).await?;
            sqlx::query("INSERT INTO sessions (id, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
                .bind(id).bind(user_id as i64).bind(now).bind(expires_at)
                .execute(&mut *tx).await?;
            sqlx::query("INSERT INTO refresh_tokens (hash, session_id, expires_at) VALUES ($1, $2, $3)")
                .bind(refresh_hash).bind(id).bind(expires_at)
                .execute(&mut *tx).await?;
            tx.commit().await
        }.await);
        self.track(r)
    }

    /// Presents the refresh token hashing to `old_hash`: when it is live, spends it and
    /// makes `new_hash` the session's token, both the token and the session now expiring
    /// at `expires_at`.
    pub async fn rotate_refresh(
        &self,
        old_hash: &str,
        new_hash: &str,
        now: i64,
        expires_at: i64,
    ) -> StoreResult<Rotation> {
        let r: StoreResult<Rotation> = dispatch!(&self.writer, p => async {
            let mut tx = WriteConn::begin(p).await?;
            let spent: Option<(String,)> = sqlx::query_as(
                "UPDATE refresh_tokens SET spent_at = $1 \
                 WHERE hash = $2 AND spent_at IS NULL AND expires_at > $1 RETURNING session_id",
            )
            .bind(now).bind(old_hash)
            .fetch_optional(&mut *tx).await?;
            let outcome = match spent {
                Some((session_id,)) => {
                    let live: Option<(i64,)> = sqlx::query_as(
                        "UPDATE sessions SET expires_at = $1 \
                         WHERE id = $2 AND revoked_at IS NULL AND expires_at > $3 RETURNING user_id",
                    )
                    .bind(expires_at).bind(&session_id).bind(now)
                    .fetch_optional(&mut *tx).await?;
                    match live {
                        Some((user_id,)) => {
                            sqlx::query("INSERT INTO refresh_tokens (hash, session_id, expires_at) VALUES ($1, $2, $3)")
                                .bind(new_hash).bind(&session_id).bind(expires_at)
                                .execute(&mut *tx).await?;
                            Rotation::Rotated { session_id, user_id: user_id as u64 }
                        }
                        None => Rotation::Ended,
                    }
                }
                None => {
                    let known: Option<(String, Option<i64>, i64)> = sqlx::query_as(
                        "SELECT session_id, spent_at, expires_at FROM refresh_tokens WHERE hash = $1",
                    )
                    .bind(old_hash)
                    .fetch_optional(&mut *tx).await?;
                    match known {
                        Some((session_id, Some(_), expires)) if expires > now => {
                            sqlx::query(
                                "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 \
                                 WHERE id = $3 AND revoked_at IS NULL",
                            )
                            .bind(now).bind(Revocation::RefreshReuse.as_str()).bind(&session_id)
                            .execute(&mut *tx).await?;
                            let (user_id,): (i64,) = sqlx::query_as("SELECT user_id FROM sessions WHERE id = $1")
                                .bind(&session_id)
                                .fetch_one(&mut *tx).await?;
                            Rotation::Reused { session_id, user_id: user_id as u64 }
                        }
                        _ => Rotation::Invalid,
                    }
                }
            };
            tx.commit().await?;
            Ok(outcome)
        }.await);
        self.track(r)
    }

    /// The user of session `id` and whether it has ended (revoked or expired at `now`);
    /// `None` when there is no such session.
    pub async fn session(&self, id: &str, now: i64) -> StoreResult<Option<(u64, bool)>> {
        let row: Option<(i64, Option<i64>, i64)> = dispatch!(&self.db, p => sqlx::query_as(
            "SELECT user_id, revoked_at, expires_at FROM sessions WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(p)
        .await)?;
        Ok(row.map(|(user, revoked, expires)| (user as u64, revoked.is_some() || expires <= now)))
    }

    /// The session a refresh token (spent or not, unexpired) belongs to, and its user.
    pub async fn session_of_refresh(&self, hash: &str, now: i64) -> StoreResult<Option<(String, u64)>> {
        let row: Option<(String, i64)> = dispatch!(&self.db, p => sqlx::query_as(
            "SELECT s.id, s.user_id FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id \
             WHERE t.hash = $1 AND t.expires_at > $2",
        )
        .bind(hash)
        .bind(now)
        .fetch_optional(p)
        .await)?;
        Ok(row.map(|(id, user)| (id, user as u64)))
    }

    /// Ends session `id`; whether it was live until now.
    pub async fn revoke_session(&self, id: &str, why: Revocation, now: i64) -> StoreResult<bool> {
        let r = dispatch!(&self.writer, p => sqlx::query(
            "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 WHERE id = $3 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(why.as_str())
        .bind(id)
        .execute(p)
        .await
        .map(|r| r.rows_affected() > 0)
        .map_err(StoreError::from));
        self.track(r)
    }

    /// Ends every live session of `user_id` but `except`; the ids it ended.
    pub async fn revoke_user_sessions(
        &self,
        user_id: u64,
        except: Option<&str>,
        why: Revocation,
        now: i64,
    ) -> StoreResult<Vec<String>> {
        let r: StoreResult<Vec<(String,)>> = dispatch!(&self.writer, p => sqlx::query_as(
            "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 \
             WHERE user_id = $3 AND revoked_at IS NULL AND id <> $4 RETURNING id",
        )
        .bind(now)
        .bind(why.as_str())
        .bind(user_id as i64)
        .bind(except.unwrap_or(""))
        .fetch_all(p)
        .await
        .map_err(StoreError::from));
        Ok(self.track(r)?.into_iter().map(|(id,)| id).collect())
    }

    /// Sessions revoked at or after `since` (any server's revocations).
    pub async fn revoked_since(&self, since: i64) -> StoreResult<Vec<String>> {
        let rows: Vec<(String,)> = dispatch!(&self.db, p => sqlx::query_as(
            "SELECT id FROM sessions WHERE revoked_at >= $1",
        )
        .bind(since)
        .fetch_all(p)
        .await)?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// Deletes sessions and refresh tokens that expired before `now` (no access token of
    /// theirs can still be valid: access tokens never outlive their session's refresh
    /// deadline); how many rows went.
    pub async fn prune_sessions(&self, now: i64) -> StoreResult<u64> {
        let mut n = 0;
        for sql in [
            "DELETE FROM refresh_tokens WHERE expires_at < $1",
            "DELETE FROM sessions WHERE expires_at < $1",
        ] {
            let r = dispatch!(&self.writer, p => sqlx::query(sql).bind(now).execute(p).await
                .map(|r| r.rows_affected()).map_err(StoreError::from));
            n += self.track(r)?;
        }
        Ok(n)
    }
}
