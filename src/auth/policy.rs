//! The authorization table of the spec, in one place. Every RPC handler describes its
//! call as a [`Call`] and asks [`authorize`]; nothing else decides who may do what.

use crate::{
    error::ApiError,
    model::{Principal, Role},
};

/// An RPC, with the facts its row of the table depends on.
#[derive(Clone, Copy, Debug)]
pub enum Call {
    /// CreateUser; `elevated` when it asks for any role beyond USER_ROLE_USER.
    CreateUser {
        /// Asks for roles beyond a plain user.
        elevated: bool,
    },
    /// BulkCreateUsers.
    BulkCreateUsers,
    /// GetUser; `target` is `None` when no live user matched.
    GetUser {
        /// The user looked up.
        target: Option<u64>,
    },
    /// UpdateUser; `sets_status` when the request carries `status`, `sets_roles` when
    /// it carries `roles`.
    UpdateUser {
        /// The user changed.
        target: u64,
        /// The request sets `status` (admins only).
        sets_status: bool,
        /// The request sets `roles` (admins only).
        sets_roles: bool,
    },
    /// DeleteUser.
    DeleteUser {
        /// The user deleted; `None` when no live user matched.
        target: Option<u64>,
    },
    /// ListUsers and StreamUsers.
    ListUsers,
    /// UserActivity for one user, or `0` for all.
    WatchUser {
        /// The watched user, 0 = everyone.
        target: u64,
    },
    /// Publish and PublishStream.
    Publish,
    /// Subscribe, ListEvents and GetCursor of a recipient's stream.
    ReadEvents {
        /// The recipient.
        recipient: u64,
    },
    /// WhoAmI, ChangePassword: the caller's own account.
    OwnAccount,
    /// Logout of a session of `owner`.
    EndSession {
        /// The user whose session ends.
        owner: u64,
    },
    /// SetPassword.
    SetPassword,
}

/// Decides `call` for `caller` (`None` = no token). UNAUTHENTICATED when a token is needed
/// and missing, PERMISSION_DENIED when the caller is known but not allowed.
pub fn authorize(caller: Option<&Principal>, call: Call, open_signup: bool) -> Result<(), ApiError> {
    if let Call::CreateUser { elevated } = call {
        if caller.is_some_and(|p| p.roles.has(Role::Admin)) {
            return Ok(());
        }
        if open_signup {
            return if elevated {
                Err(denied(
                    "open sign-up creates plain users only; only admins grant roles",
                ))
            } else {
                Ok(())
            };
        }
    }
    let Some(p) = caller else {
        return Err(ApiError::Unauthenticated(
            "missing credentials: send metadata 'authorization: Bearer <access_token>' (get one from auth.v1.AuthService/Login)"
                .into(),
        ));
    };
    let admin = p.roles.has(Role::Admin);
    let staff = admin || p.roles.has(Role::Moderator);
    let allowed = match call {
        Call::CreateUser { .. } | Call::BulkCreateUsers => admin,
        Call::GetUser { target } => staff || target == Some(p.user_id),
        Call::UpdateUser {
            target,
            sets_status,
            sets_roles,
        } => admin || (target == p.user_id && !sets_status && !sets_roles),
        Call::DeleteUser { target } => admin || target == Some(p.user_id),
        Call::ListUsers => staff,
        Call::WatchUser { target } => staff || (target != 0 && target == p.user_id),
        Call::Publish => admin || p.roles.has(Role::Publisher),
        Call::ReadEvents { recipient } => admin || recipient == p.user_id,
        Call::OwnAccount => true,
        Call::EndSession { owner } => admin || owner == p.user_id,
        Call::SetPassword => admin,
    };
    if allowed {
        return Ok(());
    }
    Err(denied(match call {
        Call::CreateUser { .. } | Call::BulkCreateUsers => "only admins may create users",
        Call::GetUser { .. } => "you may read only your own user",
        Call::UpdateUser {
            sets_status: true, ..
        } => "only admins may set status",
        Call::UpdateUser { sets_roles: true, .. } => "only admins may set roles",
        Call::UpdateUser { .. } => "you may update only your own user",
        Call::DeleteUser { .. } => "you may delete only your own user",
        Call::ListUsers => "only admins and moderators may list users",
        Call::WatchUser { .. } => "you may watch only your own activity",
        Call::Publish => "only admins and publishers may publish",
        Call::ReadEvents { .. } => "you may read only your own events",
        Call::OwnAccount => unreachable!("every authenticated caller owns their account"),
        Call::EndSession { .. } => "you may end only your own sessions",
        Call::SetPassword => "only admins may set another user's password",
    }))
}

fn denied(msg: &'static str) -> ApiError {
    ApiError::PermissionDenied(msg.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Roles;
    use tonic::Code;

    fn p(id: u64, role: Role) -> Principal {
        Principal {
            user_id: id,
            roles: Roles::only(role),
            session_id: "s".into(),
        }
    }

    fn code(r: Result<(), ApiError>) -> Option<Code> {
        r.err().map(|e| e.code())
    }

    #[test]
    fn table_rows() {
        let (user, admin, moder, publ) = (
            p(1, Role::User),
            p(2, Role::Admin),
            p(3, Role::Moderator),
            p(4, Role::Publisher),
        );
        use Code::*;
        let cases: Vec<(Option<&Principal>, Call, bool, Option<Code>)> = vec![
            (
                None,
                Call::CreateUser { elevated: false },
                false,
                Some(Unauthenticated),
            ),
            (None, Call::CreateUser { elevated: false }, true, None),
            (
                None,
                Call::CreateUser { elevated: true },
                true,
                Some(PermissionDenied),
            ),
            (
                Some(&user),
                Call::CreateUser { elevated: false },
                false,
                Some(PermissionDenied),
            ),
            (Some(&admin), Call::CreateUser { elevated: true }, false, None),
            (Some(&user), Call::GetUser { target: Some(1) }, false, None),
            (
                Some(&user),
                Call::GetUser { target: Some(2) },
                false,
                Some(PermissionDenied),
            ),
            (
                Some(&user),
                Call::GetUser { target: None },
                false,
                Some(PermissionDenied),
            ),
            (Some(&moder), Call::GetUser { target: Some(1) }, false, None),
            (
                Some(&moder),
                Call::UpdateUser {
                    target: 1,
                    sets_status: false,
                    sets_roles: false,
                },
                false,
                Some(PermissionDenied),
            ),
            (
                Some(&user),
                Call::UpdateUser {
                    target: 1,
                    sets_status: true,
                    sets_roles: false,
                },
                false,
                Some(PermissionDenied),
            ),
            (
                Some(&admin),
                Call::UpdateUser {
                    target: 1,
                    sets_status: true,
                    sets_roles: false,
                },
                false,
                None,
            ),
            (
                Some(&moder),
                Call::DeleteUser { target: Some(1) },
                false,
                Some(PermissionDenied),
            ),
            (Some(&user), Call::DeleteUser { target: Some(1) }, false, None),
            (Some(&moder), Call::ListUsers, false, None),
            (Some(&publ), Call::ListUsers, false, Some(PermissionDenied)),
            (Some(&user), Call::WatchUser { target: 1 }, false, None),
            (
                Some(&user),
                Call::WatchUser { target: 0 },
                false,
                Some(PermissionDenied),
            ),
            (Some(&moder), Call::WatchUser { target: 0 }, false, None),
            (Some(&publ), Call::Publish, false, None),
            (Some(&moder), Call::Publish, false, Some(PermissionDenied)),
            (Some(&user), Call::ReadEvents { recipient: 1 }, false, None),
            (
                Some(&moder),
                Call::ReadEvents { recipient: 1 },
                false,
                Some(PermissionDenied),
            ),
            (Some(&admin), Call::ReadEvents { recipient: 1 }, false, None),
            (
                Some(&user),
                Call::UpdateUser {
                    target: 1,
                    sets_status: false,
                    sets_roles: true,
                },
                false,
                Some(PermissionDenied),
            ),
            (
                Some(&admin),
                Call::UpdateUser {
                    target: 1,
                    sets_status: false,
                    sets_roles: true,
                },
                false,
                None,
            ),
            (Some(&user), Call::OwnAccount, false, None),
            (None, Call::OwnAccount, false, Some(Unauthenticated)),
            (Some(&user), Call::EndSession { owner: 1 }, false, None),
            (
                Some(&user),
                Call::EndSession { owner: 2 },
                false,
                Some(PermissionDenied),
            ),
            (Some(&admin), Call::EndSession { owner: 1 }, false, None),
            (Some(&admin), Call::SetPassword, false, None),
            (Some(&moder), Call::SetPassword, false, Some(PermissionDenied)),
            (
                None,
                Call::ReadEvents { recipient: 1 },
                false,
                Some(Unauthenticated),
            ),
        ];
        for (caller, call, open, want) in cases {
            assert_eq!(
                code(authorize(caller, call, open)),
                want,
                "{caller:?} {call:?} open={open}"
            );
        }
    }
}
