//! Rate limits, message size limits, HTTP/2 abuse (rapid reset, stream hoarding), dead
//! peers found by keepalive, unary load shedding, and deadlines.

mod deadlines;
mod http2;
mod messages;
mod rate;

use std::{net::IpAddr, time::Duration};

use activity_hub::proto::{
    activity::v1::{ListEventsRequest, PublishRequest},
    auth::v1::{auth_service_client::AuthServiceClient, login_request::Identifier, LoginRequest},
    user::v1::CreateUserRequest,
};
use sqlx::Connection;
use tokio::io::AsyncWriteExt;
use tonic::{transport::Channel, Code};

use crate::{
    activity::dsl::{client, event_req, publish, start, Sub},
    dual,
    helpers::{assert_status, authed, eventually, Backend, TestDb, TestServer, ADMIN_EMAIL, PASSWORD},
};

/// A well-behaved client on its own connection keeps completing calls.
pub(super) async fn completes_calls(s: &TestServer, token: &str, n: usize) {
    let ch = Channel::from_shared(format!("http://{}", s.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut users = activity_hub::proto::user::v1::user_service_client::UserServiceClient::new(ch);
    for _ in 0..n {
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            users.get_user(authed(crate::helpers::by_id(1), token)),
        )
        .await
        .expect("a well-behaved call completes within 10 s");
        r.expect("and succeeds");
    }
}

pub(super) fn grpc_request(path: &str, token: &str) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap()
}
