//! The command-line client in the `activity-hub` binary: `login`, `user ...`, `publish`,
//! `subscribe`, `events list`, `health`. Built on [`crate::Client`]. Tables for people,
//! `--json` for scripts, and exit codes that say what kind of failure it was.
//!
//! - `args`: the clap definitions of every command and flag.
//! - `users`: `user get|create|update|delete|list`.
//! - `events`: `publish`, `subscribe` and `events list`.
//! - `output`: tables and JSON.

/// `println!` for command output that ignores a closed standard output (`... | head`)
/// instead of panicking.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

mod args;
mod events;
mod output;
mod users;

use std::process::ExitCode;

use serde_json::{json, Value};
use tonic::Code;

pub use args::*;
use output::table;

use crate::{proto::auth::v1::LoginResponse, token, Client, ClientConfig, ClientError};

/// Exit codes, also listed in `activity-hub --help`.
pub const EXIT_CODES: &str = "Exit codes: 0 ok; 1 other failure; 2 bad command line; 3 not found; \
4 not logged in or not allowed; 5 server unreachable or unavailable; 6 request refused \
(invalid, already exists, rate limited); 7 events were lost: retention pruned them before \
`subscribe` could read them (a warning names them); 130 interrupted (Ctrl-C).";

/// `subscribe` met events pruned before it could read them.
pub const EXIT_PRUNED: u8 = 7;
/// Interrupted by Ctrl-C.
pub const EXIT_INTERRUPTED: u8 = 130;

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

/// A `--server` value as a URI (or a `dns:` target, which the client takes as it is):
/// `HOST:PORT` gets `https://` when TLS is configured, else `http://`.
fn endpoint_uri(server: &str, tls: bool) -> String {
    if server.contains("://") || server.starts_with("dns:") {
        server.to_string()
    } else if tls {
        format!("https://{server}")
    } else {
        format!("http://{server}")
    }
}

fn read_pem(flag: &str, path: &std::path::Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| fail(2, format!("{flag} {}: {e}", path.display())))
}

async fn connect(conn: &Conn, with_token: bool) -> Result<Client, Failure> {
    let tls = conn.ca.is_some() || conn.cert.is_some();
    let mut cfg = ClientConfig::new(conn.servers.iter().map(|s| endpoint_uri(s.trim(), tls)));
    cfg.deadline = conn.timeout;
    cfg.connect_timeout = conn.connect_timeout;
    cfg.balance = conn.balance;
    if tls {
        let mut t = tonic::transport::ClientTlsConfig::new();
        if let Some(ca) = &conn.ca {
            t = t.ca_certificate(tonic::transport::Certificate::from_pem(read_pem("--ca", ca)?));
        }
        if let (Some(cert), Some(key)) = (&conn.cert, &conn.key) {
            t = t.identity(tonic::transport::Identity::from_pem(
                read_pem("--cert", cert)?,
                read_pem("--key", key)?,
            ));
        }
        cfg.tls = Some(t);
    }
    let saved = match (&conn.token, with_token) {
        (None, true) => token::saved_session(),
        _ => None,
    };
    if with_token {
        cfg.token = conn.token.clone();
    }
    let client = Client::connect(cfg).await?;
    // The saved session: refreshed when the server refuses its access token, and the
    // rotated refresh token saved at once (the old one is spent).
    if let Some((access, refresh)) = saved {
        match refresh {
            Some(refresh) => {
                client.use_session(&LoginResponse {
                    access_token: access,
                    refresh_token: refresh,
                    ..Default::default()
                });
                if let Some(path) = token::path() {
                    client.on_session_refresh(move |r| {
                        if let Err(e) = token::save_session(&path, &r.access_token, Some(&r.refresh_token)) {
                            eprintln!(
                                "warning: could not save the refreshed session to {}: {e}",
                                path.display()
                            );
                        }
                    });
                }
            }
            None => client.set_token(Some(access)),
        }
    }
    Ok(client)
}

/// A secret from its flag or environment variable; else typed at a terminal without
/// echo, or one line of standard input when it is not a terminal (a pipe, a file).
fn read_secret(given: Option<String>, what: &str) -> Result<String, Failure> {
    use std::io::IsTerminal as _;
    if let Some(p) = given {
        return Ok(p);
    }
    let line = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("{what}: "))
            .map_err(|e| fail(1, format!("reading the {what} from the terminal: {e}")))?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| fail(1, format!("reading the {what} from standard input: {e}")))?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
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
        Cmd::Login(a) => login(a).await,
        Cmd::User(a) => {
            let client = connect(&a.conn, true).await?;
            users::run(&client, a.cmd, a.conn.json).await
        }
        Cmd::Publish(a) => events::publish(a).await,
        Cmd::Subscribe(a) => events::subscribe(a).await,
        Cmd::Events(a) => events::list(a).await,
        Cmd::Health(a) => health(a).await,
        Cmd::Whoami(a) => {
            let client = connect(&a.conn, true).await?;
            let u = client.who_am_i().await?;
            if a.conn.json {
                out!("{}", output::user_json(&u));
            } else {
                table(output::USER_HEAD, vec![output::user_row(&u)]);
            }
            Ok(())
        }
        Cmd::Logout(a) => logout(a).await,
        Cmd::Password(a) => password(a).await,
        Cmd::Cursor(a) => {
            let client = connect(&a.conn, true).await?;
            let CursorCmd::Get { consumer, user } = a.cmd;
            let user = users::resolve_or_me(&client, user.as_deref()).await?;
            let c = client.get_cursor(user, &consumer).await?;
            if a.conn.json {
                out!(
                    "{}",
                    json!({"user_id": c.user_id, "consumer_id": c.consumer_id, "acked_seq": c.acked_seq, "head_seq": c.head_seq})
                );
            } else {
                table(
                    &["USER", "CONSUMER", "ACKED", "HEAD", "BEHIND"],
                    vec![vec![
                        c.user_id.to_string(),
                        c.consumer_id.clone(),
                        c.acked_seq.to_string(),
                        c.head_seq.to_string(),
                        c.head_seq.saturating_sub(c.acked_seq).to_string(),
                    ]],
                );
            }
            Ok(())
        }
    }
}

async fn logout(a: LogoutArgs) -> Result<(), Failure> {
    let client = connect(&a.conn, true).await?;
    client.logout(None).await?;
    if a.conn.token.is_none() {
        if let Some(path) = token::path() {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(fail(1, format!("removing {}: {e}", path.display()))),
            }
        }
    }
    if a.conn.json {
        out!("{}", json!({"logged_out": true}));
    } else {
        out!("logged out; the session has ended on the server");
    }
    Ok(())
}

async fn password(a: PasswordArgs) -> Result<(), Failure> {
    let client = connect(&a.conn, true).await?;
    match a.cmd {
        PasswordCmd::Change {
            old_password,
            new_password,
        } => {
            let old = read_secret(old_password, "current password")?;
            let new = read_secret(new_password, "new password")?;
            client.change_password(&old, &new).await?;
            out!("password changed; your other sessions have ended");
        }
        PasswordCmd::Set { who, new_password } => {
            let id = users::resolve(&client, &who).await?;
            let new = read_secret(new_password, "new password")?;
            client.set_password(id, &new).await?;
            out!("password of user {id} set; their sessions have ended");
        }
    }
    Ok(())
}

async fn login(a: LoginArgs) -> Result<(), Failure> {
    let client = connect(&a.conn, false).await?;
    let password = read_secret(a.password, "password")?;
    let session = client.login_session(&a.identifier, &password).await?;
    let path = token::path().ok_or_else(|| fail(1, "no HOME or XDG_CONFIG_HOME to save the token in"))?;
    token::save_session(&path, &session.access_token, Some(&session.refresh_token))
        .map_err(|e| fail(1, format!("saving the token to {}: {e}", path.display())))?;
    if a.conn.json {
        out!(
            "{}",
            json!({"token_file": path, "access_token": session.access_token})
        );
    } else {
        out!("logged in; token saved to {}", path.display());
    }
    Ok(())
}

async fn health(a: HealthArgs) -> Result<(), Failure> {
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
