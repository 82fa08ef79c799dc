//! GetUser-by-id throughput (with bearer-token auth, the hot path) against the same
//! server's trivial RPC, `grpc.health.v1.Health/Check`, in the same run and process.
//!
//! The ratio is the figure of merit: both calls cross the same transport, the same HTTP/2
//! connections and the same tonic stack, so it isolates what GetUser adds (token check,
//! caller and target look-ups, authorization, encoding a User).
//!
//! `cargo bench --bench get_user -- [--secs N] [--conns C] [--inflight M] [--rounds R]`
//! Client and server share the machine's cores, as in any loopback benchmark.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use activity_hub::{
    config::ServeConfig,
    proto::{
        auth::v1::{
            auth_service_client::AuthServiceClient, login_request::Identifier as LoginId, LoginRequest,
        },
        user::v1::{
            get_user_request::Identifier, user_service_client::UserServiceClient, CreateUserRequest,
            GetUserRequest,
        },
    },
    server::{self, App},
};
use tonic::{transport::Channel, Request};
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

struct Opts {
    secs: u64,
    conns: usize,
    inflight: usize,
    rounds: usize,
}

fn opts() -> Opts {
    let mut o = Opts {
        secs: 5,
        conns: 4,
        inflight: 64,
        rounds: 2,
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let val = || args.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match args[i].as_str() {
            "--secs" => o.secs = val().unwrap_or(o.secs),
            "--conns" => o.conns = val().map(|v| v as usize).unwrap_or(o.conns),
            "--inflight" => o.inflight = val().map(|v| v as usize).unwrap_or(o.inflight),
            "--rounds" => o.rounds = val().map(|v| v as usize).unwrap_or(o.rounds),
            _ => {}
        }
        i += 1;
    }
    o
}

/// Runs `conns * inflight` call loops for `secs`; returns completed calls per second.
async fn load<F, Fut>(channels: &[Channel], o: &Opts, call: F) -> f64
where
    F: Fn(Channel) -> Fut + Send + Sync + 'static + Clone,
    Fut: std::future::Future<Output = bool> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(o.secs);
    let start = Instant::now();
    let mut tasks = vec![];
    for ch in channels {
        for _ in 0..o.inflight {
            let (ch, call, done, failed) = (ch.clone(), call.clone(), done.clone(), failed.clone());
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    if call(ch.clone()).await {
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "calls failed during the run");
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// An access token for `username`.
async fn login(channel: &Channel, username: &str, password: &str) -> String {
    let req = LoginRequest {
        identifier: Some(LoginId::Username(username.into())),
        password: password.into(),
    };
    AuthServiceClient::new(channel.clone())
        .login(req)
        .await
        .unwrap()
        .into_inner()
        .access_token
}

fn main() {
    let o = opts();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let config = ServeConfig::from_args([
            "--database-url",
            &url,
            "--metrics-listen",
            "off",
            "--bootstrap-admin-email",
            "admin@bench.test",
            "--bootstrap-admin-password",
            "admin-password",
            "--log-level",
            "warn",
            // One user makes every call: keep the limiter on the path but out of the way.
            "--user-rate-limit",
            "100000000",
            "--user-rate-burst",
            "100000000",
        ])
        .unwrap();
        let app = App::build(config).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(server::serve(app, listener, std::future::pending()));
        let channels: Vec<Channel> = futures_util::future::join_all((0..o.conns).map(|_| async {
            Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap()
        }))
        .await;

        let admin = login(&channels[0], "admin", "admin-password").await;
        let mut create = Request::new(CreateUserRequest {
            email: "reader@bench.test".into(),
            username: "reader".into(),
            password: "reader-password".into(),
            ..Default::default()
        });
        create.metadata_mut().insert("authorization", format!("Bearer {admin}").parse().unwrap());
        let user = UserServiceClient::new(channels[0].clone()).create_user(create).await.unwrap().into_inner();
        let token = login(&channels[0], "reader", "reader-password").await;
        let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().unwrap();

        println!(
            "get_user bench: {} connections x {} in flight, {} s per run, {} rounds, server {addr}",
            o.conns, o.inflight, o.secs, o.rounds
        );
        let (mut best_get, mut best_echo) = (0f64, 0f64);
        for round in 1..=o.rounds {
            let echo = load(&channels, &o, |ch| async move {
                HealthClient::new(ch).check(HealthCheckRequest { service: String::new() }).await.is_ok()
            })
            .await;
            let (id, bearer) = (user.id, bearer.clone());
            let get = load(&channels, &o, move |ch| {
                let bearer = bearer.clone();
                async move {
                    let mut r = Request::new(GetUserRequest { identifier: Some(Identifier::UserId(id)) });
                    r.metadata_mut().insert("authorization", bearer);
                    UserServiceClient::new(ch).get_user(r).await.is_ok()
                }
            })
            .await;
            println!(
                "round {round}: GetUser(auth) {get:>9.0} req/s   Health/Check (echo) {echo:>9.0} req/s   ratio {:.3}",
                get / echo
            );
            best_get = best_get.max(get);
            best_echo = best_echo.max(echo);
        }
        println!(
            "best: GetUser(auth) {best_get:.0} req/s, echo {best_echo:.0} req/s, ratio {:.3} (target >= 0.8)",
            best_get / best_echo
        );
    });
}
