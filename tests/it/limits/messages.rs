//! Message and header size limits.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_are_refused_cleanly() {
    let db = TestDb::new(Backend::Sqlite).await;
    let s = TestServer::start(
        &db,
        &[
            "--max-decode-message-bytes",
            "65536",
            "--max-encode-message-bytes",
            "4096",
            "--max-payload-bytes",
            "2048",
        ],
    )
    .await;
    let token = s.admin_token().await;
    // A unary request over the decode limit.
    let big = CreateUserRequest {
        email: "big@example.com".into(),
        username: "big".into(),
        password: PASSWORD.into(),
        first_name: "x".repeat(100_000),
        ..Default::default()
    };
    assert_status(
        s.users().create_user(authed(big, &token)).await,
        Code::ResourceExhausted,
        "--max-decode-message-bytes",
    );
    // A payload over --max-payload-bytes, inside the decode limit.
    let me = 1;
    assert_status(
        publish(&s, &token, event_req(&[me], "t", vec![0u8; 3000])).await,
        Code::ResourceExhausted,
        "payload",
    );
    // An oversized message on a stream ends that stream with the same clear status.
    let (tx, rx) = tokio::sync::mpsc::channel::<PublishRequest>(4);
    tx.send(event_req(&[me], "t", vec![1u8; 100_000])).await.unwrap();
    let res = client(&s.channel)
        .publish_stream(authed(tokio_stream::wrappers::ReceiverStream::new(rx), &token))
        .await;
    let status = match res {
        Err(e) => e,
        Ok(r) => r
            .into_inner()
            .message()
            .await
            .expect_err("the stream ends with an error"),
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("--max-decode-message-bytes"),
        "{status:?}"
    );
    // A response over the encode limit: 3 events of 2 KiB in one ListEvents page.
    for i in 0..3 {
        publish(&s, &token, event_req(&[me], "t", vec![i as u8; 2000]))
            .await
            .unwrap();
    }
    let page = client(&s.channel)
        .list_events(authed(
            ListEventsRequest {
                user_id: me,
                after_seq: 0,
                limit: 10,
                types: vec![],
            },
            &token,
        ))
        .await;
    assert_status(page, Code::ResourceExhausted, "--max-encode-message-bytes");
    // The connection and server are fine afterwards.
    s.users()
        .get_user(authed(crate::helpers::by_id(me), &token))
        .await
        .expect("normal calls still work");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_header_list_is_refused_and_others_carry_on() {
    let db = TestDb::new(Backend::Sqlite).await;
    let s = TestServer::start(&db, &["--http2-max-header-list-bytes", "4096"]).await;
    let token = s.admin_token().await;
    let mut req = authed(crate::helpers::by_id(1), &token);
    req.metadata_mut()
        .insert("x-padding", "a".repeat(8192).parse().unwrap());
    let res = tokio::time::timeout(Duration::from_secs(10), s.users().get_user(req))
        .await
        .expect("answered, not hung");
    assert!(res.is_err(), "an 8 KiB header passed a 4 KiB limit: {res:?}");
    // A normal header list on the same server is fine.
    completes_calls(&s, &token, 5).await;
    s.stop().await;
}
