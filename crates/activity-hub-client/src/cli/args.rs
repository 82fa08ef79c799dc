//! The clap definitions of the client commands and their flags.

use std::{path::PathBuf, time::Duration};

use clap::{builder::TypedValueParser as _, Args, Subcommand, ValueEnum};

use crate::Balance;

/// Options every client command takes.
#[derive(Clone, Debug, Args)]
pub struct Conn {
    /// Server: `http://HOST:PORT`, `https://HOST:PORT`, `HOST:PORT` (https when --ca or
    /// --cert is given, else http), or `dns:///NAME:PORT` (every address NAME resolves
    /// to, resolved again as it changes); repeat or separate with commas for several
    /// (calls are balanced, see --balance).
    #[arg(
        long = "server",
        env = "HUB_SERVER",
        default_value = "http://127.0.0.1:50051",
        value_delimiter = ',',
        global = true
    )]
    pub servers: Vec<String>,
    /// How calls are spread over the servers that are up: `round_robin` (in turn),
    /// `pick_first` (the first in --server order, then the next while it is down), or
    /// `least_pending` (of two drawn at random, the one with fewer calls in flight).
    #[arg(
        long,
        env = "HUB_BALANCE",
        default_value = "round_robin",
        value_parser = clap::builder::PossibleValuesParser::new(Balance::NAMES)
            .map(|s| s.parse::<Balance>().expect("one of the names")),
        global = true
    )]
    pub balance: Balance,
    /// Access token (default: the one `activity-hub login` saved).
    #[arg(long, env = "HUB_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print JSON (one object, or one per line when following) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// CA certificate (PEM) to trust for https:// servers.
    #[arg(long, global = true)]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for servers that require one (mTLS); needs --key.
    #[arg(long, global = true, requires = "key")]
    pub cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, global = true, requires = "cert")]
    pub key: Option<PathBuf>,
    /// How long to keep trying to reach a server (connect, and reconnect while
    /// following) before giving up with exit code 5, e.g. `10s`.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, global = true)]
    pub connect_timeout: Duration,
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
        /// Id, email or username.
        who: String,
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
        /// Id, email or username.
        who: String,
    },
    /// Follow changes to users as they happen (created, updated, deleted, logged in).
    Watch {
        /// Ids, emails or usernames to watch (default: everyone; admins and moderators).
        who: Vec<String>,
        /// Stop after this many changes (default: follow until interrupted).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Replace a user's roles (admins); effective on their next call.
    SetRoles {
        /// Id, email or username.
        who: String,
        /// Roles (repeat; at least one): user, admin, moderator, publisher.
        #[arg(long = "role", value_enum, required = true)]
        roles: Vec<RoleArg>,
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
    /// Recipients: ids, emails or usernames (comma-separated or repeated).
    #[arg(long = "to", required = true, value_delimiter = ',')]
    pub to: Vec<String>,
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
    pub idempotency_key: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: Conn,
}

/// `activity-hub subscribe`.
#[derive(Clone, Debug, Args)]
pub struct SubscribeArgs {
    /// Whose events: id, email or username (default: yours).
    #[arg(long)]
    pub user: Option<String>,
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
        /// Whose events: id, email or username (default: yours).
        #[arg(long)]
        user: Option<String>,
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
    /// Show the logged-in user (as stored now: current roles and status).
    Whoami(HealthArgs),
    /// End the saved session on the server and forget it here.
    Logout(LogoutArgs),
    /// Change your password, or set another user's (admins).
    Password(PasswordArgs),
    /// Show a durable consumer's stored position.
    Cursor(CursorArgs),
}

/// `activity-hub cursor ...`.
#[derive(Clone, Debug, Args)]
pub struct CursorArgs {
    #[command(subcommand)]
    #[allow(missing_docs)]
    pub cmd: CursorCmd,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: Conn,
}

/// Cursor subcommands.
#[derive(Clone, Debug, Subcommand)]
pub enum CursorCmd {
    /// The last seq a consumer acknowledged, and the newest seq.
    Get {
        /// The durable consumer's name.
        #[arg(long)]
        consumer: String,
        /// Whose stream: id, email or username (default: yours).
        #[arg(long)]
        user: Option<String>,
    },
}

/// `activity-hub logout`.
#[derive(Clone, Debug, Args)]
pub struct LogoutArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: Conn,
}

/// `activity-hub password ...`.
#[derive(Clone, Debug, Args)]
pub struct PasswordArgs {
    #[command(subcommand)]
    #[allow(missing_docs)]
    pub cmd: PasswordCmd,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: Conn,
}

/// Password subcommands.
#[derive(Clone, Debug, Subcommand)]
pub enum PasswordCmd {
    /// Change your own password; your other sessions end.
    Change {
        /// Current password (default: HUB_PASSWORD, else read from standard input).
        #[arg(long, env = "HUB_PASSWORD", hide_env_values = true)]
        old_password: Option<String>,
        /// New password, at least 8 characters (default: HUB_NEW_PASSWORD, else read).
        #[arg(long, env = "HUB_NEW_PASSWORD", hide_env_values = true)]
        new_password: Option<String>,
    },
    /// Set a user's password (admins); every session of theirs ends.
    Set {
        /// Id, email or username.
        who: String,
        /// New password, at least 8 characters (default: HUB_NEW_PASSWORD, else read).
        #[arg(long, env = "HUB_NEW_PASSWORD", hide_env_values = true)]
        new_password: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: Cmd,
    }

    fn conn(args: &[&str]) -> Result<Conn, clap::Error> {
        let argv = ["activity-hub", "health"].iter().chain(args);
        match Cli::try_parse_from(argv)?.cmd {
            Cmd::Health(h) => Ok(h.conn),
            _ => unreachable!("parsed health"),
        }
    }

    #[test]
    fn balance_defaults_to_round_robin_and_takes_the_three_policies() {
        assert_eq!(conn(&[]).unwrap().balance, Balance::RoundRobin);
        for (flag, want) in [
            ("pick_first", Balance::PickFirst),
            ("least_pending", Balance::LeastPending),
            ("round_robin", Balance::RoundRobin),
        ] {
            assert_eq!(conn(&["--balance", flag]).unwrap().balance, want);
        }
        let e = conn(&["--balance", "fastest"]).unwrap_err().to_string();
        assert!(e.contains("least_pending"), "the error lists the policies: {e}");
    }

    #[test]
    fn servers_take_dns_targets_beside_uris() {
        let c = conn(&["--server", "dns:///hub.internal:50051,10.0.0.1:50051"]).unwrap();
        assert_eq!(c.servers, ["dns:///hub.internal:50051", "10.0.0.1:50051"]);
    }
}
