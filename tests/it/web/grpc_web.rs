//! gRPC-Web on the gRPC port, over HTTP/1.1 as browsers speak it: unary and
//! server-streaming calls, binary and text (base64) framing, trailers in the body.

use std::time::Duration;

use activity_hub::proto::{
    activity::v1::{subscribe_response::Msg, AckMode, FollowRequest, Start, SubscribeResponse},
    user::v1::User,
};
use base64::Engine;
use bytes::{Buf, Bytes, BytesMut};
use http::Method;
use http_body_util::BodyExt;
use prost::Message;

use super::client::{call, request, send};
use crate::{
    activity::dsl::{numbered, Server},
    helpers::{Backend, ADMIN_EMAIL},
};

fn frame(message: &impl Message) -> Bytes {
    let body = message.encode_to_vec();
    let mut out = BytesMut::new();
    out.extend_from_slice(&[0]);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out.freeze()
}

/// Splits a gRPC-Web body into its messages and its trailers (the 0x80 frame).
fn unframe(mut body: Bytes) -> (Vec<Bytes>, String) {
    let mut messages = Vec::new();
    let mut trailers = String::new();
    while body.len() >= 5 {
        let flag = body[0];
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        body.advance(5);
        let payload = body.split_to(len);
        if flag & 0x80 != 0 {
            trailers = String::from_utf8_lossy(&payload).into_owned();
        } else {
            messages.push(payload);
        }
    }
    (messages, trailers)
}

/// Decodes concatenated base64 chunks, each padded on its own.
fn decode_text(body: &[u8]) -> Bytes {
    let mut out = Vec::new();
    for quad in body.chunks(4) {
        out.extend(
            base64::engine::general_purpose::STANDARD
                .decode(quad)
                .expect("base64"),
        );
    }
    out.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_calls_in_binary_and_text_framing() {
    let s = Server::start(Backend::Sqlite).await;
    let admin = s.admin_token().await;
    let path = "/auth.v1.AuthService/WhoAmI";
    let req = request(
        Method::POST,
        path,
        Some(&admin),
        &[
            ("content-type", "application/grpc-web+proto"),
            ("x-grpc-web", "1"),
        ],
        frame(&()),
    );
    let r = call(s.addr, req).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/grpc-web+proto"));
    let (messages, trailers) = unframe(r.body.clone());
    assert!(trailers.contains("grpc-status:0"), "{trailers:?}");
    assert_eq!(User::decode(messages[0].clone()).unwrap().email, ADMIN_EMAIL);

    let text = base64::engine::general_purpose::STANDARD.encode(frame(&()));
    let req = request(
        Method::POST,
        path,
        Some(&admin),
        &[
            ("content-type", "application/grpc-web-text"),
            ("accept", "application/grpc-web-text"),
        ],
        text.into(),
    );
    let r = call(s.addr, req).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/grpc-web-text"));
    let (messages, trailers) = unframe(decode_text(&r.body));
    assert!(trailers.contains("grpc-status:0"), "{trailers:?}");
    assert_eq!(User::decode(messages[0].clone()).unwrap().email, ADMIN_EMAIL);

    // A failing call: its status in the trailers (or headers, trailers-only).
    let req = request(
        Method::POST,
        path,
        None,
        &[("content-type", "application/grpc-web+proto")],
        frame(&()),
    );
    let r = call(s.addr, req).await;
    let (_, trailers) = unframe(r.body.clone());
    let status = r.header("grpc-status").map(str::to_string).unwrap_or(trailers);
    assert!(
        status.contains("16"),
        "UNAUTHENTICATED expected: {status:?} {r:?}"
    );

    // A service the server does not have: UNIMPLEMENTED, not an HTTP error page.
    let req = request(
        Method::POST,
        "/nope.v1.Nope/Call",
        None,
        &[("content-type", "application/grpc-web+proto")],
        frame(&()),
    );
    let r = call(s.addr, req).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("grpc-status"), Some("12"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_streams_live_events_over_grpc_web() {
    let s = Server::start(Backend::Sqlite).await;
    let (publisher, alice, token) = s.cast().await;
    let follow = FollowRequest {
        start: Some(Start {
            ack_mode: AckMode::None as i32,
            ..Default::default()
        }),
    };
    let req = request(
        Method::POST,
        "/activity.v1.ActivityService/Follow",
        Some(&token),
        &[("content-type", "application/grpc-web+proto")],
        frame(&follow),
    );
    let res = send(s.addr, req).await;
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let mut buf = BytesMut::new();
    let mut next = async || -> SubscribeResponse {
        loop {
            if buf.len() >= 5 {
                let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                if buf.len() >= 5 + len {
                    assert_eq!(buf[0], 0, "a message frame, not trailers");
                    buf.advance(5);
                    return SubscribeResponse::decode(buf.split_to(len)).unwrap();
                }
            }
            let f = tokio::time::timeout(Duration::from_secs(10), body.frame())
                .await
                .expect("a frame within 10 s")
                .expect("the stream goes on")
                .unwrap();
            if let Ok(d) = f.into_data() {
                buf.extend_from_slice(&d);
            }
        }
    };
    assert!(matches!(next().await.msg, Some(Msg::Subscribed(_))));
    s.publish_all(&publisher, numbered(alice.id, 2)).await;
    for want in 1..=2 {
        loop {
            match next().await.msg {
                Some(Msg::Event(e)) => {
                    assert_eq!(e.seq, want);
                    break;
                }
                Some(Msg::Heartbeat(_)) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}
