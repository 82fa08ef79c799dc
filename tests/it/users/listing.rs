//! Listing users: offset and keyset paging, search and status filters, StreamUsers and
//! BulkCreate.

use super::*;

async fn paging_offset_keyset_search_and_status(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db, &[]).await;
    let admin = s.admin_token().await;
    let mut c = s.users();
    let mut ids = vec![];
    for i in 0..25 {
        ids.push(
            c.create_user(authed(new_user(&format!("page{i:02}")), &admin))
                .await
                .unwrap()
                .into_inner()
                .id,
        );
    }
    // Offset paging (the admin is user 1 and is listed too: 26 users).
    let offset_page = |page| ListUsersRequest {
        page,
        limit: 10,
        ..Default::default()
    };
    let p2 = c
        .list_users(authed(offset_page(2), &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((p2.total, p2.has_more, p2.users.len()), (26, true, 10));
    let p3 = c
        .list_users(authed(offset_page(3), &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((p3.has_more, p3.users.len()), (false, 6));

    // Keyset paging stays stable while users are inserted between pages.
    let req = ListUsersRequest {
        limit: 7,
        search: "page".into(),
        ..Default::default()
    };
    let mut seen = vec![];
    let mut token = String::new();
    let mut inserted = 0;
    loop {
        let page = c
            .list_users(authed(
                ListUsersRequest {
                    page_token: token.clone(),
                    ..req.clone()
                },
                &admin,
            ))
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.users.iter().map(|u| u.id));
        // New users land after every page boundary; they must not shift or repeat rows.
        c.create_user(authed(new_user(&format!("pagenew{inserted}")), &admin))
            .await
            .unwrap();
        inserted += 1;
        if !page.has_more {
            break;
        }
        assert!(!page.next_page_token.is_empty());
        token = page.next_page_token;
    }
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(seen, sorted, "ascending, no duplicates");
    for id in &ids {
        assert!(seen.contains(id), "user {id} was skipped by keyset paging");
    }
    // A token only works with the filter it was issued for.
    let first = c
        .list_users(authed(req.clone(), &admin))
        .await
        .unwrap()
        .into_inner();
    let other = ListUsersRequest {
        page_token: first.next_page_token,
        search: "other".into(),
        ..req.clone()
    };
    assert_status(
        c.list_users(authed(other, &admin)).await,
        Code::InvalidArgument,
        "page_token",
    );

    // Search matches email, username, first and last names, case-insensitively.
    let hits = |search: &str| ListUsersRequest {
        search: search.into(),
        limit: 100,
        ..Default::default()
    };
    let r = c
        .list_users(authed(hits("PAGE07"), &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.users.iter().map(|u| u.id).collect::<Vec<_>>(), vec![ids[7]]);
    let r = c
        .list_users(authed(hits("firstpage1"), &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.total, 10, "first names firstpage10..19");
    let r = c
        .list_users(authed(hits("_"), &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.total, 0, "LIKE wildcards in search are literal");

    // Status filter.
    let upd = UpdateUserRequest {
        user_id: ids[3],
        status: Some(UserStatus::Suspended as i32),
        ..Default::default()
    };
    c.update_user(authed(upd, &admin)).await.unwrap();
    let r = c
        .list_users(authed(
            ListUsersRequest {
                status: UserStatus::Suspended as i32,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.users.iter().map(|u| u.id).collect::<Vec<_>>(), vec![ids[3]]);
    s.stop().await;
}

async fn stream_users_sends_the_selection_and_stops_on_cancel(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db, &[]).await;
    let admin = s.admin_token().await;
    let bulk: Vec<CreateUserRequest> = (0..300).map(|i| new_user(&format!("str{i:03}"))).collect();
    let r = s
        .users()
        .bulk_create_users(authed(tokio_stream::iter(bulk), &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.created, 300);

    // The same selection as ListUsers, one user per message.
    let req = ListUsersRequest {
        search: "str1".into(),
        limit: 1000,
        ..Default::default()
    };
    let mut stream = s
        .users()
        .stream_users(authed(req, &admin))
        .await
        .unwrap()
        .into_inner();
    let mut got = vec![];
    while let Some(u) = stream.message().await.unwrap() {
        got.push(u.username);
    }
    assert_eq!(got, (100..200).map(|i| format!("str{i}")).collect::<Vec<_>>());

    // A client with a tiny flow-control window reads one user and cancels: the server
    // stops producing long before the 300 users it selected.
    let slow = s.slow_reader_channel().await;
    let before = s.stream_stats.sent.load(std::sync::atomic::Ordering::SeqCst);
    let mut client = activity_hub::proto::user::v1::user_service_client::UserServiceClient::new(slow);
    let req = ListUsersRequest {
        limit: 1000,
        ..Default::default()
    };
    let mut stream = client
        .stream_users(authed(req, &admin))
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
    drop(stream);
    let stats = s.stream_stats.clone();
    eventually(
        Duration::from_secs(10),
        "StreamUsers producer to stop after cancel",
        || stats.active.load(std::sync::atomic::Ordering::SeqCst) == 0,
    )
    .await;
    let sent = s.stream_stats.sent.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(
        sent < 150,
        "producer kept going after cancel: sent {sent} of 301 users"
    );
    s.stop().await;
}

async fn bulk_create_reports_each_bad_entry(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db, &[]).await;
    let admin = s.admin_token().await;
    let entries = vec![
        new_user("dave"),
        CreateUserRequest {
            email: "broken".into(),
            ..new_user("erin")
        },
        new_user("frank"),
        CreateUserRequest {
            username: "dave2".into(),
            ..new_user("dave")
        },
        CreateUserRequest {
            password: "x".into(),
            ..new_user("gina")
        },
        new_user("hank"),
    ];
    let r = s
        .users()
        .bulk_create_users(authed(tokio_stream::iter(entries), &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.created, r.failed), (3, 3));
    assert_eq!(
        r.users.iter().map(|u| u.username.as_str()).collect::<Vec<_>>(),
        vec!["dave", "frank", "hank"]
    );
    let errs: Vec<(u32, i32)> = r.errors.iter().map(|e| (e.index, e.code)).collect();
    assert_eq!(
        errs,
        vec![
            (1, Code::InvalidArgument as i32),
            (3, Code::AlreadyExists as i32),
            (4, Code::InvalidArgument as i32)
        ]
    );
    for (e, field) in r.errors.iter().zip(["email", "email", "password"]) {
        assert!(e.error.contains(field), "error {:?} should name {field}", e.error);
    }
    assert_eq!(r.errors[0].email, "broken");
    s.stop().await;
}

dual!(
    paging_offset_keyset_search_and_status,
    stream_users_sends_the_selection_and_stops_on_cancel,
    bulk_create_reports_each_bad_entry,
);
