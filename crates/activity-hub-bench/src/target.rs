//! The server under test: a hub started from this binary (or `--hub-bin`) on a
//! temporary store, a hub already running at `--server`, or the bare baseline.

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use tonic::{
    metadata::{Ascii, MetadataValue},
    transport::{Channel, Endpoint},
    Request,
};

use super::{BenchArgs, Scenario};
use activity_hub_client::proto::{
    auth::v1::{auth_service_client::AuthServiceClient, login_request::Identifier, LoginRequest},
    user::v1::{
        get_user_request::Identifier as UserKey, user_service_client::UserServiceClient, CreateUserRequest,
        GetUserRequest,
    },
};

const ADMIN: &str = "bench-admin@hub.test";
const PASSWORD: &str = "bench-password";
/// Most users one BulkCreateUsers call may create.
const BULK: usize = 10_000;

/// The Login of a user this run created.
fn login_request(email: &str) -> LoginRequest {
    LoginRequest {
        identifier: Some(Identifier::Email(email.into())),
        password: PASSWORD.into(),
    }
}

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The hub.
    Hub,
    /// The bare tonic baseline.
    Baseline,
    /// The store's ceiling (`--ceiling`): no server.
    Ceiling,
    /// NATS JetStream (`--peer nats`).
    Nats,
}

impl Kind {
    /// Its name in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Hub => "hub",
            Kind::Baseline => "baseline",
            Kind::Ceiling => "ceiling",
            Kind::Nats => "jetstream",
        }
    }
}

/// The `authorization` header of this run's calls (none for the baseline).
#[derive(Clone)]
pub(crate) struct Auth(Option<MetadataValue<Ascii>>);

impl Auth {
    /// A request carrying it.
    pub(crate) fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        if let Some(a) = &self.0 {
            r.metadata_mut().insert("authorization", a.clone());
        }
        r
    }
}

/// A reachable server, stopped when dropped if this run started it.
pub(crate) struct Target {
    pub(crate) kind: Kind,
    url: String,
    child: Option<tokio::process::Child>,
    pid: Option<u32>,
    auth: Auth,
    dir: Option<PathBuf>,
    /// The store of a hub this run started.
    database_url: Option<String>,
    /// Tells this run's users from other runs' on a shared server.
    run_id: String,
    /// The users this run created.
    created: std::sync::Mutex<Vec<u64>>,
    /// Number of the next user this run creates (their names must not repeat).
    next_user: std::sync::atomic::AtomicUsize,
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.start_kill();
        }
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn free_addr() -> Result<String, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr()
        .map(|a| a.to_string())
        .map_err(|e| format!("no free port: {e}"))
}

impl Target {
    /// Starts or reaches the server of `kind` for this run.
    pub(crate) async fn start(kind: Kind, args: &BenchArgs) -> Result<Target, String> {
        let run_id = format!("b{:08x}", rand::random::<u32>());
        if let (Kind::Hub, Some(url)) = (kind, &args.server) {
            let token = args
                .token
                .clone()
                .or_else(activity_hub_client::token::saved)
                .ok_or("--server needs an admin's token: --token, HUB_TOKEN or `activity-hub login`")?;
            let auth = format!("Bearer {token}")
                .parse()
                .map_err(|_| "--token is not a valid header value".to_string())?;
            let mut t = Target {
                kind,
                url: url.clone(),
                child: None,
                pid: args.server_pid.or_else(|| listening_pid(url)),
                auth: Auth(Some(auth)),
                dir: None,
                database_url: None,
                run_id,
                created: Default::default(),
                next_user: Default::default(),
            };
            t.wait_ready(Duration::from_secs(10)).await?;
            return Ok(t);
        }
        let dir = std::env::temp_dir().join(format!("activity-hub-bench-{}-{run_id}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let addr = free_addr()?;
        let log = std::fs::File::create(dir.join("server.log")).map_err(|e| format!("server log: {e}"))?;
        let this = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
        let mut database_url = None;
        let mut cmd = match kind {
            Kind::Hub => {
                let exe = match &args.hub_bin {
                    Some(bin) => bin.clone(),
                    None => hub_beside(&this)?,
                };
                let db = args
                    .database_url
                    .clone()
                    .unwrap_or_else(|| format!("sqlite://{}", dir.join("hub.db").display()));
                let mut cmd = tokio::process::Command::new(exe);
                cmd.args(["serve", "--listen", &addr, "--database-url", &db]);
                // The bench's settings, each unless --hub-arg sets it.
                let mut defaults = vec![
                    ("--metrics-listen", "off"),
                    ("--log-level", "warn"),
                    ("--max-streams-per-connection", "2048"),
                    // One admin makes every call: the limiter stays on the path, out of the way.
                    ("--user-rate-limit", "1000000000"),
                    ("--user-rate-burst", "1000000000"),
                ];
                // Only when not the default, so builds older than the flag can be compared.
                if args.durability == crate::args::Durability::ProcessCrash {
                    defaults.push(("--durability", "process-crash"));
                }
                // Bench users log in once; cheap hashing keeps set-up short. The soak
                // and logins keep the hub's own costs: password-hashing memory is part
                // of what they measure (`--hub-arg` can still lower them).
                if !matches!(args.scenario, Scenario::Soak | Scenario::Logins) {
                    defaults.push(("--password-hash-memory-kib", "64"));
                    defaults.push(("--password-hash-iterations", "1"));
                }
                for (flag, value) in defaults {
                    let set = args
                        .hub_args
                        .iter()
                        .any(|a| a == flag || a.starts_with(&format!("{flag}=")));
                    if !set {
                        cmd.args([flag, value]);
                    }
                }
                cmd.args([
                    "--bootstrap-admin-email",
                    ADMIN,
                    "--bootstrap-admin-password",
                    PASSWORD,
                ])
                .args(&args.hub_args);
                database_url = Some(db);
                cmd
            }
            Kind::Baseline => {
                let mut cmd = tokio::process::Command::new(this);
                cmd.args(["serve-baseline", "--listen", &addr]);
                cmd
            }
            Kind::Ceiling | Kind::Nats => unreachable!("{kind:?} is no server"),
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the {}: {e}", kind.name()))?;
        let mut t = Target {
            kind,
            url: format!("http://{addr}"),
            pid: child.id(),
            child: Some(child),
            auth: Auth(None),
            dir: Some(dir),
            database_url,
            run_id,
            created: Default::default(),
            next_user: Default::default(),
        };
        t.wait_ready(Duration::from_secs(60)).await?;
        if kind == Kind::Hub {
            let token = AuthServiceClient::new(t.channel().await?)
                .login(LoginRequest {
                    identifier: Some(Identifier::Email(ADMIN.into())),
                    password: PASSWORD.into(),
                })
                .await
                .map_err(|s| format!("bench admin login: {}", s.message()))?
                .into_inner()
                .access_token;
            t.auth = Auth(Some(format!("Bearer {token}").parse().map_err(|_| "odd token")?));
        }
        Ok(t)
    }

    async fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            match self.channel().await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!(
                        "the {} at {} did not come up: {e}",
                        self.kind.name(),
                        self.url
                    ))
                }
                Err(_) => {}
            }
            if let Some(status) = self.exited() {
                return Err(format!(
                    "the {} exited ({status}) before serving:\n{}",
                    self.kind.name(),
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn exited(&mut self) -> Option<String> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        Some(status.to_string())
    }

    /// The last lines the started server logged.
    pub(crate) fn log_tail(&self) -> String {
        let Some(dir) = &self.dir else {
            return String::new();
        };
        let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// A new HTTP/2 connection.
    pub(crate) async fn channel(&self) -> Result<Channel, String> {
        Endpoint::from_shared(self.url.clone())
            .map_err(|e| format!("{}: {e}", self.url))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| format!("{}: {e}", self.url))
    }

    /// `n` new HTTP/2 connections.
    pub(crate) async fn channels(&self, n: usize) -> Result<Vec<Channel>, String> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n.max(1) {
            out.push(self.channel().await?);
        }
        Ok(out)
    }

    /// A request carrying this run's credentials.
    pub(crate) fn req<T>(&self, msg: T) -> Request<T> {
        self.auth.req(msg)
    }

    /// This run's credentials, for tasks.
    pub(crate) fn auth(&self) -> Auth {
        self.auth.clone()
    }

    /// Creates `n` users for this run; their ids.
    pub(crate) async fn create_users(&self, ch: &Channel, n: usize) -> Result<Vec<u64>, String> {
        self.create((0..n).map(|_| self.new_user()).collect(), ch).await
    }

    /// Creates `n` users for this run; a Login request for each.
    pub(crate) async fn create_logins(&self, ch: &Channel, n: usize) -> Result<Vec<LoginRequest>, String> {
        let users: Vec<CreateUserRequest> = (0..n).map(|_| self.new_user()).collect();
        let logins = users.iter().map(|u| login_request(&u.email)).collect();
        self.create(users, ch).await?;
        Ok(logins)
    }

    /// Creates `users` in BulkCreateUsers calls of at most [`BULK`]; their ids.
    async fn create(&self, users: Vec<CreateUserRequest>, ch: &Channel) -> Result<Vec<u64>, String> {
        let n = users.len();
        let mut users = users.into_iter();
        let mut ids = Vec::with_capacity(n);
        let mut client = UserServiceClient::new(ch.clone()).max_decoding_message_size(256 << 20);
        loop {
            let reqs: Vec<CreateUserRequest> = users.by_ref().take(BULK).collect();
            if reqs.is_empty() {
                break;
            }
            let out = client
                .bulk_create_users(self.req(tokio_stream::iter(reqs)))
                .await
                .map_err(|s| {
                    let hint = match s.code() {
                        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => {
                            " (the bench needs an admin's token)"
                        }
                        _ => "",
                    };
                    format!("creating bench users: {:?}: {}{hint}", s.code(), s.message())
                })?
                .into_inner();
            if let Some(e) = out.errors.first() {
                return Err(format!("creating bench user {}: {}", e.email, e.error));
            }
            ids.extend(out.users.iter().map(|u| u.id));
            self.created
                .lock()
                .expect("not poisoned")
                .extend(out.users.iter().map(|u| u.id));
        }
        Ok(ids)
    }

    /// A user this run has not created yet.
    fn new_user(&self) -> CreateUserRequest {
        let i = self.next_user.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        CreateUserRequest {
            email: format!("{}-{i}@bench.test", self.run_id),
            username: format!("{}_{i}", self.run_id),
            password: PASSWORD.into(),
            ..Default::default()
        }
    }

    /// Creates `n` users one CreateUser call at a time and logs each in (two password
    /// hashes each, at the server's costs); how many of the 2n calls failed, and the first
    /// failure.
    pub(crate) async fn create_and_login(&self, ch: &Channel, n: usize) -> (u64, Option<String>) {
        let mut users = UserServiceClient::new(ch.clone());
        let mut auth = AuthServiceClient::new(ch.clone());
        let (mut failed, mut first) = (0, None);
        for _ in 0..n {
            let new = self.new_user();
            let email = new.email.clone();
            match users.create_user(self.req(new)).await {
                Ok(u) => self.created.lock().expect("not poisoned").push(u.into_inner().id),
                Err(s) => {
                    failed += 2;
                    first.get_or_insert_with(|| format!("CreateUser: {:?}: {}", s.code(), s.message()));
                    continue;
                }
            }
            if let Err(s) = auth.login(login_request(&email)).await {
                failed += 1;
                first.get_or_insert_with(|| format!("Login: {:?}: {}", s.code(), s.message()));
            }
        }
        (failed, first)
    }

    /// Whether this run started the server (and throws its store away afterwards).
    pub(crate) fn started_here(&self) -> bool {
        self.child.is_some()
    }

    /// Deletes the users this run created; returns how many could not be deleted.
    pub(crate) async fn remove_users(&self) -> Result<usize, String> {
        use futures_util::StreamExt as _;
        let ids = std::mem::take(&mut *self.created.lock().expect("not poisoned"));
        let client = UserServiceClient::new(self.channel().await?);
        let failed = futures_util::stream::iter(ids)
            .map(|id| {
                let mut c = client.clone();
                let req = self.req(GetUserRequest {
                    identifier: Some(UserKey::UserId(id)),
                });
                async move { c.delete_user(req).await.is_err() }
            })
            .buffer_unordered(64)
            .filter(|failed| std::future::ready(*failed))
            .count()
            .await;
        Ok(failed)
    }

    /// The server's resident memory, when its process is known.
    pub(crate) fn rss_bytes(&self) -> Option<u64> {
        proc_status_bytes(self.pid?, "VmRSS")
    }

    /// The server's peak RSS since it started (VmHWM), when it is visible.
    pub(crate) fn peak_rss_bytes(&self) -> Option<u64> {
        proc_status_bytes(self.pid?, "VmHWM")
    }

    /// The store of the hub this run started.
    pub(crate) fn database_url(&self) -> Option<&str> {
        self.database_url.as_deref()
    }

    /// The server's process id, when it runs on this machine.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.pid
    }
}

/// A memory figure (`VmRSS`, `RssAnon`, `RssFile`, ...) of process `pid` from
/// /proc/PID/status, in bytes.
pub(crate) fn proc_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The process on this machine listening on the URL's port, if there is one we may see.
fn listening_pid(url: &str) -> Option<u32> {
    let port: u16 = url.rsplit(':').next()?.trim_end_matches('/').parse().ok()?;
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let listening = f.get(3) == Some(&"0A");
            let local_port = f
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if listening && local_port == Some(port) {
                if let Some(inode) = f.get(9) {
                    inodes.push(format!("socket:[{inode}]"));
                }
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for proc_dir in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = proc_dir.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc_dir.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                if inodes.iter().any(|i| link.as_os_str() == i.as_str()) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

/// The `activity-hub` binary in the folder of `this` one (how `cargo build` and
/// `cargo install` lay them out), or an error that says what to do.
fn hub_beside(this: &std::path::Path) -> Result<std::path::PathBuf, String> {
    let hub = this.with_file_name(format!("activity-hub{}", std::env::consts::EXE_SUFFIX));
    if hub.is_file() {
        Ok(hub)
    } else {
        Err(format!(
            "no activity-hub binary beside this one ({}): build it (`cargo build --release -p activity-hub`) \
             or pass --hub-bin",
            hub.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_process_listening_on_a_port() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(
            listening_pid(&format!("http://127.0.0.1:{port}")),
            Some(std::process::id())
        );
        drop(l);
        assert_eq!(listening_pid(&format!("http://127.0.0.1:{port}")), None);
    }
}
