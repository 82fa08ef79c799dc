//! `user.v1.UserService`: translates the wire to [`Users`] calls after asking the auth
//! policy, and UserActivity requests to [`Hub::watch`]. No business rules live here.

use std::sync::{
    atomic::{AtomicI64, AtomicU64, Ordering},
    Arc,
};

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::convert;
use crate::{
    auth::{
        policy::{authorize, Call},
        Auth,
    },
    error::ApiError,
    hub::Hub,
    lifecycle::{end_on_shutdown, ResponseStream},
    model::{Principal, Role, Status as UserStatus, WatchChange},
    proto::user::v1::{self as pb, user_activity_request::Action, user_service_server::UserService},
    store::{ListFilter, PageStart, Revocation, UserChanges, UserKey},
    users::{CreateUser, Users},
};

/// Most entries one BulkCreateUsers call accepts.
pub const BULK_MAX: usize = 10_000;

/// Counters a test or an operator can read to see streams end.
#[derive(Debug, Default)]
pub struct StreamStats {
    /// StreamUsers calls still producing.
    pub active: AtomicI64,
    /// Users sent by StreamUsers, all calls.
    pub sent: AtomicU64,
}

/// The UserService implementation.
#[derive(Clone)]
pub struct UserApi {
    users: Users,
    auth: Auth,
    hub: Hub,
    open_signup: bool,
    shutdown: CancellationToken,
    stats: Arc<StreamStats>,
}

impl UserApi {
    /// `hub` serves UserActivity; `shutdown` ends open streams with UNAVAILABLE.
    pub fn new(
        users: Users,
        auth: Auth,
        hub: Hub,
        open_signup: bool,
        shutdown: CancellationToken,
    ) -> UserApi {
        UserApi {
            users,
            auth,
            hub,
            open_signup,
            shutdown,
            stats: Arc::default(),
        }
    }

    /// Stream counters.
    pub fn stats(&self) -> Arc<StreamStats> {
        self.stats.clone()
    }

    async fn caller<T>(&self, req: &Request<T>) -> Result<Option<Principal>, ApiError> {
        self.auth.authenticate(req.metadata()).await
    }

    fn allow(&self, caller: &Option<Principal>, call: Call) -> Result<(), ApiError> {
        authorize(caller.as_ref(), call, self.open_signup)
    }

    /// The selection of a ListUsers request: filter, where to start, page size.
    #[doc(hidden)] // public for the fuzz targets
    pub fn selection(
        req: &pb::ListUsersRequest,
        default_limit: u32,
    ) -> Result<(ListFilter, PageStart, u32), ApiError> {
        let limit = match req.limit {
            0 => default_limit,
            n if n > 1000 => return Err(ApiError::invalid("limit", "must be at most 1000")),
            n => n,
        };
        let search = req.search.trim();
        if search.chars().count() > 256 {
            return Err(ApiError::invalid("search", "must be at most 256 characters"));
        }
        let filter = ListFilter {
            status: convert::status_filter(req.status)?,
            search: (!search.is_empty()).then(|| search.to_string()),
        };
        let start = if !req.page_token.is_empty() {
            PageStart::AfterId(convert::parse_page_token(&req.page_token, &filter)?)
        } else {
            let page = u64::from(req.page.max(1));
            PageStart::Offset((page - 1) * u64::from(limit))
        };
        Ok((filter, start, limit))
    }
}

/// A CreateUser (or BulkCreateUsers entry) in domain terms: its roles checked.
#[doc(hidden)] // public for the fuzz targets
pub fn create_request(r: pb::CreateUserRequest) -> Result<CreateUser, ApiError> {
    Ok(CreateUser {
        roles: convert::roles(&r.roles)?,
        email: r.email,
        username: r.username,
        password: r.password,
        first_name: r.first_name,
        last_name: r.last_name,
    })
}

/// Whether a CreateUser asks for any role beyond a plain user.
#[doc(hidden)] // public for the fuzz targets
pub fn elevated(r: &pb::CreateUserRequest) -> bool {
    r.roles.iter().any(|&n| n != pb::UserRole::User as i32)
}

/// What an UpdateUser asks the policy about; INVALID_ARGUMENT without a user_id.
#[doc(hidden)] // public for the fuzz targets
pub fn update_call(r: &pb::UpdateUserRequest) -> Result<Call, ApiError> {
    if r.user_id == 0 {
        return Err(ApiError::invalid("user_id", "is required"));
    }
    Ok(Call::UpdateUser {
        target: r.user_id,
        sets_status: r.status.is_some(),
        sets_roles: r.roles.is_some(),
    })
}

/// The changes an UpdateUser asks for, once the caller may make them.
#[doc(hidden)] // public for the fuzz targets
pub fn update_changes(r: pb::UpdateUserRequest) -> Result<UserChanges, ApiError> {
    Ok(UserChanges {
        username: r.username,
        first_name: r.first_name,
        last_name: r.last_name,
        bio: r.bio,
        avatar_url: r.avatar_url,
        status: r.status.map(convert::status_value).transpose()?,
        roles: r.roles.map(|set| convert::role_set(&set.roles)).transpose()?,
        preferences: r.preferences.into_iter().collect(),
    })
}

#[tonic::async_trait]
impl UserService for UserApi {
    async fn get_user(&self, req: Request<pb::GetUserRequest>) -> Result<Response<pb::User>, Status> {
        let caller = self.caller(&req).await?;
        let key = convert::user_key(req.get_ref())?;
        if caller.is_none() {
            self.allow(&caller, Call::GetUser { target: None })?;
        }
        let found = self.users.find(&key).await?;
        self.allow(
            &caller,
            Call::GetUser {
                target: found.as_ref().map(|u| u.id),
            },
        )?;
        let user = found.ok_or_else(|| ApiError::NotFound("user not found".into()))?;
        Ok(Response::new(pb::User::from(&*user)))
    }

    async fn create_user(&self, req: Request<pb::CreateUserRequest>) -> Result<Response<pb::User>, Status> {
        let caller = self.caller(&req).await?;
        let body = req.into_inner();
        self.allow(
            &caller,
            Call::CreateUser {
                elevated: elevated(&body),
            },
        )?;
        let user = self.users.create(create_request(body)?).await?;
        Ok(Response::new(pb::User::from(&user)))
    }

    async fn update_user(&self, req: Request<pb::UpdateUserRequest>) -> Result<Response<pb::User>, Status> {
        let caller = self.caller(&req).await?;
        let r = req.into_inner();
        self.allow(&caller, update_call(&r)?)?;
        let user_id = r.user_id;
        let changes = update_changes(r)?;
        if let (Some(roles), Some(me)) = (changes.roles, &caller) {
            if me.user_id == user_id && me.roles.has(Role::Admin) && !roles.has(Role::Admin) {
                return Err(ApiError::FailedPrecondition(
                    "roles: an admin cannot remove their own admin role (ask another admin)".into(),
                )
                .into());
            }
        }
        let user = self.users.update(user_id, &changes).await?;
        if user.status != UserStatus::Active {
            self.auth
                .sessions()
                .revoke_user(user_id, None, Revocation::UserDisabled)
                .await?;
        }
        Ok(Response::new(pb::User::from(&user)))
    }

    async fn delete_user(&self, req: Request<pb::GetUserRequest>) -> Result<Response<()>, Status> {
        let caller = self.caller(&req).await?;
        let key = convert::user_key(req.get_ref())?;
        if caller.is_none() {
            self.allow(&caller, Call::DeleteUser { target: None })?;
        }
        let target = match key {
            UserKey::Id(id) => Some(id),
            other => self.users.find(&other).await?.map(|u| u.id),
        };
        // Unprivileged callers learn nothing about other accounts: denied before NOT_FOUND.
        self.allow(&caller, Call::DeleteUser { target })?;
        let id = target.ok_or_else(|| ApiError::NotFound("user not found".into()))?;
        self.users.delete(id).await?;
        self.auth
            .sessions()
            .revoke_user(id, None, Revocation::UserDisabled)
            .await?;
        Ok(Response::new(()))
    }

    async fn list_users(
        &self,
        req: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let caller = self.caller(&req).await?;
        self.allow(&caller, Call::ListUsers)?;
        let (filter, start, limit) = Self::selection(req.get_ref(), 50)?;
        let (users, total) = self.users.list(&filter, start, limit + 1).await?;
        let has_more = users.len() > limit as usize;
        let users: Vec<pb::User> = users.iter().take(limit as usize).map(pb::User::from).collect();
        let next_page_token = match (has_more, users.last()) {
            (true, Some(last)) => convert::page_token(last.id, &filter),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListUsersResponse {
            users,
            total: u32::try_from(total).unwrap_or(u32::MAX),
            has_more,
            next_page_token,
        }))
    }

    type StreamUsersStream = ResponseStream<pb::User>;

    async fn stream_users(
        &self,
        req: Request<pb::ListUsersRequest>,
    ) -> Result<Response<Self::StreamUsersStream>, Status> {
        let caller = self.caller(&req).await?;
        self.allow(&caller, Call::ListUsers)?;
        let (filter, start, limit) = Self::selection(req.get_ref(), 100)?;
        // A small buffer: the producer runs at most a few users ahead of the client, so a
        // cancelled call stops producing almost at once.
        let (tx, rx) = mpsc::channel(16);
        let (users, stats, shutdown) = (self.users.clone(), self.stats.clone(), self.shutdown.clone());
        stats.active.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            stream_pages(users, filter, start, limit, &tx, &stats, shutdown).await;
            stats.active.fetch_sub(1, Ordering::SeqCst);
        });
        Ok(Response::new(end_on_shutdown(
            ReceiverStream::new(rx),
            self.shutdown.clone(),
        )))
    }

    async fn bulk_create_users(
        &self,
        req: Request<Streaming<pb::CreateUserRequest>>,
    ) -> Result<Response<pb::BulkCreateUsersResponse>, Status> {
        let caller = self.caller(&req).await?;
        self.allow(&caller, Call::BulkCreateUsers)?;
        let users = self.users.clone();
        // Validation and hashing run a few at a time (the hasher bounds CPU); inserts then
        // happen one by one in stream order, so the earlier entry wins a duplicate.
        let mut prepared = req
            .into_inner()
            .enumerate()
            .map(|(i, item)| {
                let users = users.clone();
                async move {
                    let item = item?;
                    let email = item.email.clone();
                    if i >= BULK_MAX {
                        let e = ApiError::ResourceExhausted(
                            format!("at most {BULK_MAX} entries per call").into(),
                        );
                        return Ok::<_, Status>((i, email, Err(e)));
                    }
                    let res = match create_request(item) {
                        Ok(c) => users.prepare(c).await,
                        Err(e) => Err(e),
                    };
                    Ok((i, email, res))
                }
            })
            .buffered(4);
        let mut out = pb::BulkCreateUsersResponse::default();
        while let Some(next) = prepared.next().await {
            let (index, email, res) = next?;
            let res = match res {
                Ok(new) => users.insert(new).await,
                Err(e) => Err(e),
            };
            match res {
                Ok(u) => out.users.push(pb::User::from(&u)),
                Err(e) => {
                    let status = Status::from(e);
                    out.errors.push(pb::BulkCreateError {
                        index: index as u32,
                        email,
                        error: status.message().to_string(),
                        code: status.code() as i32,
                    });
                }
            }
        }
        out.created = out.users.len() as u32;
        out.failed = out.errors.len() as u32;
        Ok(Response::new(out))
    }

    type UserActivityStream = ResponseStream<pb::UserActivityEvent>;

    async fn user_activity(
        &self,
        req: Request<Streaming<pb::UserActivityRequest>>,
    ) -> Result<Response<Self::UserActivityStream>, Status> {
        let caller = self.caller(&req).await?;
        let Some(principal) = caller else {
            self.allow(&caller, Call::WatchUser { target: 0 })?;
            return Err(Status::unauthenticated("missing credentials"));
        };
        let open_signup = self.open_signup;
        let requests = req.into_inner().map(move |r| {
            let req = r?;
            watch_request(&principal, open_signup, &req).map_err(Status::from)
        });
        let changes = self
            .hub
            .watch(requests, |c| Ok(pb::UserActivityEvent::from(&*c)))
            .await?;
        Ok(Response::new(changes))
    }
}

/// Validates and authorizes one UserActivityRequest of `caller` (stopping a watch needs
/// no permission: it can only remove the caller's own). A refused request ends the stream.
#[doc(hidden)] // public for the fuzz targets
pub fn watch_request(
    caller: &Principal,
    open_signup: bool,
    req: &pb::UserActivityRequest,
) -> Result<WatchChange, ApiError> {
    let target = req.user_id;
    match Action::try_from(req.action).unwrap_or(Action::Unspecified) {
        Action::SubscribeUserUpdates => {
            authorize(Some(caller), Call::WatchUser { target }, open_signup)?;
            Ok(WatchChange::Add(target))
        }
        Action::UnsubscribeUserUpdates => Ok(WatchChange::Remove(target)),
        Action::Unspecified => Err(ApiError::invalid(
            "action",
            "must be SUBSCRIBE_USER_UPDATES or UNSUBSCRIBE_USER_UPDATES",
        )),
    }
}

/// Sends the selection in pages of 64 until done, the client goes away, or shutdown.
async fn stream_pages(
    users: Users,
    filter: ListFilter,
    mut start: PageStart,
    limit: u32,
    tx: &mpsc::Sender<Result<pb::User, Status>>,
    stats: &StreamStats,
    shutdown: CancellationToken,
) {
    let mut remaining = limit;
    while remaining > 0 {
        let chunk = remaining.min(64);
        let page = tokio::select! {
            p = users.page(&filter, start, chunk) => p,
            _ = tx.closed() => return,
            // The response stream itself reports UNAVAILABLE (lifecycle::end_on_shutdown).
            _ = shutdown.cancelled() => return,
        };
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        };
        let n = page.len() as u32;
        for u in &page {
            tokio::select! {
                sent = tx.send(Ok(pb::User::from(u))) => if sent.is_err() { return },
                _ = shutdown.cancelled() => return,
            }
            stats.sent.fetch_add(1, Ordering::Relaxed);
            start = PageStart::AfterId(u.id);
        }
        if n < chunk {
            return;
        }
        remaining -= n;
    }
}
