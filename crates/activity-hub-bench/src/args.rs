//! The command line of the load tool: the scenario and its sizes, the hub to measure.

use std::{path::PathBuf, time::Duration};

use clap::{Args, ValueEnum};

/// What traffic to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Unary GetUser by id with a bearer token: requests/s and call latency.
    GetUser,
    /// PublishStream throughput: pipelined streams, events/s committed and
    /// publish -> commit-acknowledgement latency.
    Publish,
    /// Per-user fan-out: N subscribers, each its own recipient; N x --events events,
    /// one recipient each, round robin over them: deliveries/s and publish -> deliver
    /// latency.
    Fanout,
    /// N subscribers, --events events each published to all of them (one event, many
    /// recipients): deliveries/s and publish -> deliver latency.
    Broadcast,
    /// Publish -> deliver latency at a fixed publish rate, one recipient per event.
    Latency,
    /// Hold N idle subscriptions: server RSS per subscription (local servers only).
    Idle,
    /// N durable subscribers drop at once, events are published while they are away,
    /// then all resume at once while publishing goes on: time until every one has
    /// caught up, and events lost (must be 0).
    ReconnectStorm,
    /// Churn for --duration after --warmup: rounds of opening --subscribers
    /// subscriptions (durable consumers that resume from their cursor and plain ones),
    /// publishing --events spread over them, reading every one and closing, plus
    /// --logins user creations and logins; server RSS at the start, the end, its slope,
    /// and events lost (must be 0). Local servers only for RSS.
    Soak,
    /// --logins users (50) created, then all logged in at once, at the hub's real
    /// password-hash costs: Login latency. With --memory-settle, how soon server RSS
    /// comes back within --memory-settle-within of where it was before.
    Logins,
    /// Serve the bare baseline on --listen until killed (what --baseline starts).
    #[value(hide = true)]
    ServeBaseline,
}

/// Acknowledgement mode of the subscribers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Acks {
    /// ACK_MODE_EXPLICIT: the subscriber acks (every --ack-every events).
    Explicit,
    /// ACK_MODE_NONE: the server considers an event acknowledged once sent.
    None,
}

/// The started hub's `--durability`, which the ceiling copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Durability {
    /// Every commit fsynced: survives power loss (the hub's default).
    PowerLoss,
    /// Commits not fsynced: survives a process crash only (JetStream's default).
    ProcessCrash,
}

/// A peer measured with the same shape in the same run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Peer {
    /// NATS JetStream at --nats-url: a file-store stream with one replica, a subject per
    /// recipient, per-subject consumers with explicit acks (publish, fanout, latency).
    Nats,
}

/// `activity-hub-bench SCENARIO`: sizes default per scenario (shown in brackets).
#[derive(Clone, Debug, Args)]
#[command(after_help = "\
Examples:
  activity-hub-bench get-user --baseline --duration 10s
  activity-hub-bench publish --events 200000 --recipients 10000 --ceiling --peer nats
  activity-hub-bench publish --prefill 10000000 --ceiling
  activity-hub-bench fanout --subscribers 1000 --events 200 --ack explicit --plot fanout.svg
  activity-hub-bench broadcast --subscribers 1000 --events 200
  activity-hub-bench latency --subscribers 1000 --rate 10000 --duration 10s --baseline
  activity-hub-bench idle --subscribers 10000
  activity-hub-bench reconnect-storm --subscribers 1000 --events 20
  activity-hub-bench soak --warmup 60s --duration 10m --plot soak.svg
  activity-hub-bench logins --logins 50 --memory-settle 30s --memory-settle-within 32
  activity-hub-bench fanout --server http://10.0.0.5:50051 --token \"$ADMIN_TOKEN\"

Exit status: 0 when every call succeeded, nothing was lost, (soak) server RSS grew by at
most --max-growth and (--memory-settle) came back within --memory-settle-within, 1
otherwise, 2 for bad flags.")]
pub struct BenchArgs {
    /// The traffic shape.
    #[arg(value_enum)]
    pub scenario: Scenario,

    /// Hub to measure: `http://HOST:PORT` or `HOST:PORT` (plaintext h2c), like the
    /// client commands' --server and HUB_SERVER. Default: start a hub (the
    /// `activity-hub` binary beside this one, or --hub-bin) on a temporary SQLite file
    /// (or --database-url) and stop it afterwards.
    #[arg(long, env = "HUB_SERVER")]
    pub server: Option<String>,
    /// Token of an admin on --server (default: HUB_TOKEN, else the one `login` saved);
    /// the bench creates its own users there.
    #[arg(long, env = "HUB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Process id of --server, to read its RSS from /proc (found by itself for servers
    /// listening on this machine).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Store of the started hub [a temporary SQLite file].
    #[arg(long)]
    pub database_url: Option<String>,
    /// Binary of the started hub [the `activity-hub` beside this one]: measure another
    /// build side by side.
    #[arg(long)]
    pub hub_bin: Option<PathBuf>,
    /// Extra flag for the started hub, repeatable: `--hub-arg=--publish-batch-max=2048`.
    #[arg(long = "hub-arg", allow_hyphen_values = true)]
    pub hub_args: Vec<String>,
    /// Leave the users the bench created on --server (by default they are deleted at the
    /// end; a started hub's store is thrown away anyway).
    #[arg(long)]
    pub keep_users: bool,
    /// Also measure a bare tonic server with the same traffic and print hub/baseline.
    #[arg(long)]
    pub baseline: bool,
    /// Publish: also write the same rows (events, one inbox row per delivery, heads) to
    /// the same schema with the same settings, in batches of --streams x --inflight, from
    /// a minimal program (no gRPC, no actors, no checks): the store's ceiling, on SQLite
    /// or on --database-url's PostgreSQL (in a schema of its own, dropped afterwards).
    #[arg(long)]
    pub ceiling: bool,
    /// What the started hub's commits survive (its `--durability`); the ceiling writes
    /// with the same setting.
    #[arg(long, value_enum, default_value = "power-loss")]
    pub durability: Durability,
    /// Also measure a peer with the same shape (publish, fanout, latency).
    #[arg(long, value_enum)]
    pub peer: Option<Peer>,
    /// The NATS server of --peer nats.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Load the store with this many deliveries before measuring (spread over the run's
    /// recipients, one per event, written straight into the started hub's store; also
    /// the ceiling's store and the peer's stream). 0: an empty store.
    #[arg(long, default_value_t = 0)]
    pub prefill: u64,
    /// Address for `serve-baseline`.
    #[arg(long, hide = true, default_value = "127.0.0.1:50778")]
    pub listen: std::net::SocketAddr,

    /// HTTP/2 connections [get-user 4, publish --streams, subscribers: one per
    /// --streams-per-connection].
    #[arg(long)]
    pub connections: Option<usize>,
    /// Calls in flight per connection (get-user).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Publishing streams (publish).
    #[arg(long, default_value_t = 4)]
    pub streams: usize,
    /// Publishes in flight per stream, awaiting their commit answer (publish).
    #[arg(long, default_value_t = 1024)]
    pub inflight: usize,
    /// Subscription streams per HTTP/2 connection.
    #[arg(long, default_value_t = 1000)]
    pub streams_per_connection: usize,
    /// Subscribers [fanout 1000, latency 1000, idle 10000, reconnect-storm 1000, soak
    /// 200 per round].
    #[arg(long)]
    pub subscribers: Option<usize>,
    /// Events: publish total [200000]; fanout and broadcast per subscriber [200];
    /// reconnect-storm per
    /// subscriber and phase [20]; soak per round, spread over the subscribers [2000].
    #[arg(long)]
    pub events: Option<u64>,
    /// Recipients the publish scenario spreads events over, one per event, round robin.
    #[arg(long, default_value_t = 10_000)]
    pub recipients: usize,
    /// Publish rate of the latency scenario, events/s.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// How long: get-user and latency measure for this long; idle holds this long; soak
    /// churns this long after --warmup.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Calls before measuring starts (get-user); churn before the start figure (soak).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub warmup: Duration,
    /// Payload bytes per event (at least 8: the send time travels in it).
    #[arg(long, default_value_t = 64)]
    pub payload_size: usize,
    /// Subscribers' acknowledgement mode (fanout).
    #[arg(long, value_enum, default_value = "explicit")]
    pub ack: Acks,
    /// Subscribers ack every this many events (cumulative acks).
    #[arg(long, default_value_t = 1)]
    pub ack_every: u64,
    /// Soak: percent of the subscribers that are durable consumers (explicit acks,
    /// resuming from their cursor each round); the others start from the latest event
    /// with --ack.
    #[arg(long, default_value_t = 50, value_name = "PCT")]
    pub durable: u32,
    /// Users created and logged in (one CreateUser and one Login each, at the started
    /// hub's real password-hash costs) [soak 2 per round; logins 50, all at once].
    #[arg(long)]
    pub logins: Option<usize>,
    /// Soak: rounds started per minute at most; 0 = back to back.
    #[arg(long, default_value_t = 100)]
    pub rounds_per_minute: u32,
    /// Soak: fail (exit 1) when server RSS at the end exceeds that after warm-up by more
    /// than this many percent.
    #[arg(long, default_value_t = 25.0, value_name = "PCT")]
    pub max_growth: f64,
    /// After the scenario, watch the server's RSS for up to this long and report how
    /// long it took to come back within --memory-settle-within of its value before the
    /// scenario (local
    /// servers only; 0 = do not wait).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub memory_settle: Duration,
    /// How close to its RSS before the scenario the server must come back within
    /// --memory-settle, MiB.
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    pub memory_settle_within: u64,
    /// Give up when no progress is seen for this long.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub stall_timeout: Duration,

    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE.json")]
    pub out: Option<PathBuf>,
    /// Draw a latency-percentile plot (hub and baseline) to this SVG file; soak: server
    /// RSS over time.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// No progress bar or phase lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

impl BenchArgs {
    /// Refuses sizes that cannot make a run, naming the flag.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let positive = [
            ("--concurrency", self.concurrency as u64),
            ("--streams", self.streams as u64),
            ("--inflight", self.inflight as u64),
            ("--streams-per-connection", self.streams_per_connection as u64),
            ("--recipients", self.recipients as u64),
            ("--rate", self.rate),
            ("--ack-every", self.ack_every),
            ("--subscribers", self.subscribers.unwrap_or(1) as u64),
            ("--events", self.events.unwrap_or(1)),
            ("--connections", self.connections.unwrap_or(1) as u64),
            ("--memory-settle-within", self.memory_settle_within),
        ];
        for (flag, v) in positive {
            if v == 0 {
                return Err(format!("{flag} must be at least 1"));
            }
        }
        if self.payload_size < 8 {
            return Err("--payload-size must be at least 8 (the send time travels in it)".into());
        }
        if self.durable > 100 {
            return Err("--durable is a percentage: 0 to 100".into());
        }
        if self.max_growth.is_nan() || self.max_growth < 0.0 {
            return Err("--max-growth must be a percentage of at least 0".into());
        }
        if self.scenario == Scenario::Logins && self.logins == Some(0) {
            return Err("--logins must be at least 1 for the logins scenario".into());
        }
        if self.scenario == Scenario::Logins && self.baseline {
            return Err("logins has no --baseline: the bare baseline has no Login".into());
        }
        if self.scenario == Scenario::Soak && self.baseline {
            return Err("soak has no --baseline: the bare baseline keeps every event in memory".into());
        }
        if self.duration.is_zero() {
            return Err("--duration must be longer than 0".into());
        }
        if let Some(s) = &self.server {
            if !s.starts_with("http://") {
                return Err(format!(
                    "--server {s}: the load tool speaks plaintext HTTP/2 (http://HOST:PORT)"
                ));
            }
        }
        if self.prefill > 0 && self.server.is_some() {
            return Err("--prefill writes into the started hub's store: not with --server".into());
        }
        if self.prefill > 0
            && !matches!(
                self.scenario,
                Scenario::Publish | Scenario::Fanout | Scenario::Latency
            )
        {
            return Err("--prefill applies to publish, fanout and latency".into());
        }
        if self.ceiling && self.scenario != Scenario::Publish {
            return Err("--ceiling applies to publish (the store's write ceiling)".into());
        }
        if self.peer.is_some()
            && !matches!(
                self.scenario,
                Scenario::Publish | Scenario::Fanout | Scenario::Latency
            )
        {
            return Err("--peer applies to publish, fanout and latency".into());
        }
        if self.server.is_some() && (self.database_url.is_some() || self.hub_bin.is_some()) {
            return Err("--database-url and --hub-bin apply to a started hub, not to --server".into());
        }
        Ok(())
    }
}
