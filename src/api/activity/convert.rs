//! Validation of `activity.v1` requests into hub types, and what the hub returns and
//! streams (stored events, [`Out`]) to the wire.

use std::collections::BTreeMap;

use crate::{
    error::ApiError,
    hub::subscription::Out,
    model::{AckMode, StartFrom, SubscribeParams, Subscribed},
    proto::activity::v1::{self as pb, subscribe_response::Msg},
    store::events::{NewEvent, StoredEvent},
};

pub use crate::api::users::convert::timestamp;

/// Largest window a Start may ask for.
pub const MAX_WINDOW: u32 = 10_000;
/// Most attributes per event.
const MAX_ATTRIBUTES: usize = 64;

/// Size limits of a publish.
#[derive(Clone, Copy, Debug)]
pub struct PublishLimits {
    /// Largest payload in bytes.
    pub max_payload_bytes: usize,
    /// Most recipients.
    pub max_recipients: usize,
}

/// The wire form of a stored event (the payload is shared, not copied).
pub fn event(ev: &StoredEvent) -> pb::Event {
    let b = &ev.body;
    pb::Event {
        user_id: ev.user_id,
        seq: ev.seq,
        event_id: b.event_id.clone(),
        r#type: b.event_type.clone(),
        payload: b.payload.clone(),
        content_type: b.content_type.clone(),
        attributes: b.attributes.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        published_at: Some(timestamp(b.published_at)),
        publisher_id: b.publisher_id,
    }
}

impl From<Subscribed> for pb::Subscribed {
    fn from(s: Subscribed) -> pb::Subscribed {
        pb::Subscribed {
            user_id: s.user_id,
            consumer_id: s.consumer_id.unwrap_or_default(),
            resume_after: s.resume_after,
            head_seq: s.head_seq,
            earliest_seq: s.earliest_seq,
            truncated: s.truncated,
            requested_after: s.requested_after,
        }
    }
}

/// One message of a Subscribe stream; runs on the transport's task, so events are
/// encoded there rather than in the subscription actor.
impl From<Out> for pb::SubscribeResponse {
    fn from(out: Out) -> pb::SubscribeResponse {
        let msg = match out {
            Out::Subscribed(s) => Msg::Subscribed(pb::Subscribed::from(*s)),
            Out::Event(ev) => Msg::Event(event(&ev)),
            Out::Heartbeat(head_seq, at) => Msg::Heartbeat(pb::Heartbeat {
                head_seq,
                at: Some(timestamp(at)),
            }),
        };
        pb::SubscribeResponse { msg: Some(msg) }
    }
}

/// `[a-z0-9_.-]`, 1-128 characters.
pub fn validate_type(field: &str, t: &str) -> Result<(), ApiError> {
    if t.is_empty() || t.len() > 128 {
        return Err(ApiError::invalid(field.to_string(), "must be 1-128 characters"));
    }
    if let Some(c) = t
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-')))
    {
        return Err(ApiError::invalid(
            field.to_string(),
            format!("{c:?} is not allowed; use [a-z0-9_.-]"),
        ));
    }
    Ok(())
}

/// A type filter: each valid, deduplicated and sorted (the actors binary-search it).
pub fn types(field: &str, types: &[String]) -> Result<Vec<String>, ApiError> {
    if types.len() > 64 {
        return Err(ApiError::invalid(field.to_string(), "at most 64 types"));
    }
    for t in types {
        validate_type(field, t)?;
    }
    let mut v = types.to_vec();
    v.sort();
    v.dedup();
    Ok(v)
}

/// 1-128 printable characters.
pub fn validate_consumer_id(field: &str, c: &str) -> Result<(), ApiError> {
    if c.is_empty() || c.len() > 128 {
        return Err(ApiError::invalid(field.to_string(), "must be 1-128 bytes"));
    }
    if c.chars().any(|ch| ch.is_control()) {
        return Err(ApiError::invalid(
            field.to_string(),
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// The page size (0 = 100, at most 1000) and the type filter of a ListEvents.
pub fn list_query(r: &pb::ListEventsRequest) -> Result<(u32, Vec<String>), ApiError> {
    let limit = match r.limit {
        0 => 100,
        n if n > 1000 => {
            return Err(ApiError::invalid(
                "limit",
                format!("{n} is above the maximum 1000"),
            ))
        }
        n => n,
    };
    Ok((limit, types("types", &r.types)?))
}

/// Validates a publish from `publisher_id`.
pub fn new_event(
    req: pb::PublishRequest,
    publisher_id: u64,
    limits: PublishLimits,
) -> Result<NewEvent, ApiError> {
    if req.recipient_ids.is_empty() {
        return Err(ApiError::invalid(
            "recipient_ids",
            "at least one recipient is required",
        ));
    }
    if req.recipient_ids.contains(&0) {
        return Err(ApiError::invalid("recipient_ids", "0 is not a user id"));
    }
    let mut recipients = req.recipient_ids;
    recipients.sort_unstable();
    recipients.dedup();
    if recipients.len() > limits.max_recipients {
        return Err(ApiError::invalid(
            "recipient_ids",
            format!(
                "at most {} distinct recipients per publish",
                limits.max_recipients
            ),
        ));
    }
    validate_type("type", &req.r#type)?;
    if req.payload.len() > limits.max_payload_bytes {
        return Err(ApiError::ResourceExhausted(
            format!(
                "payload: {} bytes is above the limit of {} bytes",
                req.payload.len(),
                limits.max_payload_bytes
            )
            .into(),
        ));
    }
    if req.content_type.len() > 255 {
        return Err(ApiError::invalid("content_type", "must be at most 255 bytes"));
    }
    if req.attributes.len() > MAX_ATTRIBUTES {
        return Err(ApiError::invalid(
            "attributes",
            format!("at most {MAX_ATTRIBUTES} entries"),
        ));
    }
    for (k, v) in &req.attributes {
        if k.is_empty() || k.len() > 128 {
            return Err(ApiError::invalid("attributes", "keys must be 1-128 bytes"));
        }
        if v.len() > 1024 {
            return Err(ApiError::invalid(
                "attributes",
                format!("value of {k:?} is longer than 1024 bytes"),
            ));
        }
    }
    if req.idempotency_key.len() > 128 {
        return Err(ApiError::invalid("idempotency_key", "must be at most 128 bytes"));
    }
    Ok(NewEvent {
        recipients,
        event_type: req.r#type,
        payload: req.payload,
        content_type: req.content_type,
        attributes: req.attributes.into_iter().collect::<BTreeMap<_, _>>(),
        publisher_id,
        idempotency_key: req.idempotency_key,
    })
}

/// Validates a Start (`caller` replaces user_id 0).
pub fn start(s: pb::Start, caller: u64, default_window: u32) -> Result<SubscribeParams, ApiError> {
    let user_id = if s.user_id == 0 { caller } else { s.user_id };
    let consumer_id = if s.consumer_id.is_empty() {
        None
    } else {
        validate_consumer_id("start.consumer_id", &s.consumer_id)?;
        Some(s.consumer_id)
    };
    let window = match s.window {
        0 => default_window,
        w if w > MAX_WINDOW => {
            return Err(ApiError::invalid(
                "start.window",
                format!("{w} is above the maximum {MAX_WINDOW}"),
            ))
        }
        w => w,
    };
    let start_from = match pb::StartFrom::try_from(s.start_from) {
        Ok(pb::StartFrom::Unspecified) if consumer_id.is_some() => StartFrom::Cursor,
        Ok(pb::StartFrom::Unspecified) => StartFrom::Latest,
        Ok(pb::StartFrom::Cursor) => {
            if consumer_id.is_none() {
                return Err(ApiError::invalid(
                    "start.start_from",
                    "START_FROM_CURSOR needs a consumer_id",
                ));
            }
            StartFrom::Cursor
        }
        Ok(pb::StartFrom::Latest) => StartFrom::Latest,
        Ok(pb::StartFrom::Earliest) => StartFrom::Earliest,
        Ok(pb::StartFrom::Seq) => StartFrom::Seq(s.after_seq),
        Err(_) => {
            return Err(ApiError::invalid(
                "start.start_from",
                format!("unknown value {}", s.start_from),
            ))
        }
    };
    if s.after_seq != 0 && !matches!(start_from, StartFrom::Seq(_)) {
        return Err(ApiError::invalid(
            "start.after_seq",
            "is only meaningful with START_FROM_SEQ",
        ));
    }
    let ack_mode = match pb::AckMode::try_from(s.ack_mode) {
        Ok(pb::AckMode::Unspecified | pb::AckMode::Explicit) => AckMode::Explicit,
        Ok(pb::AckMode::None) => AckMode::None,
        Err(_) => {
            return Err(ApiError::invalid(
                "start.ack_mode",
                format!("unknown value {}", s.ack_mode),
            ))
        }
    };
    Ok(SubscribeParams {
        user_id,
        consumer_id,
        types: types("start.types", &s.types)?,
        start_from,
        window,
        ack_mode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> PublishLimits {
        PublishLimits {
            max_payload_bytes: 16,
            max_recipients: 3,
        }
    }

    fn req() -> pb::PublishRequest {
        pb::PublishRequest {
            recipient_ids: vec![3, 1, 3],
            r#type: "order.filled".into(),
            payload: bytes::Bytes::from_static(b"{}"),
            ..Default::default()
        }
    }

    #[test]
    fn publish_validation_names_the_field() {
        let ev = new_event(req(), 9, limits()).unwrap();
        assert_eq!(ev.recipients, vec![1, 3], "distinct and sorted");
        let field_of = |r: pb::PublishRequest| new_event(r, 9, limits()).unwrap_err().to_string();
        assert!(field_of(pb::PublishRequest {
            r#type: "Order".into(),
            ..req()
        })
        .starts_with("type:"));
        assert!(field_of(pb::PublishRequest {
            recipient_ids: vec![],
            ..req()
        })
        .starts_with("recipient_ids:"));
        assert!(field_of(pb::PublishRequest {
            recipient_ids: vec![1, 2, 4, 5],
            ..req()
        })
        .starts_with("recipient_ids:"));
        let big = pb::PublishRequest {
            payload: vec![0u8; 17].into(),
            ..req()
        };
        let e = new_event(big, 9, limits()).unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(e.to_string().starts_with("payload:"));
    }

    #[test]
    fn start_validation() {
        let s = |w: u32| pb::Start {
            window: w,
            ..Default::default()
        };
        assert_eq!(start(s(0), 5, 256).unwrap().window, 256);
        assert_eq!(start(s(10_000), 5, 256).unwrap().window, 10_000);
        let e = start(s(10_001), 5, 256).unwrap_err();
        assert!(e.to_string().starts_with("start.window:"), "{e}");
        let p = start(
            pb::Start {
                consumer_id: "phone".into(),
                ..Default::default()
            },
            5,
            256,
        )
        .unwrap();
        assert_eq!((p.user_id, p.start_from), (5, StartFrom::Cursor));
        assert_eq!(
            start(Default::default(), 5, 256).unwrap().start_from,
            StartFrom::Latest
        );
    }
}
