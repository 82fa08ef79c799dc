//! Accounts and sessions (spec "Accounts and sessions"): refresh-token rotation with
//! reuse detection, Logout, ChangePassword, SetPassword, WhoAmI, roles through
//! UpdateUser.roles, sessions ended by suspension, and revocation reaching another
//! server of a PostgreSQL deployment within 2 s.

use std::time::Duration;

use activity_hub::proto::{
    activity::v1::{activity_service_client::ActivityServiceClient, PublishRequest},
    auth::v1::{
        login_request::Identifier, ChangePasswordRequest, LoginRequest, LoginResponse, LogoutRequest,
        RefreshRequest, SetPasswordRequest,
    },
    user::v1::{RoleSet, UpdateUserRequest, User, UserRole, UserStatus},
};
use tonic::{Code, Request, Status};

use crate::{
    dual,
    helpers::{assert_status, authed, eventually, skip_without_pg, Backend, TestDb, TestServer, PASSWORD},
};

dual!(
    refresh_rotates_and_a_reused_token_revokes_the_session,
    logout_ends_that_session_only,
    change_password_ends_the_other_sessions,
    set_password_ends_every_session,
    roles_change_through_update_user_and_apply_on_the_next_call,
    suspension_ends_sessions_for_good,
);

async fn session(s: &TestServer, email: &str, password: &str) -> LoginResponse {
    s.login_session(email, password).await
}

async fn refresh(s: &TestServer, token: &str) -> Result<LoginResponse, Status> {
    // No bearer token: Refresh authenticates with the refresh token alone.
    s.auth()
        .refresh(RefreshRequest {
            refresh_token: token.into(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn whoami(s: &TestServer, access: &str) -> Result<User, Status> {
    s.auth()
        .who_am_i(authed((), access))
        .await
        .map(|r| r.into_inner())
}

async fn live(s: &TestServer, access: &str) {
    whoami(s, access).await.expect("the session is live");
}

#[track_caller]
fn ended<T: std::fmt::Debug>(r: Result<T, Status>) {
    assert_status(r, Code::Unauthenticated, "");
}

async fn refresh_rotates_and_a_reused_token_revokes_the_session(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db, &[]).await;
    let (ivy, _) = s.user_with_token("ivy", &[]).await;
    let email = "ivy@example.com";
    let first = session(&s, email, PASSWORD).await;
    assert!(!first.refresh_token.is_empty(), "Login returns a refresh token");
    let refresh_exp = first.refresh_expires_at.as_ref().expect("refresh_expires_at");
    assert!(refresh_exp.seconds > first.expires_at.as_ref().unwrap().seconds);
    assert_eq!(whoami(&s, &first.access_token).await.unwrap().id, ivy.id);

    let second = refresh(&s, &first.refresh_token)
        .await
        .expect("a live token rotates");
    assert_ne!(second.refresh_token, first.refresh_token, "a new refresh token");
    assert_eq!(second.user.as_ref().unwrap().id, ivy.id);
    live(&s, &second.access_token).await;
    let third = refresh(&s, &second.refresh_token).await.expect("and again");
    live(&s, &third.access_token).await;

    // Another session of the same user, untouched by what follows.
    let other = session(&s, email, PASSWORD).await;

    // The first token was spent: presenting it again is theft detection.
    assert_status(
        refresh(&s, &first.refresh_token).await,
        Code::Unauthenticated,
        "already used",
    );
    ended(whoami(&s, &third.access_token).await);
    ended(whoami(&s, &first.access_token).await);
    ended(refresh(&s, &third.refresh_token).await);
    live(&s, &other.access_token).await;
    refresh(&s, &other.refresh_token)
        .await
        .expect("the other session still rotates");

    assert_status(refresh(&s, "").await, Code::InvalidArgument, "refresh_token");
    assert_status(
        refresh(&s, "ahr_not-a-token").await,
        Code::Unauthenticated,
        "refresh_token",
    );
    s.stop().await;
}

async fn logout_ends_that_session_only(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db, &[]).await;
    s.user_with_token("ivy", &[]).await;
    s.user_with_token("joe", &[]).await;
    let (phone, laptop, tablet) = (
        session(&s, "ivy@example.com", PASSWORD).await,
        session(&s, "ivy@example.com", PASSWORD).await,
        session(&s, "ivy@example.com", PASSWORD).await,
    );
    let jo = session(&s, "joe@example.com", PASSWORD).await;
    let logout = |token: &str| LogoutRequest {
        refresh_token: token.into(),
    };

    assert_status(
        s.auth().logout(Request::new(logout(""))).await,
        Code::Unauthenticated,
        "",
    );
    // The caller's own session.
    s.auth()
        .logout(authed(logout(""), &phone.access_token))
        .await
        .unwrap();
    ended(whoami(&s, &phone.access_token).await);
    ended(refresh(&s, &phone.refresh_token).await);
    live(&s, &laptop.access_token).await;

    // Another session of the caller's, named by its refresh token.
    s.auth()
        .logout(authed(logout(&tablet.refresh_token), &laptop.access_token))
        .await
        .unwrap();
    ended(whoami(&s, &tablet.access_token).await);
    live(&s, &laptop.access_token).await;

    // Someone else's session: refused, and it stays live.
    assert_status(
        s.auth()
            .logout(authed(logout(&jo.refresh_token), &laptop.access_token))
            .await,
        Code::PermissionDenied,
        "",
    );
    live(&s, &jo.access_token).await;
    assert_status(
        s.auth()
            .logout(authed(logout("ahr_nothing"), &laptop.access_token))
            .await,
        Code::Unauthenticated,
        "refresh_token",
    );
    // An admin may end anyone's session.
    let admin = s.admin_token().await;
    s.auth()
        .logout(authed(logout(&jo.refresh_token), &admin))
        .await
        .unwrap();
    ended(whoami(&s, &jo.access_token).await);
    s.stop().await;
}

async fn change_password_ends_the_other_sessions(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db, &[]).await;
    s.user_with_token("ivy", &[]).await;
    let email = "ivy@example.com";
    let (here, elsewhere) = (
        session(&s, email, PASSWORD).await,
        session(&s, email, PASSWORD).await,
    );
    let change = |old: &str, new: &str| ChangePasswordRequest {
        old_password: old.into(),
        new_password: new.into(),
    };
    assert_status(
        s.auth()
            .change_password(authed(
                change("wrong-password", "new-password-1"),
                &here.access_token,
            ))
            .await,
        Code::Unauthenticated,
        "old_password",
    );
    assert_status(
        s.auth()
            .change_password(authed(change(PASSWORD, "short"), &here.access_token))
            .await,
        Code::InvalidArgument,
        "new_password",
    );
    assert_status(
        s.auth()
            .change_password(Request::new(change(PASSWORD, "new-password-1")))
            .await,
        Code::Unauthenticated,
        "",
    );
    live(&s, &elsewhere.access_token).await;

    s.auth()
        .change_password(authed(change(PASSWORD, "new-password-1"), &here.access_token))
        .await
        .unwrap();
    live(&s, &here.access_token).await;
    refresh(&s, &here.refresh_token)
        .await
        .expect("the session that changed the password goes on");
    ended(whoami(&s, &elsewhere.access_token).await);
    ended(refresh(&s, &elsewhere.refresh_token).await);
    assert_status(
        s.auth()
            .login(LoginRequest {
                identifier: Some(Identifier::Email(email.into())),
                password: PASSWORD.into(),
            })
            .await,
        Code::Unauthenticated,
        "",
    );
    session(&s, email, "new-password-1").await;
    s.stop().await;
}

async fn set_password_ends_every_session(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db, &[]).await;
    let (ivy, _) = s.user_with_token("ivy", &[]).await;
    let (_, mod_token) = s.user_with_token("moe", &[UserRole::Moderator]).await;
    let admin = s.admin_token().await;
    let mine = session(&s, "ivy@example.com", PASSWORD).await;
    let set = |user_id: u64, new: &str| SetPasswordRequest {
        user_id,
        new_password: new.into(),
    };
    assert_status(
        s.auth()
            .set_password(authed(set(ivy.id, "reset-password-1"), &mod_token))
            .await,
        Code::PermissionDenied,
        "",
    );
    assert_status(
        s.auth().set_password(authed(set(ivy.id, "short"), &admin)).await,
        Code::InvalidArgument,
        "new_password",
    );
    assert_status(
        s.auth()
            .set_password(authed(set(987_654, "reset-password-1"), &admin))
            .await,
        Code::NotFound,
        "",
    );
    live(&s, &mine.access_token).await;
    s.auth()
        .set_password(authed(set(ivy.id, "reset-password-1"), &admin))
        .await
        .unwrap();
    ended(whoami(&s, &mine.access_token).await);
    ended(refresh(&s, &mine.refresh_token).await);
    session(&s, "ivy@example.com", "reset-password-1").await;
    s.stop().await;
}

async fn roles_change_through_update_user_and_apply_on_the_next_call(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db, &[]).await;
    let (ivy, ivy_token) = s.user_with_token("ivy", &[]).await;
    let admin = s.admin_token().await;
    let admin_id = whoami(&s, &admin).await.unwrap().id;
    let roles = |user_id: u64, roles: &[UserRole]| UpdateUserRequest {
        user_id,
        roles: Some(RoleSet {
            roles: roles.iter().map(|r| *r as i32).collect(),
        }),
        ..Default::default()
    };
    let publish = || PublishRequest {
        recipient_ids: vec![ivy.id],
        r#type: "note".into(),
        ..Default::default()
    };
    let mut activity = ActivityServiceClient::new(s.channel.clone());
    assert_status(
        activity.publish(authed(publish(), &ivy_token)).await,
        Code::PermissionDenied,
        "",
    );
    assert_status(
        s.users()
            .update_user(authed(roles(ivy.id, &[UserRole::Publisher]), &ivy_token))
            .await,
        Code::PermissionDenied,
        "roles",
    );
    let updated = s
        .users()
        .update_user(authed(
            roles(ivy.id, &[UserRole::User, UserRole::Publisher]),
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        updated.roles,
        vec![UserRole::User as i32, UserRole::Publisher as i32]
    );
    // The same token, no new login: the role applies on the next call.
    activity
        .publish(authed(publish(), &ivy_token))
        .await
        .expect("a publisher now");
    assert_eq!(
        whoami(&s, &ivy_token).await.unwrap().roles,
        updated.roles,
        "WhoAmI shows the roles as stored now"
    );
    s.users()
        .update_user(authed(roles(ivy.id, &[UserRole::User]), &admin))
        .await
        .unwrap();
    assert_status(
        activity.publish(authed(publish(), &ivy_token)).await,
        Code::PermissionDenied,
        "",
    );

    assert_status(
        s.users().update_user(authed(roles(ivy.id, &[]), &admin)).await,
        Code::InvalidArgument,
        "roles",
    );
    let mut unspecified = roles(ivy.id, &[]);
    unspecified.roles = Some(RoleSet { roles: vec![0] });
    assert_status(
        s.users().update_user(authed(unspecified, &admin)).await,
        Code::InvalidArgument,
        "roles",
    );
    assert_status(
        s.users()
            .update_user(authed(roles(admin_id, &[UserRole::Moderator]), &admin))
            .await,
        Code::FailedPrecondition,
        "own admin role",
    );
    assert!(whoami(&s, &admin)
        .await
        .unwrap()
        .roles
        .contains(&(UserRole::Admin as i32)));
    s.stop().await;
}

async fn suspension_ends_sessions_for_good(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db, &[]).await;
    let (ivy, _) = s.user_with_token("ivy", &[]).await;
    let admin = s.admin_token().await;
    let mine = session(&s, "ivy@example.com", PASSWORD).await;
    let status = |st: UserStatus| UpdateUserRequest {
        user_id: ivy.id,
        status: Some(st as i32),
        ..Default::default()
    };
    s.users()
        .update_user(authed(status(UserStatus::Suspended), &admin))
        .await
        .unwrap();
    ended(whoami(&s, &mine.access_token).await);
    ended(refresh(&s, &mine.refresh_token).await);
    // Re-activated: the old session stays ended (it was revoked, not paused).
    s.users()
        .update_user(authed(status(UserStatus::Active), &admin))
        .await
        .unwrap();
    ended(whoami(&s, &mine.access_token).await);
    ended(refresh(&s, &mine.refresh_token).await);
    live(&s, &session(&s, "ivy@example.com", PASSWORD).await.access_token).await;
    s.stop().await;
}

/// Two servers on one PostgreSQL database: a session ended on one is refused on the
/// other within 2 s (the spec's bound), though the other had already accepted it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reaches_every_server_within_two_seconds() {
    if skip_without_pg("sessions::revocation_reaches_every_server_within_two_seconds") {
        return;
    }
    let db = TestDb::new(Backend::Postgres).await;
    let a = TestServer::start(&db, &[]).await;
    let b = TestServer::start(&db, &[]).await;
    a.user_with_token("ivy", &[]).await;
    let admin = a.admin_token().await;
    for how in ["logout", "set-password", "reuse"] {
        let mine = session(&a, "ivy@example.com", PASSWORD).await;
        // B knows the session as live before it ends.
        live(&b, &mine.access_token).await;
        match how {
            "logout" => {
                a.auth()
                    .logout(authed(LogoutRequest::default(), &mine.access_token))
                    .await
                    .unwrap();
            }
            "set-password" => {
                let ivy = whoami(&a, &mine.access_token).await.unwrap().id;
                a.auth()
                    .set_password(authed(
                        SetPasswordRequest {
                            user_id: ivy,
                            new_password: PASSWORD.into(),
                        },
                        &admin,
                    ))
                    .await
                    .unwrap();
            }
            _ => {
                refresh(&a, &mine.refresh_token).await.unwrap();
                ended(refresh(&a, &mine.refresh_token).await);
            }
        }
        let ended_on_b = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ended_on_b.clone();
        let channel = b.channel.clone();
        let token = mine.access_token.clone();
        let prober = tokio::spawn(async move {
            loop {
                let r = activity_hub::proto::auth::v1::auth_service_client::AuthServiceClient::new(
                    channel.clone(),
                )
                .who_am_i(authed((), &token))
                .await;
                if r.is_err_and(|s| s.code() == Code::Unauthenticated) {
                    flag.store(true, std::sync::atomic::Ordering::SeqCst);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        eventually(
            Duration::from_secs(2),
            &format!("the session ended by {how} on A is refused on B"),
            || ended_on_b.load(std::sync::atomic::Ordering::SeqCst),
        )
        .await;
        prober.abort();
    }
    a.stop().await;
    b.stop().await;
}
