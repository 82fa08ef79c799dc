//! The watcher actor: one per `UserService.UserActivity` stream.
//!
//! The client adds and removes watched users on the open stream; the registry routes
//! user lifecycle changes (created, updated, deleted, logged in) to the watchers of that
//! user and of `0` (everyone). These notifications are live only (not in the log). A
//! watcher that cannot keep up (256 unread notifications) is ended with
//! RESOURCE_EXHAUSTED rather than silently skipping changes.

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use super::{forward_requests, Hub, StreamInput, UserChange};
use crate::{
    auth::{
        policy::{authorize, Call},
        Principal,
    },
    error::ApiError,
    lifecycle::{actor_stream, ResponseStream},
    proto::user::v1::{self as pb, user_activity_request::Action},
};

/// Unread notifications a watcher may have queued before it is ended.
const OUTBOX: usize = 256;

/// Messages of a watcher.
enum WatchMsg {
    /// A watched user changed.
    Change(UserChange),
    /// A client request: SUBSCRIBE/UNSUBSCRIBE.
    Request(pb::UserActivityRequest),
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

impl StreamInput<pb::UserActivityRequest> for WatcherHandle {
    fn input(&self, req: pb::UserActivityRequest) -> bool {
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
    caller: Principal,
    open_signup: bool,
    out: mpsc::Sender<Result<pb::UserActivityEvent, Status>>,
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
            WatchMsg::Change(change) => match s.out.try_send(Ok((*change).clone())) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => s.fail(
                    &myself,
                    Status::resource_exhausted(format!(
                        "this UserActivity stream fell more than {OUTBOX} notifications behind; reopen it"
                    )),
                ),
                Err(mpsc::error::TrySendError::Closed(_)) => myself.stop(None),
            },
            WatchMsg::Request(req) => {
                if let Err(e) = s.request(&myself, req) {
                    s.fail(&myself, e.into());
                }
            }
            WatchMsg::ClientGone => myself.stop(None),
            WatchMsg::Fail(status) => s.fail(&myself, status),
        }
        Ok(())
    }
}

impl State {
    fn request(&mut self, myself: &ActorRef<WatchMsg>, req: pb::UserActivityRequest) -> Result<(), ApiError> {
        match watch_request(&self.caller, self.open_signup, &req)? {
            WatchChange::Add(target) => self.hub.registry().watch(target, WatcherHandle(myself.clone())),
            WatchChange::Remove(target) => self.hub.registry().unwatch(target, myself.get_id()),
        }
        Ok(())
    }

    fn fail(&mut self, myself: &ActorRef<WatchMsg>, status: Status) {
        if let Some(t) = self.terminal.take() {
            let _ = t.send(status);
        }
        myself.stop(None);
    }
}

/// What a UserActivityRequest changes: watch or stop watching a user (0 = everyone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchChange {
    /// Start watching.
    Add(u64),
    /// Stop watching.
    Remove(u64),
}

/// Validates and authorizes one UserActivityRequest of `caller` (stopping a watch needs
/// no permission: it can only remove the caller's own).
#[doc(hidden)] // public for the fuzz targets
pub fn watch_request(
    caller: &Principal,
    open_signup: bool,
    req: &pb::UserActivityRequest,
) -> Result<WatchChange, ApiError> {
    let target = req.user_id;
    match Action::try_from(req.action).unwrap_or(Action::Unspecified) {
        Action::SubscribeUserUpdates => {
            authorize(Some(caller), Call::WatchUser { target }, open_signup)?;
            Ok(WatchChange::Add(target))
        }
        Action::UnsubscribeUserUpdates => Ok(WatchChange::Remove(target)),
        Action::Unspecified => Err(ApiError::invalid(
            "action",
            "must be SUBSCRIBE_USER_UPDATES or UNSUBSCRIBE_USER_UPDATES",
        )),
    }
}

/// Spawns a watcher for an authenticated caller and feeds it the client's requests.
pub(crate) async fn open(
    hub: Hub,
    caller: Principal,
    open_signup: bool,
    inbound: tonic::Streaming<pb::UserActivityRequest>,
) -> Result<ResponseStream<pb::UserActivityEvent>, ApiError> {
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
            caller,
            open_signup,
            out,
            terminal: Some(term_tx),
        },
        registry,
    )
    .await
    .map_err(|e| ApiError::Internal(Box::new(e)))?;
    forward_requests(
        inbound,
        async move { closed.closed().await },
        WatcherHandle(actor),
        std::convert::identity,
    );
    Ok(actor_stream(rx, std::convert::identity, term_rx, token))
}
