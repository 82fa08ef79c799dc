//! `activity.v1.ActivityService`: every request as the server decodes it, through the
//! same validation and conversion its handler runs before the hub's actors.
//!
//! Input: `[rpc, flags, caller, request...]`. rpc % 5: 0 Publish, 1 PublishStream
//! (stream), 2 Subscribe (stream: a Start, then Acks), 3 ListEvents, 4 GetCursor; with
//! the high bit, the request is built field by field.
//! flags: bits 0-1 the server's max recipients, bits 2-3 its max payload, bits 4-5 its
//! default window, bit 6 authenticated, bit 7 the caller is a publisher (else a user).
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use activity_hub::{
    api::activity::{
        convert::{self, PublishLimits, MAX_WINDOW},
        service::{after_start, first_start, with_index},
    },
    auth::policy::Call,
    hub::ClientInput,
    model::{AckMode, Principal, StartFrom},
    proto::activity::v1 as pb,
};
use activity_hub_fuzz::{authorized, enum_value, list, map, refused, stream, user_id, Input};
use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::Code;

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::split(data) else {
        return;
    };
    let f = usize::from(input.flags);
    let limits = PublishLimits {
        max_recipients: [1, 3, 64, 10_000][f & 3],
        max_payload_bytes: [0, 16, 4096, 256 * 1024][(f >> 2) & 3],
    };
    let default_window = [1, 32, 256, 10_000][(f >> 4) & 3];
    // USER (bit 1) or PUBLISHER (bit 4) in the role mask.
    let role_bits = if input.flags & 0x80 != 0 { 8 } else { 1 };
    let caller = activity_hub_fuzz::principal(input.flags & 0x40 != 0, &input, role_bits);
    let caller = caller.as_ref();
    match input.rpc % 5 {
        0 => {
            if let Ok(req) = pb::PublishRequest::decode(&*input.unary(build_publish)) {
                if let Some(p) = publisher(caller) {
                    let _ = publish(req, p.user_id, limits);
                }
            }
        }
        1 => {
            if let Some(p) = publisher(caller) {
                let (requests, _broken) = stream::<pb::PublishRequest>(&input.stream(build_publish));
                for (i, req) in requests.into_iter().enumerate() {
                    if let Err(e) = publish(req, p.user_id, limits) {
                        // The stream ends at its first refused request, which it names.
                        let code = e.code();
                        let e = with_index(e, i as u64);
                        assert!(e.to_string().starts_with(&format!("request {i}: ")), "{e}");
                        refused(e, &[code]);
                        break;
                    }
                }
            }
        }
        2 => subscribe(&input.stream(build_subscribe), caller, default_window),
        3 => {
            if let Ok(req) = pb::ListEventsRequest::decode(&*input.unary(build_list_events)) {
                list_events(req);
            }
        }
        _ => {
            if let Ok(req) = pb::GetCursorRequest::decode(&*input.unary(build_get_cursor)) {
                match convert::validate_consumer_id("consumer_id", &req.consumer_id) {
                    Ok(()) => check_consumer_id(&req.consumer_id),
                    Err(e) => refused(e, &[Code::InvalidArgument]),
                }
            }
        }
    }
});

fn build_publish(u: &mut Unstructured<'_>) -> Result<pb::PublishRequest> {
    Ok(pb::PublishRequest {
        recipient_ids: list(u, 80, user_id)?,
        r#type: u.arbitrary()?,
        payload: u.arbitrary::<Vec<u8>>()?.into(),
        content_type: u.arbitrary()?,
        attributes: map(u, 70)?,
        idempotency_key: u.arbitrary()?,
    })
}

fn build_subscribe(u: &mut Unstructured<'_>) -> Result<pb::SubscribeRequest> {
    use pb::subscribe_request::Msg;
    let msg = match u.int_in_range(0..=2)? {
        0 => None,
        1 => Some(Msg::Start(pb::Start {
            user_id: user_id(u)?,
            consumer_id: u.arbitrary()?,
            types: list(u, 70, |u| u.arbitrary())?,
            start_from: enum_value(u)?,
            after_seq: if u.arbitrary()? { 0 } else { u.arbitrary()? },
            window: u.arbitrary()?,
            ack_mode: enum_value(u)?,
        })),
        _ => Some(Msg::Ack(pb::Ack { seq: u.arbitrary()? })),
    };
    Ok(pb::SubscribeRequest { msg })
}

fn build_list_events(u: &mut Unstructured<'_>) -> Result<pb::ListEventsRequest> {
    Ok(pb::ListEventsRequest {
        user_id: user_id(u)?,
        after_seq: u.arbitrary()?,
        limit: u.arbitrary()?,
        types: list(u, 70, |u| u.arbitrary())?,
    })
}

fn build_get_cursor(u: &mut Unstructured<'_>) -> Result<pb::GetCursorRequest> {
    Ok(pb::GetCursorRequest {
        user_id: user_id(u)?,
        consumer_id: u.arbitrary()?,
    })
}

fn publisher(caller: Option<&Principal>) -> Option<&Principal> {
    authorized(caller, Call::Publish, false).then(|| caller.expect("an authorized publisher"))
}

/// Publish and each PublishStream request. `Err` hands the refusal back unchecked.
fn publish(
    req: pb::PublishRequest,
    publisher_id: u64,
    limits: PublishLimits,
) -> Result<(), activity_hub::error::ApiError> {
    let wire = req.clone();
    let ev = match convert::new_event(req, publisher_id, limits) {
        Ok(ev) => ev,
        Err(e) => {
            if e.code() == Code::ResourceExhausted {
                assert!(wire.payload.len() > limits.max_payload_bytes, "{e}");
                assert!(e.to_string().starts_with("payload: "), "{e}");
            } else {
                assert_eq!(e.code(), Code::InvalidArgument, "{e}");
            }
            return Err(e);
        }
    };
    let r = &ev.recipients;
    assert!(
        !r.is_empty() && r.len() <= limits.max_recipients,
        "{} recipients",
        r.len()
    );
    assert!(
        r.windows(2).all(|w| w[0] < w[1]),
        "recipients not distinct and ascending: {r:?}"
    );
    assert!(!r.contains(&0));
    assert_eq!(
        r.iter().collect::<BTreeSet<_>>(),
        wire.recipient_ids.iter().collect::<BTreeSet<_>>()
    );
    assert_eq!(ev.event_type, wire.r#type);
    check_type(&ev.event_type);
    assert_eq!(ev.payload, wire.payload);
    assert!(ev.payload.len() <= limits.max_payload_bytes);
    assert_eq!(ev.content_type, wire.content_type);
    assert!(ev.content_type.len() <= 255);
    assert_eq!(
        ev.attributes,
        wire.attributes.into_iter().collect::<BTreeMap<_, _>>()
    );
    assert!(ev.attributes.len() <= 64);
    for (k, v) in &ev.attributes {
        assert!((1..=128).contains(&k.len()) && v.len() <= 1024, "attribute {k:?}");
    }
    assert_eq!(ev.idempotency_key, wire.idempotency_key);
    assert!(ev.idempotency_key.len() <= 128);
    assert_eq!(ev.publisher_id, publisher_id);
    Ok(())
}

fn check_type(t: &str) {
    assert!((1..=128).contains(&t.len()), "type {t:?}");
    assert!(
        t.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b)),
        "type {t:?}"
    );
}

/// A type filter as the actors want it: the requested types, valid, sorted, distinct.
fn check_types(got: &[String], wire: &[String]) {
    assert!(got.len() <= 64);
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "types not sorted and distinct: {got:?}"
    );
    got.iter().for_each(|t| check_type(t));
    assert_eq!(
        got.iter().collect::<BTreeSet<_>>(),
        wire.iter().collect::<BTreeSet<_>>()
    );
}

fn check_consumer_id(c: &str) {
    assert!((1..=128).contains(&c.len()), "consumer_id of {} bytes", c.len());
    assert!(!c.chars().any(char::is_control), "consumer_id {c:?}");
}

fn subscribe(body: &[u8], caller: Option<&Principal>, default_window: u32) {
    let Some(p) = caller else {
        assert!(!authorized(None, Call::ReadEvents { recipient: 0 }, false));
        return;
    };
    let (mut requests, broken) = stream::<pb::SubscribeRequest>(body);
    let first = if requests.is_empty() {
        broken.then(|| Err(tonic::Status::internal("broken stream")))
    } else {
        Some(Ok(requests.remove(0)))
    };
    let first_was_start = matches!(
        first,
        Some(Ok(pb::SubscribeRequest {
            msg: Some(pb::subscribe_request::Msg::Start(_))
        }))
    );
    let s = match first_start(first) {
        Ok(s) => s,
        Err(status) => {
            assert!(!first_was_start);
            assert!(
                matches!(status.code(), Code::InvalidArgument | Code::Internal),
                "{status}"
            );
            return;
        }
    };
    assert!(first_was_start);
    let wire = s.clone();
    let params = match convert::start(s, p.user_id, default_window) {
        Ok(params) => params,
        Err(e) => return refused(e, &[Code::InvalidArgument]),
    };
    assert_eq!(
        params.user_id,
        if wire.user_id == 0 {
            p.user_id
        } else {
            wire.user_id
        }
    );
    match &params.consumer_id {
        Some(c) => {
            assert_eq!(c, &wire.consumer_id);
            check_consumer_id(c);
        }
        None => assert!(wire.consumer_id.is_empty()),
    }
    assert_eq!(
        params.window,
        if wire.window == 0 {
            default_window
        } else {
            wire.window
        }
    );
    assert!((1..=MAX_WINDOW).contains(&params.window));
    let durable = params.consumer_id.is_some();
    let expected = match wire.start_from {
        0 if durable => StartFrom::Cursor,
        0 => StartFrom::Latest,
        1 => {
            assert!(durable, "START_FROM_CURSOR without a consumer_id");
            StartFrom::Cursor
        }
        2 => StartFrom::Latest,
        3 => StartFrom::Earliest,
        4 => StartFrom::Seq(wire.after_seq),
        n => panic!("start_from {n} accepted"),
    };
    assert_eq!(params.start_from, expected);
    assert!(wire.after_seq == 0 || wire.start_from == 4);
    let ack_mode = match wire.ack_mode {
        0 | 1 => AckMode::Explicit,
        2 => AckMode::None,
        n => panic!("ack_mode {n} accepted"),
    };
    assert_eq!(params.ack_mode, ack_mode);
    check_types(&params.types, &wire.types);

    // Everything after the Start goes to the subscription actor.
    for r in requests {
        let ack = match &r.msg {
            Some(pb::subscribe_request::Msg::Ack(a)) => Some(a.seq),
            _ => None,
        };
        match (after_start(r), ack) {
            (ClientInput::Ack(got), Some(seq)) => assert_eq!(got, seq),
            (ClientInput::Invalid(status), None) => {
                assert_eq!(status.code(), Code::InvalidArgument);
                break;
            }
            _ => panic!("a request after the Start became the wrong message (ack {ack:?})"),
        }
    }
}

fn list_events(req: pb::ListEventsRequest) {
    match convert::list_query(&req) {
        Ok((limit, types)) => {
            assert_eq!(limit, if req.limit == 0 { 100 } else { req.limit });
            assert!((1..=1000).contains(&limit));
            check_types(&types, &req.types);
        }
        Err(e) => refused(e, &[Code::InvalidArgument]),
    }
}
