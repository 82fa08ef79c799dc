//! The messages servers sharing one PostgreSQL send each other over the cluster bus
//! ([`super::bus`]: NATS core, or LISTEN/NOTIFY on the deployment's channel
//! `activity_hub_<deployment id>`, database-wide, so deployments in other schemas never
//! hear each other), and the loops that receive them. Each is tagged with the sending
//! server's `origin` so a server ignores its own:
//!
//! - `h|origin|user:head,...`: sent after each commit; subscribers of those users read
//!   the new events from the store.
//! - `c|origin|user|consumer`: a stream for this durable consumer opened on `origin`;
//!   any older one elsewhere ends with ABORTED.
//! - `a|origin|user|seq|consumer`: the Ack RPC committed this consumer's cursor; its
//!   live stream, if on another server, releases its window.
//! - `s|origin|`: sessions were revoked on `origin`: re-read the revocations now (each
//!   server also polls them every second).
//! - `u|origin|json`: a user lifecycle change for UserActivity watchers, the domain
//!   [`crate::model::UserChange`] as JSON (no protobuf below the edge). A server of an
//!   older version, which sent hex-encoded protobuf here, and a newer one ignore each
//!   other's user changes; commits and takeovers are understood across versions.
//!
//! Every message is best effort: the bus's poll ([`spawn_poller`]) reads the heads and
//! cursors of this server's streams from the store, so a lost message delays an event
//! or a window's release by at most the poll interval, and after the bus comes back every
//! stream re-checks its head and cursor.

use std::sync::Arc;

use futures_util::StreamExt;

use super::{
    bus::{POLL_DEGRADED, POLL_HEALTHY},
    Hub,
};
use crate::{error::ApiError, model::UserChange};

/// Longest user-change payload sent whole; above it the user's free text is left out.
/// PostgreSQL refuses payloads of 8000 bytes or more, and the rest of the user record is
/// bounded well below this by the spec's field limits.
const USER_CHANGE_MAX: usize = 7000;

/// Starts receiving other servers' messages (returns once subscribed, or once LISTEN is
/// in place) and the fallback poll.
pub(crate) async fn spawn_listener(hub: Hub) -> Result<(), ApiError> {
    if !hub.bus().shared() {
        return Ok(());
    }
    if let Some((client, subject)) = hub.bus().nats() {
        let mut sub = client
            .subscribe(subject.to_string())
            .await
            .map_err(|e| ApiError::Unavailable(format!("cluster bus: {e}").into()))?;
        spawn_nats_watch(hub.clone());
        let token = hub.shutdown_token().clone();
        let h = hub.clone();
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = token.cancelled() => return,
                    m = sub.next() => m,
                };
                match msg {
                    Some(m) => match std::str::from_utf8(&m.payload) {
                        Ok(text) => handle(&h, text),
                        Err(_) => tracing::debug!("ignored a cluster message that is not UTF-8"),
                    },
                    None => return,
                }
            }
        });
    } else {
        spawn_pg_listener(hub.clone()).await?;
    }
    spawn_poller(hub);
    Ok(())
}

/// Follows the NATS connection: while it is down the poll runs every [`POLL_DEGRADED`];
/// when it comes back every stream re-checks its head and cursor.
fn spawn_nats_watch(hub: Hub) {
    let Some((client, _)) = hub.bus().nats() else {
        return;
    };
    let client = client.clone();
    let token = hub.shutdown_token().clone();
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let mut warned = false;
        loop {
            let up = client.connection_state() == async_nats::connection::State::Connected;
            if hub.bus().set_up(up) && up {
                tracing::info!("cluster bus (NATS) connected");
                // Messages sent while it was down are lost: every stream re-checks.
                hub.registry().recheck();
                warned = false;
            }
            // The first connection takes a moment: only a bus still down after it is news.
            if !up && !warned && started.elapsed() > std::time::Duration::from_secs(2) {
                tracing::warn!(
                    "cluster bus (NATS) unreachable: polling the store every {POLL_DEGRADED:?} until it returns"
                );
                warned = true;
            }
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
            }
        }
    });
}

/// LISTEN on the deployment's channel (returns once in place) and the receive loop.
async fn spawn_pg_listener(hub: Hub) -> Result<(), ApiError> {
    let Some(mut listener) = hub.store().listener().await? else {
        return Ok(());
    };
    listener
        .listen(hub.store().notify_channel())
        .await
        .map_err(|e| ApiError::from(crate::store::StoreError::from(e)))?;
    let token = hub.shutdown_token().clone();
    tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                _ = token.cancelled() => return,
                m = listener.try_recv() => m,
            };
            match msg {
                Ok(Some(n)) => {
                    if hub.bus().set_up(true) {
                        tracing::info!("PostgreSQL notifications flow again");
                        hub.registry().recheck();
                    }
                    handle(&hub, n.payload())
                }
                // The connection dropped and sqlx reconnects: anything sent meanwhile is
                // lost, so every subscriber re-reads its head.
                Ok(None) => {
                    tracing::warn!("lost the PostgreSQL notification connection; reconnecting");
                    hub.bus().set_up(false);
                    hub.registry().recheck();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "notification listener error; retrying");
                    hub.bus().set_up(false);
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    hub.registry().recheck();
                }
            }
        }
    });
    Ok(())
}

/// The bus's safety net: reads the heads and cursors of this server's streams from the
/// store every [`POLL_HEALTHY`], or [`POLL_DEGRADED`] while the bus is down.
fn spawn_poller(hub: Hub) {
    let token = hub.shutdown_token().clone();
    tokio::spawn(async move {
        loop {
            let every = if hub.bus().is_up() {
                POLL_HEALTHY
            } else {
                POLL_DEGRADED
            };
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            hub.registry().poll(hub.store().clone());
            super::metrics::bus_polled();
        }
    });
}

/// A notification's kind, origin and the rest.
#[doc(hidden)] // public for the fuzz targets
pub fn split(payload: &str) -> Option<(&str, &str, &str)> {
    let mut parts = payload.splitn(3, '|');
    Some((parts.next()?, parts.next()?, parts.next()?))
}

/// The `user:head` pairs of an `h` notification (malformed pairs are skipped).
#[doc(hidden)] // public for the fuzz targets
pub fn parse_heads(rest: &str) -> Vec<(u64, u64)> {
    rest.split(',')
        .filter_map(|p| {
            let (u, h) = p.split_once(':')?;
            Some((u.parse().ok()?, h.parse().ok()?))
        })
        .collect()
}

fn handle(hub: &Hub, payload: &str) {
    let Some((kind, origin, rest)) = split(payload) else {
        return;
    };
    if origin == hub.origin() {
        return;
    }
    super::metrics::bus_received();
    let registry = hub.registry();
    match kind {
        "h" => registry.heads(parse_heads(rest)),
        "c" => {
            let Some((user, consumer)) = rest.split_once('|') else {
                return;
            };
            let Ok(user_id) = user.parse() else { return };
            registry.replace_consumer(user_id, consumer.to_string());
        }
        "a" => {
            let Some((user_id, consumer, seq)) = parse_ack(rest) else {
                return;
            };
            let hub = hub.clone();
            tokio::spawn(async move {
                if let Some(stream) = hub.registry().consumer(user_id, consumer).await {
                    stream.acked_elsewhere(seq);
                }
            });
        }
        "s" => hub.wake_sessions(),
        "u" => match serde_json::from_str::<UserChange>(rest) {
            Ok(change) => registry.user_changed(Arc::new(change)),
            Err(e) => tracing::debug!(error = %e, "ignored an unreadable user change notification"),
        },
        _ => {}
    }
}

/// Tells other servers that a stream for this consumer opened here.
pub(crate) fn announce_consumer(hub: Hub, user_id: u64, consumer: String) {
    let payload = format!("c|{}|{user_id}|{consumer}", hub.origin());
    send(hub, payload);
}

/// Tells other servers that `consumer` acked up to `seq` (committed): its live stream,
/// wherever it is, releases its window.
pub(crate) fn announce_ack(hub: Hub, user_id: u64, consumer: &str, seq: u64) {
    let payload = format!("a|{}|{user_id}|{seq}|{consumer}", hub.origin());
    send(hub, payload);
}

/// The recipient, consumer and seq of an `a` notification.
#[doc(hidden)] // public for the fuzz targets
pub fn parse_ack(rest: &str) -> Option<(u64, String, u64)> {
    let mut parts = rest.splitn(3, '|');
    let user_id = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    Some((user_id, parts.next()?.to_string(), seq))
}

/// Tells other servers' watchers about a user change.
pub(crate) fn announce_user_change(hub: Hub, change: &UserChange) {
    let Some(json) = user_change_payload(change) else {
        return;
    };
    let payload = format!("u|{}|{json}", hub.origin());
    send(hub, payload);
}

/// The JSON of `change`, without the user's bio and preferences when whole it would be
/// too large for a notification.
fn user_change_payload(change: &UserChange) -> Option<String> {
    let encode = |c: &UserChange| match serde_json::to_string(c) {
        Ok(json) => Some(json),
        Err(e) => {
            tracing::warn!(error = %e, "could not encode a user change for other servers");
            None
        }
    };
    let json = encode(change)?;
    if json.len() <= USER_CHANGE_MAX {
        return Some(json);
    }
    let mut slim = change.clone();
    slim.user.bio.clear();
    slim.user.preferences.clear();
    encode(&slim)
}

fn send(hub: Hub, payload: String) {
    hub.bus().send(payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{sample_user, ChangeKind};

    fn change(bio: &str) -> UserChange {
        let mut user = sample_user(7, 3);
        user.bio = bio.into();
        user.preferences.insert("theme".into(), "dark".into());
        UserChange {
            kind: ChangeKind::Updated,
            user_id: 7,
            user,
            occurred_at: 1_700_000_000_123_456,
        }
    }

    #[test]
    fn user_changes_round_trip_through_a_notification() {
        let c = change("likes \"quotes\", pipes | and\nnewlines");
        let payload = format!("u|origin|{}", user_change_payload(&c).unwrap());
        let (kind, origin, rest) = split(&payload).unwrap();
        assert_eq!((kind, origin), ("u", "origin"));
        assert_eq!(serde_json::from_str::<UserChange>(rest).unwrap(), c);
    }

    #[test]
    fn oversized_user_changes_drop_the_free_text() {
        let c = change(&"x".repeat(USER_CHANGE_MAX));
        let sent: UserChange = serde_json::from_str(&user_change_payload(&c).unwrap()).unwrap();
        assert!(sent.user.bio.is_empty() && sent.user.preferences.is_empty());
        assert_eq!(
            (sent.kind, sent.user_id, &sent.user.email),
            (c.kind, 7, &c.user.email)
        );
    }
}
