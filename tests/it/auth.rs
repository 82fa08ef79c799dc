//! Login, tokens and the authorization table over a real server.

use activity_hub::proto::{
    auth::v1::{login_request::Identifier as LoginId, LoginRequest},
    user::v1::{
        get_user_request::Identifier, CreateUserRequest, GetUserRequest, ListUsersRequest, UpdateUserRequest,
        UserRole, UserStatus,
    },
};
use tonic::{Code, Request};

use crate::{
    dual,
    helpers::{
        assert_status, authed, by_id, Backend, TestDb, TestServer, ADMIN_EMAIL, ADMIN_PASSWORD, PASSWORD,
    },
};

fn login_req(id: LoginId, password: &str) -> LoginRequest {
    LoginRequest {
        identifier: Some(id),
        password: password.into(),
    }
}

async fn login_issues_tokens_and_records_last_login(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db, &[]).await;
    let (user, _) = s.user_with_token("ivy", &[]).await;
    let mut a = s.auth();
    let r = a
        .login(login_req(LoginId::Username("IVY".into()), PASSWORD))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.user.as_ref().unwrap().id, user.id);
    assert!(r.user.unwrap().last_login.is_some(), "last_login is set by login");
    assert!(r.expires_at.unwrap().seconds > 0);
    let got = s
        .users()
        .get_user(authed(by_id(user.id), &r.access_token))
        .await
        .unwrap()
        .into_inner();
    assert!(got.last_login.is_some(), "GetUser shows last_login");

    // Wrong password and unknown account look the same.
    let wrong = a
        .login(login_req(
            LoginId::Email("ivy@example.com".into()),
            "wrong-password",
        ))
        .await;
    assert_status(wrong, Code::Unauthenticated, "invalid credentials");
    let unknown = a
        .login(login_req(LoginId::Email("nobody@example.com".into()), PASSWORD))
        .await;
    assert_status(unknown, Code::Unauthenticated, "invalid credentials");
    assert_status(
        a.login(LoginRequest {
            identifier: None,
            password: "x".into(),
        })
        .await,
        Code::InvalidArgument,
        "identifier",
    );
    assert_status(
        a.login(login_req(LoginId::Email("ivy@example.com".into()), ""))
            .await,
        Code::InvalidArgument,
        "password",
    );

    // Suspended users cannot log in, and their existing tokens stop working at once.
    let admin = s.admin_token().await;
    let upd = UpdateUserRequest {
        user_id: user.id,
        status: Some(UserStatus::Suspended as i32),
        ..Default::default()
    };
    s.users().update_user(authed(upd, &admin)).await.unwrap();
    assert_status(
        a.login(login_req(LoginId::Username("ivy".into()), PASSWORD))
            .await,
        Code::Unauthenticated,
        "",
    );
    assert_status(
        s.users().get_user(authed(by_id(user.id), &r.access_token)).await,
        Code::Unauthenticated,
        "not active",
    );

    // Deleted users cannot log in either.
    let (other, other_token) = s.user_with_token("jack", &[]).await;
    s.users()
        .delete_user(authed(by_id(other.id), &other_token))
        .await
        .unwrap();
    assert_status(
        a.login(login_req(LoginId::Username("jack".into()), PASSWORD))
            .await,
        Code::Unauthenticated,
        "",
    );
    assert_status(
        s.users().get_user(authed(by_id(other.id), &other_token)).await,
        Code::Unauthenticated,
        "",
    );
    s.stop().await;
}

async fn authorization_table(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db, &[]).await;
    let (user, user_t) = s.user_with_token("kate", &[]).await;
    let (other, _) = s.user_with_token("liam", &[]).await;
    let (_, mod_t) = s.user_with_token("mona", &[UserRole::Moderator]).await;
    let (_, pub_t) = s.user_with_token("ned", &[UserRole::Publisher]).await;
    let admin_t = s.admin_token().await;
    let mut c = s.users();
    use Code::{PermissionDenied as Denied, Unauthenticated as Unauth};

    // No token, a garbage token, a malformed header: UNAUTHENTICATED everywhere.
    assert_status(
        c.get_user(Request::new(by_id(user.id))).await,
        Unauth,
        "authorization",
    );
    assert_status(
        c.get_user(authed(by_id(user.id), "garbage")).await,
        Unauth,
        "invalid",
    );
    let mut bad = Request::new(by_id(user.id));
    bad.metadata_mut()
        .insert("authorization", "Basic abc".parse().unwrap());
    assert_status(c.get_user(bad).await, Unauth, "Bearer");
    assert_status(
        c.list_users(Request::new(ListUsersRequest::default())).await,
        Unauth,
        "",
    );
    assert_status(c.delete_user(Request::new(by_id(user.id))).await, Unauth, "");
    assert_status(
        c.update_user(Request::new(UpdateUserRequest {
            user_id: user.id,
            ..Default::default()
        }))
        .await,
        Unauth,
        "",
    );
    let anon_create = CreateUserRequest {
        email: "anon@example.com".into(),
        username: "anon".into(),
        password: PASSWORD.into(),
        ..Default::default()
    };
    assert_status(c.create_user(Request::new(anon_create.clone())).await, Unauth, "");
    assert_status(
        c.bulk_create_users(Request::new(tokio_stream::iter(vec![anon_create.clone()])))
            .await,
        Unauth,
        "",
    );

    // CreateUser / BulkCreateUsers: admin only.
    for t in [&user_t, &mod_t, &pub_t] {
        assert_status(
            c.create_user(authed(anon_create.clone(), t)).await,
            Denied,
            "admin",
        );
        assert_status(
            c.bulk_create_users(authed(tokio_stream::iter(vec![anon_create.clone()]), t))
                .await,
            Denied,
            "",
        );
    }
    // GetUser: self, moderator, admin; another user's id, email or username: denied.
    assert!(c.get_user(authed(by_id(user.id), &user_t)).await.is_ok());
    assert_status(c.get_user(authed(by_id(other.id), &user_t)).await, Denied, "own");
    let by_mail = GetUserRequest {
        identifier: Some(Identifier::Email("liam@example.com".into())),
    };
    assert_status(c.get_user(authed(by_mail, &user_t)).await, Denied, "");
    let ghost = GetUserRequest {
        identifier: Some(Identifier::Email("ghost@example.com".into())),
    };
    assert_status(c.get_user(authed(ghost.clone(), &user_t)).await, Denied, "");
    assert_status(c.get_user(authed(ghost, &mod_t)).await, Code::NotFound, "");
    assert!(c.get_user(authed(by_id(other.id), &mod_t)).await.is_ok());
    assert_status(c.get_user(authed(by_id(other.id), &pub_t)).await, Denied, "");
    // UpdateUser: self or admin; status: admin only.
    let bio = |id| UpdateUserRequest {
        user_id: id,
        bio: Some("b".into()),
        ..Default::default()
    };
    assert!(c.update_user(authed(bio(user.id), &user_t)).await.is_ok());
    assert_status(c.update_user(authed(bio(other.id), &user_t)).await, Denied, "own");
    assert_status(c.update_user(authed(bio(other.id), &mod_t)).await, Denied, "");
    assert!(c.update_user(authed(bio(other.id), &admin_t)).await.is_ok());
    let status = UpdateUserRequest {
        user_id: user.id,
        status: Some(UserStatus::Active as i32),
        ..Default::default()
    };
    assert_status(
        c.update_user(authed(status.clone(), &user_t)).await,
        Denied,
        "status",
    );
    assert!(c.update_user(authed(status, &admin_t)).await.is_ok());
    // ListUsers / StreamUsers: admin, moderator.
    for t in [&user_t, &pub_t] {
        assert_status(
            c.list_users(authed(ListUsersRequest::default(), t)).await,
            Denied,
            "",
        );
        assert_status(
            c.stream_users(authed(ListUsersRequest::default(), t)).await,
            Denied,
            "",
        );
    }
    assert!(c
        .list_users(authed(ListUsersRequest::default(), &mod_t))
        .await
        .is_ok());
    assert!(c
        .stream_users(authed(ListUsersRequest::default(), &mod_t))
        .await
        .is_ok());
    // DeleteUser: self or admin.
    assert_status(c.delete_user(authed(by_id(other.id), &user_t)).await, Denied, "");
    assert_status(c.delete_user(authed(by_id(other.id), &mod_t)).await, Denied, "");
    assert!(c.delete_user(authed(by_id(other.id), &admin_t)).await.is_ok());
    // A role granted later takes effect with the same token; roles are read per call.
    assert_status(
        c.list_users(authed(ListUsersRequest::default(), &user_t)).await,
        Denied,
        "",
    );
    s.stop().await;
}

async fn open_signup_creates_plain_users_only(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db, &["--open-signup"]).await;
    let mut c = s.users();
    let req = CreateUserRequest {
        email: "new@example.com".into(),
        username: "newbie".into(),
        password: PASSWORD.into(),
        ..Default::default()
    };
    let u = c
        .create_user(Request::new(req.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u.roles, vec![UserRole::User as i32]);
    let elevated = CreateUserRequest {
        email: "sneaky@example.com".into(),
        username: "sneaky".into(),
        roles: vec![UserRole::Admin as i32],
        ..req.clone()
    };
    assert_status(
        c.create_user(Request::new(elevated.clone())).await,
        Code::PermissionDenied,
        "plain users",
    );
    let token = s.login("new@example.com", PASSWORD).await;
    assert_status(
        c.create_user(authed(elevated.clone(), &token)).await,
        Code::PermissionDenied,
        "",
    );
    // Bulk creation stays admin-only even with open sign-up.
    assert_status(
        c.bulk_create_users(Request::new(tokio_stream::iter(vec![req])))
            .await,
        Code::Unauthenticated,
        "",
    );
    s.stop().await;
}

async fn restart_keeps_users_and_tokens(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db, &[]).await;
    let (user, token) = s.user_with_token("olga", &[]).await;
    s.stop().await;
    let s = TestServer::start(&db, &[]).await;
    let got = s
        .users()
        .get_user(authed(by_id(user.id), &token))
        .await
        .expect("token from before the restart");
    assert_eq!(got.into_inner().email, "olga@example.com");
    // The bootstrap admin is created once, not again.
    let admin = s.admin_token().await;
    let admins = s
        .users()
        .list_users(authed(
            ListUsersRequest {
                search: "admin".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(admins.total, 1);
    assert_eq!(admins.users[0].email, ADMIN_EMAIL);
    let _ = ADMIN_PASSWORD;
    s.stop().await;
}

dual!(
    login_issues_tokens_and_records_last_login,
    authorization_table,
    open_signup_creates_plain_users_only,
    restart_keeps_users_and_tokens,
);
