//! The cluster bus: how servers sharing one PostgreSQL tell each other what they committed
//! (new heads), that a durable consumer's stream moved to them, that an Ack committed a
//! cursor, and that a user changed. Over NATS core (`--cluster-bus nats://...`) or,
//! without it, PostgreSQL `LISTEN/NOTIFY`; either way messages are sent **after** the
//! commit they announce, so no publish transaction waits on PostgreSQL's global notify
//! lock (which serializes every notifying commit of the database).
//!
//! The bus is an accelerator, never the truth: a message may be lost (NATS core is
//! at-most-once; a server may die between its commit and its message; the bus may be
//! down). So every server also polls the store for the heads and cursors of the streams
//! it holds: every [`POLL_HEALTHY`] while the bus works, every [`POLL_DEGRADED`] while it
//! does not, and re-checks every stream when it comes back. A lost message delays an
//! event by at most the poll interval; nothing is lost or reordered, because delivery
//! always reads the store by seq.
//!
//! The messages' text (`kind|origin|rest`) is in [`super::notify`].

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;

use crate::{
    error::ApiError,
    store::{events::Committed, plan::heads_notifications, Backend, Store},
};

/// Poll interval while the bus delivers: the bound on an event's delay when one message
/// is lost.
pub(crate) const POLL_HEALTHY: Duration = Duration::from_secs(5);

/// Poll interval while the bus is down: live delivery slows to this.
pub(crate) const POLL_DEGRADED: Duration = Duration::from_secs(1);

/// A handle on the bus; cheap to clone.
#[derive(Clone)]
pub(crate) struct Bus(Arc<Inner>);

struct Inner {
    /// Tags this process's messages so it ignores its own.
    origin: String,
    transport: Transport,
    /// Whether messages are flowing (NATS connected, or the LISTEN connection up).
    up: AtomicBool,
}

enum Transport {
    /// SQLite: one server, nobody to tell.
    Alone,
    /// PostgreSQL NOTIFY on the deployment's channel.
    Postgres(Store),
    /// NATS core on the deployment's subject.
    Nats {
        client: async_nats::Client,
        subject: String,
    },
}

impl Bus {
    /// A bus for a server alone on its store (unit tests of the actors).
    #[cfg(test)]
    pub(crate) fn alone(origin: String) -> Bus {
        Bus(Arc::new(Inner {
            origin,
            transport: Transport::Alone,
            up: AtomicBool::new(true),
        }))
    }

    /// The bus of a server on `store`: NATS at `nats_url` when given (connecting in the
    /// background: the server starts, polling, while NATS is unreachable), else
    /// PostgreSQL NOTIFY; alone on SQLite.
    pub(crate) async fn connect(
        store: &Store,
        nats_url: Option<&str>,
        origin: String,
    ) -> Result<Bus, ApiError> {
        let transport = match (store.backend(), nats_url) {
            (Backend::Sqlite, _) => Transport::Alone,
            (Backend::Postgres, None) => Transport::Postgres(store.clone()),
            (Backend::Postgres, Some(url)) => {
                let client = async_nats::ConnectOptions::new()
                    .name(format!("activity-hub {origin}"))
                    .retry_on_initial_connect()
                    .connection_timeout(Duration::from_secs(2))
                    .connect(url)
                    .await
                    .map_err(|e| ApiError::Unavailable(format!("--cluster-bus {url}: {e}").into()))?;
                // One subject per deployment, like the NOTIFY channel: deployments in other
                // schemas of the same database never hear each other.
                let subject = format!("activity_hub.{}", store.notify_channel());
                Transport::Nats { client, subject }
            }
        };
        let up = !matches!(transport, Transport::Nats { .. });
        crate::hub::metrics::bus_up(up);
        Ok(Bus(Arc::new(Inner {
            origin,
            transport,
            up: AtomicBool::new(up),
        })))
    }

    /// This process's tag on its messages.
    pub(crate) fn origin(&self) -> &str {
        &self.0.origin
    }

    /// Whether other servers may share the store.
    pub(crate) fn shared(&self) -> bool {
        !matches!(self.0.transport, Transport::Alone)
    }

    /// Whether messages are flowing; while not, the poll runs every [`POLL_DEGRADED`].
    pub(crate) fn is_up(&self) -> bool {
        self.0.up.load(Ordering::Relaxed)
    }

    /// Marks the bus up or down; true when that changed it.
    pub(crate) fn set_up(&self, up: bool) -> bool {
        let was = self.0.up.swap(up, Ordering::Relaxed);
        if was != up {
            crate::hub::metrics::bus_up(up);
        }
        was != up
    }

    /// The NATS client and subject, when the bus is NATS.
    pub(crate) fn nats(&self) -> Option<(&async_nats::Client, &str)> {
        match &self.0.transport {
            Transport::Nats { client, subject } => Some((client, subject)),
            _ => None,
        }
    }

    /// Sends `payload` to the other servers, in the background (never waits on the bus).
    pub(crate) fn send(&self, payload: String) {
        match &self.0.transport {
            Transport::Alone => {}
            Transport::Postgres(store) => {
                let store = store.clone();
                tokio::spawn(async move {
                    if let Err(e) = store.notify(&payload).await {
                        tracing::debug!(error = %e, "could not notify other servers (their poll will catch up)");
                    }
                });
            }
            Transport::Nats { client, subject } => {
                let (client, subject) = (client.clone(), subject.clone());
                tokio::spawn(async move {
                    if let Err(e) = client.publish(subject, Bytes::from(payload)).await {
                        tracing::debug!(error = %e, "could not publish to the cluster bus (other servers' poll will catch up)");
                    }
                });
            }
        }
        crate::hub::metrics::bus_sent();
    }

    /// Announces the new heads of a committed batch's recipients.
    pub(crate) fn committed(&self, batch: &[Committed]) {
        if !self.shared() {
            return;
        }
        let mut heads: HashMap<u64, u64> = HashMap::new();
        for (_, deliveries) in batch {
            for &(user, seq) in deliveries {
                let h = heads.entry(user).or_default();
                *h = (*h).max(seq);
            }
        }
        for payload in heads_notifications(&self.0.origin, &heads) {
            self.send(payload);
        }
    }
}
