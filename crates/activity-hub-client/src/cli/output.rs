//! How results are shown: aligned tables for people, JSON for scripts.

use std::time::Duration;

use activity_hub_proto::{activity::v1 as apb, user::v1 as upb};
use serde_json::{json, Value};

pub(super) fn time(ts: &Option<prost_types::Timestamp>) -> String {
    match ts {
        Some(t) => humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32),
        )
        .to_string(),
        None => String::new(),
    }
}

pub(super) fn roles(u: &upb::User) -> Vec<String> {
    u.roles
        .iter()
        .map(|r| {
            upb::UserRole::try_from(*r)
                .map(|r| r.as_str_name().trim_start_matches("USER_ROLE_").to_lowercase())
                .unwrap_or_else(|_| r.to_string())
        })
        .collect()
}

pub(super) fn status(u: &upb::User) -> String {
    upb::UserStatus::try_from(u.status)
        .map(|s| s.as_str_name().trim_start_matches("USER_STATUS_").to_lowercase())
        .unwrap_or_else(|_| u.status.to_string())
}

/// Columns of [`user_row`].
pub(super) const USER_HEAD: &[&str] = &["ID", "EMAIL", "USERNAME", "NAME", "STATUS", "ROLES"];
/// Columns of [`event_row`].
pub(super) const EVENT_HEAD: &[&str] = &["SEQ", "TYPE", "PUBLISHED", "PAYLOAD"];

pub(super) fn user_row(u: &upb::User) -> Vec<String> {
    vec![
        u.id.to_string(),
        u.email.clone(),
        u.username.clone(),
        format!("{} {}", u.first_name, u.last_name).trim().to_string(),
        status(u),
        roles(u).join(","),
    ]
}

pub(super) fn user_json(u: &upb::User) -> Value {
    json!({
        "id": u.id, "email": u.email, "username": u.username,
        "first_name": u.first_name, "last_name": u.last_name,
        "status": status(u), "roles": roles(u), "bio": u.bio,
        "created_at": time(&u.created_at), "updated_at": time(&u.updated_at),
        "last_login": time(&u.last_login),
    })
}

pub(super) fn payload_text(p: &[u8]) -> String {
    match std::str::from_utf8(p) {
        Ok(s) => s.to_string(),
        Err(_) => format!("<{} bytes>", p.len()),
    }
}

pub(super) fn event_row(e: &apb::Event) -> Vec<String> {
    vec![
        e.seq.to_string(),
        e.r#type.clone(),
        time(&e.published_at),
        payload_text(&e.payload),
    ]
}

/// Whether a content type says JSON: `application/json` or any `+json` type,
/// parameters aside.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

/// The payload as faithful JSON, labelled: embedded as JSON when the content type says
/// JSON and it parses, otherwise base64 (any bytes survive the round trip).
pub(super) fn payload_json(e: &apb::Event) -> (Value, &'static str) {
    use base64::Engine as _;
    if is_json(&e.content_type) {
        if let Ok(v) = serde_json::from_slice::<Value>(&e.payload) {
            return (v, "json");
        }
    }
    (
        json!(base64::engine::general_purpose::STANDARD.encode(&e.payload)),
        "base64",
    )
}

pub(super) fn event_json(e: &apb::Event) -> Value {
    let (payload, encoding) = payload_json(e);
    json!({
        "user_id": e.user_id, "seq": e.seq, "event_id": e.event_id, "type": e.r#type,
        "payload": payload, "payload_encoding": encoding, "content_type": e.content_type,
        "attributes": e.attributes, "published_at": time(&e.published_at),
        "publisher_id": e.publisher_id,
    })
}

/// Prints `rows` under `head`, columns padded to their widest cell.
pub(super) fn table(head: &[&str], rows: Vec<Vec<String>>) {
    let mut width: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&width).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        out!("{}", s.trim_end());
    };
    line(head.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(content_type: &str, payload: &[u8]) -> apb::Event {
        apb::Event {
            content_type: content_type.into(),
            payload: payload.to_vec().into(),
            ..Default::default()
        }
    }

    #[test]
    fn payloads_stay_faithful_in_json() {
        let j = event_json(&ev("application/json; charset=utf-8", br#"{"id":42}"#));
        assert_eq!(
            (&j["payload"]["id"], &j["payload_encoding"]),
            (&json!(42), &json!("json"))
        );
        let j = event_json(&ev("application/vnd.order+json", b"[1,2]"));
        assert_eq!(j["payload"], json!([1, 2]));
        // Not JSON though it says so, text, and binary: base64, labelled.
        for (ct, bytes) in [
            ("application/json", &b"{not json"[..]),
            ("text/plain", b"hello"),
            ("", &[0, 159, 146, 150][..]),
        ] {
            let j = event_json(&ev(ct, bytes));
            assert_eq!(j["payload_encoding"], "base64", "{ct}");
            use base64::Engine as _;
            let back = base64::engine::general_purpose::STANDARD
                .decode(j["payload"].as_str().unwrap())
                .unwrap();
            assert_eq!(back, bytes);
        }
    }
}
