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

use std::{io::Write as _, process::ExitCode};

use serde_json::{json, Value};
use tonic::Code;

pub use args::*;
use output::table;

use crate::{token, Client, ClientConfig, ClientError};

/// Exit codes, also listed in `activity-hub --help`.
pub const EXIT_CODES: &str = "Exit codes: 0 ok; 1 other failure; 2 bad command line; 3 not found; \
4 not logged in or not allowed; 5 server unreachable or unavailable; 6 request refused \
(invalid, already exists, rate limited).";

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
            None => token::saved(),
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
        Cmd::Login(a) => login(a).await,
        Cmd::User(a) => {
            let client = connect(&a.conn, true).await?;
            users::run(&client, a.cmd, a.conn.json).await
        }
        Cmd::Publish(a) => events::publish(a).await,
        Cmd::Subscribe(a) => events::subscribe(a).await,
        Cmd::Events(a) => events::list(a).await,
        Cmd::Health(a) => health(a).await,
    }
}

async fn login(a: LoginArgs) -> Result<(), Failure> {
    let client = connect(&a.conn, false).await?;
    let password = read_secret(a.password, "password")?;
    let token = client.login(&a.identifier, &password).await?;
    let path = token::path().ok_or_else(|| fail(1, "no HOME or XDG_CONFIG_HOME to save the token in"))?;
    token::save(&path, &token)
        .map_err(|e| fail(1, format!("saving the token to {}: {e}", path.display())))?;
    if a.conn.json {
        out!("{}", json!({"token_file": path, "access_token": token}));
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
