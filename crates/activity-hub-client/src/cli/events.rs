//! `publish`, `subscribe` and `events list`.

use std::{io::Write as _, time::Duration};

use activity_hub_proto::activity::v1 as apb;
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::{
    connect, fail, output::*, EventsArgs, EventsCmd, Failure, PublishArgs, SubscribeArgs, EXIT_INTERRUPTED,
    EXIT_PRUNED,
};
use crate::{ClientError, ConnectionState, Delivery, SubscribeOptions};

pub(super) async fn publish(a: PublishArgs) -> Result<(), Failure> {
    let client = connect(&a.conn, true).await?;
    let payload = match &a.payload_file {
        None => a.payload.clone().into_bytes(),
        Some(p) if p.as_os_str() == "-" => {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)
                .map_err(|e| fail(1, format!("reading the payload from standard input: {e}")))?;
            v
        }
        Some(p) => std::fs::read(p).map_err(|e| fail(2, format!("--payload-file {}: {e}", p.display())))?,
    };
    let mut recipient_ids = Vec::with_capacity(a.to.len());
    for who in &a.to {
        recipient_ids.push(super::users::resolve(&client, who.trim()).await?);
    }
    let req = apb::PublishRequest {
        recipient_ids,
        r#type: a.event_type.clone(),
        payload: payload.into(),
        content_type: a.content_type.clone(),
        idempotency_key: a.idempotency_key.clone().unwrap_or_default(),
        ..Default::default()
    };
    let r = client.publish(req, true).await?;
    if a.conn.json {
        let d: Vec<Value> = r
            .deliveries
            .iter()
            .map(|d| json!({"user_id": d.user_id, "seq": d.seq}))
            .collect();
        out!(
            "{}",
            json!({"event_id": r.event_id, "duplicate": r.duplicate, "deliveries": d})
        );
    } else {
        let rows = r
            .deliveries
            .iter()
            .map(|d| vec![d.user_id.to_string(), d.seq.to_string()])
            .collect();
        out!(
            "event {}{}",
            r.event_id,
            if r.duplicate { " (duplicate)" } else { "" }
        );
        table(&["RECIPIENT", "SEQ"], rows);
    }
    Ok(())
}

pub(super) async fn list(a: EventsArgs) -> Result<(), Failure> {
    let client = connect(&a.conn, true).await?;
    let EventsCmd::List {
        user,
        after,
        limit,
        types,
    } = a.cmd;
    let user_id = super::users::resolve_or_me(&client, user.as_deref()).await?;
    let r = client
        .list_events(apb::ListEventsRequest {
            user_id,
            after_seq: after,
            limit,
            types,
        })
        .await?;
    if a.conn.json {
        let events: Vec<Value> = r.events.iter().map(event_json).collect();
        out!(
            "{}",
            json!({"events": events, "head_seq": r.head_seq, "has_more": r.has_more})
        );
    } else {
        table(EVENT_HEAD, r.events.iter().map(event_row).collect());
        if r.has_more {
            let last = r.events.last().map(|e| e.seq).unwrap_or(after);
            out!("more: --after {last}");
        }
    }
    Ok(())
}

pub(super) async fn subscribe(a: SubscribeArgs) -> Result<(), Failure> {
    let client = connect(&a.conn, true).await?;
    let (start_from, after_seq) = match a.from.as_deref() {
        None => (apb::StartFrom::Unspecified, 0),
        Some("cursor") => (apb::StartFrom::Cursor, 0),
        Some("latest") => (apb::StartFrom::Latest, 0),
        Some("earliest") => (apb::StartFrom::Earliest, 0),
        Some(n) => match n.parse::<u64>() {
            Ok(seq) => (apb::StartFrom::Seq, seq),
            Err(_) => {
                return Err(fail(
                    2,
                    format!("--from {n}: expected cursor, latest, earliest or a seq"),
                ))
            }
        },
    };
    let user_id = super::users::resolve_or_me(&client, a.user.as_deref()).await?;
    let mut events = client.subscribe(SubscribeOptions {
        user_id,
        consumer_id: a.consumer.clone().unwrap_or_default(),
        types: a.types.clone(),
        start_from,
        after_seq,
        window: 0,
        auto_ack: true,
        give_up_after: Some(a.conn.connect_timeout),
    });
    // Connection trouble is reported as it happens, not after the fact.
    let mut state = events.connection();
    let reporter = tokio::spawn(async move {
        let mut troubled = false;
        while state.changed().await.is_ok() {
            match state.borrow_and_update().clone() {
                ConnectionState::Retrying {
                    endpoint,
                    error,
                    attempt,
                } => {
                    troubled = true;
                    eprintln!("warning: {endpoint}: {error}; retrying (attempt {attempt})");
                }
                ConnectionState::Connected { endpoint } if troubled => {
                    troubled = false;
                    eprintln!("connected to {endpoint}; resuming after the last event shown");
                }
                _ => {}
            }
        }
    });
    let mut seen = 0u64;
    let mut pruned = 0u64;
    let mut interrupted = false;
    let mut out = std::io::stdout();
    while a.count.is_none_or(|c| seen < c) {
        let next = tokio::select! {
            e = events.next() => e,
            _ = tokio::signal::ctrl_c() => {
                interrupted = true;
                break;
            }
        };
        let ev = match next {
            None => break,
            Some(Ok(Delivery::Event(ev))) => ev,
            Some(Ok(Delivery::Pruned(gap))) => {
                pruned += gap.count();
                eprintln!(
                    "warning: {} event(s) (seq {}..={}) were pruned by retention before this subscription could read them; they are lost",
                    gap.count(),
                    gap.first_seq,
                    gap.last_seq
                );
                if a.conn.json {
                    let line = json!({"pruned": {"first_seq": gap.first_seq, "last_seq": gap.last_seq, "count": gap.count()}});
                    if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                        break;
                    }
                }
                continue;
            }
            Some(Err(s)) => return Err(ClientError::Status(s).into()),
        };
        seen += 1;
        let line = if a.conn.json {
            event_json(&ev).to_string()
        } else {
            event_row(&ev).join("  ")
        };
        // Follow mode: one line per event, flushed at once (like `tail -f`).
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            break;
        }
    }
    // Give the cumulative ack of the last event a moment to reach the server.
    tokio::time::sleep(Duration::from_millis(200)).await;
    reporter.abort();
    if pruned > 0 {
        return Err(fail(
            EXIT_PRUNED,
            format!("{pruned} event(s) were pruned before they could be read (see the warning above)"),
        ));
    }
    if interrupted {
        return Err(fail(EXIT_INTERRUPTED, "interrupted"));
    }
    Ok(())
}
