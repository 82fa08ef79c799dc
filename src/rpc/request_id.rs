//! Request ids: the client's `x-request-id` when it is sane, else a fresh one; echoed in
//! the response headers (by [`super::response`]) and carried by the call's span.

use http::{HeaderMap, HeaderName, HeaderValue};

/// The request id metadata key, read from requests and set on responses.
pub const REQUEST_ID: &str = "x-request-id";
// Header names made once: looking a `&str` name up parses it on every call.
pub(super) static REQUEST_ID_H: HeaderName = HeaderName::from_static(REQUEST_ID);

/// Longest client-supplied request id kept; longer or non-printable ones are replaced.
const MAX_REQUEST_ID: usize = 128;

/// The client's `x-request-id` when it is printable ASCII of a sane length, else a fresh
/// random one (128 bits, hex).
pub(super) fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&REQUEST_ID_H) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= MAX_REQUEST_ID && b.iter().all(u8::is_ascii_graphic) {
            return v.clone();
        }
    }
    // Hex by hand: `format!` showed up in profiles of trivial calls.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let id: u128 = rand::random();
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[((id >> (124 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&out).unwrap_or(HeaderValue::from_static("unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_when_sane_and_made_otherwise() {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(REQUEST_ID, HeaderValue::from_static("has space"));
        let made = request_id(&h);
        assert_eq!(made.len(), 32);
        assert_ne!(made, request_id(&HeaderMap::new()), "fresh ids differ");
    }
}
