//! Hub benchmarks, each run against the hub and a bare tonic baseline in the same run.
//!
//! Both servers run as child processes (so the client's work and memory are not
//! counted as the server's): the hub is the release `activity-hub` binary on a fresh
//! SQLite file (or `HUB_BENCH_DATABASE_URL`), the baseline is this binary in
//! `bare-server` mode: the same `activity.v1` service over tonic with no store, no acks,
//! no windows, fanning out in memory. The ratio hub/bare is what to read.
//!
//! ```text
//! cargo bench --bench hub                 # all scenarios
//! cargo bench --bench hub -- publish      # PublishStream throughput
//! cargo bench --bench hub -- fanout       # deliveries/s to 10,000 subscribers, explicit acks and none
//! cargo bench --bench hub -- latency      # publish -> deliver p50/p99 at 10k events/s to 1,000 subscribers
//! cargo bench --bench hub -- idle         # server RSS per idle subscription, 10,000 streams
//! ```
//! Sizes: `--subscribers N`, `--events N`, `--rate N`, `--secs N` override the defaults.

use std::{
    process::Stdio,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use activity_hub::proto::{
    activity::v1::{
        activity_service_client::ActivityServiceClient,
        activity_service_server::{ActivityService, ActivityServiceServer},
        subscribe_request, subscribe_response, Ack, AckMode, Cursor, Delivery, Event, GetCursorRequest,
        ListEventsRequest, ListEventsResponse, PublishRequest, PublishResponse, Start, SubscribeRequest,
        SubscribeResponse, Subscribed,
    },
    auth::v1::{auth_service_client::AuthServiceClient, login_request::Identifier, LoginRequest},
    user::v1::{user_service_client::UserServiceClient, CreateUserRequest},
};
use dashmap::DashMap;
use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, StreamExt};
use tonic::{transport::Channel, Request, Response, Status, Streaming};

const ADMIN: &str = "bench@hub.test";
const PASSWORD: &str = "bench-password";
const STREAMS_PER_CONNECTION: usize = 1000;

// ---------------------------------------------------------------- the bare baseline

type SubscriberTx = mpsc::Sender<Result<SubscribeResponse, Status>>;

/// The activity service with nothing behind it: publishes are answered at once and
/// pushed straight into subscribers' channels.
#[derive(Clone, Default)]
struct Bare {
    subs: Arc<DashMap<u64, Vec<SubscriberTx>>>,
    seq: Arc<AtomicU64>,
}

impl Bare {
    fn publish_one(&self, r: PublishRequest) -> PublishResponse {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let mut deliveries = Vec::with_capacity(r.recipient_ids.len());
        for &user_id in &r.recipient_ids {
            if let Some(subs) = self.subs.get(&user_id) {
                for s in subs.iter() {
                    let ev = Event {
                        user_id,
                        seq,
                        r#type: r.r#type.clone(),
                        payload: r.payload.clone(),
                        ..Default::default()
                    };
                    let _ = s.try_send(Ok(SubscribeResponse {
                        msg: Some(subscribe_response::Msg::Event(ev)),
                    }));
                }
            }
            deliveries.push(Delivery { user_id, seq });
        }
        PublishResponse {
            event_id: seq.to_string(),
            deliveries,
            duplicate: false,
        }
    }
}

#[tonic::async_trait]
impl ActivityService for Bare {
    async fn publish(&self, req: Request<PublishRequest>) -> Result<Response<PublishResponse>, Status> {
        Ok(Response::new(self.publish_one(req.into_inner())))
    }
    type PublishStreamStream = ReceiverStream<Result<PublishResponse, Status>>;
    async fn publish_stream(
        &self,
        req: Request<Streaming<PublishRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let (tx, rx) = mpsc::channel(1024);
        let mut inbound = req.into_inner();
        let me = self.clone();
        tokio::spawn(async move {
            while let Some(Ok(r)) = inbound.next().await {
                if tx.send(Ok(me.publish_one(r))).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
    type SubscribeStream = ReceiverStream<Result<SubscribeResponse, Status>>;
    async fn subscribe(
        &self,
        req: Request<Streaming<SubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let mut inbound = req.into_inner();
        let Some(Ok(SubscribeRequest {
            msg: Some(subscribe_request::Msg::Start(s)),
        })) = inbound.next().await
        else {
            return Err(Status::invalid_argument("start first"));
        };
        let (tx, rx) = mpsc::channel(1024);
        let _ = tx.try_send(Ok(SubscribeResponse {
            msg: Some(subscribe_response::Msg::Subscribed(Subscribed {
                user_id: s.user_id,
                ..Default::default()
            })),
        }));
        self.subs.entry(s.user_id).or_default().push(tx);
        tokio::spawn(async move { while let Some(Ok(_)) = inbound.next().await {} });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
    async fn list_events(
        &self,
        _: Request<ListEventsRequest>,
    ) -> Result<Response<ListEventsResponse>, Status> {
        Err(Status::failed_precondition("the bare baseline keeps no history"))
    }
    async fn get_cursor(&self, _: Request<GetCursorRequest>) -> Result<Response<Cursor>, Status> {
        Err(Status::failed_precondition("the bare baseline keeps no cursors"))
    }
}

fn bare_server(addr: &str) {
    let addr = addr.parse().expect("HOST:PORT");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .max_concurrent_streams(Some(2048))
            .add_service(ActivityServiceServer::new(Bare::default()))
            .serve(addr)
            .await
            .unwrap();
    });
}

// ---------------------------------------------------------------- servers under test

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Hub,
    Bare,
}

struct Target {
    child: tokio::process::Child,
    channels: Vec<Channel>,
    token: String,
    users: Vec<u64>,
    _dir: Option<tempfile::TempDir>,
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

async fn connect(addr: &str) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
        {
            Ok(c) => return c,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("server at {addr} did not come up: {e}"),
        }
    }
}

impl Target {
    async fn start(kind: Kind, users: usize, connections: usize) -> Target {
        let addr = free_addr();
        let (child, dir) = match kind {
            Kind::Hub => {
                let dir = tempfile::tempdir().unwrap();
                let db = std::env::var("HUB_BENCH_DATABASE_URL")
                    .unwrap_or_else(|_| format!("sqlite://{}", dir.path().join("hub.db").display()));
                let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_activity-hub"))
                    .args([
                        "serve",
                        "--listen",
                        &addr,
                        "--database-url",
                        &db,
                        "--metrics-listen",
                        "off",
                    ])
                    .args([
                        "--password-hash-memory-kib",
                        "64",
                        "--password-hash-iterations",
                        "1",
                    ])
                    .args([
                        "--bootstrap-admin-email",
                        ADMIN,
                        "--bootstrap-admin-password",
                        PASSWORD,
                    ])
                    .args(["--max-streams-per-connection", "2048", "--log-level", "warn"])
                    // A few users publish everything: limiter on the path, out of the way.
                    .args(["--user-rate-limit", "100000000", "--user-rate-burst", "100000000"])
                    .stdout(Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .expect("hub binary");
                (child, Some(dir))
            }
            Kind::Bare => {
                let child = tokio::process::Command::new(std::env::current_exe().unwrap())
                    .args(["bare-server", &addr])
                    .kill_on_drop(true)
                    .spawn()
                    .expect("bare server");
                (child, None)
            }
        };
        eprintln!("{kind:?} server pid {}", child.id().unwrap_or(0));
        let mut channels = Vec::new();
        for _ in 0..connections.max(1) {
            channels.push(connect(&addr).await);
        }
        let (token, user_ids) = match kind {
            Kind::Bare => (String::new(), (1..=users as u64).collect()),
            Kind::Hub => {
                let token = AuthServiceClient::new(channels[0].clone())
                    .login(LoginRequest {
                        identifier: Some(Identifier::Email(ADMIN.into())),
                        password: PASSWORD.into(),
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .access_token;
                let reqs: Vec<CreateUserRequest> = (0..users)
                    .map(|i| CreateUserRequest {
                        email: format!("user{i}@bench.test"),
                        username: format!("user{i}"),
                        password: PASSWORD.into(),
                        ..Default::default()
                    })
                    .collect();
                let created = UserServiceClient::new(channels[0].clone())
                    .max_decoding_message_size(256 << 20)
                    .bulk_create_users(authed(tokio_stream::iter(reqs), &token))
                    .await
                    .unwrap()
                    .into_inner();
                (token, created.users.into_iter().map(|u| u.id).collect())
            }
        };
        Target {
            child,
            channels,
            token,
            users: user_ids,
            _dir: dir,
        }
    }

    fn client(&self, i: usize) -> ActivityServiceClient<Channel> {
        ActivityServiceClient::new(self.channels[i % self.channels.len()].clone())
    }

    fn rss_kib(&self) -> u64 {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Opens one subscription per user (spread over the connections); returns the
    /// streams and their ack senders once every Subscribed has arrived.
    async fn subscribe_all(
        &self,
        users: &[u64],
        ack_mode: AckMode,
    ) -> Vec<(mpsc::Sender<SubscribeRequest>, Streaming<SubscribeResponse>)> {
        let mut opening = tokio::task::JoinSet::new();
        let mut out = Vec::with_capacity(users.len());
        for (i, &u) in users.iter().enumerate() {
            let mut c = self.client(i / STREAMS_PER_CONNECTION);
            let token = self.token.clone();
            opening.spawn(async move {
                let (tx, rx) = mpsc::channel(64);
                tx.send(SubscribeRequest {
                    msg: Some(subscribe_request::Msg::Start(Start {
                        user_id: u,
                        ack_mode: ack_mode as i32,
                        ..Default::default()
                    })),
                })
                .await
                .unwrap();
                let mut s = c
                    .subscribe(authed(ReceiverStream::new(rx), &token))
                    .await
                    .unwrap()
                    .into_inner();
                let first = s.message().await.unwrap().unwrap();
                assert!(matches!(first.msg, Some(subscribe_response::Msg::Subscribed(_))));
                (tx, s)
            });
            // Do not open thousands of streams in one burst.
            if opening.len() >= 256 {
                out.push(opening.join_next().await.unwrap().unwrap());
            }
        }
        while let Some(r) = opening.join_next().await {
            out.push(r.unwrap());
        }
        out
    }
}

fn authed<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    if !token.is_empty() {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    r
}

// ---------------------------------------------------------------- scenarios

struct Opts {
    subscribers: Option<usize>,
    events: Option<usize>,
    rate: Option<u64>,
    secs: Option<u64>,
}

/// PublishStream throughput: 4 pipelined streams, events to 100 recipients round robin.
async fn publish(kind: Kind, o: &Opts) -> f64 {
    let t = Target::start(kind, 100, 4).await;
    let per_stream = o.events.unwrap_or(50_000);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..4 {
        let mut c = t.client(s);
        let token = t.token.clone();
        let users = t.users.clone();
        tasks.push(tokio::spawn(async move {
            let reqs = (0..per_stream).map(move |i| PublishRequest {
                recipient_ids: vec![users[(i + s) % users.len()]],
                r#type: "bench.event".into(),
                payload: vec![b'x'; 64].into(),
                ..Default::default()
            });
            let mut out = c
                .publish_stream(authed(tokio_stream::iter(reqs), &token))
                .await
                .unwrap()
                .into_inner();
            let mut n = 0;
            while let Some(r) = out.message().await.unwrap() {
                assert_eq!(r.deliveries.len(), 1);
                n += 1;
            }
            assert_eq!(n, per_stream);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    (4 * per_stream) as f64 / start.elapsed().as_secs_f64()
}

/// Deliveries/s: `events` publishes, each to every one of `subscribers` recipients.
async fn fanout(kind: Kind, ack_mode: AckMode, o: &Opts) -> f64 {
    let n = o.subscribers.unwrap_or(10_000);
    let events = o.events.unwrap_or(50).min(10_000);
    let t = Target::start(kind, n, n.div_ceil(STREAMS_PER_CONNECTION)).await;
    let streams = t.subscribe_all(&t.users, ack_mode).await;
    assert_eq!(streams.len(), n);
    let done = Arc::new(AtomicU64::new(0));
    let mut readers = tokio::task::JoinSet::new();
    for (tx, mut s) in streams {
        let done = done.clone();
        readers.spawn(async move {
            let mut got = 0;
            while got < events {
                match s.message().await.unwrap().unwrap().msg {
                    Some(subscribe_response::Msg::Event(e)) => {
                        got += 1;
                        if ack_mode == AckMode::Explicit && (got % 10 == 0 || got == events) {
                            let _ = tx
                                .send(SubscribeRequest {
                                    msg: Some(subscribe_request::Msg::Ack(Ack { seq: e.seq })),
                                })
                                .await;
                        }
                    }
                    _ => continue,
                }
            }
            done.fetch_add(got as u64, Ordering::Relaxed);
            (tx, s)
        });
    }
    let start = Instant::now();
    let mut c = t.client(0);
    let all = t.users.clone();
    let reqs = (0..events).map(move |_| PublishRequest {
        recipient_ids: all.clone(),
        r#type: "bench.fanout".into(),
        payload: vec![b'x'; 64].into(),
        ..Default::default()
    });
    let mut out = c
        .publish_stream(authed(tokio_stream::iter(reqs), &t.token))
        .await
        .unwrap()
        .into_inner();
    while out.message().await.unwrap().is_some() {}
    let mut kept = Vec::new();
    while let Some(r) = readers.join_next().await {
        kept.push(r.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(done.load(Ordering::Relaxed), (n * events) as u64);
    (n * events) as f64 / secs
}

/// Publish -> deliver latency at a fixed rate, one recipient per event, round robin.
async fn latency(kind: Kind, o: &Opts) -> Histogram<u64> {
    let n = o.subscribers.unwrap_or(1000);
    let rate = o.rate.unwrap_or(10_000);
    let secs = o.secs.unwrap_or(5);
    let t = Target::start(kind, n, n.div_ceil(STREAMS_PER_CONNECTION) + 1).await;
    let streams = t.subscribe_all(&t.users, AckMode::Explicit).await;
    let base = Instant::now();
    let hist = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
    ));
    let mut readers = Vec::new();
    for (tx, mut s) in streams {
        let hist = hist.clone();
        readers.push(tokio::spawn(async move {
            let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            while let Ok(Some(m)) = s.message().await {
                if let Some(subscribe_response::Msg::Event(e)) = m.msg {
                    let sent = u64::from_le_bytes(e.payload[..8].try_into().unwrap());
                    let now = base.elapsed().as_micros() as u64;
                    let _ = local.record(now.saturating_sub(sent).max(1));
                    let _ = tx
                        .send(SubscribeRequest {
                            msg: Some(subscribe_request::Msg::Ack(Ack { seq: e.seq })),
                        })
                        .await;
                }
            }
            hist.lock().unwrap().add(&local).unwrap();
        }));
    }
    let (tx, rx) = mpsc::channel::<PublishRequest>(4096);
    let mut c = t.client(t.channels.len() - 1);
    let mut out = c
        .publish_stream(authed(ReceiverStream::new(rx), &t.token))
        .await
        .unwrap()
        .into_inner();
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = out.message().await {} });
    let total = rate * secs;
    let per_tick = (rate / 1000).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut sent = 0u64;
    while sent < total {
        tick.tick().await;
        for _ in 0..per_tick {
            let mut payload = (base.elapsed().as_micros() as u64).to_le_bytes().to_vec();
            payload.resize(64, b'x');
            let user = t.users[(sent as usize) % t.users.len()];
            tx.send(PublishRequest {
                recipient_ids: vec![user],
                r#type: "bench.latency".into(),
                payload: payload.into(),
                ..Default::default()
            })
            .await
            .unwrap();
            sent += 1;
        }
    }
    drop(tx);
    drain.await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(t);
    for r in readers {
        let _ = r.await;
    }
    let h = hist.lock().unwrap().clone();
    h
}

/// Server RSS growth per idle subscription.
async fn idle(kind: Kind, o: &Opts) -> f64 {
    let n = o.subscribers.unwrap_or(10_000);
    let t = Target::start(kind, n, n.div_ceil(STREAMS_PER_CONNECTION)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = t.rss_kib();
    let streams = t.subscribe_all(&t.users, AckMode::Explicit).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = t.rss_kib();
    drop(streams);
    (after.saturating_sub(before) as f64 * 1024.0) / n as f64
}

fn parse_opts(args: &[String]) -> Opts {
    let get = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(|v| {
                v.parse::<u64>()
                    .unwrap_or_else(|_| panic!("{name} takes a number"))
            })
    };
    Opts {
        subscribers: get("--subscribers").map(|v| v as usize),
        events: get("--events").map(|v| v as usize),
        rate: get("--rate"),
        secs: get("--secs"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    if args.first().map(String::as_str) == Some("bare-server") {
        bare_server(args.get(1).expect("bare-server HOST:PORT"));
        return;
    }
    let o = parse_opts(&args);
    let all = ["publish", "fanout", "latency", "idle"];
    let chosen: Vec<&str> = match args.first().map(String::as_str) {
        Some(s) if all.contains(&s) => vec![s],
        Some(s) if !s.starts_with("--") => panic!("unknown scenario {s}; one of {all:?}"),
        _ => all.to_vec(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut rows: Vec<(String, String, String, String)> = Vec::new();
        let ratio = |h: f64, b: f64| format!("{:.2}", h / b);
        for s in chosen {
            match s {
                "publish" => {
                    let h = publish(Kind::Hub, &o).await;
                    let b = publish(Kind::Bare, &o).await;
                    rows.push((
                        "PublishStream, events/s committed".into(),
                        format!("{h:.0}"),
                        format!("{b:.0}"),
                        ratio(h, b),
                    ));
                }
                "fanout" => {
                    for mode in [AckMode::Explicit, AckMode::None] {
                        let h = fanout(Kind::Hub, mode, &o).await;
                        let b = fanout(Kind::Bare, mode, &o).await;
                        rows.push((
                            format!("fan-out deliveries/s, {}", mode.as_str_name()),
                            format!("{h:.0}"),
                            format!("{b:.0}"),
                            ratio(h, b),
                        ));
                    }
                }
                "latency" => {
                    let h = latency(Kind::Hub, &o).await;
                    let b = latency(Kind::Bare, &o).await;
                    for (name, q) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
                        let hv = h.value_at_quantile(q) as f64 / 1000.0;
                        let bv = b.value_at_quantile(q) as f64 / 1000.0;
                        rows.push((
                            format!("publish->deliver {name} ms ({} samples)", h.len()),
                            format!("{hv:.2}"),
                            format!("{bv:.2}"),
                            ratio(hv, bv),
                        ));
                    }
                }
                "idle" => {
                    let h = idle(Kind::Hub, &o).await;
                    let b = idle(Kind::Bare, &o).await;
                    rows.push((
                        "server RSS per idle subscription, bytes".into(),
                        format!("{h:.0}"),
                        format!("{b:.0}"),
                        ratio(h, b),
                    ));
                }
                _ => unreachable!(),
            }
        }
        println!("\n| scenario | hub | bare tonic | hub/bare |\n|---|---:|---:|---:|");
        for (a, b, c, d) in rows {
            println!("| {a} | {b} | {c} | {d} |");
        }
    });
}
