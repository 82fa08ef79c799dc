//! The activity hub's guarantees (spec: activity.v1), each proven end to end over gRPC.

use std::{collections::HashMap, time::Duration};

use activity_hub::proto::{
    activity::v1::{
        activity_service_client::ActivityServiceClient, subscribe_request, subscribe_response, Ack, AckMode,
        Cursor, Event, GetCursorRequest, ListEventsRequest, PublishRequest, PublishResponse, Start,
        StartFrom, SubscribeRequest, SubscribeResponse, Subscribed,
    },
    user::v1::{User, UserRole},
};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{transport::Channel, Code, Status, Streaming};

use crate::helpers::{assert_status, authed, eventually, Backend, TestDb, TestServer};

pub fn client(ch: &Channel) -> ActivityServiceClient<Channel> {
    ActivityServiceClient::new(ch.clone()).max_decoding_message_size(64 << 20)
}

/// An open Subscribe stream.
pub struct Sub {
    pub tx: mpsc::Sender<SubscribeRequest>,
    pub rx: Streaming<SubscribeResponse>,
    pub subscribed: Subscribed,
    /// The response headers.
    pub headers: tonic::metadata::MetadataMap,
}

pub fn start(user_id: u64) -> Start {
    Start {
        user_id,
        ..Default::default()
    }
}

impl Sub {
    pub async fn open(ch: &Channel, token: &str, s: Start) -> Result<Sub, Status> {
        let (tx, rx) = mpsc::channel(1024);
        tx.send(SubscribeRequest {
            msg: Some(subscribe_request::Msg::Start(s)),
        })
        .await
        .unwrap();
        let res = client(ch)
            .subscribe(authed(ReceiverStream::new(rx), token))
            .await?;
        let headers = res.metadata().clone();
        let mut rx = res.into_inner();
        match rx.message().await? {
            Some(SubscribeResponse {
                msg: Some(subscribe_response::Msg::Subscribed(s)),
            }) => Ok(Sub {
                tx,
                rx,
                subscribed: s,
                headers,
            }),
            other => panic!("first message must be Subscribed, got {other:?}"),
        }
    }

    /// The next event (heartbeats skipped), failing the test after 20 s.
    pub async fn event(&mut self) -> Event {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(20), self.rx.message())
                .await
                .expect("an event within 20s")
                .expect("stream healthy")
                .expect("stream open");
            match m.msg {
                Some(subscribe_response::Msg::Event(e)) => return e,
                Some(subscribe_response::Msg::Heartbeat(_)) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// The next event if one arrives within `d` (heartbeats skipped).
    pub async fn event_within(&mut self, d: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            let m = tokio::time::timeout_at(deadline, self.rx.message()).await.ok()?;
            match m.expect("stream healthy").expect("stream open").msg {
                Some(subscribe_response::Msg::Event(e)) => return Some(e),
                Some(subscribe_response::Msg::Heartbeat(_)) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Waits for the stream to end and returns its status.
    pub async fn end(&mut self) -> Status {
        loop {
            match tokio::time::timeout(Duration::from_secs(20), self.rx.message())
                .await
                .expect("the stream ends within 20s")
            {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("stream ended without a status"),
                Err(s) => return s,
            }
        }
    }

    pub async fn ack(&self, seq: u64) {
        self.tx
            .send(SubscribeRequest {
                msg: Some(subscribe_request::Msg::Ack(Ack { seq })),
            })
            .await
            .expect("ack sent");
    }
}

pub fn event_req(recipients: &[u64], ty: &str, payload: impl Into<Bytes>) -> PublishRequest {
    PublishRequest {
        recipient_ids: recipients.to_vec(),
        r#type: ty.into(),
        payload: payload.into(),
        content_type: "text/plain".into(),
        ..Default::default()
    }
}

pub async fn publish(s: &TestServer, token: &str, req: PublishRequest) -> Result<PublishResponse, Status> {
    client(&s.channel)
        .publish(authed(req, token))
        .await
        .map(|r| r.into_inner())
}

/// Publishes `reqs` on one PublishStream and returns the answers in order.
pub async fn publish_stream(ch: &Channel, token: &str, reqs: Vec<PublishRequest>) -> Vec<PublishResponse> {
    let n = reqs.len();
    let mut out = client(ch)
        .publish_stream(authed(tokio_stream::iter(reqs), token))
        .await
        .expect("PublishStream opens")
        .into_inner();
    let mut answers = Vec::with_capacity(n);
    while let Some(r) = out.message().await.expect("PublishStream answers") {
        answers.push(r);
    }
    assert_eq!(answers.len(), n, "one answer per request");
    answers
}

/// Polls GetCursor until the consumer's stored ack reaches `want` (acks persist in batches).
async fn cursor_reaches(
    s: &TestServer,
    token: &str,
    user_id: u64,
    consumer: &str,
    want: u64,
    what: &str,
) -> Cursor {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let req = GetCursorRequest {
            user_id,
            consumer_id: consumer.into(),
        };
        let cur = client(&s.channel)
            .get_cursor(authed(req, token))
            .await
            .unwrap()
            .into_inner();
        if cur.acked_seq == want {
            return cur;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {cur:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A publisher and a recipient with their tokens.
async fn cast(s: &TestServer) -> (String, User, String) {
    let (_, publisher) = s.user_with_token("pub", &[UserRole::Publisher]).await;
    let (alice, alice_token) = s.user_with_token("alice", &[]).await;
    (publisher, alice, alice_token)
}

crate::dual!(
    order_and_no_gaps_under_concurrent_publishers,
    replay_live_seam_loses_nothing,
    resumption_continues_after_the_acked_seq,
    retention_prunes_and_reports_truncation,
    age_retention_keeps_what_is_younger,
    idempotency_key_returns_the_first_event,
    types_filter_and_ack_mode_none,
    one_live_stream_per_consumer,
);

async fn order_and_no_gaps_under_concurrent_publishers(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db, &[]).await;
    let (publisher, alice, alice_token) = cast(&s).await;
    let mut sub = Sub::open(
        &s.channel,
        &alice_token,
        Start {
            start_from: StartFrom::Earliest as i32,
            window: 1000,
            ..start(0)
        },
    )
    .await
    .unwrap();
    const TASKS: usize = 8;
    const EACH: usize = 2000;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let ch = s.channel.clone();
        let token = publisher.clone();
        let id = alice.id;
        tasks.push(tokio::spawn(async move {
            let reqs = (0..EACH)
                .map(|i| event_req(&[id], "order.filled", format!("{t}:{i}")))
                .collect();
            publish_stream(&ch, &token, reqs).await
        }));
    }
    let mut acked_seqs = Vec::new();
    for t in tasks {
        let answers = t.await.unwrap();
        // Each stream's answers come in order, so its seqs increase.
        let seqs: Vec<u64> = answers.iter().map(|a| a.deliveries[0].seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "a stream's seqs increase");
        acked_seqs.extend(seqs);
    }
    acked_seqs.sort_unstable();
    assert_eq!(acked_seqs, (1..=(TASKS * EACH) as u64).collect::<Vec<_>>());
    let mut last_of_task: HashMap<String, i64> = HashMap::new();
    for expect in 1..=(TASKS * EACH) as u64 {
        let e = sub.event().await;
        assert_eq!(e.seq, expect, "seq order with no gap");
        let p = String::from_utf8(e.payload.to_vec()).unwrap();
        let (t, i) = p.split_once(':').unwrap();
        let i: i64 = i.parse().unwrap();
        let prev = last_of_task.insert(t.to_string(), i).unwrap_or(-1);
        assert_eq!(i, prev + 1, "publisher {t}'s events in publish order");
        if expect % 500 == 0 {
            sub.ack(expect).await;
        }
    }
    s.stop().await;
}

async fn replay_live_seam_loses_nothing(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db, &[]).await;
    let (publisher, alice, alice_token) = cast(&s).await;
    const N: u64 = 3000;
    let ch = s.channel.clone();
    let id = alice.id;
    let producer = tokio::spawn(async move {
        // Small PublishStreams back to back: commits keep landing while subscribers start.
        for chunk in 0..(N / 50) {
            let reqs = (0..50)
                .map(|i| event_req(&[id], "t", format!("{}", chunk * 50 + i)))
                .collect();
            publish_stream(&ch, &publisher, reqs).await;
        }
    });
    let mut subs = Vec::new();
    for k in 0..6u64 {
        tokio::time::sleep(Duration::from_millis(40)).await;
        let from = if k % 2 == 0 {
            Start {
                start_from: StartFrom::Earliest as i32,
                window: 64,
                ..start(0)
            }
        } else {
            let head = client(&s.channel)
                .list_events(authed(ListEventsRequest::default(), &alice_token))
                .await
                .unwrap()
                .into_inner()
                .head_seq;
            Start {
                start_from: StartFrom::Seq as i32,
                after_seq: head / 2,
                window: 64,
                ..start(0)
            }
        };
        let sub = Sub::open(&s.channel, &alice_token, from).await.unwrap();
        subs.push(sub);
    }
    producer.await.unwrap();
    for mut sub in subs {
        let mut expect = sub.subscribed.resume_after + 1;
        while expect <= N {
            let e = sub.event().await;
            assert_eq!(e.seq, expect, "no loss or reordering across the replay/live seam");
            sub.ack(e.seq).await;
            expect += 1;
        }
    }
    s.stop().await;
}

async fn resumption_continues_after_the_acked_seq(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db, &[]).await;
    let (publisher, alice, alice_token) = cast(&s).await;
    let reqs = (0..20)
        .map(|i| event_req(&[alice.id], "t", format!("{i}")))
        .collect();
    publish_stream(&s.channel, &publisher, reqs).await;
    let phone = || Start {
        consumer_id: "phone".into(),
        start_from: StartFrom::Cursor as i32,
        ..start(0)
    };
    let mut sub = Sub::open(&s.channel, &alice_token, phone()).await.unwrap();
    assert_eq!(
        sub.subscribed.resume_after, 0,
        "a new consumer starts from the beginning"
    );
    for expect in 1..=12 {
        assert_eq!(sub.event().await.seq, expect);
    }
    sub.ack(10).await;
    let cur = cursor_reaches(&s, &alice_token, 0, "phone", 10, "ack persisted").await;
    assert_eq!(cur.head_seq, 20);
    drop(sub);
    let mut sub = Sub::open(&s.channel, &alice_token, phone()).await.unwrap();
    assert_eq!(sub.subscribed.resume_after, 10);
    for expect in 11..=20 {
        assert_eq!(sub.event().await.seq, expect, "continues after the acked seq");
    }
    // LATEST with the same consumer does not rewind or rewrite the cursor.
    drop(sub);
    let sub = Sub::open(
        &s.channel,
        &alice_token,
        Start {
            start_from: StartFrom::Latest as i32,
            ..phone()
        },
    )
    .await
    .unwrap();
    assert_eq!(sub.subscribed.resume_after, 20);
    s.hub.flush().await;
    let cursor = GetCursorRequest {
        user_id: 0,
        consumer_id: "phone".into(),
    };
    let cur = client(&s.channel)
        .get_cursor(authed(cursor, &alice_token))
        .await
        .unwrap();
    assert_eq!(cur.into_inner().acked_seq, 10);
    drop(sub);
    s.stop().await;
}

async fn retention_prunes_and_reports_truncation(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db, &["--retention-max-events", "5", "--retention-max-age", "1h"]).await;
    let (publisher, alice, alice_token) = cast(&s).await;
    let reqs = (1..=10)
        .map(|i| event_req(&[alice.id], "t", format!("{i}")))
        .collect();
    publish_stream(&s.channel, &publisher, reqs).await;
    let pruned = s.hub.prune_at(activity_hub::store::now_micros()).await.unwrap();
    assert_eq!(pruned.deliveries, 5, "count limit keeps the 5 newest");
    let mut sub = Sub::open(
        &s.channel,
        &alice_token,
        Start {
            start_from: StartFrom::Seq as i32,
            after_seq: 2,
            ..start(0)
        },
    )
    .await
    .unwrap();
    let sb = sub.subscribed.clone();
    assert!(sb.truncated, "resuming from a pruned position is reported");
    assert_eq!((sb.resume_after, sb.earliest_seq, sb.head_seq), (5, 6, 10));
    assert_eq!(sub.event().await.seq, 6);
    let sub2 = Sub::open(
        &s.channel,
        &alice_token,
        Start {
            start_from: StartFrom::Earliest as i32,
            ..start(0)
        },
    )
    .await
    .unwrap();
    assert!(!sub2.subscribed.truncated);
    let two_hours = 2 * 3600 * 1_000_000;
    s.hub
        .prune_at(activity_hub::store::now_micros() + two_hours)
        .await
        .unwrap();
    let page = client(&s.channel)
        .list_events(authed(ListEventsRequest::default(), &alice_token))
        .await
        .unwrap()
        .into_inner();
    assert!(page.events.is_empty(), "age limit prunes everything older");
    assert_eq!(page.head_seq, 10, "seqs are never reused");
    let sub3 = Sub::open(
        &s.channel,
        &alice_token,
        Start {
            consumer_id: "new-device".into(),
            ..start(0)
        },
    )
    .await
    .unwrap();
    assert!(sub3.subscribed.truncated);
    assert_eq!(
        (sub3.subscribed.earliest_seq, sub3.subscribed.resume_after),
        (11, 10)
    );
    s.stop().await;
}

async fn age_retention_keeps_what_is_younger(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db, &["--retention-max-age", "1h"]).await;
    let (publisher, alice, alice_token) = cast(&s).await;
    let (bob, bob_token) = s.user_with_token("bob", &[]).await;
    let old = (0..3)
        .map(|_| event_req(&[alice.id, bob.id], "t", "old"))
        .collect();
    publish_stream(&s.channel, &publisher, old).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let boundary = activity_hub::store::now_micros();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let young = (0..2).map(|_| event_req(&[alice.id], "t", "young")).collect();
    publish_stream(&s.channel, &publisher, young).await;
    // As if an hour had passed since `boundary`: the three older events expire.
    let pruned = s.hub.prune_at(boundary + 3600 * 1_000_000).await.unwrap();
    assert_eq!(pruned.deliveries, 3 + 3);
    let seqs = |token: String| {
        let mut c = client(&s.channel);
        async move {
            c.list_events(authed(ListEventsRequest::default(), &token))
                .await
                .unwrap()
                .into_inner()
                .events
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(seqs(alice_token).await, vec![4, 5]);
    assert!(seqs(bob_token).await.is_empty());
    s.stop().await;
}

async fn idempotency_key_returns_the_first_event(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db, &[]).await;
    let (publisher, alice, alice_token) = cast(&s).await;
    let (bob, _) = s.user_with_token("bob", &[]).await;
    let keyed = |k: &str| PublishRequest {
        idempotency_key: k.into(),
        ..event_req(&[alice.id, bob.id, alice.id], "t", "x")
    };
    let first = publish(&s, &publisher, keyed("k1")).await.unwrap();
    assert!(!first.duplicate);
    assert_eq!(
        first.deliveries.len(),
        2,
        "duplicate recipients are delivered once"
    );
    let again = publish(&s, &publisher, keyed("k1")).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(
        (&again.event_id, &again.deliveries),
        (&first.event_id, &first.deliveries)
    );
    // In one pipelined stream too, and a different key is a new event.
    let answers = publish_stream(
        &s.channel,
        &publisher,
        vec![keyed("k2"), keyed("k2"), keyed("k1")],
    )
    .await;
    assert!(!answers[0].duplicate && answers[1].duplicate && answers[2].duplicate);
    assert_eq!(answers[1].event_id, answers[0].event_id);
    assert_eq!(answers[2].event_id, first.event_id);
    let page = client(&s.channel)
        .list_events(authed(ListEventsRequest::default(), &alice_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.events.len(), 2, "k1 and k2 stored once each");
    s.stop().await;
}

async fn types_filter_and_ack_mode_none(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db, &[]).await;
    let (publisher, alice, alice_token) = cast(&s).await;
    let reqs = ["a", "b", "a", "b"]
        .iter()
        .map(|t| event_req(&[alice.id], t, "x"))
        .collect();
    publish_stream(&s.channel, &publisher, reqs).await;
    let mut sub = Sub::open(
        &s.channel,
        &alice_token,
        Start {
            start_from: StartFrom::Earliest as i32,
            types: vec!["a".into()],
            ..start(0)
        },
    )
    .await
    .unwrap();
    assert_eq!(sub.event().await.seq, 1);
    assert_eq!(sub.event().await.seq, 3);
    let reqs = ["b", "a"]
        .iter()
        .map(|t| event_req(&[alice.id], t, "x"))
        .collect();
    publish_stream(&s.channel, &publisher, reqs).await;
    let e = sub.event().await;
    assert_eq!(
        (e.seq, e.r#type.as_str()),
        (6, "a"),
        "live events are filtered too"
    );

    // ACK_MODE_NONE: a window of 4 does not limit it, and the cursor follows what was written.
    let mut none = Sub::open(
        &s.channel,
        &alice_token,
        Start {
            consumer_id: "tv".into(),
            start_from: StartFrom::Earliest as i32,
            window: 4,
            ack_mode: AckMode::None as i32,
            ..start(0)
        },
    )
    .await
    .unwrap();
    for expect in 1..=6 {
        assert_eq!(none.event().await.seq, expect, "no acks needed");
    }
    cursor_reaches(
        &s,
        &alice_token,
        alice.id,
        "tv",
        6,
        "written events count as acked",
    )
    .await;
    s.stop().await;
}

async fn one_live_stream_per_consumer(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db, &[]).await;
    let (_, _, alice_token) = cast(&s).await;
    let phone = || Start {
        consumer_id: "phone".into(),
        ..start(0)
    };
    let mut old = Sub::open(&s.channel, &alice_token, phone()).await.unwrap();
    let mut anon = Sub::open(&s.channel, &alice_token, start(0)).await.unwrap();
    let _new = Sub::open(&s.channel, &alice_token, phone()).await.unwrap();
    let end = old.end().await;
    assert_eq!(end.code(), Code::Aborted);
    assert!(end.message().contains("replaced by a newer stream"), "{end:?}");
    let _anon2 = Sub::open(&s.channel, &alice_token, start(0)).await.unwrap();
    assert!(
        anon.event_within(Duration::from_millis(300)).await.is_none(),
        "streams without a consumer_id never replace each other"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_holds_a_stalled_subscriber_to_its_window() {
    let db = TestDb::new(Backend::Sqlite).await;
    let s = TestServer::start(&db, &[]).await;
    let (publisher, alice, alice_token) = cast(&s).await;
    const WINDOW: u64 = 8;
    const N: u64 = 500;
    let mut stalled = Sub::open(
        &s.channel,
        &alice_token,
        Start {
            window: WINDOW as u32,
            ..start(0)
        },
    )
    .await
    .unwrap();
    let mut fast = Sub::open(
        &s.channel,
        &alice_token,
        Start {
            window: 16,
            ..start(0)
        },
    )
    .await
    .unwrap();
    let reqs = (0..N)
        .map(|i| event_req(&[alice.id], "t", format!("{i}")))
        .collect();
    let answers = publish_stream(&s.channel, &publisher, reqs).await;
    assert_eq!(
        answers.len() as u64,
        N,
        "publishers are not held back by a stalled subscriber"
    );
    for expect in 1..=N {
        let e = fast.event().await;
        assert_eq!(e.seq, expect);
        fast.ack(e.seq).await;
    }
    // The stalled one got exactly its window, and holds no more than that in memory.
    for expect in 1..=WINDOW {
        assert_eq!(stalled.event().await.seq, expect);
    }
    assert!(
        stalled.event_within(Duration::from_millis(300)).await.is_none(),
        "no event beyond the window without an ack"
    );
    let infos = s.hub.inspect(alice.id).await;
    assert_eq!(infos.len(), 2);
    for info in &infos {
        assert!(
            info.pending + info.queued <= WINDOW as usize + 16,
            "memory bounded by the window: {info:?}"
        );
    }
    assert!(
        infos.iter().any(|i| i.behind && i.unacked == WINDOW as usize),
        "{infos:?}"
    );
    // Acking 3 opens exactly 3 slots, filled from the store.
    stalled.ack(3).await;
    for expect in WINDOW + 1..=WINDOW + 3 {
        assert_eq!(stalled.event().await.seq, expect);
    }
    assert!(stalled.event_within(Duration::from_millis(200)).await.is_none());
    // And it can catch up all the way.
    let mut last = WINDOW + 3;
    stalled.ack(last).await;
    while last < N {
        let e = stalled.event().await;
        assert_eq!(e.seq, last + 1);
        last = e.seq;
        stalled.ack(last).await;
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_reaches_1000_subscribers_once_each() {
    let db = TestDb::new(Backend::Sqlite).await;
    let s = TestServer::start(&db, &[]).await;
    let admin = s.admin_token().await;
    let (_, publisher) = s.user_with_token("pub", &[UserRole::Publisher]).await;
    let ids = crate::helpers::bulk_users(&s, &admin, "fan", 1000).await;
    let mut subs = Vec::new();
    for id in &ids {
        subs.push(Sub::open(&s.channel, &admin, start(*id)).await.unwrap());
    }
    let r = publish(&s, &publisher, event_req(&ids, "broadcast", "hello"))
        .await
        .unwrap();
    assert_eq!(r.deliveries.len(), 1000);
    assert!(r.deliveries.iter().all(|d| d.seq == 1));
    let event_id = r.event_id.clone();
    let mut readers = Vec::new();
    for (mut sub, id) in subs.into_iter().zip(ids) {
        let event_id = event_id.clone();
        readers.push(tokio::spawn(async move {
            let e = sub.event().await;
            assert_eq!((e.user_id, e.seq, e.event_id), (id, 1, event_id));
            assert_eq!(&e.payload[..], b"hello");
            assert!(
                sub.event_within(Duration::from_millis(50)).await.is_none(),
                "once"
            );
        }));
    }
    for r in readers {
        r.await.unwrap();
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_errors_are_invalid_argument() {
    let db = TestDb::new(Backend::Sqlite).await;
    let s = TestServer::start(&db, &[]).await;
    let (publisher, alice, alice_token) = cast(&s).await;
    assert_status(
        Sub::open(
            &s.channel,
            &alice_token,
            Start {
                window: 10_001,
                ..start(0)
            },
        )
        .await
        .map(|_| ()),
        Code::InvalidArgument,
        "start.window",
    );
    assert_status(
        Sub::open(
            &s.channel,
            &alice_token,
            Start {
                types: vec!["Bad Type".into()],
                ..start(0)
            },
        )
        .await
        .map(|_| ()),
        Code::InvalidArgument,
        "start.types",
    );
    let mut sub = Sub::open(&s.channel, &alice_token, start(0)).await.unwrap();
    sub.tx
        .send(SubscribeRequest {
            msg: Some(subscribe_request::Msg::Start(start(0))),
        })
        .await
        .unwrap();
    assert_status(
        Err::<(), _>(sub.end().await),
        Code::InvalidArgument,
        "exactly one Start",
    );
    publish(&s, &publisher, event_req(&[alice.id], "t", "x"))
        .await
        .unwrap();
    let mut sub = Sub::open(
        &s.channel,
        &alice_token,
        Start {
            start_from: StartFrom::Earliest as i32,
            ..start(0)
        },
    )
    .await
    .unwrap();
    assert_eq!(sub.event().await.seq, 1);
    sub.ack(2).await;
    assert_status(Err::<(), _>(sub.end().await), Code::InvalidArgument, "ack.seq");
    assert_status(
        publish(&s, &publisher, event_req(&[alice.id, 999_999], "t", "x")).await,
        Code::NotFound,
        "999999",
    );
    assert_status(
        publish(&s, &publisher, event_req(&[alice.id], "", "x")).await,
        Code::InvalidArgument,
        "type",
    );
    let big = vec![0u8; 300 * 1024];
    assert_status(
        publish(&s, &publisher, event_req(&[alice.id], "t", big)).await,
        Code::ResourceExhausted,
        "payload",
    );
    // A bad request in a PublishStream: the ones before it are answered, then the error.
    let mut out = client(&s.channel)
        .publish_stream(authed(
            tokio_stream::iter(vec![
                event_req(&[alice.id], "t", "ok"),
                event_req(&[alice.id], "T!", "bad"),
                event_req(&[alice.id], "t", "never"),
            ]),
            &publisher,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.message().await.unwrap().unwrap().deliveries[0].seq, 2);
    assert_status(out.message().await, Code::InvalidArgument, "request 1: type");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_rows_of_the_spec() {
    let db = TestDb::new(Backend::Sqlite).await;
    let s = TestServer::start(&db, &[]).await;
    let (publisher, alice, alice_token) = cast(&s).await;
    let (bob, bob_token) = s.user_with_token("bob", &[]).await;
    let admin = s.admin_token().await;
    // Publish: admin and publisher; not a plain user; not anonymous.
    publish(&s, &admin, event_req(&[alice.id], "t", "x"))
        .await
        .unwrap();
    publish(&s, &publisher, event_req(&[alice.id], "t", "x"))
        .await
        .unwrap();
    assert_status(
        publish(&s, &bob_token, event_req(&[alice.id], "t", "x")).await,
        Code::PermissionDenied,
        "publish",
    );
    assert_status(
        client(&s.channel).publish(event_req(&[alice.id], "t", "x")).await,
        Code::Unauthenticated,
        "",
    );
    // Subscribe / ListEvents / GetCursor: the recipient or admin.
    Sub::open(&s.channel, &alice_token, start(0)).await.unwrap();
    Sub::open(&s.channel, &admin, start(alice.id)).await.unwrap();
    assert_status(
        Sub::open(&s.channel, &bob_token, start(alice.id))
            .await
            .map(|_| ()),
        Code::PermissionDenied,
        "",
    );
    assert_status(
        Sub::open(&s.channel, &publisher, start(alice.id))
            .await
            .map(|_| ()),
        Code::PermissionDenied,
        "",
    );
    let list = |uid: u64, token: &str| {
        let mut c = client(&s.channel);
        let req = authed(
            ListEventsRequest {
                user_id: uid,
                ..Default::default()
            },
            token,
        );
        async move { c.list_events(req).await }
    };
    assert_eq!(list(0, &alice_token).await.unwrap().into_inner().events.len(), 2);
    assert_eq!(list(alice.id, &admin).await.unwrap().into_inner().events.len(), 2);
    assert_status(list(alice.id, &bob_token).await, Code::PermissionDenied, "");
    assert!(list(0, &bob_token).await.unwrap().into_inner().events.is_empty());
    let cursor = |uid: u64, token: &str| {
        let mut c = client(&s.channel);
        let req = authed(
            GetCursorRequest {
                user_id: uid,
                consumer_id: "x".into(),
            },
            token,
        );
        async move { c.get_cursor(req).await }
    };
    cursor(bob.id, &bob_token).await.unwrap();
    cursor(bob.id, &admin).await.unwrap();
    assert_status(cursor(bob.id, &alice_token).await, Code::PermissionDenied, "");
    let empty = authed(
        GetCursorRequest {
            user_id: 0,
            consumer_id: String::new(),
        },
        &alice_token,
    );
    assert_status(
        client(&s.channel).get_cursor(empty).await,
        Code::InvalidArgument,
        "consumer_id",
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_streams_leave_no_actor_behind() {
    let db = TestDb::new(Backend::Sqlite).await;
    let s = TestServer::start(&db, &[]).await;
    let (_, _, alice_token) = cast(&s).await;
    let mut subs = Vec::new();
    for _ in 0..5 {
        subs.push(Sub::open(&s.channel, &alice_token, start(0)).await.unwrap());
    }
    let stats = s.hub.clone();
    let open = || {
        stats
            .stats()
            .subscriptions
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert_eq!(open(), 5);
    drop(subs);
    eventually(
        Duration::from_secs(10),
        "every subscription actor stopped",
        || open() == 0,
    )
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_streams_get_heartbeats() {
    let db = TestDb::new(Backend::Sqlite).await;
    let s = TestServer::start(&db, &["--heartbeat-interval", "100ms"]).await;
    let (publisher, alice, alice_token) = cast(&s).await;
    publish(&s, &publisher, event_req(&[alice.id], "t", "x"))
        .await
        .unwrap();
    let mut sub = Sub::open(&s.channel, &alice_token, start(0)).await.unwrap();
    let mut beats = 0;
    while beats < 3 {
        let m = tokio::time::timeout(Duration::from_secs(10), sub.rx.message())
            .await
            .expect("heartbeats keep coming")
            .unwrap()
            .unwrap();
        match m.msg {
            Some(subscribe_response::Msg::Heartbeat(h)) => {
                assert_eq!(h.head_seq, 1);
                assert!(h.at.is_some());
                beats += 1;
            }
            other => panic!("an idle stream gets only heartbeats, got {other:?}"),
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_streams_with_unavailable_and_keeps_acknowledged_events() {
    let db = TestDb::new(Backend::Sqlite).await;
    let s = TestServer::start(&db, &[]).await;
    let (publisher, alice, alice_token) = cast(&s).await;
    let mut sub = Sub::open(&s.channel, &alice_token, start(0)).await.unwrap();
    let ch = s.channel.clone();
    let id = alice.id;
    // A publisher streaming while the server stops: whatever it got answers for must survive.
    let (req_tx, req_rx) = mpsc::channel(16);
    let mut answers = client(&ch)
        .publish_stream(authed(ReceiverStream::new(req_rx), &publisher))
        .await
        .unwrap()
        .into_inner();
    let feeder = tokio::spawn(async move {
        for i in 0.. {
            if req_tx.send(event_req(&[id], "t", format!("{i}"))).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let mut acknowledged = Vec::new();
    for _ in 0..50 {
        acknowledged.push(answers.message().await.unwrap().unwrap());
    }
    let reader = tokio::spawn(async move {
        loop {
            match answers.message().await {
                Ok(Some(a)) => acknowledged.push(a),
                _ => return acknowledged,
            }
        }
    });
    let stop = tokio::spawn(s.stop());
    let end = sub.end().await;
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    stop.await.unwrap();
    feeder.abort();
    let acknowledged = reader.await.unwrap();
    let s = TestServer::start(&db, &[]).await;
    let page = client(&s.channel)
        .list_events(authed(
            ListEventsRequest {
                limit: 1000,
                ..Default::default()
            },
            &alice_token,
        ))
        .await
        .unwrap()
        .into_inner();
    let stored: HashMap<u64, String> = page.events.into_iter().map(|e| (e.seq, e.event_id)).collect();
    for a in &acknowledged {
        assert_eq!(
            stored.get(&a.deliveries[0].seq),
            Some(&a.event_id),
            "acknowledged publish survived"
        );
    }
    s.stop().await;
}

/// The next notification about someone other than the admin (whose own logins in the
/// test helpers are reported too).
async fn next(
    w: &mut Streaming<activity_hub::proto::user::v1::UserActivityEvent>,
) -> activity_hub::proto::user::v1::UserActivityEvent {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), w.message())
            .await
            .expect("a notification within 10s")
            .expect("stream healthy")
            .expect("stream open");
        if e.user_id != 1 {
            return e;
        }
    }
}

/// Opens UserActivity and asks to watch `user_id`; the sender takes further requests.
async fn open_watch(
    s: &TestServer,
    token: &str,
    user_id: u64,
) -> (
    mpsc::Sender<activity_hub::proto::user::v1::UserActivityRequest>,
    Streaming<activity_hub::proto::user::v1::UserActivityEvent>,
) {
    use activity_hub::proto::user::v1::{user_activity_request::Action, UserActivityRequest};
    let (tx, rx) = mpsc::channel(8);
    tx.send(UserActivityRequest {
        action: Action::SubscribeUserUpdates as i32,
        user_id,
    })
    .await
    .unwrap();
    let stream = s
        .users()
        .user_activity(authed(ReceiverStream::new(rx), token))
        .await
        .unwrap()
        .into_inner();
    (tx, stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_activity_reports_lifecycle_changes() {
    use activity_hub::proto::user::v1::{
        user_activity_event::Kind, user_activity_request::Action, GetUserRequest, UpdateUserRequest,
        UserActivityRequest,
    };
    let db = TestDb::new(Backend::Sqlite).await;
    let s = TestServer::start(&db, &[]).await;
    let admin = s.admin_token().await;
    let (tx, mut watch) = open_watch(&s, &admin, 0).await;
    let watches = || s.hub.stats().watches.load(std::sync::atomic::Ordering::Relaxed);
    eventually(Duration::from_secs(5), "the watch is in place", || watches() == 1).await;
    let (carol, carol_token) = s.user_with_token("carol", &[]).await;
    let e = next(&mut watch).await;
    assert_eq!((e.kind, e.user_id), (Kind::Created as i32, carol.id));
    assert_eq!(e.user.unwrap().username, "carol");
    let e = next(&mut watch).await;
    assert_eq!((e.kind, e.user_id), (Kind::LoggedIn as i32, carol.id));
    s.users()
        .update_user(authed(
            UpdateUserRequest {
                user_id: carol.id,
                first_name: Some("Carol".into()),
                ..Default::default()
            },
            &carol_token,
        ))
        .await
        .unwrap();
    let e = next(&mut watch).await;
    assert_eq!(
        (e.kind, e.user.unwrap().first_name.as_str()),
        (Kind::Updated as i32, "Carol")
    );
    s.users()
        .delete_user(authed(
            GetUserRequest {
                identifier: Some(
                    activity_hub::proto::user::v1::get_user_request::Identifier::UserId(carol.id),
                ),
            },
            &admin,
        ))
        .await
        .unwrap();
    assert_eq!(next(&mut watch).await.kind, Kind::Deleted as i32);
    // A plain user may watch only themself.
    let (_, dave_token) = s.user_with_token("dave", &[]).await;
    let (_tx2, mut denied) = open_watch(&s, &dave_token, 0).await;
    let end = loop {
        match denied.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("ended without status"),
            Err(st) => break st,
        }
    };
    assert_eq!(end.code(), Code::PermissionDenied);
    // Unsubscribing removes the watch; closing the stream removes the watcher.
    tx.send(UserActivityRequest {
        action: Action::UnsubscribeUserUpdates as i32,
        user_id: 0,
    })
    .await
    .unwrap();
    eventually(Duration::from_secs(5), "the watch is removed", || watches() == 0).await;
    drop(tx);
    drop(watch);
    let watchers = || s.hub.stats().watchers.load(std::sync::atomic::Ordering::Relaxed);
    eventually(Duration::from_secs(10), "watcher actors stopped", || {
        watchers() == 0
    })
    .await;
    s.stop().await;
}

/// Two servers on one PostgreSQL database: a publish on one reaches a subscriber on the
/// other live, and a consumer reconnecting to the other server replaces its old stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_sharing_postgres_deliver_and_replace_across() {
    if crate::helpers::pg_url().is_none() {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "skipped: servers_sharing_postgres_deliver_and_replace_across (TEST_DATABASE_URL is not set)"
        );
        return;
    }
    let db = TestDb::new(Backend::Postgres).await;
    let a = TestServer::start(&db, &[]).await;
    let b = TestServer::start(&db, &[]).await;
    let (publisher, alice, alice_token) = cast(&a).await;
    let phone = || Start {
        consumer_id: "phone".into(),
        ..start(0)
    };
    let mut on_b = Sub::open(&b.channel, &alice_token, phone()).await.unwrap();
    for i in 1..=3u64 {
        let r = publish(&a, &publisher, event_req(&[alice.id], "t", format!("{i}")))
            .await
            .unwrap();
        assert_eq!(r.deliveries[0].seq, i);
        let e = on_b.event().await;
        assert_eq!(
            (e.seq, &e.payload[..]),
            (i, format!("{i}").as_bytes()),
            "live across servers"
        );
        on_b.ack(i).await;
    }
    // The device reconnects to server A: its stale stream on B ends with ABORTED.
    let _on_a = Sub::open(&a.channel, &alice_token, phone()).await.unwrap();
    let end = on_b.end().await;
    assert_eq!(end.code(), Code::Aborted, "{end:?}");
    a.stop().await;
    b.stop().await;
}
