//! Load under faults: publishers and their ledger, a live watcher, and the checks that
//! nothing acknowledged was lost and nothing unacknowledged was stored.

use super::*;

#[derive(Default)]
pub(super) struct Ledger {
    pub(super) acked: Mutex<Vec<PublishResponse>>,
    pub(super) failed: Mutex<BTreeMap<String, usize>>,
    /// The payload tags (`task:index`) of publishes answered "outcome unknown" (the
    /// store went away during their COMMIT and could not be asked afterwards): the only
    /// events that may be stored without having been acknowledged.
    pub(super) unknown: Mutex<HashSet<String>>,
}

impl Ledger {
    pub(super) fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    pub(super) fn failed(&self) -> usize {
        self.failed.lock().unwrap().values().sum()
    }

    pub(super) fn failed_with(&self, code: Code) -> usize {
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
pub(super) fn publishers(
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
pub(super) async fn stop_all(stop: &AtomicBool, tasks: Vec<JoinHandle<()>>) {
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("publisher task");
    }
}

/// Waits until the publishers have had `n` more publishes acknowledged than `from`.
pub(super) async fn acked_beyond(ledger: &Ledger, from: usize, n: usize, what: &str) {
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
pub(super) async fn failed_beyond(ledger: &Ledger, from: usize, n: usize, what: &str) {
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

pub(super) async fn health(ch: &Channel) -> i32 {
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

pub(super) async fn health_becomes(ch: &Channel, want: ServingStatus, what: &str) {
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
pub(super) type WatchLog = Arc<Mutex<Vec<(u64, String)>>>;

/// A subscriber to `user` (ACK_MODE_NONE, from the earliest event) recording what it
/// gets and, as a client would, resuming after its last event when its stream ends
/// (UNAVAILABLE while the store is away), until `stop` is set.
pub(super) fn watcher(
    ch: &Channel,
    token: &str,
    user: u64,
    stop: &Arc<AtomicBool>,
) -> (JoinHandle<()>, WatchLog) {
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
pub(super) type Stored = (u64, String, String);

/// Every recipient's stored history, page by page, in order, and the head.
pub(super) async fn history(ch: &Channel, token: &str, user: u64) -> (Vec<Stored>, u64) {
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
pub(super) async fn verify(ch: &Channel, token: &str, recipients: &[u64], ledger: &Ledger, what: &str) {
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
pub(super) fn verify_watched(log: &[(u64, String)], stored: &[Stored], what: &str) {
    assert!(!log.is_empty(), "{what}: the subscriber got nothing");
    let want: Vec<(u64, String)> = stored.iter().map(|(s, id, _)| (*s, id.clone())).collect();
    assert_eq!(
        log,
        &want[..],
        "{what}: the subscriber's events differ from the stored history"
    );
}

/// Publishers and a resuming subscriber running against a server while a test injects a
/// fault, and the checks once it has cleared.
pub(super) struct Load {
    pub(super) admin: String,
    pub(super) recipients: Vec<u64>,
    pub(super) ledger: Arc<Ledger>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) tasks: Vec<JoinHandle<()>>,
    pub(super) watch_stop: Arc<AtomicBool>,
    pub(super) reader: JoinHandle<()>,
    pub(super) log: WatchLog,
}

impl Load {
    /// Eight recipients named `prefix*`, six publishers, a subscriber to the first
    /// recipient; returns once 200 publishes were acknowledged.
    pub(super) async fn start(s: &TestServer, prefix: &str) -> Load {
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
    pub(super) async fn finish(self, s: TestServer, db: &TestDb, what: &str) {
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
