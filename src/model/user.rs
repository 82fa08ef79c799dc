//! The user domain: roles, statuses, the `User` record, the authenticated [`Principal`]
//! and the validation rules of the spec. Pure logic, no I/O; converted to and from
//! protobuf at the edge ([`crate::api`]), stored by [`crate::store`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Invalid;

/// Account status; numbers match `user.v1.UserStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(i32)]
pub enum Status {
    /// May log in.
    Active = 1,
    /// Kept but may not log in.
    Inactive = 2,
    /// Kept but may not log in.
    Suspended = 3,
    /// Soft-deleted.
    Deleted = 4,
}

impl Status {
    /// From the stored/wire number; `None` for unknown or unspecified.
    pub fn from_i32(n: i32) -> Option<Status> {
        match n {
            1 => Some(Status::Active),
            2 => Some(Status::Inactive),
            3 => Some(Status::Suspended),
            4 => Some(Status::Deleted),
            _ => None,
        }
    }
}

/// A role; numbers match `user.v1.UserRole`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Role {
    /// A plain account.
    User = 1,
    /// Everything.
    Admin = 2,
    /// Reads users, watches activity.
    Moderator = 3,
    /// Publishes events.
    Publisher = 4,
}

impl Role {
    /// Every role, in wire order.
    pub const ALL: [Role; 4] = [Role::User, Role::Admin, Role::Moderator, Role::Publisher];

    /// From the wire number; `None` for unknown or unspecified.
    pub fn from_i32(n: i32) -> Option<Role> {
        Role::ALL.into_iter().find(|r| *r as i32 == n)
    }

    /// Lower-case name used in tokens.
    pub fn name(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
            Role::Moderator => "moderator",
            Role::Publisher => "publisher",
        }
    }
}

/// A set of roles, stored as a bit mask (`1 << role number`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Roles(pub u32);

impl Roles {
    /// The set holding only `role`.
    pub fn only(role: Role) -> Roles {
        Roles(1 << role as u32)
    }
    /// Whether `role` is in the set.
    pub fn has(self, role: Role) -> bool {
        self.0 & (1 << role as u32) != 0
    }
    /// Adds `role`.
    pub fn insert(&mut self, role: Role) {
        self.0 |= 1 << role as u32;
    }
    /// The roles in wire order.
    pub fn iter(self) -> impl Iterator<Item = Role> {
        Role::ALL.into_iter().filter(move |r| self.has(*r))
    }
    /// Admin or moderator: may read any user.
    pub fn is_staff(self) -> bool {
        self.has(Role::Admin) || self.has(Role::Moderator)
    }
}

/// A user as stored, minus the password hash. Serializable because servers sharing a
/// database tell each other about user changes (`hub::notify`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Server-assigned id.
    pub id: u64,
    /// As entered.
    pub email: String,
    /// As entered.
    pub username: String,
    /// Optional given name.
    pub first_name: String,
    /// Optional family name.
    pub last_name: String,
    /// Microseconds since the epoch.
    pub created_at: i64,
    /// Microseconds since the epoch.
    pub updated_at: i64,
    /// Microseconds since the epoch; `None` before the first login.
    pub last_login: Option<i64>,
    /// Current status.
    pub status: Status,
    /// Granted roles.
    pub roles: Roles,
    /// Optional avatar URL.
    pub avatar_url: String,
    /// Optional free text.
    pub bio: String,
    /// Client preferences.
    pub preferences: BTreeMap<String, String>,
    /// Bumped by every write; orders concurrent cache fills.
    pub version: i64,
}

/// An authenticated caller, with the roles its user holds now (not the roles it held when
/// the token was signed: revoking a role or deactivating a user takes effect at once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The caller's user id.
    pub user_id: u64,
    /// The caller's current roles.
    pub roles: Roles,
    /// The session the caller's access token belongs to.
    pub session_id: std::sync::Arc<str>,
}

/// The spec's email rule: `local@domain`, checked syntactically (no DNS look-up).
pub fn validate_email(email: &str) -> Result<(), Invalid> {
    let bad = |why: &'static str| Err(Invalid::new("email", why));
    if email.is_empty() {
        return bad("is required");
    }
    if email.len() > 254 {
        return bad("must be at most 254 characters");
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("must not contain spaces or control characters");
    }
    let Some((local, domain)) = email.rsplit_once('@') else {
        return bad("must look like local@domain");
    };
    if local.is_empty() || local.len() > 64 || local.contains('@') {
        return bad("must look like local@domain");
    }
    let labels_ok = domain.split('.').all(|l| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_alphanumeric() || c == '-')
    });
    if !domain.contains('.') || !labels_ok {
        return bad("domain must be a host name such as example.com");
    }
    Ok(())
}

/// 3-32 characters of `[A-Za-z0-9_.-]`.
pub fn validate_username(username: &str) -> Result<(), Invalid> {
    let len = username.chars().count();
    if !(3..=32).contains(&len) {
        return Err(Invalid::new("username", "must be 3-32 characters"));
    }
    if !username
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(Invalid::new("username", "may contain only A-Z a-z 0-9 _ . -"));
    }
    Ok(())
}

/// At least 8 characters; at most 1024 bytes so hashing cost stays bounded.
pub fn validate_password(password: &str) -> Result<(), Invalid> {
    if password.chars().count() < 8 {
        return Err(Invalid::new("password", "must be at least 8 characters"));
    }
    if password.len() > 1024 {
        return Err(Invalid::new("password", "must be at most 1024 bytes"));
    }
    Ok(())
}

/// A free-text field of bounded length.
pub fn validate_text(field: &'static str, value: &str, max_chars: usize) -> Result<(), Invalid> {
    if value.chars().count() > max_chars {
        return Err(Invalid::new(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    if value.chars().any(|c| c.is_control() && c != '\n') {
        return Err(Invalid::new(field, "must not contain control characters"));
    }
    Ok(())
}

/// Empty, or an http(s) URL of at most 2048 bytes.
pub fn validate_avatar_url(url: &str) -> Result<(), Invalid> {
    if url.is_empty() {
        return Ok(());
    }
    if url.len() > 2048 {
        return Err(Invalid::new("avatar_url", "must be at most 2048 bytes"));
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.chars().any(char::is_whitespace) => Ok(()),
        _ => Err(Invalid::new("avatar_url", "must be an http:// or https:// URL")),
    }
}

/// At most 100 keys after the update; keys 1-64 characters, values up to 1024.
pub fn validate_preferences(prefs: &BTreeMap<String, String>) -> Result<(), Invalid> {
    if prefs.len() > 100 {
        return Err(Invalid::new("preferences", "at most 100 entries"));
    }
    for (k, v) in prefs {
        if k.is_empty() || k.chars().count() > 64 {
            return Err(Invalid::new("preferences", "keys must be 1-64 characters"));
        }
        if v.chars().count() > 1024 {
            return Err(Invalid::new(
                "preferences",
                format!("value of {k:?} must be at most 1024 characters"),
            ));
        }
    }
    Ok(())
}

/// The unique-index key of an email: case-insensitive.
pub fn normalize_email(email: &str) -> String {
    email.to_lowercase()
}

/// The unique-index key of a username: case-insensitive, so "Alice" cannot shadow "alice".
pub fn normalize_username(username: &str) -> String {
    username.to_ascii_lowercase()
}

/// A plain active user, for unit tests and the fuzz targets.
#[doc(hidden)]
pub fn sample_user(id: u64, version: i64) -> User {
    User {
        id,
        email: format!("u{id}@example.com"),
        username: format!("user{id}"),
        first_name: String::new(),
        last_name: String::new(),
        created_at: 0,
        updated_at: 0,
        last_login: None,
        status: Status::Active,
        roles: Roles::only(Role::User),
        avatar_url: String::new(),
        bio: String::new(),
        preferences: BTreeMap::new(),
        version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_follow_local_at_domain() {
        for ok in ["a@b.co", "first.last+tag@sub.example.org", "X@EXAMPLE.COM"] {
            assert!(validate_email(ok).is_ok(), "{ok} should be valid");
        }
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a b@c.com",
            "a@-b.com",
            "a@b..com",
        ] {
            assert!(validate_email(bad).is_err(), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn usernames_are_3_to_32_of_the_allowed_set() {
        assert!(validate_username("ab").is_err());
        assert!(validate_username("abc").is_ok());
        assert!(validate_username(&"a".repeat(32)).is_ok());
        assert!(validate_username(&"a".repeat(33)).is_err());
        assert!(validate_username("a.b-c_D9").is_ok());
        assert!(validate_username("a b").is_err());
        assert!(validate_username("émile").is_err());
    }

    #[test]
    fn roles_round_trip_through_the_mask() {
        let mut r = Roles::only(Role::User);
        r.insert(Role::Publisher);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![Role::User, Role::Publisher]);
        assert!(!r.is_staff());
        assert!(Roles::only(Role::Moderator).is_staff());
    }
}
