//! Every invalid field is refused with INVALID_ARGUMENT naming it.

use super::*;

async fn validation_errors_name_the_field(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db, &[]).await;
    let admin = s.admin_token().await;
    let mut c = s.users();
    let cases: Vec<(CreateUserRequest, &str)> = vec![
        (
            CreateUserRequest {
                email: "not-an-email".into(),
                ..new_user("bob")
            },
            "email",
        ),
        (
            CreateUserRequest {
                email: String::new(),
                ..new_user("bob")
            },
            "email",
        ),
        (
            CreateUserRequest {
                username: "ab".into(),
                ..new_user("bob")
            },
            "username",
        ),
        (
            CreateUserRequest {
                username: "bad name".into(),
                ..new_user("bob")
            },
            "username",
        ),
        (
            CreateUserRequest {
                password: "short".into(),
                ..new_user("bob")
            },
            "password",
        ),
        (
            CreateUserRequest {
                first_name: "x".repeat(101),
                ..new_user("bob")
            },
            "first_name",
        ),
        (
            CreateUserRequest {
                roles: vec![99],
                ..new_user("bob")
            },
            "roles",
        ),
    ];
    for (req, field) in cases {
        assert_status(
            c.create_user(authed(req, &admin)).await,
            Code::InvalidArgument,
            field,
        );
    }
    assert_status(
        c.get_user(authed(GetUserRequest { identifier: None }, &admin))
            .await,
        Code::InvalidArgument,
        "identifier",
    );
    let u = c
        .create_user(authed(new_user("bob"), &admin))
        .await
        .unwrap()
        .into_inner();
    for (req, field) in [
        (
            UpdateUserRequest {
                user_id: 0,
                ..Default::default()
            },
            "user_id",
        ),
        (
            UpdateUserRequest {
                user_id: u.id,
                status: Some(UserStatus::Deleted as i32),
                ..Default::default()
            },
            "status",
        ),
        (
            UpdateUserRequest {
                user_id: u.id,
                status: Some(42),
                ..Default::default()
            },
            "status",
        ),
        (
            UpdateUserRequest {
                user_id: u.id,
                avatar_url: Some("ftp://x".into()),
                ..Default::default()
            },
            "avatar_url",
        ),
        (
            UpdateUserRequest {
                user_id: u.id,
                username: Some("!".into()),
                ..Default::default()
            },
            "username",
        ),
        (
            UpdateUserRequest {
                user_id: u.id,
                bio: Some("b".repeat(1001)),
                ..Default::default()
            },
            "bio",
        ),
    ] {
        assert_status(
            c.update_user(authed(req, &admin)).await,
            Code::InvalidArgument,
            field,
        );
    }
    for (req, field) in [
        (
            ListUsersRequest {
                limit: 1001,
                ..Default::default()
            },
            "limit",
        ),
        (
            ListUsersRequest {
                page_token: "nope".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            ListUsersRequest {
                status: 17,
                ..Default::default()
            },
            "status",
        ),
    ] {
        assert_status(
            c.list_users(authed(req, &admin)).await,
            Code::InvalidArgument,
            field,
        );
    }
    s.stop().await;
}

dual!(validation_errors_name_the_field,);
