//! The subscription actor: one per Subscribe stream.
//!
//! Position keeping: `tail` is the highest seq this stream has accounted for (sent,
//! filtered out by `types`, or queued in `pending`). A live event is taken only when it
//! is exactly `tail + 1`; anything else means the stream is behind, and it reads the
//! store from `tail` instead (in pages no larger than the free window). Because the actor
//! registers with the registry *before* it reads the head, every event is either routed
//! to it live or visible to its first store read: nothing is lost at the replay/live
//! seam, and seq checks drop what both paths see.
//!
//! Memory: `pending` holds at most `window` live events, and the outbox at most `window`
//! unacked ones (ACK_MODE_EXPLICIT), or its capacity (ACK_MODE_NONE). Anything beyond is
//! dropped and read back from the store when the client catches up.

use std::collections::VecDeque;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use super::{persistence::PersistMsg, registry::RegistryMsg, Hub};
use crate::{
    error::ApiError,
    lifecycle::{actor_stream, ResponseStream},
    model::{AckMode, StartFrom, SubInfo, SubscribeParams, Subscribed},
    store::events::{AckRecord, StoredEvent},
};

/// Events read from the store per page when catching up.
const PAGE: u32 = 256;

/// Messages of a subscription actor.
pub enum SubMsg {
    /// Committed events for this recipient, in seq order.
    Live(Vec<StoredEvent>),
    /// Another server committed up to this head.
    Head(u64),
    /// Re-read the head from the store (notifications may have been missed).
    Recheck,
    /// The client's cumulative ack.
    Ack(u64),
    /// Read the next page from the store.
    Fetch,
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

/// The longest a subscription waits for one store read before it gives up on it.
const STORE_READ_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What the actor writes to its outbox and the stream yields: small (32 bytes) so an
/// idle stream's channel costs little, and events stay shared `Arc`s until the edge
/// encodes them on the transport's task.
#[derive(Debug)]
pub enum Out {
    /// The first message.
    Subscribed(Box<Subscribed>),
    /// An event.
    Event(StoredEvent),
    /// A heartbeat: (head seq, time in micros).
    Heartbeat(u64, i64),
}

/// The sending side of a subscription's outbox.
pub type Outbox = mpsc::Sender<Out>;

/// The actor.
pub struct Subscription;

/// Start-up arguments.
pub struct Args {
    hub: Hub,
    params: SubscribeParams,
    out: Outbox,
    terminal: oneshot::Sender<Status>,
}

/// Its state.
pub struct State {
    hub: Hub,
    p: SubscribeParams,
    out: Outbox,
    terminal: Option<oneshot::Sender<Status>>,
    tail: u64,
    known_head: u64,
    behind: bool,
    fetch_scheduled: bool,
    pending: VecDeque<StoredEvent>,
    unacked: VecDeque<u64>,
    highest_sent: u64,
    acked: u64,
    persisted: u64,
    active: bool,
    awaiting_room: bool,
    /// Events written since the metric was last updated (once per message, not per event).
    delivered: u64,
    /// This stream's share of the lag gauge as last reported.
    lag: u64,
}

impl Actor for Subscription {
    type Msg = SubMsg;
    type State = State;
    type Arguments = Args;

    async fn pre_start(&self, myself: ActorRef<SubMsg>, args: Args) -> Result<State, ActorProcessingErr> {
        let Args {
            hub,
            params: p,
            out,
            terminal,
        } = args;
        // Register first, then read the head: see the module notes.
        let (tx, rx) = oneshot::channel();
        hub.registry().cast(RegistryMsg::Register {
            user_id: p.user_id,
            consumer: p.consumer_id.clone(),
            sub: myself.clone(),
            reply: tx,
        })?;
        rx.await?;
        if let Some(c) = &p.consumer_id {
            if hub.shared() {
                super::notify::announce_consumer(hub.clone(), p.user_id, c.clone());
            }
        }
        let store = hub.store();
        let (head, earliest) = store.bounds(p.user_id).await.map_err(ApiError::from)?;
        let earliest = earliest.unwrap_or(head + 1);
        let requested = match p.start_from {
            StartFrom::Cursor => match &p.consumer_id {
                Some(c) => store.cursor(p.user_id, c).await.map_err(ApiError::from)?,
                None => 0,
            },
            StartFrom::Latest => head,
            StartFrom::Earliest => earliest - 1,
            StartFrom::Seq(s) => {
                if s > head {
                    return Err(Box::new(ApiError::invalid(
                        "start.after_seq",
                        format!("{s} is beyond the newest seq {head} of user {}", p.user_id),
                    )));
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
        }));
        out.try_send(subscribed)
            .map_err(|_| ApiError::Unavailable("the client went away".into()))?;
        let mut state = State {
            hub,
            p,
            out,
            terminal: Some(terminal),
            tail: resume,
            known_head: head,
            behind: head > resume,
            fetch_scheduled: false,
            pending: VecDeque::new(),
            unacked: VecDeque::new(),
            highest_sent: resume,
            acked: resume,
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

    async fn handle(
        &self,
        myself: ActorRef<SubMsg>,
        msg: SubMsg,
        s: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SubMsg::Live(events) => {
                for ev in events {
                    s.take_live(ev);
                }
                s.pump(&myself);
            }
            SubMsg::Head(head) => {
                if head > s.known_head {
                    s.known_head = head;
                }
                if s.known_head > s.tail && s.pending.is_empty() {
                    s.behind = true;
                }
                s.pump(&myself);
            }
            SubMsg::Recheck => {
                match tokio::time::timeout(STORE_READ_LIMIT, s.hub.store().head_seq(s.p.user_id)).await {
                    Ok(Ok(head)) => {
                        let _ = myself.cast(SubMsg::Head(head));
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "subscription head re-check failed"),
                    Err(_) => tracing::warn!("subscription head re-check timed out"),
                }
            }
            SubMsg::Ack(seq) => s.ack(&myself, seq),
            SubMsg::Fetch => {
                s.fetch_scheduled = false;
                s.fetch(&myself).await;
            }
            SubMsg::Tick => {
                if !s.active {
                    let hb = Out::Heartbeat(s.known_head, crate::store::now_micros());
                    if let Err(mpsc::error::TrySendError::Closed(_)) = s.out.try_send(hb) {
                        myself.stop(None);
                    }
                }
                s.active = false;
            }
            SubMsg::Writable => {
                s.awaiting_room = false;
                s.pump(&myself);
            }
            SubMsg::Fail(status) => s.fail(&myself, status),
            SubMsg::Replaced => s.fail(
                &myself,
                Status::aborted("replaced by a newer stream for the same consumer_id"),
            ),
            SubMsg::ClientGone => myself.stop(None),
            SubMsg::Inspect(reply) => {
                let _ = reply.send(SubInfo {
                    pending: s.pending.len(),
                    queued: s.out.max_capacity() - s.out.capacity(),
                    unacked: s.unacked.len(),
                    tail: s.tail,
                    known_head: s.known_head,
                    behind: s.behind,
                });
            }
        }
        s.report_delivered();
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<SubMsg>, s: &mut State) -> Result<(), ActorProcessingErr> {
        super::metrics::lag(s.lag, 0);
        s.persist_ack();
        Ok(())
    }
}

impl State {
    fn take_live(&mut self, ev: StoredEvent) {
        self.known_head = self.known_head.max(ev.seq);
        if self.behind || ev.seq <= self.tail {
            return;
        }
        if ev.seq != self.tail + 1 {
            self.fall_behind();
            return;
        }
        if !self.wants(&ev) {
            self.tail = ev.seq;
            return;
        }
        if self.pending.len() >= self.p.window as usize {
            // No room: drop it; the store has it and we read it back later.
            self.fall_behind();
            return;
        }
        self.tail = ev.seq;
        self.pending.push_back(ev);
    }

    fn report_delivered(&mut self) {
        if self.delivered > 0 {
            super::metrics::delivered(std::mem::take(&mut self.delivered));
        }
        let lag = self.known_head.saturating_sub(self.acked);
        if lag != self.lag {
            super::metrics::lag(self.lag, lag);
            self.lag = lag;
        }
    }

    fn fall_behind(&mut self) {
        if !self.behind {
            self.behind = true;
            super::metrics::stalled();
        }
    }

    fn wants(&self, ev: &StoredEvent) -> bool {
        self.p.types.is_empty() || self.p.types.binary_search(&ev.body.event_type).is_ok()
    }

    /// How many more events may be written now.
    fn room(&self) -> usize {
        let transport = self.out.capacity();
        match self.p.ack_mode {
            AckMode::Explicit => (self.p.window as usize)
                .saturating_sub(self.unacked.len())
                .min(transport),
            AckMode::None => transport,
        }
    }

    /// Moves pending events to the client while there is room, then schedules a store
    /// read if the stream is behind, or a wake-up when the transport has room again.
    fn pump(&mut self, myself: &ActorRef<SubMsg>) {
        while !self.pending.is_empty() && self.room() > 0 {
            let ev = self.pending.pop_front().expect("non-empty");
            if !self.send(myself, &ev) {
                return;
            }
        }
        if self.room() > 0 {
            if self.pending.is_empty() && self.behind && !self.fetch_scheduled {
                self.fetch_scheduled = true;
                let _ = myself.cast(SubMsg::Fetch);
            }
        } else if self.p.ack_mode == AckMode::None
            && (self.behind || !self.pending.is_empty())
            && !self.awaiting_room
        {
            self.awaiting_room = true;
            let out = self.out.clone();
            let me = myself.clone();
            tokio::spawn(async move {
                if out.reserve().await.is_ok() {
                    let _ = me.cast(SubMsg::Writable);
                }
            });
        }
        if self.p.ack_mode == AckMode::None {
            self.persist_ack();
        }
    }

    /// Writes one event; false when the client is gone (the actor is stopping).
    fn send(&mut self, myself: &ActorRef<SubMsg>, ev: &StoredEvent) -> bool {
        match self.out.try_send(Out::Event(ev.clone())) {
            Ok(()) => {
                self.highest_sent = ev.seq;
                self.active = true;
                match self.p.ack_mode {
                    AckMode::Explicit => self.unacked.push_back(ev.seq),
                    AckMode::None => self.acked = ev.seq,
                }
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

    async fn fetch(&mut self, myself: &ActorRef<SubMsg>) {
        let room = self.room();
        if !self.behind || !self.pending.is_empty() || room == 0 {
            self.pump(myself);
            return;
        }
        let limit = (room as u32).min(PAGE);
        let upto = self.known_head;
        let page = tokio::time::timeout(
            STORE_READ_LIMIT,
            self.hub
                .store()
                .events_page(self.p.user_id, self.tail, upto, &self.p.types, limit),
        )
        .await;
        let events = match page {
            Ok(Ok(ev)) => ev,
            Err(_) => {
                tracing::warn!(user_id = self.p.user_id, "history read timed out");
                self.fail(
                    myself,
                    ApiError::Unavailable("the store did not answer; resume".into()).into(),
                );
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, user_id = self.p.user_id, "history read failed");
                self.fail(myself, ApiError::from(e).into());
                return;
            }
        };
        let full = events.len() == limit as usize;
        for ev in &events {
            if !self.send(myself, ev) {
                return;
            }
            self.tail = ev.seq;
        }
        if !full {
            self.tail = self.tail.max(upto);
        }
        if self.tail >= self.known_head {
            self.behind = false;
        }
        self.pump(myself);
    }

    fn ack(&mut self, myself: &ActorRef<SubMsg>, seq: u64) {
        if self.p.ack_mode == AckMode::None {
            return;
        }
        if seq > self.highest_sent {
            self.fail(
                myself,
                ApiError::invalid(
                    "ack.seq",
                    format!(
                        "{seq} is above the highest seq sent on this stream ({})",
                        self.highest_sent
                    ),
                )
                .into(),
            );
            return;
        }
        if seq <= self.acked {
            return;
        }
        self.acked = seq;
        while self.unacked.front().is_some_and(|&s| s <= seq) {
            self.unacked.pop_front();
        }
        self.persist_ack();
        self.pump(myself);
    }

    fn persist_ack(&mut self) {
        let Some(consumer) = &self.p.consumer_id else {
            return;
        };
        if self.acked > self.persisted && self.acked > 0 {
            self.persisted = self.acked;
            let _ = self.hub.persistence().cast(PersistMsg::Ack(AckRecord {
                user_id: self.p.user_id,
                consumer_id: consumer.clone(),
                acked_seq: self.acked,
            }));
        }
    }

    fn fail(&mut self, myself: &ActorRef<SubMsg>, status: Status) {
        if let Some(t) = self.terminal.take() {
            let _ = t.send(status);
        }
        myself.stop(None);
    }
}

/// Spawns the actor for a validated Start and returns the response stream.
pub(crate) async fn open(hub: Hub, params: SubscribeParams) -> Result<Opened, ApiError> {
    // Explicit: the window bounds what is in flight, so the outbox never fills with
    // events (room for Subscribed and heartbeats on top). None: transport pacing.
    let capacity = match params.ack_mode {
        AckMode::Explicit => params.window as usize + 4,
        AckMode::None => (params.window as usize).clamp(16, 1024),
    };
    let (out, rx) = mpsc::channel(capacity);
    let (term_tx, term_rx) = oneshot::channel();
    let token = hub.shutdown_token().clone();
    if token.is_cancelled() {
        return Err(ApiError::Unavailable("the server is shutting down".into()));
    }
    let registry = hub.registry().get_cell();
    let closed = out.clone();
    let (actor, _) = Actor::spawn_linked(
        None,
        Subscription,
        Args {
            hub,
            params,
            out,
            terminal: term_tx,
        },
        registry,
    )
    .await
    .map_err(|e| match e {
        ractor::SpawnErr::StartupFailed(inner) => match inner.downcast::<ApiError>() {
            Ok(api) => *api,
            Err(other) => ApiError::Internal(other),
        },
        other => ApiError::Internal(Box::new(other)),
    })?;
    Ok(Opened {
        actor,
        stream: actor_stream(rx, Ok, term_rx, token),
        closed,
    })
}

/// An opened subscription.
pub struct Opened {
    /// Its actor (the handler forwards the client's acks to it).
    pub actor: ActorRef<SubMsg>,
    /// The stream, which the edge converts to the wire.
    pub stream: ResponseStream<Out>,
    /// A handle on the outbox whose `closed()` resolves when the client is gone.
    pub closed: Outbox,
}
