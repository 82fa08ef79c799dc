//! User lifecycle notifications: what `Users` announces after each write and what a
//! UserActivity watcher asks to hear.

use serde::{Deserialize, Serialize};

use super::User;

/// What happened to a user; numbers match `user.v1.UserActivityEvent.Kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    /// Created (CreateUser, BulkCreateUsers, the bootstrap admin).
    Created = 1,
    /// Updated (UpdateUser).
    Updated = 2,
    /// Soft-deleted (DeleteUser).
    Deleted = 3,
    /// Logged in.
    LoggedIn = 4,
}

/// One user change, as UserActivity watchers receive it. Serializable: servers sharing a
/// PostgreSQL database pass it to each other (`hub::notify`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserChange {
    /// What happened.
    pub kind: ChangeKind,
    /// The user it happened to (the registry routes on it).
    pub user_id: u64,
    /// The user right after the change.
    pub user: User,
    /// Microseconds since the epoch.
    pub occurred_at: i64,
}

/// What a UserActivity request changes: watch or stop watching a user (0 = everyone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchChange {
    /// Start watching.
    Add(u64),
    /// Stop watching.
    Remove(u64),
}
