//! `user.v1.UserService`: every request as the server decodes it, through the same
//! validation, conversion and authorization its handler runs before the store.
//!
//! Input: `[rpc, flags, caller, request...]`. rpc % 8: 0 GetUser, 1 DeleteUser,
//! 2 CreateUser, 3 UpdateUser, 4 ListUsers, 5 StreamUsers, 6 BulkCreateUsers (stream),
//! 7 UserActivity (stream); with the high bit, the request is built field by field.
//! flags: bit 0 open sign-up, bit 1 authenticated, bits 2-5 the caller's roles.
#![no_main]

use std::collections::BTreeMap;

use activity_hub::{
    api::users::{
        convert,
        service::{create_request, elevated, update_call, update_changes, watch_request, UserApi},
    },
    auth::policy::Call,
    model::{self, Principal, Role, Roles, Status, User, WatchChange},
    proto::user::v1 as pb,
    store::{PageStart, UserKey},
    users::{validate_changes, validate_new, CreateUser},
};
use activity_hub_fuzz::{
    authorized, enum_value, list as items, map, principal, refused, stream, user_id, Input,
};
use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::Code;

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::split(data) else {
        return;
    };
    let open_signup = input.flags & 1 != 0;
    let caller = principal(input.flags & 2 != 0, &input, input.flags >> 2);
    let caller = caller.as_ref();
    match input.rpc % 8 {
        0 => get_or_delete(&input.unary(build_get), caller, false),
        1 => get_or_delete(&input.unary(build_get), caller, true),
        2 => {
            if let Ok(req) = pb::CreateUserRequest::decode(&*input.unary(build_create)) {
                create(req, caller, open_signup);
            }
        }
        3 => {
            if let Ok(req) = pb::UpdateUserRequest::decode(&*input.unary(build_update)) {
                update(req, caller);
            }
        }
        4 => list(&input.unary(build_list), caller, 50),
        5 => list(&input.unary(build_list), caller, 100),
        6 => bulk_create(&input.stream(build_create), caller),
        _ => user_activity(&input.stream(build_activity), caller, open_signup),
    }
});

fn build_get(u: &mut Unstructured<'_>) -> Result<pb::GetUserRequest> {
    use pb::get_user_request::Identifier;
    let identifier = match u.int_in_range(0..=3)? {
        0 => None,
        1 => Some(Identifier::UserId(user_id(u)?)),
        2 => Some(Identifier::Email(u.arbitrary()?)),
        _ => Some(Identifier::Username(u.arbitrary()?)),
    };
    Ok(pb::GetUserRequest { identifier })
}

fn build_create(u: &mut Unstructured<'_>) -> Result<pb::CreateUserRequest> {
    Ok(pb::CreateUserRequest {
        email: u.arbitrary()?,
        username: u.arbitrary()?,
        password: u.arbitrary()?,
        first_name: u.arbitrary()?,
        last_name: u.arbitrary()?,
        roles: items(u, 6, enum_value)?,
    })
}

fn build_update(u: &mut Unstructured<'_>) -> Result<pb::UpdateUserRequest> {
    Ok(pb::UpdateUserRequest {
        user_id: user_id(u)?,
        username: u.arbitrary()?,
        first_name: u.arbitrary()?,
        last_name: u.arbitrary()?,
        bio: u.arbitrary()?,
        preferences: map(u, 110)?,
        status: if u.arbitrary()? {
            Some(enum_value(u)?)
        } else {
            None
        },
        avatar_url: u.arbitrary()?,
        roles: if u.arbitrary()? {
            Some(pb::RoleSet {
                roles: items(u, 6, enum_value)?,
            })
        } else {
            None
        },
    })
}

fn build_list(u: &mut Unstructured<'_>) -> Result<pb::ListUsersRequest> {
    Ok(pb::ListUsersRequest {
        page: u.arbitrary()?,
        limit: u.arbitrary()?,
        status: enum_value(u)?,
        search: u.arbitrary()?,
        page_token: u.arbitrary()?,
    })
}

fn build_activity(u: &mut Unstructured<'_>) -> Result<pb::UserActivityRequest> {
    Ok(pb::UserActivityRequest {
        action: enum_value(u)?,
        user_id: user_id(u)?,
    })
}

/// GetUser and DeleteUser (both take a GetUserRequest). The store's answer is played by
/// the key itself: an id finds that user, a name finds user `len(name)`.
fn get_or_delete(body: &[u8], caller: Option<&Principal>, delete: bool) {
    let Ok(req) = pb::GetUserRequest::decode(body) else {
        return;
    };
    let key = match convert::user_key(&req) {
        Ok(k) => k,
        Err(e) => return refused(e, &[Code::InvalidArgument]),
    };
    use pb::get_user_request::Identifier;
    let found = match (&key, &req.identifier) {
        (UserKey::Id(id), Some(Identifier::UserId(w))) => {
            assert!(*id != 0 && id == w);
            *id
        }
        (UserKey::Email(e), Some(Identifier::Email(w)))
        | (UserKey::Username(e), Some(Identifier::Username(w))) => {
            assert!(!e.is_empty() && e == w);
            e.len() as u64
        }
        other => panic!("key {other:?} does not match the request"),
    };
    let call = |target| {
        if delete {
            Call::DeleteUser { target }
        } else {
            Call::GetUser { target }
        }
    };
    if caller.is_none() {
        assert!(!authorized(None, call(None), false));
        return;
    }
    authorized(caller, call(Some(found)), false);
    authorized(caller, call(None), false);
}

fn create(req: pb::CreateUserRequest, caller: Option<&Principal>, open_signup: bool) {
    let asks_elevated = elevated(&req);
    assert_eq!(asks_elevated, req.roles.iter().any(|&r| r != Role::User as i32));
    if authorized(
        caller,
        Call::CreateUser {
            elevated: asks_elevated,
        },
        open_signup,
    ) {
        validate_create(req);
    }
}

/// One CreateUser or BulkCreateUsers entry: roles, then the fields. What passes is
/// checked against the spec's rules.
fn validate_create(req: pb::CreateUserRequest) {
    let wire_roles = req.roles.clone();
    let c: CreateUser = match create_request(req) {
        Ok(c) => c,
        Err(e) => {
            assert!(wire_roles.iter().any(|r| !(1..=4).contains(r)));
            return refused(e, &[Code::InvalidArgument]);
        }
    };
    let mut mask = 0u32;
    for r in &wire_roles {
        assert!((1..=4).contains(r), "role {r} accepted");
        mask |= 1 << r;
    }
    assert_eq!(c.roles, Roles(mask));
    if let Err(e) = validate_new(&c) {
        return refused(e, &[Code::InvalidArgument]);
    }
    check_email(&c.email);
    check_username(&c.username);
    let chars = c.password.chars().count();
    assert!(
        chars >= 8 && c.password.len() <= 1024,
        "password of {chars} chars accepted"
    );
    check_text(&c.first_name, 100);
    check_text(&c.last_name, 100);
}

fn check_email(email: &str) {
    assert!(!email.is_empty() && email.len() <= 254, "email {email:?}");
    assert!(
        !email.chars().any(|c| c.is_whitespace() || c.is_control()),
        "email {email:?}"
    );
    let (local, domain) = email.rsplit_once('@').expect("an @");
    assert!(
        !local.is_empty() && local.len() <= 64 && !local.contains('@'),
        "email {email:?}"
    );
    assert!(
        domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.'),
        "email {email:?}"
    );
    // The unique index folds case: the key still names the same address shape.
    assert!(model::normalize_email(email).contains('@'));
}

fn check_username(u: &str) {
    assert!((3..=32).contains(&u.len()), "username {u:?}");
    assert!(
        u.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)),
        "username {u:?}"
    );
    assert_eq!(model::normalize_username(u).len(), u.len());
}

fn check_text(t: &str, max_chars: usize) {
    assert!(
        t.chars().count() <= max_chars,
        "{} chars accepted",
        t.chars().count()
    );
    assert!(
        !t.chars().any(|c| c.is_control() && c != '\n'),
        "control character accepted in {t:?}"
    );
}

fn update(req: pb::UpdateUserRequest, caller: Option<&Principal>) {
    let call = match update_call(&req) {
        Ok(c) => c,
        Err(e) => {
            assert_eq!(req.user_id, 0);
            return refused(e, &[Code::InvalidArgument]);
        }
    };
    if !authorized(caller, call, false) {
        return;
    }
    let wire = req.clone();
    let changes = match update_changes(req) {
        Ok(c) => c,
        Err(e) => {
            let bad_status = wire.status.is_some_and(|s| Status::from_i32(s).is_none());
            let bad_roles = wire.roles.as_ref().is_some_and(|set| {
                set.roles.is_empty() || set.roles.iter().any(|&r| Role::from_i32(r).is_none())
            });
            assert!(bad_status || bad_roles, "refused {wire:?}: {e}");
            return refused(e, &[Code::InvalidArgument]);
        }
    };
    assert_eq!(changes.status.map(|s| s as i32), wire.status);
    if let (Some(set), Some(roles)) = (&wire.roles, changes.roles) {
        let want: Vec<Role> = Role::ALL
            .into_iter()
            .filter(|r| set.roles.contains(&(*r as i32)))
            .collect();
        assert_eq!(roles.iter().collect::<Vec<_>>(), want);
    }
    if let Err(e) = validate_changes(&changes) {
        return refused(e, &[Code::InvalidArgument]);
    }
    if let Some(u) = &changes.username {
        check_username(u);
    }
    for (v, max) in [
        (&changes.first_name, 100),
        (&changes.last_name, 100),
        (&changes.bio, 1000),
    ] {
        if let Some(v) = v {
            check_text(v, max);
        }
    }
    if let Some(url) = changes.avatar_url.as_deref().filter(|u| !u.is_empty()) {
        assert!(url.len() <= 2048 && (url.starts_with("https://") || url.starts_with("http://")));
    }
    assert_ne!(changes.status, Some(Status::Deleted));

    // The store applies the changes to the current user, then checks the preferences.
    let current = user(wire.user_id);
    let next = changes.apply(&current);
    assert_eq!(
        (next.id, next.email.as_str()),
        (current.id, current.email.as_str())
    );
    for (k, v) in &changes.preferences {
        assert_eq!(
            next.preferences.get(k),
            (!v.is_empty()).then_some(v),
            "preference {k:?}"
        );
    }
    for (k, v) in &current.preferences {
        if !changes.preferences.contains_key(k) {
            assert_eq!(next.preferences.get(k), Some(v));
        }
    }
    match model::validate_preferences(&next.preferences) {
        Ok(()) => {
            assert!(next.preferences.len() <= 100);
            for (k, v) in &next.preferences {
                assert!((1..=64).contains(&k.chars().count()) && v.chars().count() <= 1024);
            }
        }
        Err(e) => refused(e.into(), &[Code::InvalidArgument]),
    }
}

/// The stored user an update applies to: a few preferences already set.
fn user(id: u64) -> User {
    User {
        preferences: BTreeMap::from([("theme".into(), "dark".into()), ("a".into(), "b".into())]),
        ..model::sample_user(id, 1)
    }
}

/// ListUsers and StreamUsers (the same selection, different default page sizes).
fn list(body: &[u8], caller: Option<&Principal>, default_limit: u32) {
    let Ok(req) = pb::ListUsersRequest::decode(body) else {
        return;
    };
    if !authorized(caller, Call::ListUsers, false) {
        return;
    }
    let (filter, start, limit) = match UserApi::selection(&req, default_limit) {
        Ok(s) => s,
        Err(e) => return refused(e, &[Code::InvalidArgument]),
    };
    assert_eq!(limit, if req.limit == 0 { default_limit } else { req.limit });
    assert!((1..=1000).contains(&limit));
    assert_eq!(filter.status.map_or(0, |s| s as i32), req.status);
    assert_ne!(filter.status, Some(Status::Deleted));
    let search = req.search.trim();
    assert_eq!(filter.search.as_deref(), (!search.is_empty()).then_some(search));
    assert!(search.chars().count() <= 256);
    match start {
        PageStart::AfterId(id) => {
            assert!(!req.page_token.is_empty());
            // The token the next page would carry leads back to the same row.
            let token = convert::page_token(id, &filter);
            assert_eq!(convert::parse_page_token(&token, &filter).ok(), Some(id));
        }
        PageStart::Offset(n) => {
            assert!(req.page_token.is_empty());
            assert_eq!(n, u64::from(req.page.max(1) - 1) * u64::from(limit));
        }
    }
    // A token this selection issued is accepted by it, and only by the same filter.
    let id = u64::from(req.page) << 7 | u64::from(limit);
    let again = pb::ListUsersRequest {
        page_token: convert::page_token(id, &filter),
        ..req.clone()
    };
    match UserApi::selection(&again, default_limit) {
        Ok((_, PageStart::AfterId(got), _)) => assert_eq!(got, id),
        other => panic!("own page token refused: {:?}", other.map(|(_, s, _)| s)),
    }
    let other_status = pb::ListUsersRequest {
        status: if req.status == 1 { 2 } else { 1 },
        ..again
    };
    match UserApi::selection(&other_status, default_limit) {
        Err(e) => refused(e, &[Code::InvalidArgument]),
        Ok(_) => panic!("a page token was accepted for another status"),
    }
}

fn bulk_create(body: &[u8], caller: Option<&Principal>) {
    if !authorized(caller, Call::BulkCreateUsers, false) {
        return;
    }
    let (items, _broken) = stream::<pb::CreateUserRequest>(body);
    for item in items {
        validate_create(item);
    }
}

fn user_activity(body: &[u8], caller: Option<&Principal>, open_signup: bool) {
    let Some(p) = caller else {
        assert!(!authorized(None, Call::WatchUser { target: 0 }, open_signup));
        return;
    };
    let (requests, _broken) = stream::<pb::UserActivityRequest>(body);
    for req in requests {
        match watch_request(p, open_signup, &req) {
            Ok(WatchChange::Add(target)) => {
                assert_eq!((req.action, target), (1, req.user_id));
                assert!(p.roles.is_staff() || target == p.user_id);
            }
            Ok(WatchChange::Remove(target)) => assert_eq!((req.action, target), (2, req.user_id)),
            Err(e) => {
                // The watcher ends the stream at its first refused request.
                let code = if req.action == 1 {
                    Code::PermissionDenied
                } else {
                    Code::InvalidArgument
                };
                return refused(e, &[code]);
            }
        }
    }
}
