//! Several servers on one PostgreSQL with a NATS cluster bus (spec: "Cluster"): three real
//! server processes on loopback, a `nats-server` of the test's own on a free port, and
//! clients on different servers. Live delivery and consumer takeover cross servers over
//! the bus; a NATS outage the test starts and ends delays but loses nothing; kill -9 of
//! one server under acknowledged publishers and resuming subscribers loses nothing
//! acknowledged and repeats nothing but unacked events.

use std::{collections::HashMap, process::Stdio, time::Duration};

use activity_hub::proto::activity::v1::{AckRequest, PublishResponse, Start, StartFrom};
use futures_util::StreamExt;
use tokio::{process::Child, sync::mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{transport::Channel, Code};

use crate::{
    activity::dsl::{client, event_req, numbered, stream_end, Sub},
    crash::{admin, free_port, spawn_server_on},
    helpers::{authed, skip_without_pg, skip_without_tool, Backend, TestDb},
};

const NATS_SERVER: &str = "/usr/sbin/nats-server";

/// A `nats-server` (NATS core, no JetStream) of the test's own; killed when dropped.
struct Nats {
    port: u16,
    child: Option<Child>,
}

impl Nats {
    /// Starts one on a free port; `None` (after saying the test was skipped) if the
    /// binary is not installed.
    async fn start(test: &str) -> Option<Nats> {
        if !std::path::Path::new(NATS_SERVER).exists() {
            skip_without_tool(test, "nats-server");
            return None;
        }
        let mut n = Nats {
            port: free_port(),
            child: None,
        };
        n.resume().await;
        Some(n)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server on its port and waits until it accepts connections.
    async fn resume(&mut self) {
        let child = tokio::process::Command::new(NATS_SERVER)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nats-server did not listen on {}", self.port);
    }

    /// Kills the server: an outage.
    async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }
}

/// A server process of the deployment on `db`, talking over `nats`.
async fn node(db: &TestDb, nats: &Nats, name: &str) -> (Child, Channel) {
    let url = nats.url();
    spawn_server_on(
        free_port(),
        db,
        &["--cluster-bus", &url, "--node-id", name],
        Stdio::inherit(),
    )
    .await
}

fn durable(user_id: u64, consumer: &str, window: u32) -> Start {
    Start {
        user_id,
        consumer_id: consumer.into(),
        start_from: StartFrom::Cursor as i32,
        window,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_share_live_delivery_consumers_and_acks_over_nats() {
    let test = "cluster::three_servers_share_live_delivery_consumers_and_acks_over_nats";
    if skip_without_pg(test) {
        return;
    }
    let Some(nats) = Nats::start(test).await else {
        return;
    };
    let db = TestDb::new(Backend::Postgres).await;
    let (_a, a) = node(&db, &nats, "a").await;
    let (_b, b) = node(&db, &nats, "b").await;
    let (_c, c) = node(&db, &nats, "c").await;
    let (token, me) = admin(&a).await;
    // Watch the bus itself: the servers' messages travel over it, not over PostgreSQL.
    let observer = async_nats::connect(nats.url()).await.expect("observer connects");
    let mut bus = observer.subscribe("activity_hub.>").await.unwrap();

    let mut on_b = Sub::open(&b, &token, durable(me, "phone", 1)).await.unwrap();
    crate::activity::dsl::publish_stream(&a, &token, numbered(me, 1)).await;
    assert_eq!(on_b.event().await.seq, 1, "published on A, delivered live on B");
    let heads = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let m = bus.next().await.expect("bus subscription open");
            let text = String::from_utf8_lossy(&m.payload).into_owned();
            if text.starts_with("h|") {
                return text;
            }
        }
    })
    .await
    .expect("A announced its commit on NATS");
    assert!(heads.ends_with(&format!("|{me}:1")), "{heads}");

    // Window 1: the next event waits for an ack, made on server A to B's stream.
    crate::activity::dsl::publish_stream(&c, &token, numbered(me, 1)).await;
    assert!(on_b.event_within(Duration::from_millis(300)).await.is_none());
    let cursor = client(&a)
        .ack(authed(
            AckRequest {
                user_id: me,
                consumer_id: "phone".into(),
                seq: 1,
            },
            &token,
        ))
        .await
        .expect("Ack on A")
        .into_inner();
    assert_eq!(cursor.acked_seq, 1);
    assert_eq!(on_b.event().await.seq, 2, "the ack on A opened B's window");

    // The consumer moves to C: B's stream ends ABORTED, C resumes after the cursor.
    let mut on_c = Sub::open(&c, &token, durable(me, "phone", 10)).await.unwrap();
    assert_eq!(on_c.subscribed.resume_after, 1);
    let ended = stream_end(&mut on_b.rx).await;
    assert_eq!(ended.code(), Code::Aborted, "{ended:?}");
    assert_eq!(on_c.event().await.seq, 2, "the unacked event again, on C");
    crate::activity::dsl::publish_stream(&b, &token, numbered(me, 1)).await;
    assert_eq!(on_c.event().await.seq, 3);

    // A logout on A travels over the bus; B and C refuse the session's token.
    let (doomed, _) = admin(&a).await;
    activity_hub::proto::auth::v1::auth_service_client::AuthServiceClient::new(a.clone())
        .logout(authed(Default::default(), &doomed))
        .await
        .expect("logout on A");
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let m = bus.next().await.expect("bus subscription open");
            if m.payload.starts_with(b"s|") {
                return;
            }
        }
    })
    .await
    .expect("A announced the revocation on NATS");
    for (name, ch) in [("B", &b), ("C", &c)] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let r = activity_hub::proto::auth::v1::auth_service_client::AuthServiceClient::new(ch.clone())
                .who_am_i(authed((), &doomed))
                .await;
            match r {
                Err(s) if s.code() == Code::Unauthenticated => break,
                _ => assert!(
                    tokio::time::Instant::now() < deadline,
                    "{name} still accepts the ended session: {r:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_slows_delivery_but_loses_and_reorders_nothing() {
    let test = "cluster::a_nats_outage_slows_delivery_but_loses_and_reorders_nothing";
    if skip_without_pg(test) {
        return;
    }
    let Some(mut nats) = Nats::start(test).await else {
        return;
    };
    let db = TestDb::new(Backend::Postgres).await;
    let (_a, a) = node(&db, &nats, "a").await;
    let (_b, b) = node(&db, &nats, "b").await;
    let (token, me) = admin(&a).await;
    let mut on_b = Sub::open(&b, &token, durable(me, "tablet", 100)).await.unwrap();
    crate::activity::dsl::publish_stream(&a, &token, numbered(me, 3)).await;
    on_b.expect_seqs_acking(1..=3, "before the outage").await;

    nats.kill().await;
    // Publishes go on (PostgreSQL is the truth); B polls the store and delivers them.
    crate::activity::dsl::publish_stream(&a, &token, numbered(me, 5)).await;
    on_b.expect_seqs_acking(4..=8, "during the outage, in order")
        .await;

    nats.resume().await;
    // Once the servers are back on the bus, delivery is live again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    crate::activity::dsl::publish_stream(&a, &token, numbered(me, 2)).await;
    on_b.expect_seqs_acking(9..=10, "after the outage").await;
    assert!(
        on_b.event_within(Duration::from_millis(300)).await.is_none(),
        "nothing twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_one_server_loses_nothing_acknowledged() {
    let test = "cluster::kill_9_of_one_server_loses_nothing_acknowledged";
    if skip_without_pg(test) {
        return;
    }
    let Some(nats) = Nats::start(test).await else {
        return;
    };
    let db = TestDb::new(Backend::Postgres).await;
    let (_a, a) = node(&db, &nats, "a").await;
    let (_b, b) = node(&db, &nats, "b").await;
    let (mut victim, c) = node(&db, &nats, "c").await;
    let (token, _) = admin(&a).await;
    let mut recipients = Vec::new();
    for i in 0..4 {
        let u = activity_hub::proto::user::v1::user_service_client::UserServiceClient::new(a.clone())
            .create_user(authed(
                activity_hub::proto::user::v1::CreateUserRequest {
                    email: format!("k9-{i}@example.com"),
                    username: format!("k9-{i}"),
                    password: crate::helpers::PASSWORD.into(),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .expect("user created")
            .into_inner();
        recipients.push(u.id);
    }

    // Subscribers on C: durable consumers acking every event.
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<(u64, u64)>();
    let mut readers = Vec::new();
    for &r in &recipients {
        let mut sub = Sub::open(&c, &token, durable(r, "app", 64)).await.unwrap();
        let seen = seen_tx.clone();
        readers.push(tokio::spawn(async move {
            // Ends when C dies.
            while let Ok(Some(m)) = sub.rx.message().await {
                if let Some(activity_hub::proto::activity::v1::subscribe_response::Msg::Event(e)) = m.msg {
                    let _ = seen.send((r, e.seq));
                    let _ = sub
                        .tx
                        .send(activity_hub::proto::activity::v1::SubscribeRequest {
                            msg: Some(activity_hub::proto::activity::v1::subscribe_request::Msg::Ack(
                                activity_hub::proto::activity::v1::Ack { seq: e.seq },
                            )),
                        })
                        .await;
                }
            }
        }));
    }
    // Publishers on A and B, round robin over the recipients, until told to stop.
    let stop = tokio_util::sync::CancellationToken::new();
    let mut publishers = Vec::new();
    for ch in [a.clone(), b.clone()] {
        let (token, recipients, stop) = (token.clone(), recipients.clone(), stop.clone());
        publishers.push(tokio::spawn(async move {
            let (tx, rx) = mpsc::channel(64);
            let feeder = tokio::spawn(async move {
                for i in 0usize.. {
                    let req = event_req(&[recipients[i % recipients.len()]], "k9", format!("{i}"));
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        sent = tx.send(req) => if sent.is_err() { return },
                    }
                }
            });
            let mut answers = client(&ch)
                .publish_stream(authed(ReceiverStream::new(rx), &token))
                .await
                .unwrap()
                .into_inner();
            let mut acked: Vec<PublishResponse> = Vec::new();
            while let Ok(Some(a)) = answers.message().await {
                acked.push(a);
            }
            feeder.abort();
            acked
        }));
    }
    // Let events flow to C's subscribers, then kill C under load.
    let mut before: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut received = 0;
    while received < 200 {
        let (r, seq) = tokio::time::timeout(Duration::from_secs(20), seen_rx.recv())
            .await
            .expect("events reach C's subscribers")
            .unwrap();
        before.entry(r).or_default().push(seq);
        received += 1;
    }
    victim.start_kill().expect("SIGKILL");
    let _ = victim.wait().await;
    for r in readers {
        let _ = r.await;
    }
    while let Ok((r, seq)) = seen_rx.try_recv() {
        before.entry(r).or_default().push(seq);
    }
    // Publishing goes on a little on the survivors, then stops.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    let mut acknowledged: Vec<PublishResponse> = Vec::new();
    for p in publishers {
        acknowledged.extend(p.await.unwrap());
    }
    let mut newest: HashMap<u64, u64> = HashMap::new();
    for a in &acknowledged {
        let d = &a.deliveries[0];
        let n = newest.entry(d.user_id).or_default();
        *n = (*n).max(d.seq);
    }
    // Each consumer resumes on A from its stored cursor and gets everything acknowledged:
    // no gap, and repeats only of what it had not acked (at most what C had sent it).
    for &r in &recipients {
        let mut sub = Sub::open(&a, &token, durable(r, "app", 64)).await.unwrap();
        let got_before = before.get(&r).cloned().unwrap_or_default();
        let last_before = got_before.last().copied().unwrap_or(0);
        for w in got_before.windows(2) {
            assert_eq!(w[1], w[0] + 1, "recipient {r}: C delivered in order without gaps");
        }
        let resume = sub.subscribed.resume_after;
        assert!(
            resume <= last_before,
            "recipient {r}: resumed after {resume}, beyond the {last_before} it received"
        );
        let target = newest.get(&r).copied().unwrap_or(0);
        let mut expect = resume + 1;
        while expect <= target {
            let e = sub.event().await;
            assert_eq!(e.seq, expect, "recipient {r}: resumed delivery has no gap");
            sub.ack(e.seq).await;
            expect += 1;
        }
        // What comes again is exactly (stored cursor, last received on C]: the events
        // whose acks had not reached a commit when C died (acks commit with the next
        // group commit); never one before the stored cursor (checked by the seqs above).
    }
    assert!(
        acknowledged.len() >= 200,
        "{} publishes acknowledged",
        acknowledged.len()
    );
}
