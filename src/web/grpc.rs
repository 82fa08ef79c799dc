//! REST and SSE calls are gRPC calls made in process: the request message is framed and
//! sent through the same services and the same `RpcLayer` as a gRPC client's call (so
//! metrics, request ids, limits, deadlines and authentication are one code path), and the
//! response frames and status are read back.

use std::convert::Infallible;

use axum::body::Body;
use bytes::{Buf, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use tonic::Code;
use tower::{util::BoxCloneSyncService, ServiceExt};

/// The gRPC services, as one tower service on axum bodies (what REST and SSE call).
pub type GrpcService = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// One gRPC service on tonic bodies, as the server and gRPC-Web wrap it.
pub type TonicService =
    BoxCloneSyncService<Request<tonic::body::Body>, Response<tonic::body::Body>, Infallible>;

/// The in-process caller of `services` (name, service), routed by service name.
pub fn internal(services: Vec<(&'static str, TonicService)>) -> GrpcService {
    let mut router = axum::Router::new();
    for (name, svc) in services {
        router = router.route_service(
            &format!("/{name}/{{*rest}}"),
            svc.map_request(|r: Request<Body>| r.map(tonic::body::Body::new)),
        );
    }
    BoxCloneSyncService::new(router)
}

/// A call's failure: its gRPC status.
#[derive(Debug, Clone)]
pub struct CallError {
    /// The code.
    pub code: Code,
    /// The message (percent-decoded).
    pub message: String,
    /// `retry-after-ms`, when the status carried it.
    pub retry_after_ms: Option<u64>,
}

impl CallError {
    fn new(code: Code, message: impl Into<String>) -> CallError {
        CallError {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    fn from_headers(h: &HeaderMap) -> Option<CallError> {
        let code = h.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
        let message = h
            .get("grpc-message")
            .map(|m| {
                percent_encoding::percent_decode(m.as_bytes())
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .unwrap_or_default();
        let retry_after_ms = h
            .get(crate::error::RETRY_AFTER_MS)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        Some(CallError {
            code: Code::from_i32(code),
            message,
            retry_after_ms,
        })
    }
}

/// The headers a call takes from the HTTP request: credentials and request id.
pub struct CallMeta {
    /// `authorization`, from the header or (SSE) the `accessToken` parameter.
    pub authorization: Option<HeaderValue>,
    /// `x-request-id`, passed through.
    pub request_id: Option<HeaderValue>,
    /// The HTTP request's extensions (the peer address, for login rate limits and logs).
    pub extensions: http::Extensions,
}

/// Starts the call of `path` with the encoded `message`; the response's frames are read
/// by [`Frames`]. A status before any message (trailers-only) is an error here.
pub async fn call(
    svc: &GrpcService,
    path: &str,
    message: Vec<u8>,
    meta: CallMeta,
) -> Result<Frames, CallError> {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.extend_from_slice(&[0]);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let mut req = Request::builder()
        .method(http::Method::POST)
        .uri(path)
        .version(http::Version::HTTP_2)
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers")
        .body(Body::from(framed.freeze()))
        .map_err(|e| CallError::new(Code::Internal, e.to_string()))?;
    *req.extensions_mut() = meta.extensions;
    if let Some(a) = meta.authorization {
        req.headers_mut().insert(header::AUTHORIZATION, a);
    }
    if let Some(id) = meta.request_id {
        req.headers_mut().insert(activity_hub_proto::REQUEST_ID, id);
    }
    let res = svc.clone().oneshot(req).await.unwrap_or_else(|e| match e {});
    let (parts, body) = res.into_parts();
    if let Some(e) = CallError::from_headers(&parts.headers) {
        if e.code != Code::Ok {
            return Err(e);
        }
    }
    let request_id = parts.headers.get(activity_hub_proto::REQUEST_ID).cloned();
    Ok(Frames {
        body,
        buf: BytesMut::new(),
        done: None,
        request_id,
    })
}

/// A call's response messages, then its status.
pub struct Frames {
    body: Body,
    buf: BytesMut,
    done: Option<Result<(), CallError>>,
    /// The request id the server used.
    pub request_id: Option<HeaderValue>,
}

impl Frames {
    /// The next message, `Ok(None)` at a clean end, or the call's error status.
    pub async fn next(&mut self) -> Result<Option<Bytes>, CallError> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
                if self.buf[0] != 0 {
                    return Err(CallError::new(Code::Internal, "compressed response frame"));
                }
                if self.buf.len() >= 5 + len {
                    self.buf.advance(5);
                    return Ok(Some(self.buf.split_to(len).freeze()));
                }
            }
            if let Some(done) = &self.done {
                return done.clone().map(|()| None);
            }
            match self.body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.buf.extend_from_slice(&data),
                    Err(frame) => {
                        let trailers = frame.into_trailers().unwrap_or_default();
                        self.done = Some(match CallError::from_headers(&trailers) {
                            Some(e) if e.code == Code::Ok => Ok(()),
                            Some(e) => Err(e),
                            None => Err(CallError::new(Code::Internal, "the call ended without a status")),
                        });
                    }
                },
                Some(Err(e)) => self.done = Some(Err(CallError::new(Code::Unavailable, e.to_string()))),
                None => {
                    if self.done.is_none() {
                        self.done = Some(Err(CallError::new(
                            Code::Unavailable,
                            "the call ended without a status",
                        )));
                    }
                }
            }
        }
    }

    /// The one message of a unary call.
    pub async fn unary(mut self) -> Result<Bytes, CallError> {
        let message = self
            .next()
            .await?
            .ok_or_else(|| CallError::new(Code::Internal, "a unary call answered no message"))?;
        // Read on to the status: a handler's error after its message still counts.
        while self.next().await?.is_some() {}
        Ok(message)
    }
}
