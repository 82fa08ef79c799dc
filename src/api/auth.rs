//! `auth.v1.AuthService`: Login trades a password for an access token.

use tonic::{Request, Response, Status};

use super::users::convert::timestamp;
use crate::{
    auth::Auth,
    error::ApiError,
    model::Status as UserStatus,
    proto::{
        auth::v1::{
            auth_service_server::AuthService, login_request::Identifier, LoginRequest, LoginResponse,
        },
        user::v1 as upb,
    },
    store::UserKey,
    users::Users,
};

/// The AuthService implementation.
#[derive(Clone)]
pub struct AuthApi {
    users: Users,
    auth: Auth,
}

impl AuthApi {
    /// Login over the user directory and the token signer of `auth`.
    pub fn new(users: Users, auth: Auth) -> AuthApi {
        AuthApi { users, auth }
    }
}

/// One message for every failure, so a caller cannot tell which accounts exist.
fn refused() -> ApiError {
    ApiError::Unauthenticated("invalid credentials".into())
}

/// The account a Login names and the password it offers; INVALID_ARGUMENT when either
/// is missing.
#[doc(hidden)] // public for the fuzz targets
pub fn credentials(r: LoginRequest) -> Result<(UserKey, String), ApiError> {
    let key = match r.identifier {
        Some(Identifier::Email(e)) if !e.is_empty() => UserKey::Email(e),
        Some(Identifier::Username(u)) if !u.is_empty() => UserKey::Username(u),
        _ => return Err(ApiError::invalid("identifier", "set email or username")),
    };
    if r.password.is_empty() {
        return Err(ApiError::invalid("password", "is required"));
    }
    Ok((key, r.password))
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn login(&self, req: Request<LoginRequest>) -> Result<Response<LoginResponse>, Status> {
        let peer = req.remote_addr().map(|a| a.ip());
        let (key, password) = credentials(req.into_inner())?;
        let identifier = match &key {
            UserKey::Email(s) | UserKey::Username(s) => s.as_str(),
            UserKey::Id(_) => "",
        };
        self.auth.limits().check_login(peer, identifier)?;
        if password.len() > 1024 {
            return Err(refused().into());
        }
        let found = self.users.find_with_hash(&key).await?;
        let (user, hash) = match found {
            Some((u, h)) => (Some(u), Some(h)),
            None => (None, None),
        };
        let ok = self.users.hasher().verify(password, hash).await?;
        let user = match user {
            Some(u) if ok && u.status == UserStatus::Active => u,
            _ => return Err(refused().into()),
        };
        tracing::Span::current().record("user_id", user.id);
        let user = self.users.record_login(user.id).await?;
        let (access_token, exp) = self.auth.tokens().issue(&user)?;
        Ok(Response::new(LoginResponse {
            access_token,
            expires_at: Some(timestamp(exp as i64 * 1_000_000)),
            user: Some(upb::User::from(&user)),
        }))
    }
}
