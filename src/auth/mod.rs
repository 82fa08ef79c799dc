//! Authentication and authorization: who is calling ([`Auth::authenticate`], which
//! resolves a bearer token to a [`Principal`]), what they may do ([`policy::authorize`]),
//! the access tokens Login issues ([`token`]) and the sessions they belong to
//! ([`session`]). Password hashing belongs to
//! [`crate::users`]; the Login RPC itself to the edge ([`crate::api::auth`]).
//!
//! Imports [`crate::model`], [`crate::users`], [`crate::limits`] and [`crate::error`].

pub mod policy;
pub mod session;
pub mod token;

use std::sync::Arc;

use tonic::metadata::MetadataMap;

use crate::{
    error::ApiError,
    limits::RateLimits,
    model::{Principal, Status},
    users::Users,
};

/// Resolves bearer tokens to principals.
#[derive(Clone)]
pub struct Auth {
    tokens: Arc<token::Tokens>,
    sessions: Arc<session::Sessions>,
    users: Users,
    limits: Arc<RateLimits>,
}

impl Auth {
    /// Combines the token signer with the user directory; every authenticated call takes
    /// a token from its user's bucket in `limits`.
    pub fn new(
        tokens: Arc<token::Tokens>,
        sessions: Arc<session::Sessions>,
        users: Users,
        limits: Arc<RateLimits>,
    ) -> Auth {
        Auth {
            tokens,
            sessions,
            users,
            limits,
        }
    }

    /// The rate limiters (Login uses its own bucket).
    pub fn limits(&self) -> &RateLimits {
        &self.limits
    }

    /// The signer, for Login.
    pub fn tokens(&self) -> &token::Tokens {
        &self.tokens
    }

    /// The sessions, for Login, Refresh and the calls that end sessions.
    pub fn sessions(&self) -> &Arc<session::Sessions> {
        &self.sessions
    }

    /// `Ok(None)` when the call carries no `authorization` metadata; UNAUTHENTICATED when
    /// it carries one that is malformed, invalid, expired, of a session that ended, or
    /// names a user that is no longer active; RESOURCE_EXHAUSTED when the user is over its rate limit. The user id
    /// is recorded on the current RPC span.
    pub async fn authenticate(&self, md: &MetadataMap) -> Result<Option<Principal>, ApiError> {
        let Some(value) = md.get("authorization") else {
            return Ok(None);
        };
        let bad_header =
            || ApiError::Unauthenticated("authorization: expected metadata 'Bearer <access_token>'".into());
        let value = value.to_str().map_err(|_| bad_header())?;
        let token = match value.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() => t.trim(),
            _ => return Err(bad_header()),
        };
        let token::Verified { user_id, session_id } = self.tokens.verify(token)?;
        tracing::Span::current().record("user_id", user_id);
        self.limits.check_user(user_id)?;
        let roles = match self.users.get(user_id).await? {
            Some(u) if u.status == Status::Active => u.roles,
            _ => {
                return Err(ApiError::Unauthenticated(
                    "the token's user no longer exists or is not active".into(),
                ))
            }
        };
        self.sessions.check(&session_id, user_id).await?;
        Ok(Some(Principal {
            user_id,
            roles,
            session_id,
        }))
    }
}
