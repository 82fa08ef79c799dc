//! The command-line client in the same binary: `login`, `user ...`, `publish`,
//! `subscribe`, `events list`, `health`. Built on [`crate::client`]. Tables for people,
//! `--json` for scripts, and exit codes that say what kind of failure it was.

use std::{io::Write as _, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Subcommand, ValueEnum};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tonic::Code;

use crate::{
    client::{Client, ClientConfig, ClientError, SubscribeOptions},
    proto::{
        activity::v1 as apb,
        user::v1::{self as upb, get_user_request::Identifier},
    },
};

/// Exit codes, also listed in `activity-hub --help`.
pub const EXIT_CODES: &str = "Exit codes: 0 ok; 1 other failure; 2 bad command line; 3 not found; \
4 not logged in or not allowed; 5 server unreachable or unavailable; 6 request refused \
(invalid, already exists, rate limited).";

/// Options every client command takes.
#[derive(Clone, Debug, Args)]
pub struct Conn {
    /// Server URL; repeat or separate with commas for several (calls are balanced).
    #[arg(
        long = "server",
        env = "HUB_SERVER",
        default_value = "http://127.0.0.1:50051",
        value_delimiter = ',',
        global = true
    )]
    pub servers: Vec<String>,
    /// Access token (default: the one `activity-hub login` saved).
    #[arg(long, env = "HUB_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print JSON (one object, or one per line when following) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// CA certificate (PEM) to trust for https:// servers.
    #[arg(long, global = true)]
    pub ca: Option<PathBuf>,
    /// Deadline of each call, e.g. `10s`.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, global = true)]
    pub timeout: Duration,
}

/// `activity-hub login`.
#[derive(Clone, Debug, Args)]
pub struct LoginArgs {
    /// Email or username.
    pub identifier: String,
    /// Password (default: HUB_PASSWORD, else one line read from standard input).
    #[arg(long, env = "HUB_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: Conn,
}

/// `activity-hub user ...`.
#[derive(Clone, Debug, Args)]
pub struct UserArgs {
    #[command(subcommand)]
    #[allow(missing_docs)]
    pub cmd: UserCmd,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: Conn,
}

/// User subcommands.
#[derive(Clone, Debug, Subcommand)]
pub enum UserCmd {
    /// Create a user.
    Create {
        /// Email address.
        #[arg(long)]
        email: String,
        /// Username (3-32 characters).
        #[arg(long)]
        username: String,
        /// Password (default: HUB_NEW_PASSWORD, else one line from standard input).
        #[arg(long, env = "HUB_NEW_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// First name.
        #[arg(long, default_value = "")]
        first_name: String,
        /// Last name.
        #[arg(long, default_value = "")]
        last_name: String,
        /// Roles (repeat): user, admin, moderator, publisher.
        #[arg(long = "role", value_enum)]
        roles: Vec<RoleArg>,
    },
    /// Show a user by id, email or username.
    Get {
        /// Id, email or username.
        who: String,
    },
    /// List users.
    List {
        /// Page size (at most 1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Page number, from 1.
        #[arg(long, default_value_t = 1)]
        page: u32,
        /// Substring of email, username or name.
        #[arg(long, default_value = "")]
        search: String,
    },
    /// Change a user's fields.
    Update {
        /// User id.
        id: u64,
        /// New username.
        #[arg(long)]
        username: Option<String>,
        /// New first name.
        #[arg(long)]
        first_name: Option<String>,
        /// New last name.
        #[arg(long)]
        last_name: Option<String>,
        /// New bio.
        #[arg(long)]
        bio: Option<String>,
    },
    /// Delete a user.
    Delete {
        /// User id.
        id: u64,
    },
}

/// A role on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RoleArg {
    /// USER_ROLE_USER.
    User,
    /// USER_ROLE_ADMIN.
    Admin,
    /// USER_ROLE_MODERATOR.
    Moderator,
    /// USER_ROLE_PUBLISHER.
    Publisher,
}

/// `activity-hub publish`.
#[derive(Clone, Debug, Args)]
pub struct PublishArgs {
    /// Recipient user ids (comma-separated or repeated).
    #[arg(long = "to", required = true, value_delimiter = ',')]
    pub to: Vec<u64>,
    /// Event type, e.g. `order.filled`.
    #[arg(long = "type")]
    pub event_type: String,
    /// Payload text (default: empty).
    #[arg(long, default_value = "", conflicts_with = "payload_file")]
    pub payload: String,
    /// Read the payload from this file (`-` = standard input).
    #[arg(long)]
    pub payload_file: Option<PathBuf>,
    /// Content type of the payload.
    #[arg(long, default_value = "")]
    pub content_type: String,
    /// Idempotency key (default: one is generated, so retries cannot publish twice).
    #[arg(long)]
    pub key: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: Conn,
}

/// `activity-hub subscribe`.
#[derive(Clone, Debug, Args)]
pub struct SubscribeArgs {
    /// Whose events (default: yours).
    #[arg(long, default_value_t = 0)]
    pub user: u64,
    /// Durable consumer name; with it, a later `subscribe` resumes where this one stopped.
    #[arg(long)]
    pub consumer: Option<String>,
    /// Where to start: `cursor` (default with --consumer), `latest` (default without),
    /// `earliest`, or a seq to start after.
    #[arg(long)]
    pub from: Option<String>,
    /// Only these types (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub types: Vec<String>,
    /// Stop after this many events (default: follow until interrupted).
    #[arg(long)]
    pub count: Option<u64>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: Conn,
}

/// `activity-hub events ...`.
#[derive(Clone, Debug, Args)]
pub struct EventsArgs {
    #[command(subcommand)]
    #[allow(missing_docs)]
    pub cmd: EventsCmd,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: Conn,
}

/// Event subcommands.
#[derive(Clone, Debug, Subcommand)]
pub enum EventsCmd {
    /// A page of a user's event log.
    List {
        /// Whose events (default: yours).
        #[arg(long, default_value_t = 0)]
        user: u64,
        /// Events after this seq.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Page size (at most 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Only these types (comma-separated).
        #[arg(long, value_delimiter = ',')]
        types: Vec<String>,
    },
}

/// `activity-hub health`.
#[derive(Clone, Debug, Args)]
pub struct HealthArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: Conn,
}

/// The client commands (flattened into the binary's subcommands beside `serve`).
#[derive(Clone, Debug, Subcommand)]
pub enum Cmd {
    /// Log in by email or username; the token is saved for the commands below.
    Login(LoginArgs),
    /// Create, show, list, update and delete users.
    User(UserArgs),
    /// Publish an event to one or more users.
    Publish(PublishArgs),
    /// Follow events as they arrive (like `tail -f`), acknowledging each once printed.
    Subscribe(SubscribeArgs),
    /// Read a user's event log.
    Events(EventsArgs),
    /// Check that the servers report SERVING.
    Health(HealthArgs),
}

/// Where `login` keeps the token: `$XDG_CONFIG_HOME/activity-hub/token` or
/// `~/.config/activity-hub/token`.
pub fn token_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("activity-hub").join("token"))
}

/// The token `login` saved, if any.
pub fn saved_token() -> Option<String> {
    token_path()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|t| t.trim().to_string())
}

/// A failure with its exit code and what to do about it.
struct Failure {
    code: u8,
    message: String,
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        match e {
            ClientError::Config(m) => Failure { code: 2, message: m },
            ClientError::Status(s) => {
                let (code, hint) = match s.code() {
                    Code::NotFound => (3, ""),
                    Code::Unauthenticated => (
                        4,
                        "\nhint: run `activity-hub login EMAIL` or pass --token / HUB_TOKEN",
                    ),
                    Code::PermissionDenied => (4, "\nhint: this needs a role your account does not have"),
                    Code::Unavailable | Code::DeadlineExceeded => {
                        (5, "\nhint: is the server running at --server / HUB_SERVER?")
                    }
                    Code::InvalidArgument
                    | Code::AlreadyExists
                    | Code::FailedPrecondition
                    | Code::ResourceExhausted
                    | Code::OutOfRange => (6, ""),
                    _ => (1, ""),
                };
                Failure {
                    code,
                    message: format!("{:?}: {}{hint}", s.code(), s.message()),
                }
            }
        }
    }
}

fn fail(code: u8, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

/// Runs a client command; prints the result or the error, returns the exit code.
pub async fn run(cmd: Cmd) -> ExitCode {
    match dispatch(cmd).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

async fn connect(conn: &Conn, with_token: bool) -> Result<Client, Failure> {
    let mut cfg = ClientConfig::new(conn.servers.clone());
    cfg.deadline = conn.timeout;
    if let Some(ca) = &conn.ca {
        let pem = std::fs::read(ca).map_err(|e| fail(2, format!("--ca {}: {e}", ca.display())))?;
        cfg.tls = Some(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
        );
    }
    if with_token {
        cfg.token = match &conn.token {
            Some(t) => Some(t.clone()),
            None => saved_token(),
        };
    }
    Ok(Client::connect(cfg).await?)
}

fn read_secret(given: Option<String>, what: &str) -> Result<String, Failure> {
    if let Some(p) = given {
        return Ok(p);
    }
    eprint!("{what}: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| fail(1, format!("reading the {what} from standard input: {e}")))?;
    let line = line.trim_end_matches(['\r', '\n']).to_string();
    if line.is_empty() {
        return Err(fail(
            2,
            format!("no {what} given (flag, environment variable or standard input)"),
        ));
    }
    Ok(line)
}

async fn dispatch(cmd: Cmd) -> Result<(), Failure> {
    match cmd {
        Cmd::Login(a) => {
            let client = connect(&a.conn, false).await?;
            let password = read_secret(a.password, "password")?;
            let token = client.login(&a.identifier, &password).await?;
            let path =
                token_path().ok_or_else(|| fail(1, "no HOME or XDG_CONFIG_HOME to save the token in"))?;
            save_token(&path, &token)
                .map_err(|e| fail(1, format!("saving the token to {}: {e}", path.display())))?;
            if a.conn.json {
                out!("{}", json!({"token_file": path, "access_token": token}));
            } else {
                out!("logged in; token saved to {}", path.display());
            }
            Ok(())
        }
        Cmd::User(a) => {
            let client = connect(&a.conn, true).await?;
            user(&client, a.cmd, a.conn.json).await
        }
        Cmd::Publish(a) => {
            let client = connect(&a.conn, true).await?;
            let payload = match &a.payload_file {
                None => a.payload.clone().into_bytes(),
                Some(p) if p.as_os_str() == "-" => {
                    let mut v = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)
                        .map_err(|e| fail(1, format!("reading the payload from standard input: {e}")))?;
                    v
                }
                Some(p) => {
                    std::fs::read(p).map_err(|e| fail(2, format!("--payload-file {}: {e}", p.display())))?
                }
            };
            let req = apb::PublishRequest {
                recipient_ids: a.to.clone(),
                r#type: a.event_type.clone(),
                payload: payload.into(),
                content_type: a.content_type.clone(),
                idempotency_key: a.key.clone().unwrap_or_default(),
                ..Default::default()
            };
            let r = client.publish(req, true).await?;
            if a.conn.json {
                let d: Vec<Value> = r
                    .deliveries
                    .iter()
                    .map(|d| json!({"user_id": d.user_id, "seq": d.seq}))
                    .collect();
                out!(
                    "{}",
                    json!({"event_id": r.event_id, "duplicate": r.duplicate, "deliveries": d})
                );
            } else {
                let rows = r
                    .deliveries
                    .iter()
                    .map(|d| vec![d.user_id.to_string(), d.seq.to_string()])
                    .collect();
                out!(
                    "event {}{}",
                    r.event_id,
                    if r.duplicate { " (duplicate)" } else { "" }
                );
                table(&["RECIPIENT", "SEQ"], rows);
            }
            Ok(())
        }
        Cmd::Subscribe(a) => {
            let client = connect(&a.conn, true).await?;
            subscribe(&client, a).await
        }
        Cmd::Events(a) => {
            let client = connect(&a.conn, true).await?;
            let EventsCmd::List {
                user,
                after,
                limit,
                types,
            } = a.cmd;
            let r = client
                .list_events(apb::ListEventsRequest {
                    user_id: user,
                    after_seq: after,
                    limit,
                    types,
                })
                .await?;
            if a.conn.json {
                let events: Vec<Value> = r.events.iter().map(event_json).collect();
                out!(
                    "{}",
                    json!({"events": events, "head_seq": r.head_seq, "has_more": r.has_more})
                );
            } else {
                table(EVENT_HEAD, r.events.iter().map(event_row).collect());
                if r.has_more {
                    let last = r.events.last().map(|e| e.seq).unwrap_or(after);
                    out!("more: --after {last}");
                }
            }
            Ok(())
        }
        Cmd::Health(a) => {
            let client = connect(&a.conn, false).await?;
            let all = client.health().await;
            let serving = all.iter().all(|(_, s)| s == "SERVING");
            if a.conn.json {
                let v: Vec<Value> = all
                    .iter()
                    .map(|(u, s)| json!({"server": u, "status": s}))
                    .collect();
                out!("{}", Value::Array(v));
            } else {
                table(
                    &["SERVER", "STATUS"],
                    all.into_iter().map(|(u, s)| vec![u, s]).collect(),
                );
            }
            if serving {
                Ok(())
            } else {
                Err(fail(5, "not every server is SERVING"))
            }
        }
    }
}

fn save_token(path: &std::path::Path, token: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(token.as_bytes())?;
    f.write_all(b"\n")
}

async fn user(client: &Client, cmd: UserCmd, as_json: bool) -> Result<(), Failure> {
    let show = |u: &upb::User| {
        if as_json {
            out!("{}", user_json(u));
        } else {
            table(USER_HEAD, vec![user_row(u)]);
        }
    };
    match cmd {
        UserCmd::Create {
            email,
            username,
            password,
            first_name,
            last_name,
            roles,
        } => {
            let password = read_secret(password, "new user's password")?;
            let roles = roles
                .iter()
                .map(|r| match r {
                    RoleArg::User => upb::UserRole::User,
                    RoleArg::Admin => upb::UserRole::Admin,
                    RoleArg::Moderator => upb::UserRole::Moderator,
                    RoleArg::Publisher => upb::UserRole::Publisher,
                } as i32)
                .collect();
            let u = client
                .create_user(upb::CreateUserRequest {
                    email,
                    username,
                    password,
                    first_name,
                    last_name,
                    roles,
                })
                .await?;
            show(&u);
        }
        UserCmd::Get { who } => {
            let id = match who.parse::<u64>() {
                Ok(n) => Identifier::UserId(n),
                Err(_) if who.contains('@') => Identifier::Email(who),
                Err(_) => Identifier::Username(who),
            };
            show(&client.find_user(id).await?);
        }
        UserCmd::List { limit, page, search } => {
            let r = client
                .list_users(upb::ListUsersRequest {
                    page,
                    limit,
                    search,
                    ..Default::default()
                })
                .await?;
            if as_json {
                let users: Vec<Value> = r.users.iter().map(user_json).collect();
                out!(
                    "{}",
                    json!({"users": users, "total": r.total, "has_more": r.has_more})
                );
            } else {
                table(USER_HEAD, r.users.iter().map(user_row).collect());
                out!("{} of {} (page {page})", r.users.len(), r.total);
            }
        }
        UserCmd::Update {
            id,
            username,
            first_name,
            last_name,
            bio,
        } => {
            let u = client
                .update_user(upb::UpdateUserRequest {
                    user_id: id,
                    username,
                    first_name,
                    last_name,
                    bio,
                    ..Default::default()
                })
                .await?;
            show(&u);
        }
        UserCmd::Delete { id } => {
            client.delete_user(id).await?;
            if as_json {
                out!("{}", json!({"deleted": id}));
            } else {
                out!("deleted user {id}");
            }
        }
    }
    Ok(())
}

async fn subscribe(client: &Client, a: SubscribeArgs) -> Result<(), Failure> {
    let (start_from, after_seq) = match a.from.as_deref() {
        None => (apb::StartFrom::Unspecified, 0),
        Some("cursor") => (apb::StartFrom::Cursor, 0),
        Some("latest") => (apb::StartFrom::Latest, 0),
        Some("earliest") => (apb::StartFrom::Earliest, 0),
        Some(n) => match n.parse::<u64>() {
            Ok(seq) => (apb::StartFrom::Seq, seq),
            Err(_) => {
                return Err(fail(
                    2,
                    format!("--from {n}: expected cursor, latest, earliest or a seq"),
                ))
            }
        },
    };
    let mut events = client.subscribe(SubscribeOptions {
        user_id: a.user,
        consumer_id: a.consumer.clone().unwrap_or_default(),
        types: a.types.clone(),
        start_from,
        after_seq,
        window: 0,
        auto_ack: true,
    });
    let mut seen = 0u64;
    let mut out = std::io::stdout();
    while a.count.is_none_or(|c| seen < c) {
        let next = tokio::select! {
            e = events.next() => e,
            _ = tokio::signal::ctrl_c() => break,
        };
        let ev = match next {
            None => break,
            Some(Ok(ev)) => ev,
            Some(Err(s)) => return Err(ClientError::Status(s).into()),
        };
        seen += 1;
        let line = if a.conn.json {
            event_json(&ev).to_string()
        } else {
            event_row(&ev).join("  ")
        };
        // Follow mode: one line per event, flushed at once (like `tail -f`).
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            break;
        }
    }
    // Give the cumulative ack of the last event a moment to reach the server.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

fn time(ts: &Option<prost_types::Timestamp>) -> String {
    match ts {
        Some(t) => humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32),
        )
        .to_string(),
        None => String::new(),
    }
}

fn roles(u: &upb::User) -> Vec<String> {
    u.roles
        .iter()
        .map(|r| {
            upb::UserRole::try_from(*r)
                .map(|r| r.as_str_name().trim_start_matches("USER_ROLE_").to_lowercase())
                .unwrap_or_else(|_| r.to_string())
        })
        .collect()
}

fn status(u: &upb::User) -> String {
    upb::UserStatus::try_from(u.status)
        .map(|s| s.as_str_name().trim_start_matches("USER_STATUS_").to_lowercase())
        .unwrap_or_else(|_| u.status.to_string())
}

/// Columns of [`user_row`].
const USER_HEAD: &[&str] = &["ID", "EMAIL", "USERNAME", "NAME", "STATUS", "ROLES"];
/// Columns of [`event_row`].
const EVENT_HEAD: &[&str] = &["SEQ", "TYPE", "PUBLISHED", "PAYLOAD"];

fn user_row(u: &upb::User) -> Vec<String> {
    vec![
        u.id.to_string(),
        u.email.clone(),
        u.username.clone(),
        format!("{} {}", u.first_name, u.last_name).trim().to_string(),
        status(u),
        roles(u).join(","),
    ]
}

fn user_json(u: &upb::User) -> Value {
    json!({
        "id": u.id, "email": u.email, "username": u.username,
        "first_name": u.first_name, "last_name": u.last_name,
        "status": status(u), "roles": roles(u), "bio": u.bio,
        "created_at": time(&u.created_at), "updated_at": time(&u.updated_at),
        "last_login": time(&u.last_login),
    })
}

fn payload_text(p: &[u8]) -> String {
    match std::str::from_utf8(p) {
        Ok(s) => s.to_string(),
        Err(_) => format!("<{} bytes>", p.len()),
    }
}

fn event_row(e: &apb::Event) -> Vec<String> {
    vec![
        e.seq.to_string(),
        e.r#type.clone(),
        time(&e.published_at),
        payload_text(&e.payload),
    ]
}

fn event_json(e: &apb::Event) -> Value {
    let payload = match std::str::from_utf8(&e.payload) {
        Ok(s) => json!(s),
        Err(_) => json!({ "bytes": e.payload.len() }),
    };
    json!({
        "user_id": e.user_id, "seq": e.seq, "event_id": e.event_id, "type": e.r#type,
        "payload": payload, "content_type": e.content_type, "attributes": e.attributes,
        "published_at": time(&e.published_at), "publisher_id": e.publisher_id,
    })
}

/// Prints `rows` under `head`, columns padded to their widest cell.
fn table(head: &[&str], rows: Vec<Vec<String>>) {
    let mut width: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&width).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        out!("{}", s.trim_end());
    };
    line(head.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}
