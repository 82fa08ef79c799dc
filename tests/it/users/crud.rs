//! CRUD round trip, concurrent creates (exactly one wins) and soft delete.

use super::*;

async fn crud_round_trip(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db, &[]).await;
    let admin = s.admin_token().await;
    let mut c = s.users();

    let u = c
        .create_user(authed(new_user("alice"), &admin))
        .await
        .unwrap()
        .into_inner();
    assert!(u.id > 0);
    assert_eq!(u.status, UserStatus::Active as i32, "new users are active");
    assert_eq!(u.roles, vec![UserRole::User as i32], "roles default to [USER]");
    assert!(u.created_at.is_some() && u.last_login.is_none());

    let got = c
        .get_user(authed(by_id(u.id), &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, u);
    let by_email = GetUserRequest {
        identifier: Some(Identifier::Email("ALICE@Example.COM".into())),
    };
    assert_eq!(
        c.get_user(authed(by_email, &admin))
            .await
            .unwrap()
            .into_inner()
            .id,
        u.id,
        "email is case-insensitive"
    );
    let by_name = GetUserRequest {
        identifier: Some(Identifier::Username("alice".into())),
    };
    assert_eq!(
        c.get_user(authed(by_name, &admin)).await.unwrap().into_inner().id,
        u.id
    );

    // Only present fields change; an empty preference value removes the key.
    let upd = UpdateUserRequest {
        user_id: u.id,
        bio: Some("hello".into()),
        preferences: HashMap::from([("theme".into(), "dark".into()), ("lang".into(), "en".into())]),
        ..Default::default()
    };
    let u2 = c.update_user(authed(upd, &admin)).await.unwrap().into_inner();
    assert_eq!((u2.bio.as_str(), u2.first_name.as_str()), ("hello", "Firstalice"));
    assert_eq!(u2.preferences.len(), 2);
    let upd = UpdateUserRequest {
        user_id: u.id,
        first_name: Some("Alicia".into()),
        preferences: HashMap::from([("theme".into(), String::new()), ("tz".into(), "UTC".into())]),
        ..Default::default()
    };
    let u3 = c.update_user(authed(upd, &admin)).await.unwrap().into_inner();
    assert_eq!(u3.first_name, "Alicia");
    assert_eq!(u3.bio, "hello", "absent fields are unchanged");
    assert_eq!(
        u3.preferences,
        HashMap::from([
            ("lang".to_string(), "en".to_string()),
            ("tz".to_string(), "UTC".to_string())
        ])
    );
    // The cache serves the updated user, not the first read.
    assert_eq!(
        c.get_user(authed(by_id(u.id), &admin))
            .await
            .unwrap()
            .into_inner()
            .first_name,
        "Alicia"
    );

    c.delete_user(authed(by_id(u.id), &admin)).await.unwrap();
    assert_status(c.get_user(authed(by_id(u.id), &admin)).await, Code::NotFound, "");
    assert_status(
        c.delete_user(authed(by_id(u.id), &admin)).await,
        Code::NotFound,
        "",
    );
    let upd = UpdateUserRequest {
        user_id: u.id,
        bio: Some("x".into()),
        ..Default::default()
    };
    assert_status(c.update_user(authed(upd, &admin)).await, Code::NotFound, "");
    s.stop().await;
}

async fn concurrent_creates_exactly_one_wins(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db, &[]).await;
    let admin = s.admin_token().await;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let mut c = s.users();
            let admin = admin.clone();
            // Same email in different cases, different usernames.
            let req = CreateUserRequest {
                email: if i % 2 == 0 {
                    "race@example.com".into()
                } else {
                    "RACE@example.com".into()
                },
                ..new_user(&format!("racer{i}"))
            };
            tokio::spawn(async move { c.create_user(authed(req, &admin)).await })
        })
        .collect();
    let mut winners = vec![];
    for t in tasks {
        match t.await.unwrap() {
            Ok(u) => winners.push(u.into_inner()),
            Err(st) => {
                assert_eq!(st.code(), Code::AlreadyExists, "{st:?}");
                assert!(
                    st.message().contains("email"),
                    "names the field: {}",
                    st.message()
                );
            }
        }
    }
    assert_eq!(winners.len(), 1, "exactly one concurrent create wins");
    // Usernames are unique case-insensitively as well.
    let dup = CreateUserRequest {
        email: "other@example.com".into(),
        ..new_user(&winners[0].username.to_uppercase())
    };
    assert_status(
        s.users().create_user(authed(dup, &admin)).await,
        Code::AlreadyExists,
        "username",
    );
    s.stop().await;
}

async fn soft_delete_frees_email_and_username(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db, &[]).await;
    let admin = s.admin_token().await;
    let mut c = s.users();
    let first = c
        .create_user(authed(new_user("carol"), &admin))
        .await
        .unwrap()
        .into_inner();
    c.delete_user(authed(by_id(first.id), &admin)).await.unwrap();
    let list = c
        .list_users(authed(ListUsersRequest::default(), &admin))
        .await
        .unwrap()
        .into_inner();
    assert!(
        list.users.iter().all(|u| u.id != first.id),
        "deleted users are not listed"
    );
    let again = c
        .create_user(authed(new_user("carol"), &admin))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(again.id, first.id, "ids are never reused");
    s.stop().await;
}

dual!(
    crud_round_trip,
    concurrent_creates_exactly_one_wins,
    soft_delete_frees_email_and_username,
);
