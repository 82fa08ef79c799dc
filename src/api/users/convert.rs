//! Conversions between the wire (`user.v1`) and the user domain, and the keyset page
//! token format. The only place that knows both shapes.

use crate::{
    error::ApiError,
    model::{ChangeKind, Role, Roles, Status, User, UserChange},
    proto::user::v1::{self as pb, user_activity_event::Kind},
    store::{ListFilter, UserKey},
};

/// A protobuf timestamp from microseconds since the epoch.
pub fn timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

impl From<&User> for pb::User {
    fn from(u: &User) -> pb::User {
        pb::User {
            id: u.id,
            email: u.email.clone(),
            username: u.username.clone(),
            first_name: u.first_name.clone(),
            last_name: u.last_name.clone(),
            created_at: Some(timestamp(u.created_at)),
            updated_at: Some(timestamp(u.updated_at)),
            last_login: u.last_login.map(timestamp),
            status: u.status as i32,
            roles: u.roles.iter().map(|r| r as i32).collect(),
            avatar_url: u.avatar_url.clone(),
            bio: u.bio.clone(),
            preferences: u
                .preferences
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

impl From<ChangeKind> for Kind {
    fn from(k: ChangeKind) -> Kind {
        match k {
            ChangeKind::Created => Kind::Created,
            ChangeKind::Updated => Kind::Updated,
            ChangeKind::Deleted => Kind::Deleted,
            ChangeKind::LoggedIn => Kind::LoggedIn,
        }
    }
}

impl From<&UserChange> for pb::UserActivityEvent {
    fn from(c: &UserChange) -> pb::UserActivityEvent {
        pb::UserActivityEvent {
            kind: Kind::from(c.kind) as i32,
            user_id: c.user_id,
            user: Some(pb::User::from(&c.user)),
            occurred_at: Some(timestamp(c.occurred_at)),
        }
    }
}

/// The identifier of a GetUser/DeleteUser request.
pub fn user_key(req: &pb::GetUserRequest) -> Result<UserKey, ApiError> {
    use pb::get_user_request::Identifier;
    match &req.identifier {
        Some(Identifier::UserId(0)) | None => Err(ApiError::invalid(
            "identifier",
            "set one of user_id (non-zero), email or username",
        )),
        Some(Identifier::UserId(id)) => Ok(UserKey::Id(*id)),
        Some(Identifier::Email(e)) if e.is_empty() => Err(ApiError::invalid("email", "is empty")),
        Some(Identifier::Email(e)) => Ok(UserKey::Email(e.clone())),
        Some(Identifier::Username(u)) if u.is_empty() => Err(ApiError::invalid("username", "is empty")),
        Some(Identifier::Username(u)) => Ok(UserKey::Username(u.clone())),
    }
}

/// Wire roles to a set; UNSPECIFIED or unknown numbers are INVALID_ARGUMENT.
pub fn roles(wire: &[i32]) -> Result<Roles, ApiError> {
    let mut set = Roles::default();
    for &n in wire {
        let role =
            Role::from_i32(n).ok_or_else(|| ApiError::invalid("roles", format!("unknown role {n}")))?;
        set.insert(role);
    }
    Ok(set)
}

/// The roles an UpdateUser sets: like [`roles`], and not empty.
pub fn role_set(wire: &[i32]) -> Result<Roles, ApiError> {
    if wire.is_empty() {
        return Err(ApiError::invalid(
            "roles",
            "must hold at least one role (USER_ROLE_USER for a plain user)",
        ));
    }
    roles(wire)
}

/// A wire status where UNSPECIFIED means "no filter".
pub fn status_filter(n: i32) -> Result<Option<Status>, ApiError> {
    match n {
        0 => Ok(None),
        4 => Err(ApiError::invalid("status", "deleted users are not listed")),
        n => Status::from_i32(n)
            .map(Some)
            .ok_or_else(|| ApiError::invalid("status", format!("unknown status {n}"))),
    }
}

/// A set status in an update; UNSPECIFIED or unknown numbers are INVALID_ARGUMENT.
pub fn status_value(n: i32) -> Result<Status, ApiError> {
    Status::from_i32(n).ok_or_else(|| ApiError::invalid("status", format!("unknown status {n}")))
}

fn filter_fingerprint(f: &ListFilter) -> u64 {
    // FNV-1a: stable across processes and versions, unlike std's RandomState.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let status = f.status.map(|s| s as i32).unwrap_or(0).to_string();
    for b in status
        .bytes()
        .chain([0])
        .chain(f.search.as_deref().unwrap_or("").bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The opaque `next_page_token` after the row `last_id`.
pub fn page_token(last_id: u64, f: &ListFilter) -> String {
    format!("k1.{last_id}.{:016x}", filter_fingerprint(f))
}

/// The id after which the page starts; INVALID_ARGUMENT when the token is malformed or
/// was made for another status/search.
pub fn parse_page_token(token: &str, f: &ListFilter) -> Result<u64, ApiError> {
    let bad = || ApiError::invalid("page_token", "is not a token returned by ListUsers");
    let mut parts = token.split('.');
    let (Some("k1"), Some(id), Some(fp), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let id: u64 = id.parse().map_err(|_| bad())?;
    if fp != format!("{:016x}", filter_fingerprint(f)) {
        return Err(ApiError::invalid(
            "page_token",
            "was issued for a different status or search",
        ));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_are_bound_to_their_filter() {
        let f = ListFilter {
            status: None,
            search: Some("ann".into()),
        };
        let t = page_token(42, &f);
        assert_eq!(parse_page_token(&t, &f).unwrap(), 42);
        let other = ListFilter {
            status: None,
            search: Some("bob".into()),
        };
        assert!(parse_page_token(&t, &other).is_err());
        assert!(parse_page_token("garbage", &f).is_err());
    }

    #[test]
    fn timestamps_keep_microseconds() {
        let t = timestamp(1_700_000_000_123_456);
        assert_eq!((t.seconds, t.nanos), (1_700_000_000, 123_456_000));
    }
}
