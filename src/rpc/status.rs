//! Reading the status a call ended with, from the headers of a trailers-only response or
//! from the trailers, and rewriting tonic's OUT_OF_RANGE "message length too large" into
//! RESOURCE_EXHAUSTED naming the limit and the flag that sets it.

use http::{HeaderMap, HeaderName};
use tonic::{Code, Status};

use super::RpcOptions;

static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// The status in `map` (response headers of a trailers-only response, or trailers), with
/// tonic's OUT_OF_RANGE for oversized messages rewritten to RESOURCE_EXHAUSTED.
pub(super) fn status_in(map: &mut HeaderMap, opts: &RpcOptions) -> Option<Code> {
    let code = Code::from_bytes(map.get(&GRPC_STATUS)?.as_bytes());
    if code != Code::OutOfRange {
        return Some(code);
    }
    let message = map.get(&GRPC_MESSAGE).map(|m| m.as_bytes()).unwrap_or_default();
    let has = |needle: &str| {
        let encoded = needle.replace(' ', "%20");
        let hay = message;
        [needle.as_bytes(), encoded.as_bytes()]
            .iter()
            .any(|n| hay.windows(n.len()).any(|w| w == *n))
    };
    let replacement = if has("decoded message length too large") {
        Status::resource_exhausted(format!(
            "request message larger than the server's limit of {} bytes (--max-decode-message-bytes)",
            opts.max_decode_message_bytes
        ))
    } else if has("encoded message length too large") {
        Status::resource_exhausted(format!(
            "response message larger than the server's limit of {} bytes (--max-encode-message-bytes); ask for less per call",
            opts.max_encode_message_bytes
        ))
    } else {
        return Some(code);
    };
    let _ = replacement.add_header(map);
    Some(Code::ResourceExhausted)
}
