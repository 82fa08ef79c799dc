//! `auth.v1.AuthService`: Login starts a session (an access token and a refresh token),
//! Refresh rotates it, Logout / ChangePassword / SetPassword end sessions, WhoAmI names
//! the caller.

use tonic::{Request, Response, Status};

use super::users::convert::timestamp;
use crate::{
    auth::{
        policy::{authorize, Call},
        session::Issued,
        Auth,
    },
    error::ApiError,
    model::{Principal, Status as UserStatus, User},
    proto::{
        auth::v1::{
            auth_service_server::AuthService, login_request::Identifier, ChangePasswordRequest, LoginRequest,
            LoginResponse, LogoutRequest, RefreshRequest, SetPasswordRequest,
        },
        user::v1 as upb,
    },
    store::{Revocation, UserKey},
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

impl AuthApi {
    /// The caller; UNAUTHENTICATED without a token (every call here but Login and
    /// Refresh needs one).
    async fn caller<T>(&self, req: &Request<T>, call: Call) -> Result<Principal, ApiError> {
        let caller = self.auth.authenticate(req.metadata()).await?;
        authorize(caller.as_ref(), call, false)?;
        caller.ok_or_else(|| ApiError::Unauthenticated("missing credentials".into()))
    }

    /// The response for `user` in the session `issued` describes: a new access token.
    fn session_response(&self, user: &User, issued: Issued) -> Result<LoginResponse, ApiError> {
        let (access_token, exp) = self.auth.tokens().issue(user, &issued.session_id)?;
        Ok(LoginResponse {
            access_token,
            expires_at: Some(timestamp(exp as i64 * 1_000_000)),
            user: Some(upb::User::from(user)),
            refresh_token: issued.refresh_token,
            refresh_expires_at: Some(timestamp(issued.refresh_expires_at)),
        })
    }
}

/// A refresh token from a request: INVALID_ARGUMENT when empty or absurdly long.
fn refresh_token_arg(token: &str) -> Result<&str, ApiError> {
    let token = token.trim();
    if token.is_empty() {
        return Err(ApiError::invalid("refresh_token", "is required"));
    }
    if token.len() > 256 {
        return Err(ApiError::Unauthenticated(
            "refresh_token: unknown or expired".into(),
        ));
    }
    Ok(token)
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
        let issued = self.auth.sessions().start(user.id).await?;
        Ok(Response::new(self.session_response(&user, issued)?))
    }

    async fn refresh(&self, req: Request<RefreshRequest>) -> Result<Response<LoginResponse>, Status> {
        let peer = req.remote_addr().map(|a| a.ip());
        // Guessing refresh tokens is throttled like guessing passwords.
        self.auth.limits().check_login(peer, "")?;
        let token = refresh_token_arg(&req.get_ref().refresh_token)?;
        let sessions = self.auth.sessions();
        let (issued, user_id) = sessions.refresh(token).await?;
        tracing::Span::current().record("user_id", user_id);
        let user = match self.users.get(user_id).await? {
            Some(u) if u.status == UserStatus::Active => u,
            _ => {
                sessions
                    .revoke(&issued.session_id, user_id, Revocation::UserDisabled)
                    .await?;
                return Err(ApiError::Unauthenticated(
                    "the session's user no longer exists or is not active".into(),
                )
                .into());
            }
        };
        Ok(Response::new(self.session_response(&user, issued)?))
    }

    async fn logout(&self, req: Request<LogoutRequest>) -> Result<Response<()>, Status> {
        let caller = self.caller(&req, Call::OwnAccount).await?;
        let sessions = self.auth.sessions();
        let (session_id, owner) = match req.get_ref().refresh_token.as_str() {
            "" => (caller.session_id.to_string(), caller.user_id),
            t => sessions.of_refresh_token(refresh_token_arg(t)?).await?,
        };
        authorize(Some(&caller), Call::EndSession { owner }, false)?;
        sessions.revoke(&session_id, owner, Revocation::Logout).await?;
        Ok(Response::new(()))
    }

    async fn change_password(&self, req: Request<ChangePasswordRequest>) -> Result<Response<()>, Status> {
        let peer = req.remote_addr().map(|a| a.ip());
        let caller = self.caller(&req, Call::OwnAccount).await?;
        let r = req.into_inner();
        if r.old_password.is_empty() {
            return Err(ApiError::invalid("old_password", "is required").into());
        }
        // Validated before the old password is checked, so a weak choice costs no hash.
        crate::users::validate_new_password(&r.new_password)?;
        self.auth
            .limits()
            .check_login(peer, &caller.user_id.to_string())?;
        let hash = self
            .users
            .find_with_hash(&UserKey::Id(caller.user_id))
            .await?
            .map(|(_, h)| h);
        let ok = r.old_password.len() <= 1024 && self.users.hasher().verify(r.old_password, hash).await?;
        if !ok {
            return Err(ApiError::Unauthenticated("old_password: wrong password".into()).into());
        }
        // Sessions end before the password changes (two writes, not one transaction):
        // should the process die between them, the sessions are gone and the password is
        // the old one, which a retry changes; never a new password with stolen sessions
        // still alive.
        self.auth
            .sessions()
            .revoke_user(
                caller.user_id,
                Some(&caller.session_id),
                Revocation::PasswordChanged,
            )
            .await?;
        self.users.set_password(caller.user_id, r.new_password).await?;
        Ok(Response::new(()))
    }

    async fn set_password(&self, req: Request<SetPasswordRequest>) -> Result<Response<()>, Status> {
        self.caller(&req, Call::SetPassword).await?;
        let r = req.into_inner();
        if r.user_id == 0 {
            return Err(ApiError::invalid("user_id", "is required").into());
        }
        crate::users::validate_new_password(&r.new_password)?;
        // Sessions first, as in ChangePassword: a crash between leaves them ended.
        self.auth
            .sessions()
            .revoke_user(r.user_id, None, Revocation::PasswordSet)
            .await?;
        self.users.set_password(r.user_id, r.new_password).await?;
        Ok(Response::new(()))
    }

    async fn who_am_i(&self, req: Request<()>) -> Result<Response<upb::User>, Status> {
        let caller = self.caller(&req, Call::OwnAccount).await?;
        let user = self
            .users
            .get(caller.user_id)
            .await?
            .ok_or_else(|| ApiError::Unauthenticated("the token's user no longer exists".into()))?;
        Ok(Response::new(upb::User::from(&*user)))
    }
}
