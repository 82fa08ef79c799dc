//! Users: the domain operations behind `user.v1.UserService` and Login.
//!
//! [`Users`] validates, hashes passwords ([`password`]), writes through the [`Store`],
//! keeps the [`cache::UserCache`] coherent and announces every write to the
//! [`ChangeSink`] it was built with (the hub, wired by `server`). It knows nothing of
//! gRPC, of the hub or of who is calling: the edge translates the wire and asks the auth
//! policy first.
//!
//! Imports [`crate::model`], [`crate::store`] and [`crate::error`] only.

pub mod cache;
pub mod password;

use std::sync::Arc;

use crate::{
    error::ApiError,
    model::{self, ChangeKind, Roles, Status, User, UserChange},
    store::{ListFilter, NewUser, PageStart, Store, StoreError, UserChanges, UserKey},
};
use cache::UserCache;
use password::PasswordHasher;

/// Where [`Users`] announces each write: the hub's UserActivity watchers (here and, through
/// the store, on other servers). Given at construction.
pub trait ChangeSink: Send + Sync + 'static {
    /// Whether a change could reach anyone now; `false` spares building it.
    fn listening(&self) -> bool;
    /// Announces `change`; must not block (it runs on the write path).
    fn changed(&self, change: Arc<UserChange>);
}

/// A validated-on-entry request to create a user.
#[derive(Clone, Debug)]
pub struct CreateUser {
    /// Required.
    pub email: String,
    /// Required.
    pub username: String,
    /// Required, plain text; hashed here.
    pub password: String,
    /// Optional.
    pub first_name: String,
    /// Optional.
    pub last_name: String,
    /// Empty = plain user.
    pub roles: Roles,
}

/// The checks of a create that need no store: every field of `req` against the spec's
/// rules (the password is hashed afterwards, the uniqueness left to the store).
pub fn validate_new(req: &CreateUser) -> Result<(), ApiError> {
    model::validate_email(&req.email)?;
    model::validate_username(&req.username)?;
    model::validate_password(&req.password)?;
    model::validate_text("first_name", &req.first_name, 100)?;
    model::validate_text("last_name", &req.last_name, 100)?;
    Ok(())
}

/// The spec's password rule for a `new_password` field (ChangePassword, SetPassword).
pub fn validate_new_password(password: &str) -> Result<(), ApiError> {
    model::validate_password(password).map_err(|e| ApiError::invalid("new_password", e.reason))
}

/// The checks of an update that need no store; the preferences are checked once applied
/// to the current user ([`model::validate_preferences`]).
pub fn validate_changes(changes: &UserChanges) -> Result<(), ApiError> {
    if let Some(u) = &changes.username {
        model::validate_username(u)?;
    }
    for (field, value, max) in [
        ("first_name", &changes.first_name, 100),
        ("last_name", &changes.last_name, 100),
        ("bio", &changes.bio, 1000),
    ] {
        if let Some(v) = value {
            model::validate_text(field, v, max)?;
        }
    }
    if let Some(url) = &changes.avatar_url {
        model::validate_avatar_url(url)?;
    }
    if changes.status == Some(Status::Deleted) {
        return Err(ApiError::invalid("status", "use DeleteUser to delete a user"));
    }
    Ok(())
}

/// The user directory; cheap to clone.
#[derive(Clone)]
pub struct Users {
    store: Store,
    cache: Option<Arc<UserCache>>,
    hasher: PasswordHasher,
    changes: Arc<dyn ChangeSink>,
}

impl Users {
    /// `cache` is `None` when this process is not the only writer of the store; every
    /// write is announced to `changes`.
    pub fn new(
        store: Store,
        cache: Option<Arc<UserCache>>,
        hasher: PasswordHasher,
        changes: Arc<dyn ChangeSink>,
    ) -> Users {
        Users {
            store,
            cache,
            hasher,
            changes,
        }
    }

    /// The password hasher (shared with Login).
    pub fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    /// The live user with this id, from the cache when possible.
    pub async fn get(&self, id: u64) -> Result<Option<Arc<User>>, ApiError> {
        if let Some(cache) = &self.cache {
            if let Some(u) = cache.get(id) {
                return Ok((u.status != Status::Deleted).then_some(u));
            }
            let generation = cache.generation();
            let found = self.store.find_user(&UserKey::Id(id)).await?;
            return Ok(found.map(|(u, _)| {
                let u = Arc::new(u);
                cache.fill(generation, u.clone());
                u
            }));
        }
        Ok(self
            .store
            .find_user(&UserKey::Id(id))
            .await?
            .map(|(u, _)| Arc::new(u)))
    }

    /// The live user matching `key`.
    pub async fn find(&self, key: &UserKey) -> Result<Option<Arc<User>>, ApiError> {
        match key {
            UserKey::Id(id) => self.get(*id).await,
            other => Ok(self.store.find_user(other).await?.map(|(u, _)| Arc::new(u))),
        }
    }

    /// The live user matching `key` with its password hash (never cached).
    pub async fn find_with_hash(&self, key: &UserKey) -> Result<Option<(User, String)>, ApiError> {
        Ok(self.store.find_user(key).await?)
    }

    /// Validates, hashes the password and inserts. ALREADY_EXISTS names the taken field.
    pub async fn create(&self, req: CreateUser) -> Result<User, ApiError> {
        let new = self.prepare(req).await?;
        self.insert(new).await
    }

    /// The expensive, independent half of a create: validation and password hashing.
    /// Bulk creation runs several at once and then [`Users::insert`]s in stream order.
    pub async fn prepare(&self, req: CreateUser) -> Result<NewUser, ApiError> {
        validate_new(&req)?;
        let roles = if req.roles.0 == 0 {
            Roles::only(model::Role::User)
        } else {
            req.roles
        };
        let password_hash = self.hasher.hash(req.password).await?;
        Ok(NewUser {
            email: req.email,
            username: req.username,
            password_hash,
            first_name: req.first_name,
            last_name: req.last_name,
            roles,
        })
    }

    /// Inserts a prepared user.
    pub async fn insert(&self, new: NewUser) -> Result<User, ApiError> {
        match self.store.create_user(&new).await {
            Ok(u) => Ok(self.written(u, ChangeKind::Created)),
            Err(StoreError::UniqueViolation) => Err(self.name_conflict(&new.email).await),
            Err(e) => Err(e.into()),
        }
    }

    async fn name_conflict(&self, email: &str) -> ApiError {
        match self.store.email_taken(email).await {
            Ok(true) => ApiError::AlreadyExists("email: a user with this email already exists".into()),
            Ok(false) => ApiError::AlreadyExists("username: a user with this username already exists".into()),
            Err(e) => e.into(),
        }
    }

    /// Applies `changes` to the live user `id` (compare-and-set on its version, retried
    /// when a concurrent write wins).
    pub async fn update(&self, id: u64, changes: &UserChanges) -> Result<User, ApiError> {
        validate_changes(changes)?;
        for _ in 0..16 {
            let Some((current, _)) = self.store.find_user(&UserKey::Id(id)).await? else {
                return Err(ApiError::NotFound(format!("user {id} not found").into()));
            };
            let next = changes.apply(&current);
            model::validate_preferences(&next.preferences)?;
            match self.store.replace_user(&next, current.version).await {
                Ok(Some(u)) => return Ok(self.written(u, ChangeKind::Updated)),
                Ok(None) => continue,
                Err(StoreError::UniqueViolation) => {
                    return Err(ApiError::AlreadyExists(
                        "username: a user with this username already exists".into(),
                    ))
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::Aborted(
            "too many concurrent updates of this user; retry".into(),
        ))
    }

    /// Soft-deletes the live user `id`; NOT_FOUND when there is none.
    pub async fn delete(&self, id: u64) -> Result<User, ApiError> {
        match self.store.soft_delete_user(id).await {
            Ok(u) => Ok(self.written(u, ChangeKind::Deleted)),
            Err(StoreError::NotFound) => Err(ApiError::NotFound(format!("user {id} not found").into())),
            Err(e) => Err(e.into()),
        }
    }

    /// Sets the password of the live user `id` (validated, then hashed); NOT_FOUND when
    /// there is none. Not announced to UserActivity watchers: nothing they see changed.
    pub async fn set_password(&self, id: u64, password: String) -> Result<User, ApiError> {
        validate_new_password(&password)?;
        let hash = self.hasher.hash(password).await?;
        match self.store.set_password_hash(id, &hash).await {
            Ok(u) => {
                if let Some(cache) = &self.cache {
                    cache.store(Arc::new(u.clone()));
                }
                Ok(u)
            }
            Err(StoreError::NotFound) => Err(ApiError::NotFound(format!("user {id} not found").into())),
            Err(e) => Err(e.into()),
        }
    }

    /// Records a successful login.
    pub async fn record_login(&self, id: u64) -> Result<User, ApiError> {
        Ok(self.written(self.store.record_login(id).await?, ChangeKind::LoggedIn))
    }

    /// A page of users and the total matching `filter`.
    pub async fn list(
        &self,
        filter: &ListFilter,
        start: PageStart,
        limit: u32,
    ) -> Result<(Vec<User>, u64), ApiError> {
        let users = self.store.list_users(filter, start, limit).await?;
        let total = self.store.count_users(filter).await?;
        Ok((users, total))
    }

    /// A page of users without the total (StreamUsers).
    pub async fn page(
        &self,
        filter: &ListFilter,
        start: PageStart,
        limit: u32,
    ) -> Result<Vec<User>, ApiError> {
        Ok(self.store.list_users(filter, start, limit).await?)
    }

    /// Whether any live admin exists.
    pub async fn has_admin(&self) -> Result<bool, ApiError> {
        Ok(self.store.has_admin().await?)
    }

    fn written(&self, user: User, kind: ChangeKind) -> User {
        if let Some(cache) = &self.cache {
            cache.store(Arc::new(user.clone()));
        }
        // Built only when someone may be watching (here or on another server).
        if self.changes.listening() {
            self.changes.changed(Arc::new(UserChange {
                kind,
                user_id: user.id,
                user: user.clone(),
                occurred_at: crate::store::now_micros(),
            }));
        }
        user
    }
}
