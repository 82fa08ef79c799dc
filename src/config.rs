//! The typed configuration: parsed once from flags and environment variables by clap,
//! validated before anything starts, every default documented in `--help`.

use std::{net::SocketAddr, time::Duration};

use clap::{builder::BoolishValueParser, Args, Parser, Subcommand, ValueEnum};

use crate::users::password::{OWASP_ITERATIONS, OWASP_MEMORY_KIB};

/// activity-hub: durable, ordered per-user activity streams over gRPC, and the user
/// accounts behind them.
#[derive(Debug, Parser)]
#[command(name = "activity-hub", version, about, long_about = None, propagate_version = true, after_help = activity_hub_client::cli::EXIT_CODES)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands of the binary.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (gRPC on --listen, Prometheus metrics on --metrics-listen).
    Serve(Box<ServeConfig>),
    /// Measure a hub under load: runs `activity-hub-bench` (installed beside this binary)
    /// with these arguments; `activity-hub bench --help` shows its own help.
    #[command(disable_help_flag = true)]
    Bench {
        /// The load tool's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Print a shell completion script, e.g.
    /// `activity-hub completions bash > /etc/bash_completion.d/activity-hub`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// The client commands.
    #[command(flatten)]
    Client(Box<activity_hub_client::cli::Cmd>),
}

/// Whether GetUser and authentication read users through the in-process cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum UserCacheMode {
    /// On for SQLite (one server owns the file); off for PostgreSQL, where other servers
    /// may write users this process would not see.
    Auto,
    /// Always on. With PostgreSQL, only if this is the only server writing users.
    On,
    /// Always read the store.
    Off,
}

/// What a publish survives before it is answered (see `store::Durability`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DurabilityMode {
    /// Answered publishes survive a power loss or OS crash: every commit is fsynced
    /// (SQLite `synchronous = FULL`; PostgreSQL's `synchronous_commit`).
    PowerLoss,
    /// Faster: answered publishes survive the hub's process crashing, but a power loss
    /// or OS crash (PostgreSQL: also a database-server crash) can lose the last commits
    /// (SQLite `synchronous = NORMAL`; PostgreSQL `synchronous_commit = off`). What NATS
    /// JetStream promises by default.
    ProcessCrash,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `activity-hub serve`: every flag also reads the environment variable shown.
#[derive(Clone, Debug, Args)]
pub struct ServeConfig {
    /// Address the gRPC server listens on.
    #[arg(long, env = "HUB_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Store URL: `sqlite://FILE` (created if missing) or `postgres://USER@HOST/DB`.
    #[arg(long, env = "HUB_DATABASE_URL", default_value = "sqlite://activity-hub.db")]
    pub database_url: String,

    /// Address serving Prometheus text at /metrics; `off` disables it.
    #[arg(long, env = "HUB_METRICS_LISTEN", default_value = "127.0.0.1:9464")]
    pub metrics_listen: String,

    /// HMAC secret signing access tokens (at least 32 bytes). Default: generated once and
    /// kept in the store, so tokens survive restarts and every server on the same
    /// database accepts them.
    #[arg(long, env = "HUB_AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: Option<String>,

    /// Let anyone call CreateUser, even without a token, to create a plain user.
    #[arg(long, env = "HUB_OPEN_SIGNUP", value_parser = BoolishValueParser::new(), default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub open_signup: bool,

    /// Browser origins allowed to call the port cross-origin (CORS, for REST, SSE and
    /// gRPC-Web), comma-separated, e.g. `https://app.example.com,http://localhost:3000`.
    /// Default: none (same-origin only, as the built-in console is).
    #[arg(long, env = "HUB_CORS_ALLOW_ORIGIN", value_delimiter = ',')]
    pub cors_allow_origin: Vec<String>,

    /// HTTP/2 concurrent streams per connection (one client connection may carry many
    /// users' subscriptions).
    #[arg(long, env = "HUB_MAX_STREAMS_PER_CONNECTION", default_value_t = 1024)]
    pub max_streams_per_connection: u32,

    /// Interval of heartbeats on idle subscription streams, e.g. `15s`, `500ms`.
    #[arg(long, env = "HUB_HEARTBEAT_INTERVAL", default_value = "15s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,

    /// Email of the first admin, created (username `admin`) when the store has no admin.
    #[arg(
        long,
        env = "HUB_BOOTSTRAP_ADMIN_EMAIL",
        requires = "bootstrap_admin_password"
    )]
    pub bootstrap_admin_email: Option<String>,

    /// Password of the first admin (at least 8 characters).
    #[arg(
        long,
        env = "HUB_BOOTSTRAP_ADMIN_PASSWORD",
        hide_env_values = true,
        requires = "bootstrap_admin_email"
    )]
    pub bootstrap_admin_password: Option<String>,

    /// Lifetime of access tokens issued by Login and Refresh, e.g. `1h`, `30m`.
    /// Clients refresh them before they expire (the Rust client does so by itself).
    #[arg(long, env = "HUB_TOKEN_TTL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub token_ttl: Duration,

    /// How long a session lives without a Refresh: each Refresh moves its deadline this
    /// far ahead. At least --token-ttl. After it, log in again.
    #[arg(long, env = "HUB_REFRESH_TOKEN_TTL", default_value = "30days", value_parser = humantime::parse_duration)]
    pub refresh_token_ttl: Duration,

    /// In-process user cache for GetUser and authentication.
    #[arg(long, env = "HUB_USER_CACHE", value_enum, default_value_t = UserCacheMode::Auto)]
    pub user_cache: UserCacheMode,

    /// Most users the cache holds.
    #[arg(long, env = "HUB_USER_CACHE_CAPACITY", default_value_t = 100_000)]
    pub user_cache_capacity: usize,

    /// Argon2id memory cost in KiB (OWASP: 19456). Lower only for tests.
    #[arg(long, env = "HUB_PASSWORD_HASH_MEMORY_KIB", default_value_t = OWASP_MEMORY_KIB)]
    pub password_hash_memory_kib: u32,

    /// Argon2id iterations (OWASP: 2).
    #[arg(long, env = "HUB_PASSWORD_HASH_ITERATIONS", default_value_t = OWASP_ITERATIONS)]
    pub password_hash_iterations: u32,

    /// Most pooled store connections. On SQLite one of them is the writer, which every
    /// write goes through, and the rest serve reads (at least one); on PostgreSQL one is
    /// held for LISTEN.
    #[arg(long, env = "HUB_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// How long a call waits for the store (a free connection, a reconnect to a
    /// PostgreSQL that is down, SQLite's write lock held by another process) before it
    /// answers UNAVAILABLE. Keep it below your clients' deadlines so they see a prompt
    /// UNAVAILABLE rather than DEADLINE_EXCEEDED while the store is away.
    #[arg(long, env = "HUB_DB_ACQUIRE_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub db_acquire_timeout: Duration,

    /// SQLite's page caches, all connections together, in MiB: half for the writer, half
    /// shared by the readers. The store's whole cache budget; ignored on PostgreSQL,
    /// whose cache is the database server's.
    #[arg(long, env = "HUB_DB_CACHE_MIB", default_value_t = 64)]
    pub db_cache_mib: u64,

    /// What an answered publish survives. `process-crash` trades power-loss safety for
    /// throughput (see README, "Durability").
    #[arg(long, env = "HUB_DURABILITY", value_enum, default_value_t = DurabilityMode::PowerLoss)]
    pub durability: DurabilityMode,

    /// How long a graceful shutdown waits for calls to finish before closing anyway.
    #[arg(long, env = "HUB_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// Unacked events in flight per subscription when the client's Start says 0.
    #[arg(long, env = "HUB_DEFAULT_WINDOW", default_value_t = 256)]
    pub default_window: u32,

    /// Drop events older than this from the log, e.g. `7d`, `12h`; `0` keeps them forever.
    #[arg(long, env = "HUB_RETENTION_MAX_AGE", default_value = "7d", value_parser = parse_duration_or_zero)]
    pub retention_max_age: Duration,

    /// Keep at most this many newest events per recipient; `0` = no count limit.
    #[arg(long, env = "HUB_RETENTION_MAX_EVENTS", default_value_t = 100_000)]
    pub retention_max_events: u64,

    /// How often retention runs (in the background; publishes are not blocked).
    #[arg(long, env = "HUB_RETENTION_INTERVAL", default_value = "1m", value_parser = humantime::parse_duration)]
    pub retention_interval: Duration,

    /// How long a publisher's idempotency key deduplicates repeats of the same publish.
    #[arg(long, env = "HUB_IDEMPOTENCY_WINDOW", default_value = "24h", value_parser = humantime::parse_duration)]
    pub idempotency_window: Duration,

    /// SQLite: how often deliveries committed to the small `inbox_tail` table are merged
    /// into `inbox` (also whenever 65,536 are waiting), in slices that take turns with
    /// publishes. Shorter: a smaller tail; longer: fewer page rewrites per delivery.
    #[arg(long, env = "HUB_INBOX_MERGE_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub inbox_merge_interval: Duration,

    /// Servers sharing one PostgreSQL tell each other about commits, consumer takeovers,
    /// acks and user changes over this NATS server (`nats://HOST:PORT`, NATS core, no
    /// JetStream), published after each commit. PostgreSQL stays the only truth: while the
    /// bus is down, servers poll the store every second (live delivery slows, nothing is
    /// lost or reordered). Default: none, PostgreSQL LISTEN/NOTIFY (sent after commit).
    #[arg(long, env = "HUB_CLUSTER_BUS")]
    pub cluster_bus: Option<String>,

    /// This server's name in logs and metrics (`activity_hub_build_info{node=...}`);
    /// 1-64 characters of [A-Za-z0-9_.-]. Default: generated at start.
    #[arg(long, env = "HUB_NODE_ID")]
    pub node_id: Option<String>,

    /// Most publishes committed in one transaction (group commit). A batch closes at this
    /// size (or 32 MiB of payload) or when the previous commit finishes, whichever comes
    /// first; larger batches raise throughput under load, smaller ones cap commit latency.
    #[arg(long, env = "HUB_PUBLISH_BATCH_MAX", default_value_t = 8192)]
    pub publish_batch_max: usize,

    /// Largest event payload accepted, in bytes (larger: RESOURCE_EXHAUSTED).
    #[arg(long, env = "HUB_MAX_PAYLOAD_BYTES", default_value_t = 256 * 1024)]
    pub max_payload_bytes: usize,

    /// Most recipients of one publish.
    #[arg(long, env = "HUB_MAX_RECIPIENTS", default_value_t = 10_000)]
    pub max_recipients: usize,

    /// Authenticated calls each user may make per second (token bucket, every RPC counts
    /// once, a stream when it opens); over it: RESOURCE_EXHAUSTED with `retry-after-ms`.
    /// `0` turns the limit off.
    #[arg(long, env = "HUB_USER_RATE_LIMIT", default_value_t = 1000)]
    pub user_rate_limit: u32,

    /// Calls a user may make at once above --user-rate-limit before being limited.
    #[arg(long, env = "HUB_USER_RATE_BURST", default_value_t = 2000)]
    pub user_rate_burst: u32,

    /// Login attempts per minute for one peer address and one email/username (brute-force
    /// guard); over it: RESOURCE_EXHAUSTED with `retry-after-ms`. `0` turns it off.
    #[arg(long, env = "HUB_LOGIN_RATE_LIMIT", default_value_t = 10)]
    pub login_rate_limit: u32,

    /// Login attempts allowed at once, per peer address and identifier.
    #[arg(long, env = "HUB_LOGIN_RATE_BURST", default_value_t = 5)]
    pub login_rate_burst: u32,

    /// Unary calls served at once by the whole server; more are shed at once with
    /// UNAVAILABLE ("overloaded"), so a burst cannot queue without bound. Streams are not
    /// counted (their number is bounded by --max-streams-per-connection).
    #[arg(long, env = "HUB_MAX_CONCURRENT_UNARY", default_value_t = 4096)]
    pub max_concurrent_unary: usize,

    /// Longest a unary call may run, whatever deadline the client sent (shorter client
    /// deadlines in `grpc-timeout` are honoured): DEADLINE_EXCEEDED and the call's store
    /// work is cancelled. Never applied to streams. `0` = no server-side limit.
    #[arg(long, env = "HUB_UNARY_TIMEOUT", default_value = "30s", value_parser = parse_duration_or_zero)]
    pub unary_timeout: Duration,

    /// Largest request message accepted, in bytes (larger: RESOURCE_EXHAUSTED).
    #[arg(long, env = "HUB_MAX_DECODE_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_decode_message_bytes: usize,

    /// Largest response message sent, in bytes (a larger one ends the call with
    /// RESOURCE_EXHAUSTED rather than being sent).
    #[arg(long, env = "HUB_MAX_ENCODE_MESSAGE_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_encode_message_bytes: usize,

    /// HTTP/2: streams a client may open and reset before the server has accepted them;
    /// a flood of resets beyond it ends that connection (rapid-reset guard).
    #[arg(long, env = "HUB_HTTP2_MAX_PENDING_RESETS", default_value_t = 20)]
    pub http2_max_pending_resets: usize,

    /// HTTP/2: largest header list a request may carry, in bytes.
    #[arg(long, env = "HUB_HTTP2_MAX_HEADER_LIST_BYTES", default_value_t = 16 * 1024)]
    pub http2_max_header_list_bytes: u32,

    /// HTTP/2: ping each connection this often, so dead peers of idle streams are found;
    /// `0` disables pings.
    #[arg(long, env = "HUB_HTTP2_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = parse_duration_or_zero)]
    pub http2_keepalive_interval: Duration,

    /// HTTP/2: a connection whose ping is not answered within this is closed (its streams
    /// end and their subscriptions are released).
    #[arg(long, env = "HUB_HTTP2_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub http2_keepalive_timeout: Duration,

    /// PEM certificate chain: serve gRPC over TLS (with --tls-key).
    #[arg(long, env = "HUB_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "HUB_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// PEM CA bundle: require client certificates signed by it (mutual TLS).
    #[arg(long, env = "HUB_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<std::path::PathBuf>,

    /// OpenTelemetry: export one span per RPC over OTLP/gRPC to this collector, e.g.
    /// `http://127.0.0.1:4317`; a W3C `traceparent` in request metadata becomes the parent.
    /// Off by default.
    #[arg(long, env = "HUB_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Log format.
    #[arg(long, env = "HUB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter, e.g. `info` or `activity_hub=debug,info`; RUST_LOG overrides it.
    #[arg(long, env = "HUB_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// `0` (disabled) or a humantime duration.
fn parse_duration_or_zero(s: &str) -> Result<Duration, humantime::DurationError> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s)
}

/// A configuration value that cannot work; the message names the flag.
#[derive(Debug, thiserror::Error)]
#[error("{flag}: {reason}")]
pub struct ConfigError {
    /// The flag (and its variable).
    pub flag: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl ServeConfig {
    /// `--node-id`, or a name generated once per process (`hub-` and 8 hex digits).
    pub fn node(&self) -> &str {
        static GENERATED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        self.node_id
            .as_deref()
            .unwrap_or_else(|| GENERATED.get_or_init(|| format!("hub-{:08x}", rand::random::<u32>())))
    }

    /// A configuration from command-line style arguments (without the `serve` word);
    /// used by tests and embedders to get exactly the defaults of the binary.
    pub fn from_args<I: IntoIterator<Item = S>, S: Into<std::ffi::OsString> + Clone>(
        args: I,
    ) -> Result<ServeConfig, clap::Error> {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            config: ServeConfig,
        }
        let argv = std::iter::once(std::ffi::OsString::from("serve")).chain(args.into_iter().map(Into::into));
        Ok(Only::try_parse_from(argv)?.config)
    }

    /// Fails fast on values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |flag, reason: &str| {
            Err(ConfigError {
                flag,
                reason: reason.to_string(),
            })
        };
        if let Some(s) = &self.auth_secret {
            if s.len() < 32 {
                return err("--auth-secret (HUB_AUTH_SECRET)", "must be at least 32 bytes");
            }
        }
        if let Some(p) = &self.bootstrap_admin_password {
            if p.chars().count() < 8 {
                return err(
                    "--bootstrap-admin-password (HUB_BOOTSTRAP_ADMIN_PASSWORD)",
                    "must be at least 8 characters",
                );
            }
        }
        if let Some(e) = &self.bootstrap_admin_email {
            if crate::model::validate_email(e).is_err() {
                return err(
                    "--bootstrap-admin-email (HUB_BOOTSTRAP_ADMIN_EMAIL)",
                    "must look like local@domain",
                );
            }
        }
        if let Some(bus) = &self.cluster_bus {
            let flag = "--cluster-bus (HUB_CLUSTER_BUS)";
            let host = bus.strip_prefix("nats://").unwrap_or("");
            if host.is_empty() || host.contains(['/', ' ']) {
                return err(flag, "must be nats://HOST:PORT, e.g. nats://127.0.0.1:4222");
            }
            if crate::store::Backend::of_url(&self.database_url) != crate::store::Backend::Postgres {
                return err(
                    flag,
                    "needs a PostgreSQL --database-url: a SQLite store is one server's, with nobody to tell",
                );
            }
        }
        if let Some(node) = &self.node_id {
            let ok = (1..=64).contains(&node.len())
                && node
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !ok {
                return err(
                    "--node-id (HUB_NODE_ID)",
                    "must be 1-64 characters of [A-Za-z0-9_.-]",
                );
            }
        }
        for origin in &self.cors_allow_origin {
            if let Err(reason) = check_origin(origin) {
                return Err(ConfigError {
                    flag: "--cors-allow-origin (HUB_CORS_ALLOW_ORIGIN)",
                    reason: format!("{origin:?}: {reason}"),
                });
            }
        }
        if self.max_streams_per_connection == 0 {
            return err(
                "--max-streams-per-connection (HUB_MAX_STREAMS_PER_CONNECTION)",
                "must be at least 1",
            );
        }
        if self.heartbeat_interval < Duration::from_millis(10) {
            return err(
                "--heartbeat-interval (HUB_HEARTBEAT_INTERVAL)",
                "must be at least 10ms",
            );
        }
        if self.token_ttl < Duration::from_secs(1) {
            return err("--token-ttl (HUB_TOKEN_TTL)", "must be at least 1s");
        }
        if self.refresh_token_ttl < self.token_ttl {
            return err(
                "--refresh-token-ttl (HUB_REFRESH_TOKEN_TTL)",
                "must be at least --token-ttl (an access token never outlives its session)",
            );
        }
        if self.db_max_connections == 0 {
            return err(
                "--db-max-connections (HUB_DB_MAX_CONNECTIONS)",
                "must be at least 1",
            );
        }
        if self.db_acquire_timeout < Duration::from_millis(10) {
            return err(
                "--db-acquire-timeout (HUB_DB_ACQUIRE_TIMEOUT)",
                "must be at least 10ms",
            );
        }
        if self.db_cache_mib < 2 {
            return err("--db-cache-mib (HUB_DB_CACHE_MIB)", "must be at least 2");
        }
        if crate::store::Backend::of_url(&self.database_url) == crate::store::Backend::Postgres
            && self.db_max_connections < 2
        {
            return err(
                "--db-max-connections (HUB_DB_MAX_CONNECTIONS)",
                "must be at least 2 on PostgreSQL (one connection is held for LISTEN)",
            );
        }
        if self.password_hash_memory_kib < 8 || self.password_hash_iterations == 0 {
            return err(
                "--password-hash-memory-kib / --password-hash-iterations",
                "must be at least 8 KiB and 1 iteration",
            );
        }
        if self.default_window == 0 || self.default_window > 10_000 {
            return err("--default-window (HUB_DEFAULT_WINDOW)", "must be 1..=10000");
        }
        if self.publish_batch_max == 0 {
            return err(
                "--publish-batch-max (HUB_PUBLISH_BATCH_MAX)",
                "must be at least 1",
            );
        }
        if self.inbox_merge_interval < Duration::from_millis(10) {
            return err(
                "--inbox-merge-interval (HUB_INBOX_MERGE_INTERVAL)",
                "must be at least 10ms",
            );
        }
        if self.retention_interval < Duration::from_millis(10) {
            return err(
                "--retention-interval (HUB_RETENTION_INTERVAL)",
                "must be at least 10ms",
            );
        }
        if self.max_recipients == 0 {
            return err("--max-recipients (HUB_MAX_RECIPIENTS)", "must be at least 1");
        }
        if self.user_rate_limit > 0 && self.user_rate_burst == 0 {
            return err("--user-rate-burst (HUB_USER_RATE_BURST)", "must be at least 1");
        }
        if self.login_rate_limit > 0 && self.login_rate_burst == 0 {
            return err("--login-rate-burst (HUB_LOGIN_RATE_BURST)", "must be at least 1");
        }
        if self.max_concurrent_unary == 0 {
            return err(
                "--max-concurrent-unary (HUB_MAX_CONCURRENT_UNARY)",
                "must be at least 1",
            );
        }
        if self.max_decode_message_bytes < 1024 || self.max_encode_message_bytes < 1024 {
            return err(
                "--max-decode-message-bytes / --max-encode-message-bytes",
                "must be at least 1024",
            );
        }
        if self.max_payload_bytes >= self.max_decode_message_bytes {
            return err(
                "--max-payload-bytes (HUB_MAX_PAYLOAD_BYTES)",
                "must be smaller than --max-decode-message-bytes, which bounds the whole request",
            );
        }
        if self.http2_max_header_list_bytes < 1024 {
            return err(
                "--http2-max-header-list-bytes (HUB_HTTP2_MAX_HEADER_LIST_BYTES)",
                "must be at least 1024",
            );
        }
        if self.http2_keepalive_timeout < Duration::from_millis(10) {
            return err(
                "--http2-keepalive-timeout (HUB_HTTP2_KEEPALIVE_TIMEOUT)",
                "must be at least 10ms",
            );
        }
        if let Some(e) = &self.otlp_endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return err(
                    "--otlp-endpoint (HUB_OTLP_ENDPOINT)",
                    "must be an http:// or https:// URL",
                );
            }
        }
        if self.metrics_listen != "off" && self.metrics_listen.parse::<SocketAddr>().is_err() {
            return err(
                "--metrics-listen (HUB_METRICS_LISTEN)",
                "must be HOST:PORT or `off`",
            );
        }
        Ok(())
    }
}

/// An origin as browsers send it: `http(s)://host[:port]`, nothing after.
fn check_origin(origin: &str) -> Result<(), &'static str> {
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or("must start with http:// or https:// (list origins one by one; * is not accepted)")?;
    if rest.is_empty()
        || rest.contains(['/', '?', '#', ' ', '*'])
        || http::HeaderValue::from_str(origin).is_err()
    {
        return Err("must be scheme://host[:port], with no path, e.g. https://app.example.com");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap's own consistency checks over every command (unique flag names across global
    /// and local flags, valid defaults): a clash panics here, not in a user's terminal.
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }

    #[test]
    fn the_cluster_bus_is_nats_on_postgres_and_node_ids_are_names() {
        let check = |args: &[&str]| {
            ServeConfig::from_args(args.iter().copied())
                .unwrap()
                .validate()
                .map_err(|e| e.to_string())
        };
        let pg = ["--database-url", "postgres://hub@127.0.0.1/hub"];
        assert!(check(&[pg[0], pg[1], "--cluster-bus", "nats://127.0.0.1:4222"]).is_ok());
        let e = check(&["--cluster-bus", "nats://127.0.0.1:4222"]).unwrap_err();
        assert!(e.contains("--cluster-bus") && e.contains("PostgreSQL"), "{e}");
        let e = check(&[pg[0], pg[1], "--cluster-bus", "127.0.0.1:4222"]).unwrap_err();
        assert!(e.contains("nats://HOST:PORT"), "{e}");
        assert!(check(&["--node-id", "hub-1.eu"]).is_ok());
        let e = check(&["--node-id", "hub 1"]).unwrap_err();
        assert!(e.contains("--node-id"), "{e}");
    }

    #[test]
    fn cors_origins_must_be_scheme_host_and_port() {
        let parse = |v: &str| {
            ServeConfig::from_args(["--cors-allow-origin", v])
                .unwrap()
                .validate()
                .map_err(|e| e.to_string())
        };
        assert!(parse("https://app.example.com,http://localhost:3000").is_ok());
        for bad in [
            "*",
            "app.example.com",
            "https://app.example.com/",
            "https://a b",
            "ftp://x",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains("--cors-allow-origin"), "{bad}: {e}");
        }
    }

    #[test]
    fn defaults_match_the_spec() {
        let c = ServeConfig::from_args(Vec::<String>::new()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(c.database_url, "sqlite://activity-hub.db");
        assert_eq!(c.metrics_listen, "127.0.0.1:9464");
        assert_eq!(c.max_streams_per_connection, 1024);
        assert_eq!(c.heartbeat_interval, Duration::from_secs(15));
        assert!(!c.open_signup);
        assert_eq!(
            c.durability,
            DurabilityMode::PowerLoss,
            "power-loss safety by default"
        );
        assert!(c.validate().is_ok());
    }

    #[test]
    fn bad_values_name_their_flag() {
        let c = ServeConfig::from_args(["--auth-secret", "short"]).unwrap();
        assert!(c.validate().unwrap_err().to_string().starts_with("--auth-secret"));
        assert!(
            ServeConfig::from_args(["--bootstrap-admin-email", "a@b.co"]).is_err(),
            "password required too"
        );
        let c = ServeConfig::from_args(["--open-signup"]).unwrap();
        assert!(c.open_signup);
        let c = ServeConfig::from_args(["--inbox-merge-interval", "0s"]).unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("--inbox-merge-interval"));
        assert!(
            ServeConfig::from_args(["--durability", "sometimes"]).is_err(),
            "only power-loss or process-crash"
        );
    }
}
