//! The activity tests' vocabulary: start a server on a fresh store with its cast (a
//! publisher and a recipient), publish to a recipient, open a subscription and take its
//! events with a timeout, ack, and check order without gaps. Other test modules
//! (crash, faults, limits, metrics, observability) use it too.
//!
//! [`Sub::open`] opens every subscription of the suite, through the client library's
//! Subscribe handshake (`activity_hub_client::OpenStream`, shared with the client's
//! resumable subscription, the CLI and the load tool).

use std::{ops::Deref, ops::RangeInclusive, sync::Arc, time::Duration};

use activity_hub::proto::{
    activity::v1::{
        activity_service_client::ActivityServiceClient, subscribe_request, subscribe_response, Ack, Cursor,
        Event, GetCursorRequest, ListEventsRequest, ListEventsResponse, PublishRequest, PublishResponse,
        Start, StartFrom, SubscribeRequest, SubscribeResponse, Subscribed,
    },
    user::v1::{User, UserRole},
};
use activity_hub_client::OpenStream;
use bytes::Bytes;
use tokio::sync::mpsc;
use tonic::{transport::Channel, Status, Streaming};

use crate::helpers::{authed, Backend, TestDb, TestServer};

/// An ActivityService client on `ch` that accepts large history pages.
pub fn client(ch: &Channel) -> ActivityServiceClient<Channel> {
    ActivityServiceClient::new(ch.clone()).max_decoding_message_size(64 << 20)
}

/// A Start for `user_id`'s stream (0: the caller's own), everything else default.
pub fn start(user_id: u64) -> Start {
    Start {
        user_id,
        ..Default::default()
    }
}

/// A Start from the earliest retained event of the caller's own stream.
pub fn earliest() -> Start {
    Start {
        start_from: StartFrom::Earliest as i32,
        ..start(0)
    }
}

/// A Start of the caller's own stream as the durable consumer `id`.
pub fn consumer(id: &str) -> Start {
    Start {
        consumer_id: id.into(),
        ..start(0)
    }
}

/// A publish of one event of type `ty` to `recipients`.
pub fn event_req(recipients: &[u64], ty: &str, payload: impl Into<Bytes>) -> PublishRequest {
    PublishRequest {
        recipient_ids: recipients.to_vec(),
        r#type: ty.into(),
        payload: payload.into(),
        content_type: "text/plain".into(),
        ..Default::default()
    }
}

/// `n` publishes of type `t` to `recipient`, their payloads `0`, `1`, ... in order.
pub fn numbered(recipient: u64, n: u64) -> Vec<PublishRequest> {
    (0..n)
        .map(|i| event_req(&[recipient], "t", format!("{i}")))
        .collect()
}

/// One Publish call.
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

/// Waits (up to 20 s) for the stream to end and returns its status.
pub async fn stream_end<T>(rx: &mut Streaming<T>) -> Status {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), rx.message())
            .await
            .expect("the stream ends within 20s")
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream ended without a status"),
            Err(s) => return s,
        }
    }
}

/// A test server on a store of its own (shared with any server started [`Server::on`]
/// it), stopped when dropped. It derefs to the [`TestServer`] (channel, hub, users...).
pub struct Server {
    server: TestServer,
    db: Arc<TestDb>,
}

impl Deref for Server {
    type Target = TestServer;
    fn deref(&self) -> &TestServer {
        &self.server
    }
}

impl Server {
    /// A server on a fresh store of backend `b`.
    pub async fn start(b: Backend) -> Server {
        Server::start_with(b, &[]).await
    }

    /// [`Server::start`] with `flags` added to (or replacing) the test defaults.
    pub async fn start_with(b: Backend, flags: &[&str]) -> Server {
        Server::on(Arc::new(TestDb::new(b).await), flags).await
    }

    /// A server on the store `db` (another server's, or a stopped one's).
    pub async fn on(db: Arc<TestDb>, flags: &[&str]) -> Server {
        let server = TestServer::start(&db, flags).await;
        Server { server, db }
    }

    /// [`Server::on`] listening on `addr`: a restart on a stopped server's port, under
    /// clients (a browser) that reconnect to the same address.
    pub async fn on_at(db: Arc<TestDb>, flags: &[&str], addr: std::net::SocketAddr) -> Server {
        let server = TestServer::start_at(&db, flags, addr).await;
        Server { server, db }
    }

    /// The store, to start another server on it.
    pub fn db(&self) -> Arc<TestDb> {
        self.db.clone()
    }

    /// Graceful shutdown; waits until the server has stopped.
    pub async fn stop(self) {
        self.server.stop().await;
    }

    /// The cast of most tests: creates a publisher `pub` and a plain user `alice`, the
    /// recipient, and returns (publisher's token, alice, alice's token).
    pub async fn cast(&self) -> (String, User, String) {
        let (_, publisher) = self.user_with_token("pub", &[UserRole::Publisher]).await;
        let (alice, alice_token) = self.user_with_token("alice", &[]).await;
        (publisher, alice, alice_token)
    }

    /// Opens a subscription as `token`, or says why it was refused.
    pub async fn open(&self, token: &str, s: Start) -> Result<Sub, Status> {
        Sub::open(&self.channel, token, s).await
    }

    /// Opens a subscription as `token`; the test fails if it is refused.
    pub async fn subscribe(&self, token: &str, s: Start) -> Sub {
        self.open(token, s)
            .await
            .unwrap_or_else(|e| panic!("the subscription opens: {e:?}"))
    }

    /// One Publish call as `token`.
    pub async fn publish(&self, token: &str, req: PublishRequest) -> Result<PublishResponse, Status> {
        publish(&self.server, token, req).await
    }

    /// `reqs` on one PublishStream as `token`; the answers in order.
    pub async fn publish_all(&self, token: &str, reqs: Vec<PublishRequest>) -> Vec<PublishResponse> {
        publish_stream(&self.channel, token, reqs).await
    }

    /// A ListEvents page as `token`.
    pub async fn list(&self, token: &str, req: ListEventsRequest) -> ListEventsResponse {
        client(&self.channel)
            .list_events(authed(req, token))
            .await
            .expect("ListEvents answers")
            .into_inner()
    }

    /// The first ListEvents page of the caller's own stream.
    pub async fn history(&self, token: &str) -> ListEventsResponse {
        self.list(token, ListEventsRequest::default()).await
    }

    /// The stored cursor of `consumer` on `user_id`'s stream (0: the caller's own).
    pub async fn cursor(&self, token: &str, user_id: u64, consumer: &str) -> Cursor {
        let req = GetCursorRequest {
            user_id,
            consumer_id: consumer.into(),
        };
        client(&self.channel)
            .get_cursor(authed(req, token))
            .await
            .expect("GetCursor answers")
            .into_inner()
    }

    /// Polls GetCursor until the consumer's stored ack reaches `want` (acks persist in
    /// batches); fails the test with `what` after 10 s.
    pub async fn cursor_reaches(
        &self,
        token: &str,
        user_id: u64,
        consumer: &str,
        want: u64,
        what: &str,
    ) -> Cursor {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let cur = self.cursor(token, user_id, consumer).await;
            if cur.acked_seq == want {
                return cur;
            }
            assert!(tokio::time::Instant::now() < deadline, "{what}: {cur:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// An open Subscribe stream.
pub struct Sub {
    pub tx: mpsc::Sender<SubscribeRequest>,
    pub rx: Streaming<SubscribeResponse>,
    pub subscribed: Subscribed,
    /// The response headers.
    pub headers: tonic::metadata::MetadataMap,
}

impl Sub {
    /// The Subscribe handshake, the client library's own (`OpenStream::open`): sends
    /// `s` as the Start and waits for Subscribed.
    pub async fn open(ch: &Channel, token: &str, s: Start) -> Result<Sub, Status> {
        let metadata = authed((), token).into_parts().0;
        let stream = OpenStream::open(ch.clone(), s, metadata, 1024).await?;
        Ok(Sub {
            tx: stream.requests,
            rx: stream.responses,
            subscribed: stream.subscribed,
            headers: stream.headers,
        })
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

    /// Takes the next events and checks that their seqs are exactly `seqs`, in order.
    pub async fn expect_seqs(&mut self, seqs: RangeInclusive<u64>, what: &str) {
        for expect in seqs {
            assert_eq!(self.event().await.seq, expect, "{what}");
        }
    }

    /// [`Sub::expect_seqs`], acking each event as it arrives.
    pub async fn expect_seqs_acking(&mut self, seqs: RangeInclusive<u64>, what: &str) {
        for expect in seqs {
            let e = self.event().await;
            assert_eq!(e.seq, expect, "{what}");
            self.ack(e.seq).await;
        }
    }

    /// Waits for the stream to end and returns its status.
    pub async fn end(&mut self) -> Status {
        stream_end(&mut self.rx).await
    }

    /// Acks everything up to `seq`.
    pub async fn ack(&self, seq: u64) {
        self.tx
            .send(SubscribeRequest {
                msg: Some(subscribe_request::Msg::Ack(Ack { seq })),
            })
            .await
            .expect("ack sent");
    }
}
