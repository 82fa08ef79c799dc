//! The Rust client's balancing (issue 16): the `round_robin`, `pick_first` and
//! `least_pending` policies, each against three servers of one deployment where the
//! middle one is slow (behind a proxy that holds every byte 200 ms each way) rather than
//! dead; endpoints from DNS followed as the records change and re-resolved after a
//! failure; and open streams counted in flight. Shares are asserted on the client's own
//! per-endpoint counters, never on timings.

use std::{
    net::SocketAddr,
    process::Stdio,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use activity_hub_client::{Balance, Client, ClientConfig, EndpointStatus, SubscribeOptions};
use futures_util::future::join_all;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpListener, TcpStream,
    },
    task::JoinHandle,
};

use crate::{
    activity::dsl::Server,
    helpers::{eventually, skip_without_pg, Backend, TestDb, ADMIN_EMAIL, ADMIN_PASSWORD},
};

/// How long the slow server's proxy holds bytes, each way.
const SLOW: Duration = Duration::from_millis(200);

/// A TCP proxy to `target` that delivers every chunk `delay` after it arrived, in both
/// directions: a server that answers correctly, only late. Dropping it closes all.
struct SlowProxy {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl SlowProxy {
    async fn start(target: SocketAddr, delay: Duration) -> SlowProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            // Dropped with the accept loop: aborting it ends every connection.
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((inbound, _)) = listener.accept().await {
                conns.spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::join!(delayed(ri, wo, delay), delayed(ro, wi, delay));
                });
            }
        });
        SlowProxy { addr, task }
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read (latency, not a bandwidth
/// limit: reading goes on meanwhile).
async fn delayed(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let read = async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            if tx
                .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
            {
                return;
            }
        }
    };
    let write = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}

/// Three servers on one PostgreSQL store (one login works on all), the second one
/// reached through a [`SlowProxy`]; `None` (and a "skipped" line) without
/// TEST_DATABASE_URL.
struct Trio {
    servers: Vec<Server>,
    _slow: SlowProxy,
    /// The client's endpoints: [fast a, slow b (the proxy), fast c].
    uris: Vec<String>,
}

async fn trio(test: &str) -> Option<Trio> {
    if skip_without_pg(&format!("client_balance::{test}")) {
        return None;
    }
    let a = Server::start(Backend::Postgres).await;
    let b = Server::on(a.db(), &[]).await;
    let c = Server::on(a.db(), &[]).await;
    let slow = SlowProxy::start(b.addr, SLOW).await;
    let uris = vec![
        format!("http://{}", a.addr),
        format!("http://{}", slow.addr),
        format!("http://{}", c.addr),
    ];
    Some(Trio {
        servers: vec![a, b, c],
        _slow: slow,
        uris,
    })
}

/// Quick retries and breakers; health checked every second with a 1 s timeout, so the
/// slow server (about 400 ms a round trip) stays healthy: slow, not dead.
fn config(endpoints: Vec<String>, balance: Balance) -> ClientConfig {
    let mut c = ClientConfig::new(endpoints).with_balance(balance);
    c.initial_backoff = Duration::from_millis(20);
    c.max_backoff = Duration::from_millis(200);
    c.max_attempts = 20;
    c.health_interval = Duration::from_secs(1);
    c.breaker_cooldown = Duration::from_millis(500);
    c
}

async fn admin_client(cfg: ClientConfig) -> Client {
    let client = Client::connect(cfg).await.expect("the client starts");
    client.set_token(Some(
        client.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.expect("login"),
    ));
    client
}

/// `total` GetUser calls from `workers` concurrent loops taking calls from one queue (so
/// all of them stay busy until the queue is empty); every one must succeed.
async fn calls(client: &Client, workers: usize, total: usize) {
    let left = &AtomicUsize::new(total);
    let loops = (0..workers).map(|_| async move {
        while left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            client.get_user(1).await.expect("every call succeeds");
        }
    });
    join_all(loops).await;
}

fn answered(st: &[EndpointStatus]) -> Vec<u64> {
    st.iter().map(|e| e.answered).collect()
}

/// How many calls each endpoint answered while `f` ran.
async fn shares<F: std::future::Future<Output = ()>>(client: &Client, f: F) -> Vec<u64> {
    let before = answered(&client.endpoints());
    f.await;
    let after = answered(&client.endpoints());
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_robin_spreads_calls_evenly_over_three_servers_slow_or_not() {
    let Some(t) = trio("round_robin_spreads_calls_evenly_over_three_servers_slow_or_not").await else {
        return;
    };
    let client = admin_client(config(t.uris.clone(), Balance::RoundRobin)).await;
    let got = shares(&client, calls(&client, 30, 300)).await;
    assert_eq!(got.iter().sum::<u64>(), 300, "{got:?}");
    for (i, n) in got.iter().enumerate() {
        assert!(
            (95..=105).contains(n),
            "round robin gives each endpoint a third, the slow one ({}) too; endpoint {i} got {n}: {got:?}",
            t.uris[1]
        );
    }
    assert!(client
        .endpoints()
        .iter()
        .all(|e| e.failed == 0 && e.in_flight == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn least_pending_sends_the_slow_server_the_smallest_share() {
    let Some(t) = trio("least_pending_sends_the_slow_server_the_smallest_share").await else {
        return;
    };
    let client = admin_client(config(t.uris.clone(), Balance::LeastPending)).await;
    let got = shares(&client, calls(&client, 10, 300)).await;
    assert_eq!(got.iter().sum::<u64>(), 300, "{got:?}");
    let (fast_a, slow, fast_c) = (got[0], got[1], got[2]);
    // Typically about 10 of 300; the bounds leave room for a loaded machine.
    assert!(
        slow * 5 < 300 && slow * 3 < fast_a && slow * 3 < fast_c,
        "the slow endpoint piles up calls in flight and so is picked far less than a third \
         of the time (round robin would give it 100): [fast, slow, fast] = {got:?}"
    );
    let st = client.endpoints();
    assert!(st.iter().all(|e| e.in_flight == 0), "every call ended: {st:?}");
    assert!(st[1].healthy, "slow, not ejected: {st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pick_first_uses_the_first_server_fails_over_in_order_and_comes_back() {
    let Some(mut t) = trio("pick_first_uses_the_first_server_fails_over_in_order_and_comes_back").await
    else {
        return;
    };
    let client = admin_client(config(t.uris.clone(), Balance::PickFirst)).await;
    let got = shares(&client, calls(&client, 10, 50)).await;
    assert_eq!(got, [50, 0, 0], "everything goes to the first endpoint");

    let first = t.servers.remove(0);
    let (db, addr) = (first.db(), first.addr);
    first.stop().await;
    // Calls go on while the client finds out (retried past the stopped server).
    calls(&client, 5, 10).await;
    eventually(Duration::from_secs(10), "the stopped server is ejected", || {
        let e = &client.endpoints()[0];
        !e.healthy || e.breaker != activity_hub_client::BreakerState::Closed
    })
    .await;
    let got = shares(&client, calls(&client, 10, 20)).await;
    assert_eq!(
        got,
        [0, 20, 0],
        "the next endpoint in list order takes everything, slow as it is"
    );

    let _back = Server::on_at(db, &[], addr).await;
    eventually(
        Duration::from_secs(10),
        "the restarted server is healthy again",
        || client.endpoints()[0].healthy,
    )
    .await;
    // One call at a time first: the first one is the breaker's probe, which closes it.
    calls(&client, 1, 3).await;
    let got = shares(&client, calls(&client, 10, 20)).await;
    assert_eq!(got, [20, 0, 0], "back to the first endpoint once it is up");
}

/// Records that a test changes between resolutions, and how many resolutions there were.
#[derive(Clone, Default)]
struct Records {
    addrs: Arc<Mutex<Vec<SocketAddr>>>,
    resolutions: Arc<AtomicUsize>,
}

impl Records {
    fn set(&self, addrs: &[SocketAddr]) {
        *self.addrs.lock().unwrap() = addrs.to_vec();
    }

    fn config(&self, refresh: Duration) -> ClientConfig {
        let records = self.clone();
        let mut cfg = config(vec!["dns:///hub.test:50051".into()], Balance::RoundRobin)
            .with_dns_refresh(refresh)
            .with_resolver(move |name, port| {
                assert_eq!((name, port), ("hub.test", 50051));
                records.resolutions.fetch_add(1, Ordering::SeqCst);
                let addrs = records.addrs.lock().unwrap().clone();
                Box::pin(async move { Ok(addrs) })
            });
        cfg.health_interval = Duration::from_millis(100);
        cfg
    }
}

fn uris(client: &Client) -> Vec<String> {
    client.endpoints().into_iter().map(|e| e.uri).collect()
}

fn http(addrs: &[SocketAddr]) -> Vec<String> {
    addrs.iter().map(|a| format!("http://{a}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dns_name_is_followed_as_its_records_change() {
    if skip_without_pg("client_balance::a_dns_name_is_followed_as_its_records_change") {
        return;
    }
    let a = Server::start(Backend::Postgres).await;
    let b = Server::on(a.db(), &[]).await;
    let c = Server::on(a.db(), &[]).await;
    let records = Records::default();
    records.set(&[a.addr, b.addr]);
    let client = admin_client(records.config(Duration::from_millis(100))).await;
    assert_eq!(uris(&client), http(&[a.addr, b.addr]), "one endpoint per record");
    assert!(client
        .endpoints()
        .iter()
        .all(|e| e.target == "dns:///hub.test:50051"));
    let got = shares(&client, calls(&client, 4, 20)).await;
    assert_eq!(got, [10, 10], "balanced over both records");

    let b_answered = client.endpoints()[1].answered;
    records.set(&[b.addr, c.addr]);
    let before = records.resolutions.load(Ordering::SeqCst);
    eventually(
        Duration::from_secs(10),
        "the client follows the new records",
        || uris(&client) == http(&[b.addr, c.addr]),
    )
    .await;
    assert!(
        records.resolutions.load(Ordering::SeqCst) > before,
        "resolved again"
    );
    let got = shares(&client, calls(&client, 4, 20)).await;
    assert_eq!(
        got,
        [10, 10],
        "the new address takes calls, the removed one none: {got:?}"
    );
    assert_eq!(
        client.endpoints()[0].answered,
        b_answered + got[0],
        "b kept its endpoint (and counters) across the change"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dns_name_is_resolved_again_when_one_of_its_servers_fails() {
    if skip_without_pg("client_balance::a_dns_name_is_resolved_again_when_one_of_its_servers_fails") {
        return;
    }
    let a = Server::start(Backend::Postgres).await;
    let b = Server::on(a.db(), &[]).await;
    let records = Records::default();
    records.set(&[a.addr, b.addr]);
    // Far longer than the test: only the failure can trigger the re-resolution.
    let client = admin_client(records.config(Duration::from_secs(3600))).await;
    assert_eq!(uris(&client), http(&[a.addr, b.addr]));
    let resolved = records.resolutions.load(Ordering::SeqCst);

    records.set(&[b.addr]);
    a.stop().await;
    eventually(
        Duration::from_secs(15),
        "the failed server's health check makes the client resolve again and drop it",
        || uris(&client) == http(&[b.addr]),
    )
    .await;
    assert!(records.resolutions.load(Ordering::SeqCst) > resolved);
    calls(&client, 2, 10).await;
}

/// A `dns:` endpoint connects to the resolved address but checks the server's
/// certificate against the name: the certificate here names only `hub.test`, so the same
/// server reached as `https://127.0.0.1:PORT` is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_endpoint_over_tls_checks_the_certificate_against_the_name() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use tonic::transport::{Certificate, ClientTlsConfig};

    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["hub.test".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("hub.pem"), dir.path().join("hub.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let db = TestDb::new(Backend::Sqlite).await;
    let (cert_path, key_path) = (cert_path.display().to_string(), key_path.display().to_string());
    let s = crate::helpers::TestServer::start(&db, &["--tls-cert", &cert_path, "--tls-key", &key_path]).await;
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.pem()));

    let records = Records::default();
    records.set(&[s.addr]);
    let mut cfg = records.config(Duration::from_secs(3600));
    cfg.tls = Some(tls.clone());
    let client = admin_client(cfg).await;
    assert_eq!(client.who_am_i().await.unwrap().email, ADMIN_EMAIL);
    assert_eq!(uris(&client), [format!("https://{}", s.addr)]);

    let mut by_ip = config(vec![format!("https://{}", s.addr)], Balance::RoundRobin);
    by_ip.tls = Some(tls);
    by_ip.max_attempts = 1;
    let client = Client::connect(by_ip).await.unwrap();
    assert!(
        client.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.is_err(),
        "the certificate does not name 127.0.0.1"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_localhost_resolves_with_the_system_resolver() {
    let s = Server::start(Backend::Sqlite).await;
    let port = s.addr.port();
    let target = format!("dns:///localhost:{port}");
    let client = admin_client(config(vec![target.clone()], Balance::LeastPending)).await;
    assert_eq!(client.get_user(1).await.unwrap().id, 1);
    let st = client.endpoints();
    assert!(
        st.iter()
            .any(|e| e.uri == format!("http://127.0.0.1:{port}") && e.target == target),
        "localhost resolved to 127.0.0.1: {st:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_count_as_in_flight_until_they_end() {
    let s = Server::start(Backend::Sqlite).await;
    let client = admin_client(config(vec![format!("http://{}", s.addr)], Balance::LeastPending)).await;
    let in_flight = || client.endpoints()[0].in_flight;
    let subs: Vec<_> = (0..2)
        .map(|i| client.subscribe(SubscribeOptions::consumer(format!("device-{i}"))))
        .collect();
    let watch = client.watch_users(&[0]).await.expect("watch opens");
    eventually(
        Duration::from_secs(10),
        "two subscriptions and a watch in flight",
        || in_flight() == 3,
    )
    .await;
    drop(watch);
    eventually(
        Duration::from_secs(10),
        "the dropped watch no longer counts",
        || in_flight() == 2,
    )
    .await;
    drop(subs);
    eventually(
        Duration::from_secs(10),
        "nothing in flight once the streams end",
        || in_flight() == 0,
    )
    .await;
}

/// The CLI takes a `dns:` server and `--balance` (here from HUB_BALANCE).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_takes_a_dns_server_and_a_balancing_policy() {
    let db = TestDb::new(Backend::Sqlite).await;
    let s = crate::helpers::TestServer::start(&db, &[]).await;
    let home = tempfile::tempdir().unwrap();
    let token = s.admin_token().await;
    let run = |balance: &str| {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_activity-hub"));
        c.args(["user", "get", "1", "--json", "--token", &token])
            .env("HUB_SERVER", format!("dns:///localhost:{}", s.addr.port()))
            .env("HUB_BALANCE", balance)
            .env("XDG_CONFIG_HOME", home.path())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c.output()
    };
    for balance in ["round_robin", "pick_first", "least_pending"] {
        let o = tokio::time::timeout(Duration::from_secs(30), run(balance))
            .await
            .expect("the command finishes")
            .unwrap();
        assert!(
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(ADMIN_EMAIL),
            "{balance}: {o:?}"
        );
    }
    let o = run("fastest").await.unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "an unknown policy is a usage error: {o:?}"
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("least_pending"),
        "{o:?}"
    );
    s.stop().await;
}
