//! Subscriptions: [`OpenStream`], the Subscribe handshake every client of the stream
//! shares (the [`Subscription`] below, the CLI, the load tool and the tests), and
//! [`Subscription`], a stream of events that reconnects and resumes by itself.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use activity_hub_proto::{
    activity::v1::{
        self as apb, activity_service_client::ActivityServiceClient, subscribe_request, subscribe_response,
        SubscribeRequest, SubscribeResponse,
    },
    RETRY_AFTER_MS,
};
use futures_util::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{metadata::MetadataMap, transport::Channel, Code, Extensions, Request, Status, Streaming};

use crate::{config::backoff, endpoint::transient, Client};

/// A Subscribe stream past its handshake.
#[derive(Debug)]
pub struct OpenStream {
    /// The request side: acks go here (the stream ends when this and every clone drop).
    pub requests: mpsc::Sender<SubscribeRequest>,
    /// The response side: events and heartbeats, in order.
    pub responses: Streaming<SubscribeResponse>,
    /// The server's answer to the `Start`: the stream id and where it resumes.
    pub subscribed: apb::Subscribed,
    /// The response headers.
    pub headers: MetadataMap,
}

impl OpenStream {
    /// The Subscribe handshake: opens a stream on `channel` with `metadata` (the bearer
    /// token, a request id), sends `start` as its first message and waits for the
    /// server's `Subscribed`. `buffer` is how many requests (acks) may queue unsent.
    ///
    /// Errors: the server's status, or INTERNAL if its first message is anything but
    /// `Subscribed`, UNAVAILABLE if it ends the stream first.
    pub async fn open(
        channel: Channel,
        start: apb::Start,
        metadata: MetadataMap,
        buffer: usize,
    ) -> Result<OpenStream, Status> {
        let (requests, rx) = mpsc::channel(buffer.max(1));
        let first = SubscribeRequest {
            msg: Some(subscribe_request::Msg::Start(start)),
        };
        // Cannot fail: the receiver is right here.
        let _ = requests.send(first).await;
        let req = Request::from_parts(metadata, Extensions::default(), ReceiverStream::new(rx));
        let res = ActivityServiceClient::new(channel).subscribe(req).await?;
        let headers = res.metadata().clone();
        let mut responses = res.into_inner();
        match responses.message().await? {
            Some(SubscribeResponse {
                msg: Some(subscribe_response::Msg::Subscribed(subscribed)),
            }) => Ok(OpenStream {
                requests,
                responses,
                subscribed,
                headers,
            }),
            Some(other) => Err(Status::internal(format!(
                "the server's first message was not Subscribed: {other:?}"
            ))),
            None => Err(Status::unavailable(
                "the server ended the stream before Subscribed",
            )),
        }
    }

    /// Acknowledges every event up to `seq`; false if the stream is gone.
    pub async fn ack(&self, seq: u64) -> bool {
        let ack = SubscribeRequest {
            msg: Some(subscribe_request::Msg::Ack(apb::Ack { seq })),
        };
        self.requests.send(ack).await.is_ok()
    }
}

impl Client {
    /// Opens a subscription that reconnects by itself; see [`Subscription`].
    pub fn subscribe(&self, opts: SubscribeOptions) -> Subscription {
        // Room for one window of events between the connection and the application.
        let room = if opts.window == 0 {
            256
        } else {
            opts.window as usize
        };
        let (tx, rx) = mpsc::channel(room);
        let (ack_tx, ack_rx) = watch::channel(0u64);
        let (state_tx, state_rx) = watch::channel(ConnectionState::Connecting);
        let stop = CancellationToken::new();
        tokio::spawn(run_subscription(
            self.clone(),
            opts.clone(),
            Channels {
                tx,
                acks: ack_rx,
                state: state_tx,
            },
            stop.clone(),
        ));
        Subscription {
            rx,
            acks: ack_tx,
            state: state_rx,
            auto_ack: opts.auto_ack,
            _stop: stop.drop_guard(),
        }
    }
}

/// What to subscribe to.
#[derive(Clone, Debug, Default)]
pub struct SubscribeOptions {
    /// Whose events; 0 = the caller.
    pub user_id: u64,
    /// Durable cursor name (a device, a service); resumption across restarts uses it.
    pub consumer_id: String,
    /// Only these event types; empty = all.
    pub types: Vec<String>,
    /// Where the first connection starts (later ones resume after the last event
    /// yielded); `Unspecified` = the cursor with a consumer id, else the newest.
    pub start_from: apb::StartFrom,
    /// With `StartFrom::Seq`: events after this seq.
    pub after_seq: u64,
    /// Unacked events in flight (0 = the server's default).
    pub window: u32,
    /// Ack every event as the application takes it from the stream.
    pub auto_ack: bool,
    /// End the subscription (with the last failure) when no stream could be opened for
    /// this long; `None` = keep trying for ever (the default: servers come back).
    pub give_up_after: Option<Duration>,
}

/// How a subscription's connection is doing; see [`Subscription::connection`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// Opening the first stream.
    Connecting,
    /// A stream is open on this endpoint.
    Connected {
        /// The endpoint's URI.
        endpoint: String,
    },
    /// The last attempt to open (or the open stream) failed; retrying after a backoff.
    Retrying {
        /// The endpoint that failed.
        endpoint: String,
        /// Why, as `CODE: message`.
        error: String,
        /// Consecutive failures so far.
        attempt: u32,
    },
}

impl SubscribeOptions {
    /// The caller's own events on a durable consumer, acked by the application.
    pub fn consumer(consumer_id: impl Into<String>) -> SubscribeOptions {
        SubscribeOptions {
            consumer_id: consumer_id.into(),
            ..Default::default()
        }
    }
}

/// What a [`Subscription`] yields.
#[derive(Clone, Debug, PartialEq)]
pub enum Delivery {
    /// The next event.
    Event(apb::Event),
    /// Retention removed events before this subscription could read them: the next
    /// event comes after [`Pruned::last_seq`]. Never silent; how to react (warn, resync
    /// from elsewhere) is the application's call.
    Pruned(Pruned),
}

impl Delivery {
    /// The event, if this is one.
    pub fn into_event(self) -> Option<apb::Event> {
        match self {
            Delivery::Event(e) => Some(e),
            Delivery::Pruned(_) => None,
        }
    }
}

/// Seqs `first_seq..=last_seq` of the recipient's log were pruned unread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pruned {
    /// The first seq lost.
    pub first_seq: u64,
    /// The last seq lost.
    pub last_seq: u64,
}

impl Pruned {
    /// How many seqs were lost (with a type filter, some may not have matched it).
    pub fn count(&self) -> u64 {
        self.last_seq + 1 - self.first_seq
    }

    /// What the server's `Subscribed` says was lost, if anything.
    pub fn of(subscribed: &apb::Subscribed) -> Option<Pruned> {
        (subscribed.truncated && subscribed.resume_after > subscribed.requested_after).then(|| Pruned {
            first_seq: subscribed.requested_after + 1,
            last_seq: subscribed.resume_after,
        })
    }
}

/// A stream of events that survives disconnects: when the connection or the server
/// goes away, it reconnects (with backoff, to any endpoint) and resumes right after the
/// last event it yielded, so the application sees every event once, in order, with no
/// gap - or, where retention removed events first, a [`Delivery::Pruned`] saying which.
/// Acks are cumulative: [`Subscription::ack`] the last event processed (or set
/// [`SubscribeOptions::auto_ack`]). With a session installed
/// ([`Client::use_session`]) a reconnect refused for an expired token refreshes the
/// session and goes on. It ends with an error only for failures a reconnect cannot fix
/// (bad request, permission, an ended session, another stream took over the consumer).
pub struct Subscription {
    rx: mpsc::Receiver<Result<Delivery, Status>>,
    acks: watch::Sender<u64>,
    state: watch::Receiver<ConnectionState>,
    auto_ack: bool,
    _stop: tokio_util::sync::DropGuard,
}

impl Subscription {
    /// Watches the connection: each failure and reconnect as it happens (an
    /// application can tell its user "server unreachable, retrying" instead of going
    /// quiet).
    pub fn connection(&self) -> watch::Receiver<ConnectionState> {
        self.state.clone()
    }

    /// Acknowledges every event up to `seq` (cumulative; lower values are ignored).
    pub fn ack(&self, seq: u64) {
        self.acks.send_if_modified(|v| {
            if seq > *v {
                *v = seq;
                true
            } else {
                false
            }
        });
    }
}

impl Stream for Subscription {
    type Item = Result<Delivery, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(Ok(Delivery::Event(ev)))) = &item {
            if self.auto_ack {
                self.ack(ev.seq);
            }
        }
        item
    }
}

/// Whether a subscription should reconnect after `s` rather than give up. Rate limits
/// (RESOURCE_EXHAUSTED with `retry-after-ms`) are waited out, not fatal.
fn reconnectable(s: &Status) -> bool {
    transient(s)
        || matches!(
            s.code(),
            Code::Cancelled | Code::DeadlineExceeded | Code::Internal | Code::ResourceExhausted
        )
}

/// The server's `retry-after-ms` hint, if any.
fn retry_after(s: &Status) -> Option<Duration> {
    let v = s.metadata().get(RETRY_AFTER_MS)?.to_str().ok()?;
    Some(Duration::from_millis(v.parse().ok()?))
}

/// What ended one connection of a subscription.
enum Ended {
    /// The application dropped the subscription: stop.
    Stopped,
    /// The connection failed with this status: reconnect, or give up if it is final.
    Failed(Status),
}

/// The subscription task's ends of its channels to the application.
struct Channels {
    tx: mpsc::Sender<Result<Delivery, Status>>,
    acks: watch::Receiver<u64>,
    state: watch::Sender<ConnectionState>,
}

/// Where a subscription stands between connections.
#[derive(Default)]
struct Progress {
    /// The last seq handed to the application: later connections resume right after it.
    last: Option<u64>,
    /// Consecutive failed connections.
    attempt: u32,
    /// Since when no stream could be opened (for `give_up_after`).
    failing_since: Option<Instant>,
}

async fn run_subscription(client: Client, opts: SubscribeOptions, mut ch: Channels, stop: CancellationToken) {
    let mut at = Progress::default();
    loop {
        let start = apb::Start {
            user_id: opts.user_id,
            consumer_id: opts.consumer_id.clone(),
            types: opts.types.clone(),
            start_from: match at.last {
                Some(_) => apb::StartFrom::Seq as i32,
                None => opts.start_from as i32,
            },
            after_seq: at.last.unwrap_or(opts.after_seq),
            window: opts.window,
            ack_mode: apb::AckMode::Explicit as i32,
        };
        let generation = client.inner.session.generation();
        let Some((failure, endpoint)) = connect_once(&client, start, &mut at, &mut ch, &stop).await else {
            return;
        };
        // An expired token: refresh the session (once per token) and reconnect.
        let refreshed = failure.code() == Code::Unauthenticated
            && client.inner.session.active()
            && client.refresh_after(Some(generation)).await.is_ok();
        let since = *at.failing_since.get_or_insert_with(Instant::now);
        let given_up = opts.give_up_after.is_some_and(|d| since.elapsed() >= d);
        if given_up || (!refreshed && !reconnectable(&failure)) {
            let _ = ch.tx.send(Err(failure)).await;
            return;
        }
        at.attempt += 1;
        ch.state.send_replace(ConnectionState::Retrying {
            endpoint,
            error: format!("{:?}: {}", failure.code(), failure.message()),
            attempt: at.attempt,
        });
        let wait = backoff(&client.inner.cfg, at.attempt).max(retry_after(&failure).unwrap_or_default());
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One connection: picks an endpoint (the stream counts as in flight there until it
/// ends), opens the stream and follows it. `None` when the application stopped, else why
/// the connection ended and its endpoint.
async fn connect_once(
    client: &Client,
    start: apb::Start,
    at: &mut Progress,
    ch: &mut Channels,
    stop: &CancellationToken,
) -> Option<(Status, String)> {
    let node = match client.pick() {
        Ok(node) => node,
        Err(none) => return Some((none, String::new())),
    };
    // A stream has no deadline: only the token goes along.
    let (metadata, _, ()) = client.request(()).into_parts();
    let opened = tokio::select! {
        _ = stop.cancelled() => return None,
        r = OpenStream::open(node.channel.clone(), start, metadata, 64) => r,
    };
    let failure = match opened {
        Err(s) => s,
        Ok(stream) => {
            at.attempt = 0;
            at.failing_since = None;
            node.record(true, &client.inner.cfg);
            ch.state.send_replace(ConnectionState::Connected {
                endpoint: node.uri.clone(),
            });
            match follow(stream, &mut at.last, &ch.tx, &mut ch.acks, stop).await {
                Ended::Stopped => return None,
                Ended::Failed(s) => s,
            }
        }
    };
    if transient(&failure) {
        node.record(false, &client.inner.cfg);
    }
    Some((failure, node.uri.clone()))
}

/// Passes one connection's events to the application (skipping any it already had) and
/// the application's acks to the server, until the connection or the application ends.
async fn follow(
    mut stream: OpenStream,
    last: &mut Option<u64>,
    tx: &mpsc::Sender<Result<Delivery, Status>>,
    acks: &mut watch::Receiver<u64>,
    stop: &CancellationToken,
) -> Ended {
    let resume_after = stream.subscribed.resume_after;
    if let Some(gap) = Pruned::of(&stream.subscribed) {
        if tx.send(Ok(Delivery::Pruned(gap))).await.is_err() {
            return Ended::Stopped;
        }
    }
    if last.is_none_or(|l| l < resume_after) {
        *last = Some(resume_after);
    }
    // Acks given while disconnected are sent on this stream.
    let mut acked = 0u64;
    let seq = *acks.borrow();
    if seq > acked && seq <= resume_after {
        acked = seq;
        stream.ack(seq).await;
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ended::Stopped,
            changed = acks.changed() => {
                if changed.is_err() {
                    return Ended::Stopped;
                }
                let seq = *acks.borrow_and_update();
                if seq > acked {
                    acked = seq;
                    stream.ack(seq).await;
                }
            }
            msg = stream.responses.message() => match msg {
                Ok(Some(SubscribeResponse { msg: Some(subscribe_response::Msg::Event(ev)) })) => {
                    if last.is_some_and(|l| ev.seq <= l) {
                        continue;
                    }
                    *last = Some(ev.seq);
                    if tx.send(Ok(Delivery::Event(ev))).await.is_err() {
                        return Ended::Stopped;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => return Ended::Failed(Status::unavailable("the server ended the stream")),
                Err(s) => return Ended::Failed(s),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limited_subscription_waits_and_reconnects_a_refused_one_ends() {
        // What the server sends when a user's rate limit is hit (see the spec).
        let mut limited = Status::resource_exhausted("too many calls for this user");
        limited
            .metadata_mut()
            .insert(RETRY_AFTER_MS, "750".parse().expect("ascii"));
        assert!(reconnectable(&limited));
        assert_eq!(retry_after(&limited), Some(Duration::from_millis(750)));
        assert!(reconnectable(&Status::unavailable("shutting down")));
        assert!(!reconnectable(&Status::permission_denied("no")));
        assert!(!reconnectable(&Status::aborted("replaced by a newer stream")));
        assert!(!reconnectable(&Status::invalid_argument("start.after_seq")));
    }
}
