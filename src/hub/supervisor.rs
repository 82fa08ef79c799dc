//! The hub's root actor: it starts the registry and the persistence actor linked to
//! itself (in `pre_start`), notices when either fails, and stops them in order at
//! shutdown, awaiting their join handles.
//!
//! Failure policy: a registry or persistence actor that fails (or stops by itself) is
//! logged and the hub is declared failed ([`SupervisorHandle::failed`]); the server then
//! runs its ordinary shutdown (health NOT_SERVING, streams end with UNAVAILABLE, what is
//! queued is committed, the store is closed) and exits with an error, for the process
//! manager to restart. It does not restart the child in place:
//! - Acknowledged data is safe either way: a publish is answered only after its commit,
//!   and clients resume from their stored cursor, so stopping loses nothing acknowledged.
//! - A restarted persistence actor could run a commit while the failed one's commit task
//!   is still running, breaking "one commit in flight", on which the order of a
//!   pipelined publisher's events rests.
//! - A restarted registry would start empty: every open subscription (killed with the
//!   old one, as its children) would have to be re-registered, and one missed would
//!   stall silently. UNAVAILABLE is something clients already handle by resuming.
//!
//! A failed child is a bug, not a store outage: the store's errors are answered to the
//! callers and keep the actors running.

use std::sync::Mutex;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::{sync::oneshot, task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{
    persistence::{self, PersistenceHandle},
    registry::RegistryHandle,
    HubConfig, HubStats,
};
use crate::store::Store;

/// How long each hub actor may take to stop once told to.
const STOP_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Messages of the supervisor.
enum Msg {
    /// Shutdown begins: children stopping from now on is expected. Answers with the
    /// children's join handles, persistence first (the order they are stopped in).
    Stopping(oneshot::Sender<Vec<Child>>),
}

/// A linked child and its join handle.
struct Child {
    name: &'static str,
    cell: ActorCell,
    join: JoinHandle<()>,
}

/// Start-up arguments.
pub(crate) struct Args {
    pub(crate) store: Store,
    pub(crate) config: HubConfig,
    pub(crate) stats: std::sync::Arc<HubStats>,
    pub(crate) bus: super::bus::Bus,
}

/// The actor.
struct Supervisor;

/// Its state.
struct State {
    /// The children until shutdown takes their join handles.
    children: Vec<Child>,
    /// Which child an id is, for logs (kept after shutdown takes the handles).
    names: Vec<(ActorId, &'static str)>,
    stopping: bool,
    failed: CancellationToken,
}

impl Actor for Supervisor {
    type Msg = Msg;
    type State = State;
    type Arguments = (
        Args,
        CancellationToken,
        oneshot::Sender<(RegistryHandle, PersistenceHandle)>,
    );

    async fn pre_start(
        &self,
        myself: ActorRef<Msg>,
        (args, failed, started): Self::Arguments,
    ) -> Result<State, ActorProcessingErr> {
        let (registry, registry_join) = RegistryHandle::spawn(
            args.stats,
            args.config.heartbeat_interval,
            Some(myself.get_cell()),
        )
        .await?;
        let (persistence, persistence_join) = PersistenceHandle::spawn(
            persistence::Args {
                store: args.store,
                registry: registry.clone(),
                config: args.config,
                bus: args.bus,
            },
            myself.get_cell(),
        )
        .await?;
        let children = vec![
            Child {
                name: "persistence",
                cell: persistence.cell(),
                join: persistence_join,
            },
            Child {
                name: "registry",
                cell: registry.cell(),
                join: registry_join,
            },
        ];
        let _ = started.send((registry, persistence));
        Ok(State {
            names: children.iter().map(|c| (c.cell.get_id(), c.name)).collect(),
            children,
            stopping: false,
            failed,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Msg>,
        msg: Msg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            Msg::Stopping(reply) => {
                state.stopping = true;
                let _ = reply.send(std::mem::take(&mut state.children));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Msg>,
        event: SupervisionEvent,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        let (id, failure) = match &event {
            SupervisionEvent::ActorFailed(cell, err) => (cell.get_id(), err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell.get_id(),
                format!("stopped ({})", reason.as_deref().unwrap_or("no reason given")),
            ),
            _ => return Ok(()),
        };
        let name = state
            .names
            .iter()
            .find(|(i, _)| *i == id)
            .map_or("unknown", |(_, n)| *n);
        if state.stopping {
            if matches!(event, SupervisionEvent::ActorFailed(..)) {
                tracing::warn!(actor = name, error = %failure, "hub actor failed while stopping");
            }
            return Ok(());
        }
        // See the module notes for why this stops the hub rather than restarting it.
        tracing::error!(
            actor = name,
            error = %failure,
            "hub actor ended unexpectedly: the hub stops (health NOT_SERVING, streams end with \
             UNAVAILABLE); restart the server"
        );
        state.failed.cancel();
        Ok(())
    }
}

/// The running supervisor.
pub(crate) struct SupervisorHandle {
    actor: ActorRef<Msg>,
    join: Mutex<Option<JoinHandle<()>>>,
    failed: CancellationToken,
}

impl SupervisorHandle {
    /// Starts the supervisor, which starts the registry and persistence actors linked
    /// to it, and returns the handles of all three.
    pub(crate) async fn start(
        args: Args,
    ) -> Result<(SupervisorHandle, RegistryHandle, PersistenceHandle), ractor::SpawnErr> {
        let failed = CancellationToken::new();
        let (tx, rx) = oneshot::channel();
        let (actor, join) = Actor::spawn(None, Supervisor, (args, failed.clone(), tx)).await?;
        // pre_start has run (spawn returns after it), so the handles are there.
        let (registry, persistence) = rx
            .await
            .map_err(|e| ractor::SpawnErr::StartupFailed(Box::new(e)))?;
        let handle = SupervisorHandle {
            actor,
            join: Mutex::new(Some(join)),
            failed,
        };
        Ok((handle, registry, persistence))
    }

    /// Cancelled when a hub actor has failed: the hub can no longer serve.
    pub(crate) fn failed(&self) -> &CancellationToken {
        &self.failed
    }

    /// Stops the hub's actors and awaits them, in order: the stream actors (they end by
    /// themselves once their clients are gone; until `grace` runs out), then persistence
    /// after committing everything queued (acks included, the stream actors persist
    /// theirs as they stop), then the registry, then the supervisor. Calling it again
    /// does nothing.
    pub(crate) async fn shutdown(
        &self,
        registry: &RegistryHandle,
        persistence: &PersistenceHandle,
        grace: std::time::Duration,
    ) {
        let Some(join) = self.join.lock().expect("not poisoned").take() else {
            return;
        };
        let (tx, rx) = oneshot::channel();
        let children = match self.actor.cast(Msg::Stopping(tx)) {
            Ok(()) => rx.await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        registry.await_streams(Instant::now() + grace).await;
        persistence.flush().await;
        for child in children {
            child.cell.stop(None);
            if tokio::time::timeout(STOP_LIMIT, child.join).await.is_err() {
                tracing::warn!(actor = child.name, "hub actor did not stop in time");
            }
        }
        self.actor.stop(None);
        if tokio::time::timeout(STOP_LIMIT, join).await.is_err() {
            tracing::warn!("hub supervisor did not stop in time");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;
    use crate::store::StoreOptions;

    async fn start(dir: &tempfile::TempDir) -> (SupervisorHandle, RegistryHandle, PersistenceHandle) {
        let url = format!("sqlite://{}", dir.path().join("hub.db").display());
        let store = Store::connect(&StoreOptions::new(url))
            .await
            .expect("store opens");
        SupervisorHandle::start(Args {
            store,
            config: HubConfig {
                default_window: 16,
                heartbeat_interval: Duration::from_secs(3600),
                publish_batch_max: 16,
                retention_max_age: Duration::ZERO,
                retention_max_events: 0,
                retention_interval: Duration::from_secs(3600),
                idempotency_window: Duration::from_secs(60),
                inbox_merge_interval: Duration::from_secs(1),
                cluster_bus: None,
            },
            stats: Arc::new(HubStats::default()),
            bus: crate::hub::bus::Bus::alone("test".into()),
        })
        .await
        .expect("hub actors start")
    }

    #[tokio::test]
    async fn a_child_that_dies_marks_the_hub_failed_and_shutdown_still_completes() {
        let dir = tempfile::tempdir().unwrap();
        let (sup, registry, persistence) = start(&dir).await;
        assert!(!sup.failed().is_cancelled(), "healthy at start");
        registry.cell().kill();
        tokio::time::timeout(Duration::from_secs(5), sup.failed().cancelled())
            .await
            .expect("the supervisor noticed the registry dying and declared the hub failed");
        tokio::time::timeout(
            Duration::from_secs(10),
            sup.shutdown(&registry, &persistence, Duration::ZERO),
        )
        .await
        .expect("shutdown completes with a dead child");
        assert_eq!(persistence.cell().get_status(), ractor::ActorStatus::Stopped);
    }

    #[tokio::test]
    async fn shutdown_stops_and_awaits_every_actor_and_is_no_failure() {
        let dir = tempfile::tempdir().unwrap();
        let (sup, registry, persistence) = start(&dir).await;
        tokio::time::timeout(
            Duration::from_secs(10),
            sup.shutdown(&registry, &persistence, Duration::ZERO),
        )
        .await
        .expect("shutdown completes");
        assert!(!sup.failed().is_cancelled(), "an ordered stop is not a failure");
        for (name, cell) in [
            ("registry", registry.cell()),
            ("persistence", persistence.cell()),
            ("supervisor", sup.actor.get_cell()),
        ] {
            assert_eq!(cell.get_status(), ractor::ActorStatus::Stopped, "{name} stopped");
        }
        // A second call (say, a retried shutdown) returns at once.
        tokio::time::timeout(
            Duration::from_secs(1),
            sup.shutdown(&registry, &persistence, Duration::ZERO),
        )
        .await
        .expect("idempotent");
    }
}
