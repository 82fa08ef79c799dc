//! The typed calls of [`Client`]: Login and the session calls, the user CRUD, Publish,
//! ListEvents and the health check, each marked idempotent (retried on transient
//! failures) or not.

use activity_hub_proto::{
    activity::v1::{self as apb, activity_service_client::ActivityServiceClient},
    auth::v1::{
        auth_service_client::AuthServiceClient, login_request::Identifier, ChangePasswordRequest,
        LoginRequest, LoginResponse, LogoutRequest, SetPasswordRequest,
    },
    user::v1::{self as upb, get_user_request, user_service_client::UserServiceClient},
};

use tokio_stream::StreamExt as _;

use crate::{endpoint::Lease, Client, ClientError};

/// A UserActivity stream ([`Client::watch_users`]): the changes as they happen. Read it
/// with [`UserWatch::message`] or as a `Stream`.
pub struct UserWatch {
    stream: tonic::Streaming<upb::UserActivityEvent>,
    /// Its endpoint's in-flight count, held until the stream ends or is dropped.
    lease: Option<Lease>,
}

impl UserWatch {
    /// The next change; `None` when the server ended the stream.
    pub async fn message(&mut self) -> Result<Option<upb::UserActivityEvent>, tonic::Status> {
        let next = self.stream.message().await;
        if !matches!(next, Ok(Some(_))) {
            self.lease = None;
        }
        next
    }
}

impl futures_util::Stream for UserWatch {
    type Item = Result<upb::UserActivityEvent, tonic::Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let next = std::pin::Pin::new(&mut self.stream).poll_next(cx);
        if matches!(next, std::task::Poll::Ready(None | Some(Err(_)))) {
            self.lease = None;
        }
        next
    }
}

impl std::fmt::Debug for UserWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserWatch")
            .field("endpoint", &self.lease.as_ref().map(|l| l.uri.as_str()))
            .finish()
    }
}

impl Client {
    /// Logs in by email (or username, when `identifier` has no `@`); returns the access
    /// token only. Prefer [`Client::login_session`], whose session outlives the token.
    pub async fn login(&self, identifier: &str, password: &str) -> Result<String, ClientError> {
        Ok(self.login_session(identifier, password).await?.access_token)
    }

    /// Logs in by email (or username, when `identifier` has no `@`): a new session, its
    /// access and refresh tokens. Pass it to [`Client::use_session`] to make this client
    /// use it and keep it fresh.
    pub async fn login_session(
        &self,
        identifier: &str,
        password: &str,
    ) -> Result<LoginResponse, ClientError> {
        let id = if identifier.contains('@') {
            Identifier::Email(identifier.into())
        } else {
            Identifier::Username(identifier.into())
        };
        let msg = LoginRequest {
            identifier: Some(id),
            password: password.into(),
        };
        // Login is safe to retry: it has no effect but a last-login time.
        self.unary(true, msg, |ch, r| async move {
            AuthServiceClient::new(ch).login(r).await
        })
        .await
    }

    /// Ends a session on the server: the one `refresh_token` belongs to, or with `None`
    /// the session of the current access token (then the client forgets its session).
    pub async fn logout(&self, refresh_token: Option<&str>) -> Result<(), ClientError> {
        let msg = LogoutRequest {
            refresh_token: refresh_token.unwrap_or_default().into(),
        };
        // Idempotent: ending an ended session changes nothing.
        self.unary(true, msg, |ch, r| async move {
            AuthServiceClient::new(ch).logout(r).await
        })
        .await?;
        if refresh_token.is_none() {
            self.forget_session();
        }
        Ok(())
    }

    /// The calling user as stored now.
    pub async fn who_am_i(&self) -> Result<upb::User, ClientError> {
        self.unary(true, (), |ch, r| async move {
            AuthServiceClient::new(ch).who_am_i(r).await
        })
        .await
    }

    /// Changes the caller's password; the server ends the caller's other sessions.
    pub async fn change_password(&self, old_password: &str, new_password: &str) -> Result<(), ClientError> {
        let msg = ChangePasswordRequest {
            old_password: old_password.into(),
            new_password: new_password.into(),
        };
        self.unary(false, msg, |ch, r| async move {
            AuthServiceClient::new(ch).change_password(r).await
        })
        .await
    }

    /// Sets a user's password (admins); the server ends every session of that user.
    pub async fn set_password(&self, user_id: u64, new_password: &str) -> Result<(), ClientError> {
        let msg = SetPasswordRequest {
            user_id,
            new_password: new_password.into(),
        };
        self.unary(false, msg, |ch, r| async move {
            AuthServiceClient::new(ch).set_password(r).await
        })
        .await
    }

    /// Replaces a user's roles (admins).
    pub async fn set_roles(&self, user_id: u64, roles: &[upb::UserRole]) -> Result<upb::User, ClientError> {
        self.update_user(upb::UpdateUserRequest {
            user_id,
            roles: Some(upb::RoleSet {
                roles: roles.iter().map(|r| *r as i32).collect(),
            }),
            ..Default::default()
        })
        .await
    }

    /// GetUser by id (retried on transient failures).
    pub async fn get_user(&self, id: u64) -> Result<upb::User, ClientError> {
        self.find_user(get_user_request::Identifier::UserId(id)).await
    }

    /// Publishes one event. Without an `idempotency_key` the client makes one, so the
    /// publish can be retried safely (the hub answers a repeat with the first event's
    /// deliveries and `duplicate = true`); pass `retry = false` to send it once only.
    pub async fn publish(
        &self,
        mut req: apb::PublishRequest,
        retry: bool,
    ) -> Result<apb::PublishResponse, ClientError> {
        if retry && req.idempotency_key.is_empty() {
            req.idempotency_key = uuid::Uuid::now_v7().to_string();
        }
        let idempotent = retry && !req.idempotency_key.is_empty();
        self.unary(idempotent, req, |ch, r| async move {
            ActivityServiceClient::new(ch).publish(r).await
        })
        .await
    }

    /// A page of a user's events (retried on transient failures).
    pub async fn list_events(
        &self,
        req: apb::ListEventsRequest,
    ) -> Result<apb::ListEventsResponse, ClientError> {
        self.unary(true, req, |ch, r| async move {
            ActivityServiceClient::new(ch).list_events(r).await
        })
        .await
    }

    /// A durable consumer's stored position (retried on transient failures).
    pub async fn get_cursor(&self, user_id: u64, consumer_id: &str) -> Result<apb::Cursor, ClientError> {
        let msg = apb::GetCursorRequest {
            user_id,
            consumer_id: consumer_id.into(),
        };
        self.unary(true, msg, |ch, r| async move {
            ActivityServiceClient::new(ch).get_cursor(r).await
        })
        .await
    }

    /// Opens a UserActivity stream watching `user_ids` (`[0]` = everyone, for admins and
    /// moderators): user changes as they happen. Not resumed after a disconnect (the
    /// stream has no positions to resume from); the stream ends with the error. While
    /// open it counts as in flight on its endpoint (for `least_pending`).
    pub async fn watch_users(&self, user_ids: &[u64]) -> Result<UserWatch, ClientError> {
        let watch: Vec<upb::UserActivityRequest> = user_ids
            .iter()
            .map(|&user_id| upb::UserActivityRequest {
                action: upb::user_activity_request::Action::SubscribeUserUpdates as i32,
                user_id,
            })
            .collect();
        // The request side stays open (ending it would end the call) until the stream drops.
        let requests = tokio_stream::iter(watch).chain(tokio_stream::pending());
        let node = self.pick()?;
        let (metadata, _, ()) = self.request(()).into_parts();
        let req = tonic::Request::from_parts(metadata, tonic::Extensions::default(), requests);
        let res = UserServiceClient::new(node.channel.clone())
            .user_activity(req)
            .await;
        node.record(
            !matches!(&res, Err(s) if crate::endpoint::transient(s)),
            &self.inner.cfg,
        );
        Ok(UserWatch {
            stream: res?.into_inner(),
            lease: Some(node),
        })
    }

    /// A user by id, email or username (retried on transient failures).
    pub async fn find_user(
        &self,
        identifier: get_user_request::Identifier,
    ) -> Result<upb::User, ClientError> {
        let msg = upb::GetUserRequest {
            identifier: Some(identifier),
        };
        self.unary(true, msg, |ch, r| async move {
            UserServiceClient::new(ch).get_user(r).await
        })
        .await
    }

    /// Creates a user (sent once: a blind retry could meet its own ALREADY_EXISTS).
    pub async fn create_user(&self, msg: upb::CreateUserRequest) -> Result<upb::User, ClientError> {
        self.unary(false, msg, |ch, r| async move {
            UserServiceClient::new(ch).create_user(r).await
        })
        .await
    }

    /// Sets the given fields (idempotent: retried on transient failures).
    pub async fn update_user(&self, msg: upb::UpdateUserRequest) -> Result<upb::User, ClientError> {
        self.unary(true, msg, |ch, r| async move {
            UserServiceClient::new(ch).update_user(r).await
        })
        .await
    }

    /// Deletes a user (sent once).
    pub async fn delete_user(&self, id: u64) -> Result<(), ClientError> {
        let msg = upb::GetUserRequest {
            identifier: Some(get_user_request::Identifier::UserId(id)),
        };
        self.unary(false, msg, |ch, r| async move {
            UserServiceClient::new(ch).delete_user(r).await
        })
        .await
    }

    /// A page of users (retried on transient failures).
    pub async fn list_users(
        &self,
        msg: upb::ListUsersRequest,
    ) -> Result<upb::ListUsersResponse, ClientError> {
        self.unary(true, msg, |ch, r| async move {
            UserServiceClient::new(ch).list_users(r).await
        })
        .await
    }

    /// grpc.health.v1 status of every endpoint, checked now: `(uri, status name)`; a
    /// `dns:` target that resolves to nothing is listed as `UNRESOLVED (why)`.
    pub async fn health(&self) -> Vec<(String, String)> {
        use tonic_health::pb::{
            health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
        };
        let mut out = Vec::new();
        for node in self.inner.pool.nodes().iter() {
            let mut req = self.request(HealthCheckRequest::default());
            req.set_timeout(self.inner.cfg.deadline);
            let status = match HealthClient::new(node.channel.clone()).check(req).await {
                Ok(r) => ServingStatus::try_from(r.into_inner().status)
                    .map(|s| s.as_str_name().to_string())
                    .unwrap_or_else(|_| "UNKNOWN".into()),
                Err(s) => format!("UNREACHABLE ({})", s.message()),
            };
            out.push((node.uri.clone(), status));
        }
        for (target, why) in self.inner.pool.unresolved() {
            out.push((target, format!("UNRESOLVED ({why})")));
        }
        out
    }
}
