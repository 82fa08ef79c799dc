//! Sessions: a login starts one; its access tokens carry its id (`sid`) and its refresh
//! token (opaque, single-use, stored only as a SHA-256 hash) rotates with `Refresh`.
//!
//! **Revocation on every server within 2 s.** Every authenticated call checks its
//! session in a per-process map of known sessions, filled from the store on a miss. A
//! revocation made here marks the map at once; revocations made by other servers of a
//! PostgreSQL deployment are learned by polling the store every [`POLL_INTERVAL`] for
//! sessions revoked in the last [`POLL_WINDOW`] (an indexed read that is empty when
//! nothing happened). Re-reading a window rather than "since the last poll" means a
//! revocation whose transaction committed late, or a map fill that raced with it, is
//! still marked at the next poll. A server whose polls failed for longer than the
//! window forgets every session it knew and re-reads them as they are used.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use dashmap::DashMap;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::{
    error::ApiError,
    store::{now_micros, Revocation, Rotation, Store},
};

/// How often revocations made by other servers are read.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How far back each poll looks.
const POLL_WINDOW: Duration = Duration::from_secs(30);
/// How often expired sessions and refresh tokens are deleted.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);
/// Known sessions kept at most (the map is emptied when full; the store is the truth).
const CACHE_LIMIT: usize = 100_000;
/// Refresh tokens start with this, so they are recognisable in logs and secret scanners.
const REFRESH_PREFIX: &str = "ahr_";

#[derive(Clone, Copy, Debug)]
struct Known {
    user_id: u64,
    ended: bool,
}

/// A session's new refresh token.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The session.
    pub session_id: String,
    /// The opaque refresh token (only its hash is stored).
    pub refresh_token: String,
    /// Microseconds since the epoch.
    pub refresh_expires_at: i64,
}

/// Starts, rotates, checks and ends sessions.
pub struct Sessions {
    store: Store,
    refresh_ttl: Duration,
    known: DashMap<Arc<str>, Known>,
    /// Wakes the poller at once (another server said it revoked sessions).
    wake: Arc<tokio::sync::Notify>,
    /// Tells the other servers that sessions were revoked here (the cluster bus).
    announce: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
}

fn hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn fresh_refresh_token() -> String {
    let bytes: [u8; 32] = rand::random();
    let mut t = String::with_capacity(REFRESH_PREFIX.len() + 64);
    t.push_str(REFRESH_PREFIX);
    for b in bytes {
        t.push_str(&format!("{b:02x}"));
    }
    t
}

fn ended() -> ApiError {
    ApiError::Unauthenticated("the session has ended (logged out or revoked); log in again".into())
}

impl Sessions {
    /// Sessions in `store` whose refresh tokens live `refresh_ttl` after each rotation.
    pub fn new(store: Store, refresh_ttl: Duration) -> Sessions {
        Sessions {
            store,
            refresh_ttl,
            known: DashMap::new(),
            wake: Arc::new(tokio::sync::Notify::new()),
            announce: std::sync::OnceLock::new(),
        }
    }

    /// What another server's revocation message should wake: the poller reads the
    /// revocations at once instead of at its next tick.
    pub fn wake_handle(&self) -> Arc<tokio::sync::Notify> {
        self.wake.clone()
    }

    /// Called after every revocation here, to tell the other servers (set once).
    pub fn on_revocation(&self, announce: Box<dyn Fn() + Send + Sync>) {
        let _ = self.announce.set(announce);
    }

    fn announce(&self) {
        if let Some(a) = self.announce.get() {
            a();
        }
    }

    fn refresh_deadline(&self, now: i64) -> i64 {
        now.saturating_add(i64::try_from(self.refresh_ttl.as_micros()).unwrap_or(i64::MAX))
    }

    /// Starts a session for `user_id`.
    pub async fn start(&self, user_id: u64) -> Result<Issued, ApiError> {
        let now = now_micros();
        let session_id = uuid::Uuid::now_v7().simple().to_string();
        let refresh_token = fresh_refresh_token();
        let expires = self.refresh_deadline(now);
        self.store
            .create_session(&session_id, user_id, &hash(&refresh_token), now, expires)
            .await?;
        Ok(Issued {
            session_id,
            refresh_token,
            refresh_expires_at: expires,
        })
    }

    /// Spends `refresh_token` for a new one of the same session, and names the session's
    /// user. A spent token presented again revokes the session; every refusal is
    /// UNAUTHENTICATED.
    pub async fn refresh(&self, refresh_token: &str) -> Result<(Issued, u64), ApiError> {
        let now = now_micros();
        let next = fresh_refresh_token();
        let expires = self.refresh_deadline(now);
        match self
            .store
            .rotate_refresh(&hash(refresh_token), &hash(&next), now, expires)
            .await?
        {
            Rotation::Rotated { session_id, user_id } => Ok((
                Issued {
                    session_id,
                    refresh_token: next,
                    refresh_expires_at: expires,
                },
                user_id,
            )),
            Rotation::Reused { session_id, user_id } => {
                self.mark_ended(&session_id, user_id);
                self.announce();
                tracing::warn!(
                    user_id,
                    session_id,
                    "a spent refresh token was presented again; the session is revoked"
                );
                Err(ApiError::Unauthenticated(
                    "refresh_token: already used; the session is revoked (log in again)".into(),
                ))
            }
            Rotation::Ended => Err(ended()),
            Rotation::Invalid => Err(ApiError::Unauthenticated(
                "refresh_token: unknown or expired; log in again".into(),
            )),
        }
    }

    /// Whether the session `session_id` of `user_id` is live: UNAUTHENTICATED when it
    /// ended, expired or never existed. A map look-up on the hot path.
    pub async fn check(&self, session_id: &Arc<str>, user_id: u64) -> Result<(), ApiError> {
        let known = match self.known.get(session_id) {
            Some(k) => *k,
            None => {
                let Some((owner, ended)) = self.store.session(session_id, now_micros()).await? else {
                    return Err(ended());
                };
                if self.known.len() >= CACHE_LIMIT {
                    self.known.clear();
                }
                // Never overwrite: a revocation marked meanwhile wins over this read.
                *self.known.entry(session_id.clone()).or_insert(Known {
                    user_id: owner,
                    ended,
                })
            }
        };
        if known.ended || known.user_id != user_id {
            return Err(ended());
        }
        Ok(())
    }

    /// The session and user a refresh token (spent or not) belongs to; UNAUTHENTICATED
    /// when it names none.
    pub async fn of_refresh_token(&self, refresh_token: &str) -> Result<(String, u64), ApiError> {
        self.store
            .session_of_refresh(&hash(refresh_token), now_micros())
            .await?
            .ok_or_else(|| ApiError::Unauthenticated("refresh_token: unknown or expired".into()))
    }

    /// Ends one session of `user_id`.
    pub async fn revoke(&self, session_id: &str, user_id: u64, why: Revocation) -> Result<(), ApiError> {
        self.store.revoke_session(session_id, why, now_micros()).await?;
        self.mark_ended(session_id, user_id);
        self.announce();
        Ok(())
    }

    /// Ends every session of `user_id` but `except`.
    pub async fn revoke_user(
        &self,
        user_id: u64,
        except: Option<&str>,
        why: Revocation,
    ) -> Result<usize, ApiError> {
        let ids = self
            .store
            .revoke_user_sessions(user_id, except, why, now_micros())
            .await?;
        for id in &ids {
            self.mark_ended(id, user_id);
        }
        if !ids.is_empty() {
            tracing::info!(user_id, sessions = ids.len(), reason = ?why, "sessions revoked");
            self.announce();
        }
        Ok(ids.len())
    }

    fn mark_ended(&self, session_id: &str, user_id: u64) {
        self.known
            .insert(session_id.into(), Known { user_id, ended: true });
    }

    /// Marks the sessions any server revoked in the last [`POLL_WINDOW`].
    pub async fn poll(&self) -> Result<usize, ApiError> {
        let window = i64::try_from(POLL_WINDOW.as_micros()).unwrap_or(i64::MAX);
        let ids = self.store.revoked_since(now_micros() - window).await?;
        let n = ids.len();
        for id in ids {
            // A session not known here needs nothing: if it is ever used, the miss reads
            // the store, which says it ended.
            if let Some(mut k) = self.known.get_mut(id.as_str()) {
                k.ended = true;
            }
        }
        Ok(n)
    }

    /// Polls for revocations every [`POLL_INTERVAL`] and prunes expired sessions hourly,
    /// until `shutdown`.
    pub fn spawn_poller(self: &Arc<Self>, shutdown: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut last_ok = Instant::now();
            let mut last_prune: Option<Instant> = None;
            let mut tick = tokio::time::interval(POLL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                    _ = this.wake.notified() => {}
                }
                match this.poll().await {
                    Ok(_) => {
                        if last_ok.elapsed() + POLL_INTERVAL >= POLL_WINDOW {
                            // Revocations older than the window may have been missed.
                            this.known.clear();
                        }
                        last_ok = Instant::now();
                    }
                    Err(e) => tracing::warn!(error = %e, "could not read revoked sessions; retrying"),
                }
                if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_INTERVAL) {
                    last_prune = Some(Instant::now());
                    match this.store.prune_sessions(now_micros()).await {
                        Ok(n) if n > 0 => tracing::info!(rows = n, "pruned expired sessions"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "could not prune expired sessions"),
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_are_random_prefixed_and_hashed() {
        let a = fresh_refresh_token();
        let b = fresh_refresh_token();
        assert_ne!(a, b);
        assert!(a.starts_with(REFRESH_PREFIX) && a.len() == REFRESH_PREFIX.len() + 64);
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), hash(&b));
        assert_eq!(hash(&a).len(), 64);
        assert!(!hash(&a).contains(&a[REFRESH_PREFIX.len()..]));
    }
}
