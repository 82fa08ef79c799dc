//! [`SubscriptionHandle`]: the only way to talk to a subscription actor. The registry
//! routes through it, the edge forwards the client's messages through it (as a
//! [`ClientInput`]), and introspection asks through it.

use ractor::{ActorId, ActorRef};
use tokio::sync::oneshot;
use tonic::Status;

use super::{actor::Msg, SubInfo};
use crate::{hub::StreamInput, store::events::StoredEvent};

/// A running subscription actor. Every method is fire-and-forget unless it says
/// otherwise: a stopped actor simply ignores what it is sent.
#[derive(Clone)]
pub struct SubscriptionHandle(pub(super) ActorRef<Msg>);

/// What the client sent on its stream after the Start, as the subscription acts on it.
#[derive(Debug)]
pub enum ClientInput {
    /// A cumulative ack.
    Ack(u64),
    /// Something it must not send: end the stream with this status.
    Invalid(Status),
}

impl SubscriptionHandle {
    /// Identifies the actor (the registry forgets it by this id when it stops).
    pub(crate) fn id(&self) -> ActorId {
        self.0.get_id()
    }

    /// Committed events for this recipient, in seq order.
    pub(crate) fn live(&self, events: Vec<StoredEvent>) {
        let _ = self.0.cast(Msg::Live(events));
    }

    /// Another server committed events for this recipient, up to `head`.
    pub(crate) fn head(&self, head: u64) {
        let _ = self.0.cast(Msg::Head(head));
    }

    /// Notifications may have been missed: re-read the head from the store.
    pub(crate) fn recheck(&self) {
        let _ = self.0.cast(Msg::Recheck);
    }

    /// An ack made with the Ack RPC for this stream's consumer: `Some(Ok(acked))`, or
    /// `Some(Err(highest_sent))` when `seq` is above what the stream sent (the stream goes
    /// on); `None` if the actor has stopped.
    pub(crate) async fn remote_ack(&self, seq: u64) -> Option<Result<u64, u64>> {
        let (tx, rx) = oneshot::channel();
        self.0.cast(Msg::RemoteAck(seq, Some(tx))).ok()?;
        rx.await.ok()
    }

    /// An ack made on another server for this stream's consumer (already committed there).
    pub(crate) fn acked_elsewhere(&self, seq: u64) {
        let _ = self.0.cast(Msg::RemoteAck(seq, None));
    }

    /// Heartbeat timer: an idle stream sends a heartbeat.
    pub(crate) fn tick(&self) {
        let _ = self.0.cast(Msg::Tick);
    }

    /// A newer stream took over this durable consumer: end this one with ABORTED.
    pub(crate) fn replaced(&self) {
        let _ = self.0.cast(Msg::Replaced);
    }

    /// Stops the actor without ending its stream with a status (benchmarks).
    #[doc(hidden)] // public for benches/micro.rs
    pub fn stop(&self) {
        self.0.stop(None);
    }

    /// Waits until the actor has stopped (its supervisor has been told by then).
    #[cfg(test)]
    pub(crate) async fn stopped(&self) {
        self.0
            .wait(Some(std::time::Duration::from_secs(5)))
            .await
            .expect("the subscription actor stops within 5 s");
    }

    /// What the subscription holds right now; `None` if it has stopped.
    pub async fn inspect(&self) -> Option<SubInfo> {
        let (tx, rx) = oneshot::channel();
        self.0.cast(Msg::Inspect(tx)).ok()?;
        rx.await.ok()
    }
}

impl StreamInput<ClientInput> for SubscriptionHandle {
    fn input(&self, input: ClientInput) -> bool {
        let msg = match input {
            ClientInput::Ack(seq) => Msg::Ack(seq),
            ClientInput::Invalid(status) => Msg::Fail(status),
        };
        self.0.cast(msg).is_ok()
    }

    fn broken(&self, status: Status) {
        let _ = self.0.cast(Msg::Fail(status));
    }

    fn client_gone(&self) {
        let _ = self.0.cast(Msg::ClientGone);
    }
}

/// A stand-in subscription for benchmarks and tests of the registry: an actor that only
/// hands the live events routed to it to `on_live`, and stops when the client "goes"
/// ([`StreamInput::client_gone`]) or a newer stream replaces it. Linked to `supervisor`
/// (the registry) when given, as real subscriptions are.
#[doc(hidden)] // public for benches/micro.rs
pub async fn stub(
    supervisor: Option<ractor::ActorCell>,
    on_live: impl Fn(Vec<StoredEvent>) + Send + Sync + 'static,
) -> Result<SubscriptionHandle, ractor::SpawnErr> {
    let on_live: Stub = Box::new(on_live);
    let (actor, _) = match supervisor {
        Some(s) => ractor::Actor::spawn_linked(None, StubActor, on_live, s).await?,
        None => ractor::Actor::spawn(None, StubActor, on_live).await?,
    };
    Ok(SubscriptionHandle(actor))
}

type Stub = Box<dyn Fn(Vec<StoredEvent>) + Send + Sync>;

struct StubActor;

impl ractor::Actor for StubActor {
    type Msg = Msg;
    type State = Stub;
    type Arguments = Stub;

    async fn pre_start(&self, _: ActorRef<Msg>, on_live: Stub) -> Result<Stub, ractor::ActorProcessingErr> {
        Ok(on_live)
    }

    async fn handle(
        &self,
        me: ActorRef<Msg>,
        msg: Msg,
        on_live: &mut Stub,
    ) -> Result<(), ractor::ActorProcessingErr> {
        match msg {
            Msg::Live(events) => on_live(events),
            Msg::ClientGone | Msg::Replaced => me.stop(None),
            _ => {}
        }
        Ok(())
    }
}
