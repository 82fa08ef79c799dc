//! JWT access tokens: HS256 pinned, `exp`, `iss` and `aud` checked, `sub` = user id,
//! `sid` = the session (see [`super::session`]).
//!
//! Verified tokens are remembered (keyed by the whole token string, expiry re-checked on
//! every hit), so the per-call cost on the hot path is one hash-map look-up rather than
//! an HMAC and a JSON parse.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use dashmap::DashMap;
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::{error::ApiError, model::User};

/// `iss` and `aud` of every token this server signs.
pub const ISSUER: &str = "activity-hub";
const CACHE_LIMIT: usize = 100_000;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    sid: String,
    roles: Vec<String>,
    iss: String,
    aud: String,
    iat: u64,
    exp: u64,
}

/// Signs and verifies access tokens.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
    verified: DashMap<Box<str>, (Verified, u64)>,
}

/// What a valid access token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// `sub`.
    pub user_id: u64,
    /// `sid`.
    pub session_id: Arc<str>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Tokens {
    /// `secret` is the HMAC key shared by every server of a deployment.
    pub fn new(secret: &[u8], ttl: Duration) -> Tokens {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.leeway = 5;
        Tokens {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
            verified: DashMap::new(),
        }
    }

    /// A signed token for `user` in session `session_id`, and its expiry (seconds since
    /// the epoch).
    pub fn issue(&self, user: &User, session_id: &str) -> Result<(String, u64), ApiError> {
        let iat = unix_now();
        let exp = iat + self.ttl.as_secs().max(1);
        let claims = Claims {
            sub: user.id.to_string(),
            sid: session_id.to_string(),
            roles: user.roles.iter().map(|r| r.name().to_string()).collect(),
            iss: ISSUER.into(),
            aud: ISSUER.into(),
            iat,
            exp,
        };
        let token = encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ApiError::Internal(Box::new(e)))?;
        Ok((token, exp))
    }

    /// The user and session a valid token names.
    pub fn verify(&self, token: &str) -> Result<Verified, ApiError> {
        let now = unix_now();
        if let Some(hit) = self.verified.get(token) {
            let (verified, exp) = &*hit;
            if now < exp + self.validation.leeway {
                return Ok(verified.clone());
            }
            drop(hit);
            self.verified.remove(token);
            return Err(ApiError::Unauthenticated(
                "the access token has expired; log in again".into(),
            ));
        }
        let data = decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => {
                    ApiError::Unauthenticated("the access token has expired; log in again".into())
                }
                _ => ApiError::Unauthenticated("the access token is invalid".into()),
            }
        })?;
        let user_id: u64 = data
            .claims
            .sub
            .parse()
            .map_err(|_| ApiError::Unauthenticated("the access token is invalid".into()))?;
        if data.claims.sid.is_empty() {
            return Err(ApiError::Unauthenticated(
                "the access token names no session (issued by an older version); log in again".into(),
            ));
        }
        let verified = Verified {
            user_id,
            session_id: data.claims.sid.into(),
        };
        if self.verified.len() >= CACHE_LIMIT {
            self.verified.clear();
        }
        self.verified
            .insert(token.into(), (verified.clone(), data.claims.exp));
        Ok(verified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: u64) -> User {
        crate::model::sample_user(id, 1)
    }

    #[test]
    fn tokens_round_trip_and_reject_other_keys_and_algorithms() {
        let t = Tokens::new(b"0123456789abcdef0123456789abcdef", Duration::from_secs(60));
        let (tok, _) = t.issue(&user(7), "s1").unwrap();
        let want = Verified {
            user_id: 7,
            session_id: "s1".into(),
        };
        assert_eq!(t.verify(&tok).unwrap(), want);
        assert_eq!(t.verify(&tok).unwrap(), want, "cached path");
        let other = Tokens::new(b"another-secret-another-secret-xx", Duration::from_secs(60));
        assert!(other.verify(&tok).is_err());
        // alg=none with the same claims must be refused.
        let parts: Vec<&str> = tok.split('.').collect();
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", parts[1]);
        assert!(t.verify(&none).is_err());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let t = Tokens::new(b"0123456789abcdef0123456789abcdef", Duration::from_secs(60));
        let claims = Claims {
            sub: "1".into(),
            sid: "s1".into(),
            roles: vec![],
            iss: ISSUER.into(),
            aud: ISSUER.into(),
            iat: 1,
            exp: unix_now() - 120,
        };
        let tok = encode(&Header::new(Algorithm::HS256), &claims, &t.encoding).unwrap();
        let err = t.verify(&tok).unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
    }
}
