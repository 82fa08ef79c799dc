//! Store faults injected deterministically under load, on both stores: a full store
//! (SQLite's `max_page_count`; on PostgreSQL a deferred trigger that fails COMMIT with
//! `disk_full`), a store that goes away (SQLite's write lock held by another process's
//! connection; PostgreSQL behind a TCP proxy the test cuts and refuses), and retention
//! running every 100 ms under full publish load.
//!
//! Each test keeps a ledger of every publish the server acknowledged and then proves:
//! nothing acknowledged is lost, no seq is given twice, nothing unacknowledged was
//! stored (no phantom), every recipient's history is 1..=head with the head readers see,
//! a live subscriber saw the same events gap-free, and the same after a restart. Failed
//! publishes must carry RESOURCE_EXHAUSTED or UNAVAILABLE, nothing else.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use activity_hub::proto::activity::v1::{
    subscribe_response, AckMode, ListEventsRequest, PublishRequest, PublishResponse, Start, StartFrom,
};
use tokio::{net::TcpListener, task::JoinHandle};
use tonic::{transport::Channel, Code};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

use crate::{
    activity::dsl::{client, event_req, Sub},
    helpers::{authed, bulk_users, Backend, TestDb, TestServer},
};

/// What the publishers saw: every acknowledged answer and the codes of the failures.
#[derive(Default)]
struct Ledger {
    acked: Mutex<Vec<PublishResponse>>,
    failed: Mutex<BTreeMap<String, usize>>,
    /// The payload tags (`task:index`) of publishes answered "outcome unknown" (the
    /// store went away during their COMMIT and could not be asked afterwards): the only
    /// events that may be stored without having been acknowledged.
    unknown: Mutex<HashSet<String>>,
}

impl Ledger {
    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn failed(&self) -> usize {
        self.failed.lock().unwrap().values().sum()
    }

    fn failed_with(&self, code: Code) -> usize {
        self.failed
            .lock()
            .unwrap()
            .get(&format!("{code:?}"))
            .copied()
            .unwrap_or(0)
    }
}

/// `tasks` publishers calling Publish in a loop (one or two recipients each, 2 KiB
/// payloads, a 5 s deadline) until `stop` is set.
fn publishers(
    ch: &Channel,
    token: &str,
    recipients: &[u64],
    tasks: usize,
    stop: &Arc<AtomicBool>,
    ledger: &Arc<Ledger>,
) -> Vec<JoinHandle<()>> {
    (0..tasks)
        .map(|t| {
            let (ch, token, rs) = (ch.clone(), token.to_string(), recipients.to_vec());
            let (stop, ledger) = (stop.clone(), ledger.clone());
            tokio::spawn(async move {
                let mut c = client(&ch);
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let a = rs[(t + i * tasks) % rs.len()];
                    let to = if i.is_multiple_of(4) {
                        let b = rs[(t + i * tasks + 1) % rs.len()];
                        let mut v = vec![a, b];
                        v.sort_unstable();
                        v.dedup();
                        v
                    } else {
                        vec![a]
                    };
                    let mut req = authed(
                        event_req(&to, "fault.test", format!("{t}:{i}:{}", "x".repeat(2048))),
                        &token,
                    );
                    req.set_timeout(Duration::from_secs(5));
                    match c.publish(req).await {
                        Ok(r) => ledger.acked.lock().unwrap().push(r.into_inner()),
                        Err(s) => {
                            if s.message().contains("unknown") {
                                ledger.unknown.lock().unwrap().insert(format!("{t}:{i}"));
                            }
                            *ledger
                                .failed
                                .lock()
                                .unwrap()
                                .entry(format!("{:?}", s.code()))
                                .or_default() += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    i += 1;
                }
            })
        })
        .collect()
}

/// Stops the publishers and waits for them.
async fn stop_all(stop: &AtomicBool, tasks: Vec<JoinHandle<()>>) {
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("publisher task");
    }
}

/// Waits until the publishers have had `n` more publishes acknowledged than `from`.
async fn acked_beyond(ledger: &Ledger, from: usize, n: usize, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while ledger.acked() < from + n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: only {} acknowledged publishes after {from} in 30s (failures: {:?})",
            ledger.acked() - from,
            ledger.failed.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `n` more publishes have failed than `from`.
async fn failed_beyond(ledger: &Ledger, from: usize, n: usize, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while ledger.failed() < from + n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: no publish failed within 30s ({} acknowledged)",
            ledger.acked()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn health(ch: &Channel) -> i32 {
    match HealthClient::new(ch.clone())
        .check(HealthCheckRequest {
            service: "activity.v1.ActivityService".into(),
        })
        .await
    {
        Ok(r) => r.into_inner().status,
        Err(s) => panic!("health check failed: {s}"),
    }
}

async fn health_becomes(ch: &Channel, want: ServingStatus, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while health(ch).await != want as i32 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: health did not become {want:?} within 30s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The log a [`watcher`] keeps: (seq, event id) in arrival order.
type WatchLog = Arc<Mutex<Vec<(u64, String)>>>;

/// A subscriber to `user` (ACK_MODE_NONE, from the earliest event) recording what it
/// gets and, as a client would, resuming after its last event when its stream ends
/// (UNAVAILABLE while the store is away), until `stop` is set.
fn watcher(ch: &Channel, token: &str, user: u64, stop: &Arc<AtomicBool>) -> (JoinHandle<()>, WatchLog) {
    let log: WatchLog = Arc::default();
    let (ch, token, stop, out) = (ch.clone(), token.to_string(), stop.clone(), log.clone());
    let task = tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let after = out.lock().unwrap().last().map_or(0, |(s, _)| *s);
            let start = Start {
                user_id: user,
                start_from: StartFrom::Seq as i32,
                after_seq: after,
                ack_mode: AckMode::None as i32,
                ..Default::default()
            };
            let mut sub = match Sub::open(&ch, &token, start).await {
                Ok(sub) => sub,
                Err(e) => {
                    assert_eq!(e.code(), Code::Unavailable, "a subscription was refused: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            loop {
                match tokio::time::timeout(Duration::from_millis(200), sub.rx.message()).await {
                    Err(_) if stop.load(Ordering::Relaxed) => return,
                    Err(_) => continue,
                    Ok(Ok(Some(m))) => {
                        if let Some(subscribe_response::Msg::Event(e)) = m.msg {
                            out.lock().unwrap().push((e.seq, e.event_id));
                        }
                    }
                    Ok(Ok(None)) => panic!("a subscription ended without a status"),
                    Ok(Err(e)) => {
                        assert_eq!(e.code(), Code::Unavailable, "a subscription ended with {e}");
                        break;
                    }
                }
            }
        }
    });
    (task, log)
}

/// A stored event: seq, event id and the publisher's `task:index` tag from its payload.
type Stored = (u64, String, String);

/// Every recipient's stored history, page by page, in order, and the head.
async fn history(ch: &Channel, token: &str, user: u64) -> (Vec<Stored>, u64) {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let r = client(ch)
            .list_events(authed(
                ListEventsRequest {
                    user_id: user,
                    after_seq: after,
                    limit: 1000,
                    ..Default::default()
                },
                token,
            ))
            .await
            .expect("list events")
            .into_inner();
        out.extend(r.events.iter().map(|e| {
            let text = String::from_utf8_lossy(&e.payload);
            let tag: Vec<&str> = text.splitn(3, ':').take(2).collect();
            (e.seq, e.event_id.clone(), tag.join(":"))
        }));
        after = out.last().map_or(after, |(s, _, _)| *s);
        if !r.has_more {
            return (out, r.head_seq);
        }
    }
}

/// The promises, checked against the store through the API: nothing acknowledged lost,
/// no seq reused, no phantom, history 1..=head, failures only with allowed codes.
async fn verify(ch: &Channel, token: &str, recipients: &[u64], ledger: &Ledger, what: &str) {
    for code in ledger.failed.lock().unwrap().keys() {
        assert!(
            code == "ResourceExhausted" || code == "Unavailable",
            "{what}: a publish failed with {code}: only RESOURCE_EXHAUSTED or UNAVAILABLE may \
             answer a store fault (any other leaves the outcome unknown): {:?}",
            ledger.failed.lock().unwrap()
        );
    }
    let mut acked: HashMap<(u64, u64), String> = HashMap::new();
    for r in ledger.acked.lock().unwrap().iter() {
        for d in &r.deliveries {
            if let Some(other) = acked.insert((d.user_id, d.seq), r.event_id.clone()) {
                panic!(
                    "{what}: seq {} of user {} acknowledged twice ({other} and {})",
                    d.seq, d.user_id, r.event_id
                );
            }
        }
    }
    for &u in recipients {
        let (events, head) = history(ch, token, u).await;
        let seqs: Vec<u64> = events.iter().map(|(s, _, _)| *s).collect();
        let want: Vec<u64> = (1..=head).collect();
        assert_eq!(seqs, want, "{what}: user {u}'s history is not 1..={head}");
        let unknown = ledger.unknown.lock().unwrap();
        let mut maybe = 0;
        for (seq, id, tag) in &events {
            match acked.get(&(u, *seq)) {
                Some(a) => assert_eq!(
                    a, id,
                    "{what}: user {u} seq {seq} holds another event than acknowledged"
                ),
                None if unknown.contains(tag) => maybe += 1,
                None => panic!(
                    "{what}: user {u} seq {seq} ({id}, {tag}) was stored but never acknowledged (phantom)"
                ),
            }
        }
        let acked_here = acked.keys().filter(|(user, _)| *user == u).count();
        assert_eq!(
            acked_here + maybe,
            events.len(),
            "{what}: user {u}: {acked_here} acknowledged (+{maybe} of unknown outcome), {} stored",
            events.len()
        );
    }
}

/// The watcher got exactly the stored history (already checked against the ledger), in
/// order, gap-free.
fn verify_watched(log: &[(u64, String)], stored: &[Stored], what: &str) {
    assert!(!log.is_empty(), "{what}: the subscriber got nothing");
    let want: Vec<(u64, String)> = stored.iter().map(|(s, id, _)| (*s, id.clone())).collect();
    assert_eq!(
        log,
        &want[..],
        "{what}: the subscriber's events differ from the stored history"
    );
}

/// The PostgreSQL fault switch: a deferred constraint trigger on `inbox` and `settings`
/// that fails COMMIT with `disk_full` (53100) while `fault_switch.fail` is true, so the
/// commit itself fails, as a full disk makes it.
async fn pg_commit_fault(db: &TestDb) -> sqlx::PgPool {
    let pool = sqlx::PgPool::connect(&db.url)
        .await
        .expect("connect to the test schema");
    for sql in [
        "CREATE TABLE fault_switch (fail BOOLEAN NOT NULL)",
        "INSERT INTO fault_switch VALUES (false)",
        "CREATE FUNCTION fault_fail_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         IF (SELECT fail FROM fault_switch LIMIT 1) THEN \
         RAISE EXCEPTION 'injected: could not extend file' USING ERRCODE = 'disk_full'; END IF; \
         RETURN NULL; END $$",
        "CREATE CONSTRAINT TRIGGER fault_inbox AFTER INSERT ON inbox DEFERRABLE INITIALLY DEFERRED \
         FOR EACH ROW EXECUTE FUNCTION fault_fail_commit()",
        "CREATE CONSTRAINT TRIGGER fault_settings AFTER INSERT OR UPDATE ON settings DEFERRABLE \
         INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fault_fail_commit()",
    ] {
        sqlx::query(sql).execute(&pool).await.expect(sql);
    }
    pool
}

async fn set_full(b: Backend, s: &TestServer, pg: Option<&sqlx::PgPool>, full: bool) {
    match b {
        // No more pages than the file has now: the next writes that need one fail with
        // SQLITE_FULL, as on a full disk.
        Backend::Sqlite => s
            .store
            .limit_sqlite_pages(full.then_some(1))
            .await
            .expect("page limit"),
        Backend::Postgres => {
            sqlx::query("UPDATE fault_switch SET fail = $1")
                .bind(full)
                .execute(pg.expect("fault pool"))
                .await
                .expect("fault switch");
        }
    }
}

/// Publishers and a resuming subscriber running against a server while a test injects a
/// fault, and the checks once it has cleared.
struct Load {
    admin: String,
    recipients: Vec<u64>,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
    watch_stop: Arc<AtomicBool>,
    reader: JoinHandle<()>,
    log: WatchLog,
}

impl Load {
    /// Eight recipients named `prefix*`, six publishers, a subscriber to the first
    /// recipient; returns once 200 publishes were acknowledged.
    async fn start(s: &TestServer, prefix: &str) -> Load {
        let admin = s.admin_token().await;
        let recipients = bulk_users(s, &admin, prefix, 8).await;
        let stop = Arc::new(AtomicBool::new(false));
        let watch_stop = Arc::new(AtomicBool::new(false));
        let (reader, log) = watcher(&s.channel, &admin, recipients[0], &watch_stop);
        let ledger = Arc::new(Ledger::default());
        let tasks = publishers(&s.channel, &admin, &recipients, 6, &stop, &ledger);
        acked_beyond(&ledger, 0, 200, "before the fault").await;
        Load {
            admin,
            recipients,
            ledger,
            stop,
            tasks,
            watch_stop,
            reader,
            log,
        }
    }

    /// After the fault cleared: publishing works again (200 more acknowledged) and health
    /// is SERVING; then every promise is checked, live and after a restart on `db`.
    async fn finish(self, s: TestServer, db: &TestDb, what: &str) {
        let Load {
            admin,
            recipients,
            ledger,
            stop,
            tasks,
            watch_stop,
            reader,
            log,
        } = self;
        let acked = ledger.acked();
        acked_beyond(&ledger, acked, 200, what).await;
        health_becomes(&s.channel, ServingStatus::Serving, what).await;
        stop_all(&stop, tasks).await;

        verify(&s.channel, &admin, &recipients, &ledger, "live").await;
        let (stored, head) = history(&s.channel, &admin, recipients[0]).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while (log.lock().unwrap().len() as u64) < head {
            if reader.is_finished() {
                reader.await.expect("the subscriber task");
                panic!("the subscriber stopped early");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the subscriber did not catch up to {head}: it has {:?}",
                log.lock().unwrap().iter().map(|(s, _)| *s).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        verify_watched(&log.lock().unwrap(), &stored, "subscriber");
        watch_stop.store(true, Ordering::Relaxed);
        reader.await.unwrap();
        s.stop().await;

        let s = TestServer::start(db, &[]).await;
        let admin = s.admin_token().await;
        verify(&s.channel, &admin, &recipients, &ledger, "after a restart").await;
        s.stop().await;
    }
}

crate::dual!(a_full_store_loses_nothing_acknowledged);

async fn a_full_store_loses_nothing_acknowledged(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db, &[]).await;
    let pg = match b {
        Backend::Postgres => Some(pg_commit_fault(&db).await),
        Backend::Sqlite => None,
    };
    let load = Load::start(&s, "full").await;
    let ledger = &load.ledger;
    set_full(b, &s, pg.as_ref(), true).await;
    failed_beyond(ledger, 0, 20, "store full").await;
    assert!(
        ledger.failed_with(Code::ResourceExhausted) > 0,
        "a full store answers RESOURCE_EXHAUSTED: {:?}",
        ledger.failed.lock().unwrap()
    );
    health_becomes(&s.channel, ServingStatus::NotServing, "store full").await;
    // Still full: failures go on, and the health stays NOT_SERVING across probes.
    let failed = ledger.failed();
    failed_beyond(ledger, failed, 20, "still full").await;
    assert_eq!(
        health(&s.channel).await,
        ServingStatus::NotServing as i32,
        "while writes fail"
    );

    set_full(b, &s, pg.as_ref(), false).await;
    load.finish(s, &db, "after space was freed").await;
}

/// A small tmpfs mounted for one test (unmounted on drop): a real disk that fills up.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` (and the reason) where mounting is not allowed, e.g. not root.
    fn mount(mib: u32) -> Result<SmallDisk, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(SmallDisk { dir })
    }

    /// Writes a file until the disk is full; removing it frees the space again.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write as _;
        let path = self.dir.path().join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.dir.path()).status();
    }
}

/// The reporter's case itself: the SQLite file on a filesystem that really fills up
/// (commits fail with `SQLITE_FULL` as the WAL cannot grow), then space is freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_loses_nothing_acknowledged() {
    let disk = match SmallDisk::mount(16) {
        Ok(d) => d,
        Err(why) => {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "skipped: faults::a_full_disk_loses_nothing_acknowledged (cannot mount a tmpfs: {why})"
            );
            return;
        }
    };
    let db = TestDb::at(format!("sqlite://{}", disk.dir.path().join("hub.db").display()));
    let s = TestServer::start(&db, &[]).await;
    let load = Load::start(&s, "disk").await;
    let ledger = &load.ledger;
    let filler = disk.fill();
    failed_beyond(ledger, 0, 20, "disk full").await;
    assert!(
        ledger.failed_with(Code::ResourceExhausted) > 0,
        "a full disk answers RESOURCE_EXHAUSTED: {:?}",
        ledger.failed.lock().unwrap()
    );
    health_becomes(&s.channel, ServingStatus::NotServing, "disk full").await;
    std::fs::remove_file(filler).expect("free the space");
    load.finish(s, &db, "after space was freed").await;
}

/// A TCP proxy in front of PostgreSQL that the test can cut (close every connection) and
/// take down (refuse new connections) and bring back on the same port.
struct PgProxy {
    port: u16,
    upstream: String,
    up: Option<JoinHandle<()>>,
}

impl PgProxy {
    async fn start(upstream: String) -> PgProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut p = PgProxy {
            port,
            upstream,
            up: None,
        };
        p.up = Some(p.serve(listener));
        p
    }

    fn serve(&self, listener: TcpListener) -> JoinHandle<()> {
        let upstream = self.upstream.clone();
        tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut down, _)) = listener.accept().await {
                let upstream = upstream.clone();
                conns.spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
            }
        })
    }

    /// Closes every proxied connection and refuses new ones (the JoinSet of the accept
    /// task is dropped with it, aborting every copy).
    async fn down(&mut self) {
        if let Some(t) = self.up.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// Accepts again on the same port.
    async fn up(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("rebind the proxy port");
        self.up = Some(self.serve(listener));
    }
}

/// `url` with its host:port replaced by 127.0.0.1:`port`.
fn via_port(url: &str, port: u16) -> String {
    let at = url.find('@').map_or("postgres://".len(), |i| i + 1);
    let end = url[at..].find('/').map_or(url.len(), |i| at + i);
    format!("{}127.0.0.1:{port}{}", &url[..at], &url[end..])
}

/// Where TEST_DATABASE_URL's server listens, as host:port.
fn pg_host_port(url: &str) -> String {
    let at = url.find('@').map_or("postgres://".len(), |i| i + 1);
    let end = url[at..].find('/').map_or(url.len(), |i| at + i);
    let hp = &url[at..end];
    if hp.contains(':') {
        hp.to_string()
    } else {
        format!("{hp}:5432")
    }
}

crate::dual!(a_store_that_goes_away_fails_fast_and_recovers);

async fn a_store_that_goes_away_fails_fast_and_recovers(b: Backend) {
    let db = TestDb::new(b).await;
    let mut proxy = match b {
        Backend::Postgres => Some(PgProxy::start(pg_host_port(&db.url)).await),
        Backend::Sqlite => None,
    };
    let hub_db = TestDb::at(
        proxy
            .as_ref()
            .map_or(db.url.clone(), |p| via_port(&db.url, p.port)),
    );
    let s = TestServer::start(&hub_db, &[]).await;
    let load = Load::start(&s, "away").await;
    let ledger = &load.ledger;

    if let Some(p) = proxy.as_mut() {
        // Killed connections, several times under load: the batches in flight fail whole
        // and the pool reconnects.
        for round in 0..3 {
            p.down().await;
            p.up().await;
            let acked = ledger.acked();
            acked_beyond(
                ledger,
                acked,
                50,
                &format!("after killed connections, round {round}"),
            )
            .await;
        }
    }

    // The store goes away: SQLite's write lock is held by another process's connection
    // (every hub write waits for it); PostgreSQL's port refuses connections.
    let mut locker = None;
    match proxy.as_mut() {
        Some(p) => p.down().await,
        None => {
            use sqlx::Connection as _;
            let mut c = sqlx::SqliteConnection::connect(&db.url)
                .await
                .expect("second connection");
            sqlx::query("BEGIN EXCLUSIVE")
                .execute(&mut c)
                .await
                .expect("take the write lock");
            locker = Some(c);
        }
    }
    let failed = ledger.failed();
    failed_beyond(ledger, failed, 12, "store away").await;
    health_becomes(&s.channel, ServingStatus::NotServing, "store away").await;
    // Publishers set a 5 s deadline: the store's 1 s acquire timeout answers first.
    assert!(
        ledger.failed_with(Code::Unavailable) >= 12,
        "an unreachable store answers UNAVAILABLE, before the caller's deadline: {:?}",
        ledger.failed.lock().unwrap()
    );

    match proxy.as_mut() {
        Some(p) => p.up().await,
        None => {
            let mut c = locker.take().unwrap();
            sqlx::query("ROLLBACK")
                .execute(&mut c)
                .await
                .expect("release the write lock");
            drop(c);
        }
    }
    load.finish(s, &db, "after the store came back").await;
}

crate::dual!(retention_every_100ms_fails_no_publish);

/// Retention deletes on every pass (at most 5 events kept per recipient) every 100 ms
/// while pipelined PublishStreams keep the store busy: not one publish may fail.
async fn retention_every_100ms_fails_no_publish(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(
        &db,
        &["--retention-interval", "100ms", "--retention-max-events", "5"],
    )
    .await;
    let admin = s.admin_token().await;
    let recipients = bulk_users(&s, &admin, "ret", 50).await;
    let mut streams = Vec::new();
    for t in 0..4usize {
        let (ch, token, rs) = (s.channel.clone(), admin.clone(), recipients.clone());
        streams.push(tokio::spawn(async move {
            let reqs: Vec<PublishRequest> = (0..3_000usize)
                .map(|i| event_req(&[rs[(t + i * 4) % rs.len()]], "ret.test", format!("{t}:{i}")))
                .collect();
            let mut answers = client(&ch)
                .publish_stream(authed(tokio_stream::iter(reqs), &token))
                .await
                .expect("publish stream opens")
                .into_inner();
            let mut n = 0;
            loop {
                match answers.message().await {
                    Ok(Some(_)) => n += 1,
                    Ok(None) => return n,
                    Err(e) => panic!("stream {t}: publish {n} failed under retention: {e}"),
                }
            }
        }));
    }
    let mut total = 0;
    for t in streams {
        total += t.await.expect("publisher");
    }
    assert_eq!(total, 12_000, "every publish answered");
    // Retention really ran: each recipient ends with its 5 newest of 240 events.
    for &u in &recipients[..3] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (events, head) = history(&s.channel, &admin, u).await;
            assert_eq!(head, 240, "user {u}'s head counts every publish");
            assert_eq!(events.last().map(|(s, _, _)| *s), Some(240));
            if events.len() <= 5 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "user {u} still keeps {} events",
                events.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    s.stop().await;
}
