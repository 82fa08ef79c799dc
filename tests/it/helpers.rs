//! Test harness: a real server on 127.0.0.1:0 with a fresh store (SQLite in a temp dir,
//! or a fresh schema of the PostgreSQL named by TEST_DATABASE_URL) and real tonic clients.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use activity_hub::{
    api::users::service::StreamStats,
    config::ServeConfig,
    proto::{
        auth::v1::{
            auth_service_client::AuthServiceClient, login_request::Identifier, LoginRequest, LoginResponse,
        },
        user::v1::{user_service_client::UserServiceClient, CreateUserRequest, User, UserRole},
    },
    server::{self, App},
};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{transport::Channel, Code, Request, Status};

pub const ADMIN_EMAIL: &str = "admin@hub.test";
pub const ADMIN_PASSWORD: &str = "admin-password";
pub const PASSWORD: &str = "password-123";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Whether the PostgreSQL variants can run.
pub fn pg_url() -> Option<String> {
    std::env::var("TEST_DATABASE_URL").ok().filter(|s| !s.is_empty())
}

/// True (after saying so on stderr) when a PostgreSQL-only test must be skipped.
pub fn skip_without_pg(test: &str) -> bool {
    if pg_url().is_some() {
        return false;
    }
    // Written to the handle, not with eprintln!, so libtest's capture does not hide it.
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "skipped: {test} (TEST_DATABASE_URL is not set)"
    );
    true
}

/// Says on stderr that `test` was skipped because `tool` is not installed.
pub fn skip_without_tool(test: &str, tool: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "skipped: {test} ({tool} is not installed)");
}

/// Declares `<test>::sqlite` and `<test>::postgres` for `async fn <test>(Backend)`.
/// Without TEST_DATABASE_URL the PostgreSQL variant says it was skipped.
#[macro_export]
macro_rules! dual {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if $crate::helpers::pg_url().is_none() {
                    // Written to the handle, not with eprintln!, so libtest's capture does
                    // not hide it: a green run without PostgreSQL says what it skipped.
                    use std::io::Write as _;
                    let _ = writeln!(
                        std::io::stderr(),
                        "skipped: {}::postgres (TEST_DATABASE_URL is not set)",
                        stringify!($name)
                    );
                    return;
                }
                super::$name($crate::helpers::Backend::Postgres).await
            }
        }
    )*};
}

/// A fresh, empty store; kept alive as long as the value lives.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// Another name for a store that something else keeps alive (e.g. the same
    /// PostgreSQL schema reached through a proxy).
    pub fn at(url: String) -> TestDb {
        TestDb { url, _dir: None }
    }

    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("hub.db").display());
                TestDb { url, _dir: Some(dir) }
            }
            Backend::Postgres => {
                let base = pg_url().expect("TEST_DATABASE_URL");
                let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
                let pool = sqlx::PgPool::connect(&base)
                    .await
                    .unwrap_or_else(|e| panic!("cannot reach TEST_DATABASE_URL {base}: {e}"));
                sqlx::query(&format!("CREATE SCHEMA {schema}"))
                    .execute(&pool)
                    .await
                    .expect("create schema");
                pool.close().await;
                let sep = if base.contains('?') { '&' } else { '?' };
                TestDb {
                    url: format!("{base}{sep}options=-c%20search_path%3D{schema}"),
                    _dir: None,
                }
            }
        }
    }
}

/// Arguments every test server gets: cheap password hashing (the OWASP costs are
/// checked by a unit test), no metrics listener, a bootstrap admin.
pub fn base_args(db: &TestDb) -> Vec<String> {
    [
        "--database-url",
        &db.url,
        "--metrics-listen",
        "off",
        "--password-hash-memory-kib",
        "64",
        "--password-hash-iterations",
        "1",
        "--bootstrap-admin-email",
        ADMIN_EMAIL,
        "--bootstrap-admin-password",
        ADMIN_PASSWORD,
        // Tests log in as the admin many times a second; the limits' own tests set them.
        "--login-rate-limit",
        "1000000",
        "--login-rate-burst",
        "1000000",
        "--user-rate-limit",
        "1000000",
        "--user-rate-burst",
        "1000000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// [`base_args`] with `extra` flags replacing the base's same flags or adding to them.
pub fn args_with(db: &TestDb, extra: &[&str]) -> Vec<String> {
    let mut base = base_args(db);
    for flag in extra.iter().filter(|a| a.starts_with("--")) {
        if let Some(i) = base.iter().position(|b| b == flag) {
            base.drain(i..i + 2);
        }
    }
    base.extend(extra.iter().map(|s| s.to_string()));
    base
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub channel: Channel,
    pub stream_stats: Arc<StreamStats>,
    pub hub: activity_hub::hub::Hub,
    /// The server's store, for tests that inject faults into it.
    pub store: activity_hub::store::Store,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), server::ServerError>>>,
}

impl TestServer {
    pub async fn start(db: &TestDb, extra: &[&str]) -> TestServer {
        TestServer::start_at(db, extra, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// [`TestServer::start`] listening on `addr`: a server restarted on the port of a
    /// stopped one, under clients that reconnect to it. Waits (up to 5 s) for the port to
    /// be free; std and tokio set SO_REUSEADDR, so the old connections' TIME_WAIT does not
    /// hold it.
    pub async fn start_at(db: &TestDb, extra: &[&str], addr: SocketAddr) -> TestServer {
        // RUST_LOG=... shows the server's logs when debugging a test.
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let args = args_with(db, extra);
        let config = ServeConfig::from_args(args).expect("test config parses");
        let app = App::build(config).await.expect("server builds");
        let stream_stats = app.stream_stats();
        let hub = app.hub.clone();
        let store = app.store.clone();
        let listener = bind(addr).await;
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server::serve(app, listener, async {
            let _ = rx.await;
        }));
        let endpoint = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(5));
        // A TLS server does not speak plaintext: its tests make their own channels.
        let channel = if extra.contains(&"--tls-cert") {
            endpoint.connect_lazy()
        } else {
            endpoint.connect().await.expect("client connects")
        };
        TestServer {
            addr,
            channel,
            stream_stats,
            hub,
            store,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn users(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.channel.clone())
    }

    pub fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel.clone())
    }

    /// A connection whose HTTP/2 flow-control windows are 1 KiB, so the server can run
    /// only a little ahead of what the test reads: a stand-in for a slow client.
    pub async fn slow_reader_channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .initial_stream_window_size(Some(1024))
            .initial_connection_window_size(Some(1024))
            .connect()
            .await
            .expect("slow client connects")
    }

    /// Graceful shutdown; waits until the server has stopped.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("server stops within 30s")
                .expect("server task")
                .expect("server ends without error");
        }
    }

    pub async fn login(&self, email: &str, password: &str) -> String {
        self.login_session(email, password).await.access_token
    }

    /// Login by email: the whole session (access and refresh token).
    pub async fn login_session(&self, email: &str, password: &str) -> LoginResponse {
        self.auth()
            .login(LoginRequest {
                identifier: Some(Identifier::Email(email.into())),
                password: password.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("login {email}: {s:?}"))
            .into_inner()
    }

    pub async fn admin_token(&self) -> String {
        self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await
    }

    /// Creates a user with `roles` (as admin) and returns it with a token of its own.
    pub async fn user_with_token(&self, name: &str, roles: &[UserRole]) -> (User, String) {
        let admin = self.admin_token().await;
        let email = format!("{name}@example.com");
        let user = self
            .users()
            .create_user(authed(
                CreateUserRequest {
                    email: email.clone(),
                    username: name.into(),
                    password: PASSWORD.into(),
                    roles: roles.iter().map(|r| *r as i32).collect(),
                    ..Default::default()
                },
                &admin,
            ))
            .await
            .unwrap_or_else(|s| panic!("create {name}: {s:?}"))
            .into_inner();
        let token = self.login(&email, PASSWORD).await;
        (user, token)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Binds `addr`, retrying for up to 5 s while it is in use (a just-stopped server's port).
async fn bind(addr: SocketAddr) -> tokio::net::TcpListener {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("bind {addr}: {e}"),
        }
    }
}

/// GetUser by id.
pub fn by_id(id: u64) -> activity_hub::proto::user::v1::GetUserRequest {
    activity_hub::proto::user::v1::GetUserRequest {
        identifier: Some(activity_hub::proto::user::v1::get_user_request::Identifier::UserId(id)),
    }
}

/// A request carrying `authorization: Bearer <token>`.
pub fn authed<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

/// Asserts a call failed with `code` and, when given, a message containing `needle`.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(res: Result<T, Status>, code: Code, needle: &str) {
    match res {
        Ok(v) => panic!("expected {code:?} containing {needle:?}, got Ok({v:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "wrong code; message was {:?}", s.message());
            assert!(
                s.message().contains(needle),
                "message {:?} should contain {needle:?}",
                s.message()
            );
        }
    }
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes.
pub async fn eventually(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Creates `n` plain users `<prefix>0..` with BulkCreateUsers and returns their ids.
pub async fn bulk_users(s: &TestServer, admin: &str, prefix: &str, n: usize) -> Vec<u64> {
    let reqs: Vec<CreateUserRequest> = (0..n)
        .map(|i| CreateUserRequest {
            email: format!("{prefix}{i}@example.com"),
            username: format!("{prefix}{i}"),
            password: PASSWORD.into(),
            ..Default::default()
        })
        .collect();
    let r = s
        .users()
        .bulk_create_users(authed(tokio_stream::iter(reqs), admin))
        .await
        .expect("bulk create")
        .into_inner();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    r.users.into_iter().map(|u| u.id).collect()
}
