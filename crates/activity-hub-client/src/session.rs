//! Sessions on the client: after [`Client::use_session`] the client sends the session's
//! access token with every call and refreshes it by itself, so long-running work (a
//! subscription that lives for days) outlives the token's TTL.
//!
//! - **Before expiry.** A background task refreshes when three quarters of the access
//!   token's life (as the server stated it in `expires_at`) have passed.
//! - **After a refusal.** A call or a subscription refused UNAUTHENTICATED while a
//!   session is installed refreshes once and retries (a laptop that slept past the
//!   expiry, a clock that jumped).
//! - **One refresh at a time.** Refresh tokens are single-use and the server revokes a
//!   session whose spent token comes back, so refreshes are serialized and a caller
//!   that saw an older token than the current one does not refresh again. Refresh is
//!   never retried blindly: a failure that may have reached the server is left to the
//!   next attempt, which the server either honours or answers with UNAUTHENTICATED.
//!
//! [`Client::on_session_refresh`] tells the application about every rotation, so it
//! can keep the newest refresh token (the CLI saves it to its token file).

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    time::{Duration, Instant, SystemTime},
};

use activity_hub_proto::auth::v1::{auth_service_client::AuthServiceClient, LoginResponse, RefreshRequest};
use tokio::sync::Notify;
use tonic::{Code, Request, Status};

use crate::{config::backoff, endpoint::transient, Client, ClientError};

type Hook = Arc<dyn Fn(&LoginResponse) + Send + Sync>;

/// The installed session, if any.
#[derive(Default)]
pub(crate) struct SessionSlot {
    /// The current refresh token.
    refresh_token: Mutex<Option<String>>,
    /// Held for the whole of a refresh: one at a time.
    flight: tokio::sync::Mutex<()>,
    /// When to refresh next (`None`: not known, only after a refusal).
    due: Mutex<Option<Instant>>,
    /// Bumped by every installed or refreshed session.
    generation: AtomicU64,
    /// Wakes the background refresher when a session is installed.
    installed: Arc<Notify>,
    hook: RwLock<Option<Hook>>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SessionSlot {
    /// Which session (and token) a request is about to use.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether a session with a refresh token is installed.
    pub(crate) fn active(&self) -> bool {
        locked(&self.refresh_token).is_some()
    }

    fn due(&self) -> Option<Instant> {
        *locked(&self.due)
    }

    /// Installs `resp`'s tokens (the caller holds `refresh_token`'s lock as `current`).
    fn install(&self, client: &Client, current: &mut Option<String>, resp: &LoginResponse) {
        *current = (!resp.refresh_token.is_empty()).then(|| resp.refresh_token.clone());
        client.set_token(Some(resp.access_token.clone()));
        let due = resp.expires_at.as_ref().and_then(|ts| {
            let exp = SystemTime::UNIX_EPOCH
                + Duration::new(u64::try_from(ts.seconds).ok()?, u32::try_from(ts.nanos).ok()?);
            let life = exp.duration_since(SystemTime::now()).unwrap_or_default();
            Some(Instant::now() + life.mul_f64(0.75))
        });
        *locked(&self.due) = due;
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

impl Client {
    /// Uses `session` (a Login or Refresh response) from now on: its access token goes
    /// with every call, and the client refreshes it before it expires, and after a call
    /// is refused UNAUTHENTICATED. Replaces any earlier session (without ending it on
    /// the server: see [`Client::logout`]).
    pub fn use_session(&self, session: &LoginResponse) {
        let slot = &self.inner.session;
        let mut current = locked(&slot.refresh_token);
        slot.install(self, &mut current, session);
        drop(current);
        slot.installed.notify_one();
    }

    /// Drops the installed session and its access token (nothing is sent).
    pub fn forget_session(&self) {
        let slot = &self.inner.session;
        let mut current = locked(&slot.refresh_token);
        *current = None;
        *locked(&slot.due) = None;
        slot.generation.fetch_add(1, Ordering::AcqRel);
        self.set_token(None);
        drop(current);
        slot.installed.notify_one();
    }

    /// Calls `hook` with every response of a refresh the client makes (the new access
    /// and refresh tokens), e.g. to save the newest refresh token.
    pub fn on_session_refresh(&self, hook: impl Fn(&LoginResponse) + Send + Sync + 'static) {
        *self.inner.session.hook.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(hook));
    }

    /// Whether a session with a refresh token is installed.
    pub fn has_session(&self) -> bool {
        self.inner.session.active()
    }

    /// Refreshes the installed session now: UNAUTHENTICATED when the server refuses
    /// (the session ended: log in again), the transport's error when it could not ask.
    pub async fn refresh_session(&self) -> Result<LoginResponse, ClientError> {
        self.refresh_after(None).await?.ok_or_else(|| {
            ClientError::Status(Status::unauthenticated("the session changed during the refresh"))
        })
    }

    /// Refreshes unless the session moved past generation `seen` meanwhile (someone
    /// else refreshed: `Ok(None)`, use the new token).
    pub(crate) async fn refresh_after(
        &self,
        seen: Option<u64>,
    ) -> Result<Option<LoginResponse>, ClientError> {
        let slot = &self.inner.session;
        let _flight = slot.flight.lock().await;
        let generation = slot.generation();
        if seen.is_some_and(|g| g != generation) {
            return Ok(None);
        }
        let Some(token) = locked(&slot.refresh_token).clone() else {
            return Err(ClientError::Status(Status::unauthenticated(
                "no session to refresh; log in again",
            )));
        };
        let node = self.pick()?;
        let mut req = Request::new(RefreshRequest { refresh_token: token });
        req.set_timeout(self.inner.cfg.deadline);
        let res = AuthServiceClient::new(node.channel.clone()).refresh(req).await;
        node.record(!matches!(&res, Err(s) if transient(s)), &self.inner.cfg);
        let mut current = locked(&slot.refresh_token);
        if slot.generation() != generation {
            // use_session installed another session meanwhile: it wins.
            return Ok(None);
        }
        match res {
            Ok(r) => {
                let r = r.into_inner();
                slot.install(self, &mut current, &r);
                drop(current);
                let hook = slot.hook.read().unwrap_or_else(|e| e.into_inner()).clone();
                if let Some(hook) = hook {
                    hook(&r);
                }
                Ok(Some(r))
            }
            Err(s) => {
                if s.code() == Code::Unauthenticated {
                    // The session is over; calls now fail with the server's refusal.
                    *current = None;
                    *locked(&slot.due) = None;
                }
                Err(s.into())
            }
        }
    }

    /// The background refresher: one per client, idle until a session with a known
    /// expiry is installed.
    pub(crate) fn spawn_refresher(&self) {
        let weak = Arc::downgrade(&self.inner);
        let stop = self.inner.stop.clone();
        let installed = self.inner.session.installed.clone();
        tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let slot = &inner.session;
                let seen = slot.generation();
                let wait = match (slot.due(), failures) {
                    (None, _) => None,
                    (Some(d), 0) => Some(d.saturating_duration_since(Instant::now())),
                    (Some(_), n) => Some(backoff(&inner.cfg, n)),
                };
                // No strong reference while waiting, so dropping the client ends this.
                drop(inner);
                let sleep = async {
                    match wait {
                        Some(w) => tokio::time::sleep(w).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = installed.notified() => { failures = 0; continue; }
                    _ = sleep => {}
                }
                let Some(inner) = weak.upgrade() else { return };
                match (Client { inner }).refresh_after(Some(seen)).await {
                    Ok(_) => failures = 0,
                    // Over: idle until another session is installed.
                    Err(ClientError::Status(s)) if s.code() == Code::Unauthenticated => failures = 0,
                    Err(_) => failures += 1,
                }
            }
        });
    }
}
