//! The subscription actor: one per Subscribe stream. It owns the stream's outbox and its
//! [`Cursor`]; the registry feeds it live events, the client its acks (both through
//! [`SubscriptionHandle`]), and its store reads run in spawned tasks that answer with
//! [`Msg::Page`] or [`Msg::Head`], so `handle` never waits on the store.
//!
//! Memory: `pending` holds at most `window` live events, and the outbox at most `window`
//! unacked ones (ACK_MODE_EXPLICIT), or its capacity (ACK_MODE_NONE). Anything beyond is
//! dropped and read back from the store when the client catches up.

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use super::{
    handle::SubscriptionHandle,
    window::{Cursor, Read},
    AckMode, Out, Outbox, StartFrom, SubInfo, SubscribeParams,
};
use crate::{
    error::ApiError,
    hub::Hub,
    model::Subscribed,
    store::events::{AckRecord, StoredEvent},
};

/// The longest a subscription waits for one store read before it gives up on it.
const STORE_READ_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Messages of a subscription actor (built only by [`SubscriptionHandle`] and the actor).
pub(super) enum Msg {
    /// Committed events for this recipient, in seq order.
    Live(Vec<StoredEvent>),
    /// Another server committed up to this head (or a re-check read it).
    Head(u64),
    /// Re-read the head from the store (notifications may have been missed).
    Recheck,
    /// The client's cumulative ack.
    Ack(u64),
    /// A cumulative ack made with the Ack RPC (here or on another server): answered with
    /// the acked seq, or the highest seq sent when it is above that (the stream goes on).
    RemoteAck(u64, Option<oneshot::Sender<Result<u64, u64>>>),
    /// A store read finished: the read and its events, or the status to end with.
    Page(Read, Result<Vec<StoredEvent>, Status>),
    /// Heartbeat timer.
    Tick,
    /// The transport has room again (ACK_MODE_NONE).
    Writable,
    /// End the stream with this status.
    Fail(Status),
    /// A newer stream took over this consumer.
    Replaced,
    /// The client went away.
    ClientGone,
    /// Introspection.
    Inspect(oneshot::Sender<SubInfo>),
}

/// The actor.
pub(super) struct Subscription;

/// Start-up arguments.
pub(super) struct Args {
    pub(super) hub: Hub,
    pub(super) params: SubscribeParams,
    pub(super) out: Outbox,
    pub(super) terminal: oneshot::Sender<Status>,
}

/// Its state.
pub(super) struct State {
    hub: Hub,
    user_id: u64,
    consumer_id: Option<String>,
    cursor: Cursor,
    out: Outbox,
    terminal: Option<oneshot::Sender<Status>>,
    persisted: u64,
    active: bool,
    awaiting_room: bool,
    /// Events written since the metric was last updated (once per message, not per event).
    delivered: u64,
    /// This stream's share of the lag gauge as last reported.
    lag: u64,
}

impl Actor for Subscription {
    type Msg = Msg;
    type State = State;
    type Arguments = Args;

    async fn pre_start(&self, myself: ActorRef<Msg>, args: Args) -> Result<State, ActorProcessingErr> {
        let Args {
            hub,
            params: p,
            out,
            terminal,
        } = args;
        // Register first, then read the head: see the window module notes.
        hub.registry()
            .register(
                p.user_id,
                p.consumer_id.clone(),
                SubscriptionHandle(myself.clone()),
            )
            .await?;
        if let Some(c) = &p.consumer_id {
            if hub.shared() {
                crate::hub::notify::announce_consumer(hub.clone(), p.user_id, c.clone());
            }
        }
        let (resume, head, subscribed) = resolve_start(&hub, &p).await?;
        out.try_send(subscribed)
            .map_err(|_| ApiError::Unavailable("the client went away".into()))?;
        let mut state = State {
            hub,
            user_id: p.user_id,
            consumer_id: p.consumer_id,
            cursor: Cursor::new(resume, head, p.window, p.ack_mode, p.types),
            out,
            terminal: Some(terminal),
            persisted: 0,
            active: false,
            awaiting_room: false,
            delivered: 0,
            lag: 0,
        };
        state.pump(&myself);
        state.report_delivered();
        Ok(state)
    }

    async fn handle(&self, myself: ActorRef<Msg>, msg: Msg, s: &mut State) -> Result<(), ActorProcessingErr> {
        match msg {
            Msg::Live(events) => {
                for ev in events {
                    if s.cursor.take_live(ev) {
                        crate::hub::metrics::stalled();
                    }
                }
                s.pump(&myself);
            }
            Msg::Head(head) => {
                s.cursor.head(head);
                s.pump(&myself);
            }
            Msg::Recheck => s.recheck(&myself),
            Msg::Ack(seq) => s.ack(&myself, seq),
            Msg::RemoteAck(seq, reply) => {
                let answer = match s.cursor.ack(seq) {
                    Ok(moved) => {
                        if moved {
                            s.persist_ack();
                            s.pump(&myself);
                        }
                        Ok(s.cursor.acked())
                    }
                    Err(e) => Err(e.highest_sent),
                };
                if let Some(reply) = reply {
                    let _ = reply.send(answer);
                }
            }
            Msg::Page(read, Ok(events)) => s.write_page(&myself, read, events),
            Msg::Page(_, Err(status)) => {
                s.cursor.read_abandoned();
                s.fail(&myself, status);
            }
            Msg::Tick => {
                if !s.active {
                    let hb = Out::Heartbeat(s.cursor.known_head(), crate::store::now_micros());
                    if let Err(mpsc::error::TrySendError::Closed(_)) = s.out.try_send(hb) {
                        myself.stop(None);
                    }
                }
                s.active = false;
            }
            Msg::Writable => {
                s.awaiting_room = false;
                s.pump(&myself);
            }
            Msg::Fail(status) => s.fail(&myself, status),
            Msg::Replaced => s.fail(
                &myself,
                Status::aborted("replaced by a newer stream for the same consumer_id"),
            ),
            Msg::ClientGone => myself.stop(None),
            Msg::Inspect(reply) => {
                let _ = reply.send(s.cursor.info(s.out.max_capacity() - s.out.capacity()));
            }
        }
        s.report_delivered();
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<Msg>, s: &mut State) -> Result<(), ActorProcessingErr> {
        crate::hub::metrics::lag(s.lag, 0);
        s.persist_ack();
        Ok(())
    }
}

/// Resolves where the stream starts: (resume after, head, the `Subscribed` message).
async fn resolve_start(hub: &Hub, p: &SubscribeParams) -> Result<(u64, u64, Out), ApiError> {
    let store = hub.store();
    let (head, earliest) = store.bounds(p.user_id).await?;
    let earliest = earliest.unwrap_or(head + 1);
    let requested = match p.start_from {
        StartFrom::Cursor => match &p.consumer_id {
            Some(c) => store.cursor(p.user_id, c).await?,
            None => 0,
        },
        StartFrom::Latest => head,
        StartFrom::Earliest => earliest - 1,
        StartFrom::Seq(s) => {
            if s > head {
                return Err(ApiError::invalid(
                    "start.after_seq",
                    format!("{s} is beyond the newest seq {head} of user {}", p.user_id),
                ));
            }
            s
        }
    };
    let truncated = requested + 1 < earliest;
    let resume = if truncated { earliest - 1 } else { requested };
    let subscribed = Out::Subscribed(Box::new(Subscribed {
        user_id: p.user_id,
        consumer_id: p.consumer_id.clone(),
        resume_after: resume,
        head_seq: head,
        earliest_seq: earliest,
        truncated,
        requested_after: requested,
    }));
    Ok((resume, head, subscribed))
}

impl State {
    fn report_delivered(&mut self) {
        if self.delivered > 0 {
            crate::hub::metrics::delivered(std::mem::take(&mut self.delivered));
        }
        let lag = self.cursor.known_head().saturating_sub(self.cursor.acked());
        if lag != self.lag {
            crate::hub::metrics::lag(self.lag, lag);
            self.lag = lag;
        }
    }

    /// Moves pending events to the client while there is room, then starts a store read
    /// if the stream is behind, or waits for the transport to have room again.
    fn pump(&mut self, myself: &ActorRef<Msg>) {
        while let Some(ev) = self.cursor.next_pending(self.out.capacity()) {
            let seq = ev.seq;
            if !self.write(myself, ev) {
                return;
            }
            self.cursor.sent(seq);
        }
        if let Some(read) = self.cursor.start_read(self.out.capacity()) {
            self.read(myself, read);
        } else if self.cursor.room(self.out.capacity()) == 0
            && self.cursor.ack_mode() == AckMode::None
            && self.cursor.has_backlog()
            && !self.awaiting_room
        {
            self.awaiting_room = true;
            let out = self.out.clone();
            let me = myself.clone();
            tokio::spawn(async move {
                if out.reserve().await.is_ok() {
                    let _ = me.cast(Msg::Writable);
                }
            });
        }
        if self.cursor.ack_mode() == AckMode::None {
            self.persist_ack();
        }
    }

    /// Writes one event; false when the client is gone (the actor is stopping).
    fn write(&mut self, myself: &ActorRef<Msg>, ev: StoredEvent) -> bool {
        match self.out.try_send(Out::Event(ev)) {
            Ok(()) => {
                self.active = true;
                self.delivered += 1;
                true
            }
            Err(_) => {
                // Room was checked first, so only a closed outbox gets here.
                myself.stop(None);
                false
            }
        }
    }

    /// Reads one page of history in a task, bounded by [`STORE_READ_LIMIT`]; the answer
    /// comes back as [`Msg::Page`].
    fn read(&self, myself: &ActorRef<Msg>, read: Read) {
        let store = self.hub.store().clone();
        let (user_id, types, me) = (self.user_id, self.cursor.types().clone(), myself.clone());
        tokio::spawn(async move {
            let page = tokio::time::timeout(
                STORE_READ_LIMIT,
                store.events_page(user_id, read.after, read.upto, &types, read.limit),
            )
            .await;
            let answer = match page {
                Ok(Ok(events)) => Ok(events),
                Err(_) => {
                    tracing::warn!(user_id, "history read timed out");
                    Err(ApiError::Unavailable("the store did not answer; resume".into()).into())
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, user_id, "history read failed");
                    Err(ApiError::from(e).into())
                }
            };
            let _ = me.cast(Msg::Page(read, answer));
        });
    }

    /// Writes what fits of a page read from the store. The outbox may have less room than
    /// when the read started (a heartbeat took a slot): the rest is read again later.
    fn write_page(&mut self, myself: &ActorRef<Msg>, read: Read, events: Vec<StoredEvent>) {
        let got = events.len();
        let mut written = 0;
        for ev in events {
            if self.cursor.room(self.out.capacity()) == 0 {
                break;
            }
            let seq = ev.seq;
            if !self.write(myself, ev) {
                return;
            }
            self.cursor.sent_from_store(seq);
            written += 1;
        }
        self.cursor.read_done(read, got, written);
        self.pump(myself);
    }

    /// Re-reads the head in a task, bounded by [`STORE_READ_LIMIT`]; it answers with
    /// [`Msg::Head`]. A durable consumer with explicit acks also re-reads its stored
    /// cursor, so an Ack made on another server whose notification was missed still
    /// releases the window ([`Msg::RemoteAck`]).
    fn recheck(&self, myself: &ActorRef<Msg>) {
        let (store, user_id, me) = (self.hub.store().clone(), self.user_id, myself.clone());
        let consumer = self
            .consumer_id
            .clone()
            .filter(|_| self.cursor.ack_mode() == AckMode::Explicit);
        tokio::spawn(async move {
            match tokio::time::timeout(STORE_READ_LIMIT, store.head_seq(user_id)).await {
                Ok(Ok(head)) => {
                    let _ = me.cast(Msg::Head(head));
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "subscription head re-check failed"),
                Err(_) => tracing::warn!("subscription head re-check timed out"),
            }
            if let Some(consumer) = consumer {
                if let Ok(Ok(acked)) =
                    tokio::time::timeout(STORE_READ_LIMIT, store.cursor(user_id, &consumer)).await
                {
                    let _ = me.cast(Msg::RemoteAck(acked, None));
                }
            }
        });
    }

    fn ack(&mut self, myself: &ActorRef<Msg>, seq: u64) {
        match self.cursor.ack(seq) {
            Ok(false) => {}
            Ok(true) => {
                self.persist_ack();
                self.pump(myself);
            }
            Err(e) => self.fail(
                myself,
                ApiError::invalid(
                    "ack.seq",
                    format!(
                        "{seq} is above the highest seq sent on this stream ({})",
                        e.highest_sent
                    ),
                )
                .into(),
            ),
        }
    }

    fn persist_ack(&mut self) {
        let Some(consumer) = &self.consumer_id else {
            return;
        };
        let acked = self.cursor.acked();
        if acked > self.persisted && acked > 0 {
            self.persisted = acked;
            self.hub.persistence().ack(AckRecord {
                user_id: self.user_id,
                consumer_id: consumer.clone(),
                acked_seq: acked,
            });
        }
    }

    fn fail(&mut self, myself: &ActorRef<Msg>, status: Status) {
        if let Some(t) = self.terminal.take() {
            let _ = t.send(status);
        }
        myself.stop(None);
    }
}
