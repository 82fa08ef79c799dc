//! A plain HTTP/1.1 client for the HTTP surface's tests (hyper, nothing of the hub's): a
//! request and its whole reply, or a Server-Sent Events stream read message by message.

use std::{net::SocketAddr, time::Duration};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// A whole reply.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON (the test fails if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an error reply: the HTTP status, the gRPC code in the body, and that its
    /// message contains `needle`.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: i64, needle: &str) {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        let j = self.json();
        assert_eq!(j["code"], code, "{j}");
        assert_eq!(j["details"], serde_json::json!([]), "{j}");
        let message = j["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    }
}

/// Sends `req`; the reply with its body still to read.
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> hyper::Response<Incoming> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    tokio::time::timeout(Duration::from_secs(20), sender.send_request(req))
        .await
        .expect("answered within 20 s")
        .expect("HTTP request")
}

/// Builds a request: `headers` as given, a bearer token when `token` is set.
pub fn request(
    method: Method,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body)).unwrap()
}

/// Sends `req` and reads the whole reply.
pub async fn call(addr: SocketAddr, req: Request<Full<Bytes>>) -> Reply {
    let res = send(addr, req).await;
    let status = res.status();
    let headers = res.headers().clone();
    let body = tokio::time::timeout(Duration::from_secs(20), res.into_body().collect())
        .await
        .expect("body within 20 s")
        .expect("body")
        .to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

pub async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Reply {
    call(addr, request(Method::GET, path, token, &[], Bytes::new())).await
}

pub async fn delete(addr: SocketAddr, path: &str, token: Option<&str>) -> Reply {
    call(addr, request(Method::DELETE, path, token, &[], Bytes::new())).await
}

/// A JSON body with `method`.
pub async fn send_json(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> Reply {
    let req = request(
        method,
        path,
        token,
        &[("content-type", "application/json")],
        Bytes::from(body.to_string()),
    );
    call(addr, req).await
}

pub async fn post(addr: SocketAddr, path: &str, token: Option<&str>, body: &Value) -> Reply {
    send_json(addr, Method::POST, path, token, body).await
}

/// One Server-Sent Events message (or comment).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SseMessage {
    pub event: Option<String>,
    pub id: Option<String>,
    pub data: String,
    pub comment: Option<String>,
    pub retry: Option<String>,
}

impl SseMessage {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {:?}", self.data))
    }
}

/// An open SSE response.
pub struct Sse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    body: Incoming,
    buf: BytesMut,
}

/// Opens `path` as an event stream with `headers`.
pub async fn sse(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Sse {
    let mut h = vec![("accept", "text/event-stream")];
    h.extend_from_slice(headers);
    let res = send(addr, request(Method::GET, path, None, &h, Bytes::new())).await;
    let status = res.status();
    let headers = res.headers().clone();
    Sse {
        status,
        headers,
        body: res.into_body(),
        buf: BytesMut::new(),
    }
}

impl Sse {
    /// The next message or comment; `None` when the stream ends. Fails after `within`.
    pub async fn next_within(&mut self, within: Duration) -> Option<SseMessage> {
        tokio::time::timeout(within, self.next())
            .await
            .unwrap_or_else(|_| panic!("no SSE message within {within:?}"))
    }

    /// The next message or comment, or `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<SseMessage> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block = self.buf.split_to(end + 2);
                let text = String::from_utf8_lossy(&block[..end]).into_owned();
                return Some(parse(&text));
            }
            match self.body.frame().await {
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        self.buf.extend_from_slice(&d);
                    }
                }
                _ => return None,
            }
        }
    }

    /// The next message that is not a comment (heartbeats are skipped).
    pub async fn message(&mut self) -> Option<SseMessage> {
        loop {
            let m = self.next_within(Duration::from_secs(20)).await?;
            if m.comment.is_none() && m.retry.is_none() {
                return Some(m);
            }
        }
    }
}

fn parse(text: &str) -> SseMessage {
    let mut m = SseMessage::default();
    let mut data = Vec::new();
    for line in text.lines() {
        if let Some(c) = line.strip_prefix(':') {
            m.comment = Some(c.trim().to_string());
            continue;
        }
        let (k, v) = line
            .split_once(':')
            .map(|(k, v)| (k, v.strip_prefix(' ').unwrap_or(v)))
            .unwrap_or((line, ""));
        match k {
            "event" => m.event = Some(v.to_string()),
            "id" => m.id = Some(v.to_string()),
            "data" => data.push(v.to_string()),
            "retry" => m.retry = Some(v.to_string()),
            _ => {}
        }
    }
    m.data = data.join("\n");
    m
}
