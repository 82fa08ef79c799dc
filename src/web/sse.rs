//! `Follow` as Server-Sent Events: each event is one SSE message whose `id` is its seq and
//! whose `data` is the JSON `Event`; the first is `event: subscribed` with the JSON
//! `Subscribed` (`truncated` included); heartbeats are comments; a stream that ends with
//! a status sends `event: error` with the JSON status first. A reconnecting
//! `EventSource`'s `Last-Event-ID` (or the `lastEventId` parameter) resumes strictly
//! after that seq, so its own reconnection loses and repeats nothing.

use std::fmt::Write as _;

use axum::{body::Body, response::Response};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue};
use prost_reflect::{DynamicMessage, MessageDescriptor, Value};

use super::{
    api_error, call_error,
    grpc::{self, CallMeta, Frames},
    json,
    routes::Route,
    status_json, Surface,
};
use crate::error::ApiError;

/// How soon a browser reconnects after the stream drops (the SSE `retry` field).
const RECONNECT_MS: u32 = 1000;

pub(super) async fn follow(
    s: &Surface,
    route: &Route,
    vars: &[(&[String], String)],
    mut query: Vec<(String, String)>,
    headers: &HeaderMap,
    meta: CallMeta,
) -> Response {
    // The header wins: an EventSource created with `lastEventId=N` sends the newer seq
    // it has seen in the header when it reconnects by itself.
    let from_param = take(&mut query, "lastEventId");
    let from_header = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
        .map(|v| ("Last-Event-ID", v.trim().to_string()));
    let last_event_id = from_header.or(from_param.map(|v| ("lastEventId", v)));
    if let Some((name, id)) = last_event_id {
        let Ok(seq) = id.parse::<u64>() else {
            return api_error(ApiError::invalid(name, format!("{id:?} is not an event seq")));
        };
        // A resume overrides where the URL said to start.
        take(&mut query, "startFrom");
        take(&mut query, "start_from");
        take(&mut query, "afterSeq");
        take(&mut query, "after_seq");
        query.push(("startFrom".into(), "START_FROM_SEQ".into()));
        query.push(("afterSeq".into(), seq.to_string()));
    }
    if !query.iter().any(|(k, _)| k == "ackMode" || k == "ack_mode") {
        query.push(("ackMode".into(), "ACK_MODE_NONE".into()));
    }
    let message = match json::request(&route.rpc.input(), None, vars, &query, &["start"]) {
        Ok(m) => m,
        Err(e) => return api_error(e),
    };
    let frames = match grpc::call(&s.grpc, &route.grpc_path(), message, meta).await {
        Ok(f) => f,
        Err(e) => return call_error(&e),
    };
    let mut res = Response::new(Body::from_stream(events(frames, route.rpc.output())));
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies such as nginx must not buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    res
}

fn take(query: &mut Vec<(String, String)>, name: &str) -> Option<String> {
    let i = query.iter().position(|(k, _)| k == name)?;
    Some(query.remove(i).1)
}

/// The SSE text of the call's messages, then of its error status, if any.
fn events(
    frames: Frames,
    desc: MessageDescriptor,
) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send {
    let first = Bytes::from(format!("retry: {RECONNECT_MS}\n\n"));
    let rest = futures_util::stream::unfold(Some(frames), move |frames| {
        let desc = desc.clone();
        async move {
            let mut frames = frames?;
            match frames.next().await {
                Ok(Some(bytes)) => Some((Ok(message(&desc, &bytes)), Some(frames))),
                Ok(None) => None,
                Err(e) => {
                    let data = status_json(e.code, &e.message);
                    Some((Ok(Bytes::from(format!("event: error\ndata: {data}\n\n"))), None))
                }
            }
        }
    });
    futures_util::StreamExt::chain(futures_util::stream::once(async { Ok(first) }), rest)
}

/// One SubscribeResponse as an SSE message.
fn message(desc: &MessageDescriptor, bytes: &[u8]) -> Bytes {
    let mut out = String::new();
    let Ok(m) = DynamicMessage::decode(desc.clone(), bytes) else {
        return Bytes::from_static(b": undecodable message skipped\n\n");
    };
    let field = |name: &str| match m.get_field_by_name(name).map(|v| v.into_owned()) {
        Some(Value::Message(inner)) if m.has_field_by_name(name) => Some(inner),
        _ => None,
    };
    if let Some(ev) = field("event") {
        let seq = ev.get_field_by_name("seq").and_then(|v| v.as_u64()).unwrap_or(0);
        let data = json::dynamic(&ev).unwrap_or_default();
        let _ = write!(out, "id: {seq}\ndata: {data}\n\n");
    } else if let Some(sub) = field("subscribed") {
        let data = json::dynamic(&sub).unwrap_or_default();
        let _ = write!(out, "event: subscribed\ndata: {data}\n\n");
    } else if let Some(hb) = field("heartbeat") {
        let head = hb
            .get_field_by_name("head_seq")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        let _ = write!(out, ": heartbeat head_seq={head}\n\n");
    }
    Bytes::from(out)
}
