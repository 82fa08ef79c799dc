//! The watcher actor: one per `UserService.UserActivity` stream.
//!
//! The client adds and removes watched users on the open stream (as [`WatchChange`]s the
//! edge has validated and authorized); the registry routes user lifecycle changes
//! (created, updated, deleted, logged in) to the watchers of that user and of `0`
//! (everyone). These notifications are live only (not in the log). A watcher that cannot
//! keep up (256 unread notifications) is ended with RESOURCE_EXHAUSTED rather than
//! silently skipping changes.

use futures_util::Stream;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use super::{forward_requests, Hub, StreamInput, UserChange};
use crate::{
    error::ApiError,
    lifecycle::{actor_stream, ResponseStream},
    model::WatchChange,
};

/// Unread notifications a watcher may have queued before it is ended.
const OUTBOX: usize = 256;

/// Messages of a watcher.
enum WatchMsg {
    /// A watched user changed.
    Change(UserChange),
    /// A client request: watch or stop watching a user.
    Request(WatchChange),
    /// The client went away.
    ClientGone,
    /// The request stream broke (e.g. an oversized message): end with this status.
    Fail(Status),
}

/// A running watcher: the registry hands it user changes, the edge the client's requests.
#[derive(Clone)]
pub(crate) struct WatcherHandle(ActorRef<WatchMsg>);

impl WatcherHandle {
    /// Identifies the actor (the registry forgets it by this id when it stops).
    pub(crate) fn id(&self) -> ActorId {
        self.0.get_id()
    }

    /// A watched user changed.
    pub(crate) fn change(&self, change: UserChange) {
        let _ = self.0.cast(WatchMsg::Change(change));
    }
}

impl StreamInput<WatchChange> for WatcherHandle {
    fn input(&self, req: WatchChange) -> bool {
        self.0.cast(WatchMsg::Request(req)).is_ok()
    }

    fn broken(&self, status: Status) {
        let _ = self.0.cast(WatchMsg::Fail(status));
    }

    fn client_gone(&self) {
        let _ = self.0.cast(WatchMsg::ClientGone);
    }
}

/// The actor.
struct Watcher;

/// Start-up arguments and state.
struct State {
    hub: Hub,
    out: mpsc::Sender<UserChange>,
    terminal: Option<oneshot::Sender<Status>>,
}

impl Actor for Watcher {
    type Msg = WatchMsg;
    type State = State;
    type Arguments = State;

    async fn pre_start(&self, myself: ActorRef<WatchMsg>, state: State) -> Result<State, ActorProcessingErr> {
        state.hub.registry().watcher_started(myself.get_id());
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<WatchMsg>,
        msg: WatchMsg,
        s: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WatchMsg::Change(change) => match s.out.try_send(change) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => s.fail(
                    &myself,
                    Status::resource_exhausted(format!(
                        "this UserActivity stream fell more than {OUTBOX} notifications behind; reopen it"
                    )),
                ),
                Err(mpsc::error::TrySendError::Closed(_)) => myself.stop(None),
            },
            WatchMsg::Request(change) => s.request(&myself, change),
            WatchMsg::ClientGone => myself.stop(None),
            WatchMsg::Fail(status) => s.fail(&myself, status),
        }
        Ok(())
    }
}

impl State {
    fn request(&mut self, myself: &ActorRef<WatchMsg>, change: WatchChange) {
        match change {
            WatchChange::Add(target) => self.hub.registry().watch(target, WatcherHandle(myself.clone())),
            WatchChange::Remove(target) => self.hub.registry().unwatch(target, myself.get_id()),
        }
    }

    fn fail(&mut self, myself: &ActorRef<WatchMsg>, status: Status) {
        if let Some(t) = self.terminal.take() {
            let _ = t.send(status);
        }
        myself.stop(None);
    }
}

/// Spawns a watcher and feeds it the client's requests; `to_wire` converts the changes
/// it streams.
pub(crate) async fn open<T: Send + 'static>(
    hub: Hub,
    requests: impl Stream<Item = Result<WatchChange, Status>> + Send + 'static,
    to_wire: fn(UserChange) -> Result<T, Status>,
) -> Result<ResponseStream<T>, ApiError> {
    let (out, rx) = mpsc::channel(OUTBOX);
    let (term_tx, term_rx) = oneshot::channel();
    let token = hub.shutdown_token().clone();
    let registry = hub.registry().cell();
    let closed = out.clone();
    let (actor, _) = Actor::spawn_linked(
        None,
        Watcher,
        State {
            hub,
            out,
            terminal: Some(term_tx),
        },
        registry,
    )
    .await
    .map_err(|e| ApiError::Internal(Box::new(e)))?;
    forward_requests(
        requests,
        async move { closed.closed().await },
        WatcherHandle(actor),
        std::convert::identity,
    );
    Ok(actor_stream(rx, to_wire, term_rx, token))
}
