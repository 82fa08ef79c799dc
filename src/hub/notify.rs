//! Servers sharing one PostgreSQL database keep each other's streams live with
//! LISTEN/NOTIFY on the deployment's channel (`activity_hub_<deployment id>`: channels are
//! database-wide, so deployments in other schemas of the database never hear it). Messages, each tagged with the
//! sending server's `origin` so a server ignores its own:
//!
//! - `h|origin|user:head,...`: sent inside each commit transaction (so only committed
//!   heads are announced); subscribers of those users read the new events from the store.
//! - `c|origin|user|consumer`: a stream for this durable consumer opened on `origin`;
//!   any older one elsewhere ends with ABORTED.
//! - `u|origin|hex(UserActivityEvent)`: a user lifecycle change for UserActivity watchers.
//!
//! NOTIFY is best effort across reconnects: after the listener reconnects, every
//! subscriber re-reads its head from the store, so a missed notification delays an
//! event but never loses it.

use prost::Message;

use super::Hub;
use crate::{error::ApiError, proto::user::v1 as userpb};

/// Starts listening (returns once LISTEN is in place) and spawns the receive loop.
pub(crate) async fn spawn_listener(hub: Hub) -> Result<(), ApiError> {
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
                Ok(Some(n)) => handle(&hub, n.payload()),
                // The connection dropped and sqlx reconnects: anything sent meanwhile is
                // lost, so every subscriber re-reads its head.
                Ok(None) => {
                    tracing::warn!("lost the PostgreSQL notification connection; reconnecting");
                    hub.registry().recheck();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "notification listener error; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    hub.registry().recheck();
                }
            }
        }
    });
    Ok(())
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
        "u" => {
            let Some(bytes) = unhex(rest) else { return };
            let Ok(ev) = userpb::UserActivityEvent::decode(bytes.as_slice()) else {
                return;
            };
            registry.user_changed(std::sync::Arc::new(ev));
        }
        _ => {}
    }
}

/// Tells other servers that a stream for this consumer opened here.
pub(crate) fn announce_consumer(hub: Hub, user_id: u64, consumer: String) {
    let payload = format!("c|{}|{user_id}|{consumer}", hub.origin());
    send(hub, payload);
}

/// Tells other servers' watchers about a user change.
pub(crate) fn announce_user_change(hub: Hub, change: &userpb::UserActivityEvent) {
    let mut ev = change.clone();
    let mut bytes = ev.encode_to_vec();
    if bytes.len() * 2 > 7000 {
        // Too large for a notification: send it without the user snapshot's free text.
        if let Some(u) = ev.user.as_mut() {
            u.bio.clear();
            u.preferences.clear();
        }
        bytes = ev.encode_to_vec();
    }
    let payload = format!("u|{}|{}", hub.origin(), hex(&bytes));
    send(hub, payload);
}

fn send(hub: Hub, payload: String) {
    tokio::spawn(async move {
        if let Err(e) = hub.store().notify(&payload).await {
            tracing::warn!(error = %e, "could not notify other servers");
        }
    });
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_round_trips() {
        let b = vec![0u8, 1, 0xab, 0xff];
        assert_eq!(super::unhex(&super::hex(&b)).unwrap(), b);
        assert!(super::unhex("abc").is_none());
    }
}
