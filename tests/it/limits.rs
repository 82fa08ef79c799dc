//! Rate limits, message size limits, HTTP/2 abuse (rapid reset, stream hoarding), dead
//! peers found by keepalive, unary load shedding, and deadlines.

use std::{net::IpAddr, time::Duration};

use activity_hub::proto::{
    activity::v1::{ListEventsRequest, PublishRequest},
    auth::v1::{auth_service_client::AuthServiceClient, login_request::Identifier, LoginRequest},
    user::v1::CreateUserRequest,
};
use sqlx::Connection;
use tokio::io::AsyncWriteExt;
use tonic::{transport::Channel, Code};

use crate::{
    activity::dsl::{client, event_req, publish, start, Sub},
    dual,
    helpers::{assert_status, authed, eventually, Backend, TestDb, TestServer, ADMIN_EMAIL, PASSWORD},
};

fn retry_after_ms(s: &tonic::Status) -> u64 {
    s.metadata()
        .get("retry-after-ms")
        .unwrap_or_else(|| panic!("no retry-after-ms on {s:?}"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_user_is_limited_while_another_is_not() {
    let db = TestDb::new(Backend::Sqlite).await;
    let s = TestServer::start(&db, &["--user-rate-limit", "5", "--user-rate-burst", "5"]).await;
    let (flooder, flood_token) = s.user_with_token("flooder", &[]).await;
    let (calm, calm_token) = s.user_with_token("calm", &[]).await;
    let mut users = s.users();
    let mut limited = None;
    for _ in 0..20 {
        match users
            .get_user(authed(crate::helpers::by_id(flooder.id), &flood_token))
            .await
        {
            Ok(_) => {}
            Err(e) => {
                limited = Some(e);
                break;
            }
        }
    }
    let e = limited.expect("20 calls at once exceed a burst of 5");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("rate limited"), "{e:?}");
    let wait = retry_after_ms(&e);
    assert!(
        wait > 0 && wait <= 200,
        "5/s refills a token within 200 ms: {wait}"
    );
    // The other user is not affected.
    for _ in 0..5 {
        users
            .get_user(authed(crate::helpers::by_id(calm.id), &calm_token))
            .await
            .expect("another user is not limited");
    }
    // The hint is honest: after waiting it, the flooder gets through again.
    tokio::time::sleep(Duration::from_millis(wait + 20)).await;
    users
        .get_user(authed(crate::helpers::by_id(flooder.id), &flood_token))
        .await
        .expect("after retry-after-ms the call succeeds");
    s.stop().await;
}

fn login_req(email: &str, password: &str) -> LoginRequest {
    LoginRequest {
        identifier: Some(Identifier::Email(email.into())),
        password: password.into(),
    }
}

async fn channel_from(s: &TestServer, local: &str) -> Channel {
    Channel::from_shared(format!("http://{}", s.addr))
        .unwrap()
        .local_address(Some(local.parse::<IpAddr>().unwrap()))
        .connect()
        .await
        .expect("connect from a second loopback address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_guessing_is_limited_per_address_and_identifier() {
    let db = TestDb::new(Backend::Sqlite).await;
    let s = TestServer::start(&db, &["--login-rate-limit", "3", "--login-rate-burst", "3"]).await;
    let (victim, _) = s.user_with_token("victim", &[]).await;
    let mut auth = AuthServiceClient::new(channel_from(&s, "127.0.0.3").await);
    for _ in 0..3 {
        assert_status(
            auth.login(login_req(&victim.email, "guess-guess")).await,
            Code::Unauthenticated,
            "invalid credentials",
        );
    }
    // Even the right password is refused now, from this address, for this account.
    let e = auth.login(login_req(&victim.email, PASSWORD)).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("login attempts"), "{e:?}");
    let wait = retry_after_ms(&e);
    assert!(
        wait > 10_000 && wait <= 20_000,
        "3/min refills one attempt in 20 s: {wait}"
    );
    // The same address may still log in to another account ...
    auth.login(login_req(ADMIN_EMAIL, crate::helpers::ADMIN_PASSWORD))
        .await
        .expect("another identifier is not limited");
    // ... and the account owner, from another address, is not locked out.
    AuthServiceClient::new(channel_from(&s, "127.0.0.4").await)
        .login(login_req(&victim.email, PASSWORD))
        .await
        .expect("another address is not limited");
    s.stop().await;
}

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

/// A well-behaved client on its own connection keeps completing calls.
async fn completes_calls(s: &TestServer, token: &str, n: usize) {
    let ch = Channel::from_shared(format!("http://{}", s.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut users = activity_hub::proto::user::v1::user_service_client::UserServiceClient::new(ch);
    for _ in 0..n {
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            users.get_user(authed(crate::helpers::by_id(1), token)),
        )
        .await
        .expect("a well-behaved call completes within 10 s");
        r.expect("and succeeds");
    }
}

fn grpc_request(path: &str, token: &str) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_flood_does_not_stop_other_clients() {
    let db = TestDb::new(Backend::Sqlite).await;
    let s = TestServer::start(&db, &[]).await;
    let token = s.admin_token().await;
    let addr = s.addr;
    let flood = tokio::spawn(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut h2, conn) = h2::client::handshake(tcp).await.unwrap();
        let conn = tokio::spawn(conn);
        let mut sent = 0u32;
        for _ in 0..20_000 {
            let Ok(ready) = h2.clone().ready().await else {
                break;
            };
            h2 = ready;
            match h2.send_request(grpc_request("/user.v1.UserService/GetUser", ""), false) {
                Ok((_resp, mut body)) => {
                    body.send_reset(h2::Reason::CANCEL);
                    sent += 1;
                }
                Err(_) => break,
            }
        }
        drop(h2);
        (sent, conn.await)
    });
    completes_calls(&s, &token, 200).await;
    let (sent, conn) = tokio::time::timeout(Duration::from_secs(30), flood)
        .await
        .unwrap()
        .unwrap();
    // Either the server told the flooder to go away, or it absorbed every reset.
    eprintln!("flooder sent {sent} reset streams; its connection ended with {conn:?}");
    assert!(sent > 0);
    completes_calls(&s, &token, 10).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_hoarding_idle_streams_does_not_stop_other_clients() {
    let db = TestDb::new(Backend::Sqlite).await;
    let s = TestServer::start(&db, &["--max-streams-per-connection", "8"]).await;
    let token = s.admin_token().await;
    let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let (h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut h2 = h2.ready().await.unwrap();
    let mut held = Vec::new();
    for _ in 0..8 {
        // Bidi Subscribe streams that never send their Start: open and idle.
        let (resp, body) = h2
            .send_request(
                grpc_request("/activity.v1.ActivityService/Subscribe", &token),
                false,
            )
            .unwrap();
        held.push((resp, body));
        h2 = h2.ready().await.unwrap();
    }
    // A ninth stream on this connection is not admitted: a complete GetUser (headers with
    // end of stream) would be answered at once if it were.
    let ninth = tokio::time::timeout(Duration::from_millis(500), async {
        let (resp, _body) = h2.send_request(grpc_request("/user.v1.UserService/GetUser", &token), true)?;
        resp.await
    })
    .await;
    assert!(
        !matches!(ninth, Ok(Ok(_))),
        "a ninth stream was admitted: {ninth:?}"
    );
    completes_calls(&s, &token, 50).await;
    drop(held);
    s.stop().await;
}

/// A TCP proxy that can freeze: it stops moving bytes but keeps both sockets open, the
/// way a peer that vanished (power loss, dropped route) looks to the server.
async fn freezable_proxy(
    to: std::net::SocketAddr,
) -> (std::net::SocketAddr, tokio_util::sync::CancellationToken) {
    async fn pump(
        mut r: tokio::net::tcp::OwnedReadHalf,
        mut w: tokio::net::tcp::OwnedWriteHalf,
        freeze: tokio_util::sync::CancellationToken,
    ) {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 16384];
        loop {
            let n = tokio::select! {
                biased;
                _ = freeze.cancelled() => break,
                n = r.read(&mut buf) => match n {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                },
            };
            if freeze.is_cancelled() || w.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        // Frozen: hold both sockets open and move nothing.
        std::future::pending::<()>().await;
        drop((r, w));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let freeze = tokio_util::sync::CancellationToken::new();
    let f = freeze.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect(to).await.unwrap();
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pump(cr, sw, f.clone()));
            tokio::spawn(pump(sr, cw, f.clone()));
        }
    });
    (addr, freeze)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_finds_dead_peers_of_idle_streams() {
    let db = TestDb::new(Backend::Sqlite).await;
    let s = TestServer::start(
        &db,
        &[
            "--http2-keepalive-interval",
            "200ms",
            "--http2-keepalive-timeout",
            "1s",
        ],
    )
    .await;
    let token = s.admin_token().await;
    let (proxy, freeze) = freezable_proxy(s.addr).await;
    let ch = Channel::from_shared(format!("http://{proxy}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let sub = Sub::open(&ch, &token, start(1))
        .await
        .expect("subscribe through the proxy");
    let hub = s.hub.clone();
    let active = || {
        hub.stats()
            .subscriptions
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    eventually(Duration::from_secs(5), "the subscription is registered", || {
        active() == 1
    })
    .await;
    // Idle for a second: pings are answered, the stream stays.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(active(), 1, "an idle but live peer keeps its stream");
    freeze.cancel();
    eventually(
        Duration::from_secs(10),
        "the dead peer's stream is released",
        || active() == 0,
    )
    .await;
    drop(sub);
    s.stop().await;
}

/// Holds the store's write lock (SQLite: an IMMEDIATE transaction; PostgreSQL: an
/// EXCLUSIVE lock on `users`), so user writes wait until [`WriteLock::release`].
enum WriteLock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl WriteLock {
    async fn take(db: &TestDb, b: Backend) -> WriteLock {
        match b {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
                sqlx::query("BEGIN IMMEDIATE").execute(&mut c).await.unwrap();
                WriteLock::Sqlite(c)
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
                sqlx::query("BEGIN").execute(&mut c).await.unwrap();
                sqlx::query("LOCK TABLE users IN EXCLUSIVE MODE")
                    .execute(&mut c)
                    .await
                    .unwrap();
                WriteLock::Postgres(c)
            }
        }
    }

    async fn release(self) {
        match self {
            WriteLock::Sqlite(mut c) => drop(sqlx::query("ROLLBACK").execute(&mut c).await.unwrap()),
            WriteLock::Postgres(mut c) => drop(sqlx::query("ROLLBACK").execute(&mut c).await.unwrap()),
        }
    }
}

fn new_user(name: &str) -> CreateUserRequest {
    CreateUserRequest {
        email: format!("{name}@example.com"),
        username: name.into(),
        password: PASSWORD.into(),
        ..Default::default()
    }
}

/// A unary call over a bare HTTP/2 connection (the h2 crate) carrying `grpc-timeout`:
/// tonic's client would run a timer of its own on that header and could report its own
/// CANCELLED first on a loaded machine; this reads what the server answered.
async fn raw_unary<M: prost::Message>(
    addr: std::net::SocketAddr,
    path: &str,
    token: &str,
    msg: M,
    timeout: Duration,
) -> tonic::Status {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut h2 = h2.ready().await.unwrap();
    let mut req = grpc_request(path, token);
    req.headers_mut().insert(
        "grpc-timeout",
        format!("{}m", timeout.as_millis()).parse().unwrap(),
    );
    let (resp, mut body) = h2.send_request(req, false).unwrap();
    let bytes = msg.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    frame.extend_from_slice(&bytes);
    body.send_data(frame.into(), true).unwrap();
    let resp = resp.await.unwrap();
    if let Some(s) = tonic::Status::from_header_map(resp.headers()) {
        return s;
    }
    let mut body = resp.into_body();
    while let Some(chunk) = body.data().await {
        let _ = chunk.unwrap();
    }
    let trailers = body.trailers().await.unwrap().unwrap_or_default();
    tonic::Status::from_header_map(&trailers).unwrap_or_else(|| tonic::Status::unknown("no grpc-status"))
}

dual!(client_deadline_answers_deadline_exceeded_and_cancels_store_work);

/// One pooled connection (for requests), held by a write waiting on a lock: a second write with a
/// 300 ms deadline waits for the pool, gets DEADLINE_EXCEEDED (not CANCELLED), and its
/// store work never happens, even after the connection frees up.
async fn client_deadline_answers_deadline_exceeded_and_cancels_store_work(b: Backend) {
    let db = TestDb::new(b).await;
    // PostgreSQL holds one more connection for LISTEN.
    let pool = if b == Backend::Sqlite { "1" } else { "2" };
    // The store's own timeout (which answers UNAVAILABLE) is out of the way: this is
    // about the caller's deadline.
    let s = TestServer::start(
        &db,
        &["--db-max-connections", pool, "--db-acquire-timeout", "30s"],
    )
    .await;
    let token = s.admin_token().await;
    let lock = WriteLock::take(&db, b).await;
    let mut users = s.users();
    let first = tokio::spawn({
        let mut users = s.users();
        let token = token.clone();
        async move { users.create_user(authed(new_user("first"), &token)).await }
    });
    // Let it take the pool's connection (and block on the lock) first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let late = raw_unary(
        s.addr,
        "/user.v1.UserService/CreateUser",
        &token,
        new_user("dave"),
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(late.code(), Code::DeadlineExceeded, "{late:?}");
    assert!(late.message().contains("deadline"), "{late:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered at the deadline, not when the lock went"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    lock.release().await;
    first
        .await
        .unwrap()
        .expect("the write without a deadline completes");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Had the cancelled call's insert run, this would be ALREADY_EXISTS.
    users
        .create_user(authed(new_user("dave"), &token))
        .await
        .expect("the deadline-exceeded create never happened");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_unary_timeout_ends_slow_calls_and_never_cuts_streams() {
    let db = TestDb::new(Backend::Sqlite).await;
    let s = TestServer::start(&db, &["--unary-timeout", "400ms", "--heartbeat-interval", "10s"]).await;
    let token = s.admin_token().await;
    let mut sub = Sub::open(&s.channel, &token, start(1)).await.unwrap();
    let lock = WriteLock::take(&db, Backend::Sqlite).await;
    assert_status(
        s.users().create_user(authed(new_user("slow"), &token)).await,
        Code::DeadlineExceeded,
        "--unary-timeout",
    );
    lock.release().await;
    // The stream has been open for well past the unary limit and still delivers.
    tokio::time::sleep(Duration::from_millis(800)).await;
    publish(&s, &token, event_req(&[1], "late", "x")).await.unwrap();
    let ev = sub.event().await;
    assert_eq!(ev.r#type, "late");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_calls_beyond_the_limit_are_shed_and_streams_are_not() {
    let db = TestDb::new(Backend::Sqlite).await;
    let s = TestServer::start(&db, &["--max-concurrent-unary", "2"]).await;
    let token = s.admin_token().await;
    let lock = WriteLock::take(&db, Backend::Sqlite).await;
    let blocked: Vec<_> = ["blocked1", "blocked2"]
        .into_iter()
        .map(|n| {
            let mut users = s.users();
            let token = token.clone();
            tokio::spawn(async move { users.create_user(authed(new_user(n), &token)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for b in &blocked {
        assert!(!b.is_finished(), "the two creates wait on the lock");
    }
    assert_status(
        s.users().get_user(authed(crate::helpers::by_id(1), &token)).await,
        Code::Unavailable,
        "overloaded",
    );
    // Streams are not unary calls: a subscription opens while unary calls are shed.
    Sub::open(&s.channel, &token, start(1))
        .await
        .expect("a stream opens");
    lock.release().await;
    for b in blocked {
        b.await.unwrap().expect("the held calls complete");
    }
    s.users()
        .get_user(authed(crate::helpers::by_id(1), &token))
        .await
        .expect("served again once calls finish");
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
