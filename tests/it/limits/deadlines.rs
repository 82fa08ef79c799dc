//! Deadlines (the client's and the server's) and unary load shedding.

use super::*;

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
