//! User rows: create, read, optimistic update, soft delete, list and count.
//!
//! Writes are single statements (`INSERT/UPDATE ... RETURNING`), so they need no explicit
//! transaction on either engine; concurrent updates of one user are ordered by the
//! `version` column (compare-and-set), and uniqueness is left to the partial unique
//! indexes of the migration.

use std::collections::BTreeMap;

use super::{dispatch, now_micros, Store, StoreError, StoreResult};
use crate::model::{normalize_email, normalize_username, Roles, Status, User};

const USER_COLUMNS: &str = "id, email, username, password_hash, first_name, last_name, status, \
     roles, avatar_url, bio, preferences, created_at, updated_at, last_login, version";

#[derive(sqlx::FromRow)]
struct UserRow {
    id: i64,
    email: String,
    username: String,
    password_hash: String,
    first_name: String,
    last_name: String,
    status: i64,
    roles: i64,
    avatar_url: String,
    bio: String,
    preferences: String,
    created_at: i64,
    updated_at: i64,
    last_login: Option<i64>,
    version: i64,
}

impl UserRow {
    fn into_user(self) -> StoreResult<(User, String)> {
        let status = i32::try_from(self.status)
            .ok()
            .and_then(Status::from_i32)
            .ok_or_else(|| StoreError::Corrupt(format!("user {} has status {}", self.id, self.status)))?;
        let preferences: BTreeMap<String, String> = serde_json::from_str(&self.preferences)
            .map_err(|e| StoreError::Corrupt(format!("user {} preferences: {e}", self.id)))?;
        let user = User {
            id: self.id as u64,
            email: self.email,
            username: self.username,
            first_name: self.first_name,
            last_name: self.last_name,
            created_at: self.created_at,
            updated_at: self.updated_at,
            last_login: self.last_login,
            status,
            roles: Roles(self.roles as u32),
            avatar_url: self.avatar_url,
            bio: self.bio,
            preferences,
            version: self.version,
        };
        Ok((user, self.password_hash))
    }
}

/// What a new user is made of; validated by the caller.
#[derive(Clone, Debug)]
pub struct NewUser {
    /// As entered.
    pub email: String,
    /// As entered.
    pub username: String,
    /// PHC string of an Argon2id hash.
    pub password_hash: String,
    /// Optional.
    pub first_name: String,
    /// Optional.
    pub last_name: String,
    /// Granted roles.
    pub roles: Roles,
}

/// How to find one live user.
#[derive(Clone, Debug)]
pub enum UserKey {
    /// By id.
    Id(u64),
    /// By email, case-insensitively.
    Email(String),
    /// By username, case-insensitively.
    Username(String),
}

/// A partial update: `None` leaves the field alone.
#[derive(Clone, Debug, Default)]
pub struct UserChanges {
    /// New username.
    pub username: Option<String>,
    /// New first name.
    pub first_name: Option<String>,
    /// New last name.
    pub last_name: Option<String>,
    /// New bio.
    pub bio: Option<String>,
    /// New avatar URL.
    pub avatar_url: Option<String>,
    /// New status (never `Deleted`; that is [`Store::soft_delete_user`]).
    pub status: Option<Status>,
    /// New roles (replacing the old set).
    pub roles: Option<Roles>,
    /// Entries to upsert; an empty value removes the key.
    pub preferences: BTreeMap<String, String>,
}

impl UserChanges {
    /// Applies the changes to a copy of `user`.
    pub fn apply(&self, user: &User) -> User {
        let mut u = user.clone();
        if let Some(v) = &self.username {
            u.username.clone_from(v);
        }
        if let Some(v) = &self.first_name {
            u.first_name.clone_from(v);
        }
        if let Some(v) = &self.last_name {
            u.last_name.clone_from(v);
        }
        if let Some(v) = &self.bio {
            u.bio.clone_from(v);
        }
        if let Some(v) = &self.avatar_url {
            u.avatar_url.clone_from(v);
        }
        if let Some(s) = self.status {
            u.status = s;
        }
        if let Some(r) = self.roles {
            u.roles = r;
        }
        for (k, v) in &self.preferences {
            if v.is_empty() {
                u.preferences.remove(k);
            } else {
                u.preferences.insert(k.clone(), v.clone());
            }
        }
        u
    }
}

/// The selection of ListUsers/StreamUsers.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    /// Only this status; `None` = every non-deleted user.
    pub status: Option<Status>,
    /// Case-insensitive substring of email, username, first or last name.
    pub search: Option<String>,
}

impl ListFilter {
    /// `WHERE` clause text and the values to bind, numbered from `$1`.
    fn clause(&self) -> (String, Vec<Bind>) {
        let mut binds = Vec::new();
        let mut sql = match self.status {
            Some(s) => {
                binds.push(Bind::Int(s as i64));
                "status = $1".to_string()
            }
            None => format!("status <> {}", Status::Deleted as i32),
        };
        if let Some(search) = &self.search {
            let escaped = search
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            binds.push(Bind::Text(format!("%{escaped}%")));
            let n = binds.len();
            sql.push_str(&format!(
                " AND (email_norm LIKE ${n} ESCAPE '\\' OR username_norm LIKE ${n} ESCAPE '\\' \
                 OR lower(first_name) LIKE ${n} ESCAPE '\\' OR lower(last_name) LIKE ${n} ESCAPE '\\')"
            ));
        }
        (sql, binds)
    }
}

enum Bind {
    Int(i64),
    Text(String),
}

/// Binds a list of [`Bind`]s onto a query of either backend.
macro_rules! bind_all {
    ($q:expr, $binds:expr) => {{
        let mut q = $q;
        for b in $binds {
            q = match b {
                Bind::Int(v) => q.bind(*v),
                Bind::Text(v) => q.bind(v.clone()),
            };
        }
        q
    }};
}

/// Where a page starts.
#[derive(Clone, Copy, Debug)]
pub enum PageStart {
    /// Skip this many rows (offset paging).
    Offset(u64),
    /// Rows with id greater than this (keyset paging).
    AfterId(u64),
}

impl Store {
    /// Inserts a user; `UniqueViolation` when the email or username is taken.
    pub async fn create_user(&self, new: &NewUser) -> StoreResult<User> {
        let now = now_micros();
        let sql = format!(
            "INSERT INTO users (email, email_norm, username, username_norm, password_hash, \
             first_name, last_name, status, roles, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) RETURNING {USER_COLUMNS}"
        );
        let row: StoreResult<UserRow> = dispatch!(&self.writer, p => sqlx::query_as(&sql)
            .bind(&new.email)
            .bind(normalize_email(&new.email))
            .bind(&new.username)
            .bind(normalize_username(&new.username))
            .bind(&new.password_hash)
            .bind(&new.first_name)
            .bind(&new.last_name)
            .bind(Status::Active as i64)
            .bind(i64::from(new.roles.0))
            .bind(now)
            .fetch_one(p)
            .await.map_err(StoreError::from));
        let row = self.track(row)?;
        Ok(row.into_user()?.0)
    }

    /// A live (not deleted) user and its password hash.
    pub async fn find_user(&self, key: &UserKey) -> StoreResult<Option<(User, String)>> {
        let (column, text, id) = match key {
            UserKey::Id(id) => ("id", None, i64::try_from(*id).unwrap_or(-1)),
            UserKey::Email(e) => ("email_norm", Some(normalize_email(e)), 0),
            UserKey::Username(u) => ("username_norm", Some(normalize_username(u)), 0),
        };
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users WHERE {column} = $1 AND status <> {}",
            Status::Deleted as i32
        );
        let row: Option<UserRow> = match text {
            Some(t) => dispatch!(&self.db, p => sqlx::query_as(&sql).bind(t).fetch_optional(p).await)?,
            None => dispatch!(&self.db, p => sqlx::query_as(&sql).bind(id).fetch_optional(p).await)?,
        };
        row.map(UserRow::into_user).transpose()
    }

    /// Whether a live user holds the given field value (used to name the field of a
    /// unique violation without parsing driver messages).
    pub async fn email_taken(&self, email: &str) -> StoreResult<bool> {
        Ok(self
            .find_user(&UserKey::Email(email.to_string()))
            .await?
            .is_some())
    }

    /// Writes `next` over the stored user if it is still at `expected_version`; returns
    /// `None` when another write came first (the caller re-reads and retries).
    pub async fn replace_user(&self, next: &User, expected_version: i64) -> StoreResult<Option<User>> {
        let prefs =
            serde_json::to_string(&next.preferences).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let sql = format!(
            "UPDATE users SET username = $1, username_norm = $2, first_name = $3, last_name = $4, \
             bio = $5, avatar_url = $6, status = $7, preferences = $8, updated_at = $9, \
             roles = $12, version = version + 1 \
             WHERE id = $10 AND version = $11 AND status <> {} RETURNING {USER_COLUMNS}",
            Status::Deleted as i32
        );
        let row: StoreResult<Option<UserRow>> = dispatch!(&self.writer, p => sqlx::query_as(&sql)
            .bind(&next.username)
            .bind(normalize_username(&next.username))
            .bind(&next.first_name)
            .bind(&next.last_name)
            .bind(&next.bio)
            .bind(&next.avatar_url)
            .bind(next.status as i64)
            .bind(prefs)
            .bind(now_micros())
            .bind(next.id as i64)
            .bind(expected_version)
            .bind(i64::from(next.roles.0))
            .fetch_optional(p)
            .await.map_err(StoreError::from));
        let row = self.track(row)?;
        row.map(|r| r.into_user().map(|(u, _)| u)).transpose()
    }

    /// Soft delete: status becomes deleted, freeing email and username. `NotFound` when
    /// there is no live user with that id.
    pub async fn soft_delete_user(&self, id: u64) -> StoreResult<User> {
        let now = now_micros();
        let sql = format!(
            "UPDATE users SET status = {del}, deleted_at = $1, updated_at = $1, version = version + 1 \
             WHERE id = $2 AND status <> {del} RETURNING {USER_COLUMNS}",
            del = Status::Deleted as i32
        );
        let row: StoreResult<UserRow> = dispatch!(&self.writer, p => sqlx::query_as(&sql)
            .bind(now)
            .bind(id as i64)
            .fetch_one(p)
            .await.map_err(StoreError::from));
        let row = self.track(row)?;
        Ok(row.into_user()?.0)
    }

    /// Replaces the password hash of the live user `id`; `NotFound` when there is none.
    pub async fn set_password_hash(&self, id: u64, hash: &str) -> StoreResult<User> {
        let sql = format!(
            "UPDATE users SET password_hash = $1, updated_at = $2, version = version + 1 \
             WHERE id = $3 AND status <> {} RETURNING {USER_COLUMNS}",
            Status::Deleted as i32
        );
        let row: StoreResult<UserRow> = dispatch!(&self.writer, p => sqlx::query_as(&sql)
            .bind(hash)
            .bind(now_micros())
            .bind(id as i64)
            .fetch_one(p)
            .await.map_err(StoreError::from));
        let row = self.track(row)?;
        Ok(row.into_user()?.0)
    }

    /// Sets `last_login` to now and returns the updated user.
    pub async fn record_login(&self, id: u64) -> StoreResult<User> {
        let sql = format!(
            "UPDATE users SET last_login = $1, version = version + 1 WHERE id = $2 \
             AND status <> {} RETURNING {USER_COLUMNS}",
            Status::Deleted as i32
        );
        let row: StoreResult<UserRow> = dispatch!(&self.writer, p => sqlx::query_as(&sql)
            .bind(now_micros())
            .bind(id as i64)
            .fetch_one(p)
            .await.map_err(StoreError::from));
        let row = self.track(row)?;
        Ok(row.into_user()?.0)
    }

    /// One page of users matching `filter`, by id ascending.
    pub async fn list_users(
        &self,
        filter: &ListFilter,
        start: PageStart,
        limit: u32,
    ) -> StoreResult<Vec<User>> {
        let (clause, binds) = filter.clause();
        let n = binds.len();
        let sql = match start {
            PageStart::Offset(off) => format!(
                "SELECT {USER_COLUMNS} FROM users WHERE {clause} ORDER BY id LIMIT {limit} OFFSET {off}"
            ),
            PageStart::AfterId(_) => format!(
                "SELECT {USER_COLUMNS} FROM users WHERE {clause} AND id > ${} ORDER BY id LIMIT {limit}",
                n + 1
            ),
        };
        let rows: Vec<UserRow> = dispatch!(&self.db, p => {
            let q = bind_all!(sqlx::query_as(&sql), &binds);
            let q = match start {
                PageStart::AfterId(id) => q.bind(i64::try_from(id).unwrap_or(i64::MAX)),
                PageStart::Offset(_) => q,
            };
            q.fetch_all(p).await
        })?;
        rows.into_iter().map(|r| r.into_user().map(|(u, _)| u)).collect()
    }

    /// How many users match `filter`.
    pub async fn count_users(&self, filter: &ListFilter) -> StoreResult<u64> {
        let (clause, binds) = filter.clause();
        let sql = format!("SELECT COUNT(*) FROM users WHERE {clause}");
        let (n,): (i64,) =
            dispatch!(&self.db, p => bind_all!(sqlx::query_as(&sql), &binds).fetch_one(p).await)?;
        Ok(n as u64)
    }

    /// Whether any live user holds the admin role.
    pub async fn has_admin(&self) -> StoreResult<bool> {
        let admin_bit = Roles::only(crate::model::Role::Admin).0;
        let sql = format!(
            "SELECT COUNT(*) FROM users WHERE status <> {} AND (roles & {admin_bit}) <> 0",
            Status::Deleted as i32
        );
        let (n,): (i64,) = dispatch!(&self.db, p => sqlx::query_as(&sql).fetch_one(p).await)?;
        Ok(n > 0)
    }
}
