//! The server process contract: health, reflection, graceful shutdown.

use std::time::Duration;

use activity_hub::proto::user::v1::{CreateUserRequest, ListUsersRequest};
use tonic::Code;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};
use tonic_reflection::pb::v1::{
    server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
    server_reflection_response::MessageResponse, ServerReflectionRequest,
};

use crate::helpers::{authed, Backend, TestDb, TestServer, PASSWORD};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_every_service() {
    let db = TestDb::new(Backend::Sqlite).await;
    let s = TestServer::start(&db, &[]).await;
    let mut h = HealthClient::new(s.channel.clone());
    for name in [
        "",
        "user.v1.UserService",
        "auth.v1.AuthService",
        "activity.v1.ActivityService",
    ] {
        let r = h
            .check(HealthCheckRequest { service: name.into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{name:?}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_services() {
    let db = TestDb::new(Backend::Sqlite).await;
    let s = TestServer::start(&db, &[]).await;
    let mut r = ServerReflectionClient::new(s.channel.clone());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = r
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("{resp:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "user.v1.UserService",
        "auth.v1.AuthService",
        "activity.v1.ActivityService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_streams_with_unavailable() {
    let db = TestDb::new(Backend::Sqlite).await;
    let s = TestServer::start(&db, &[]).await;
    let admin = s.admin_token().await;
    let bulk: Vec<CreateUserRequest> = (0..200)
        .map(|i| CreateUserRequest {
            email: format!("sd{i}@example.com"),
            username: format!("sd{i}"),
            password: PASSWORD.into(),
            ..Default::default()
        })
        .collect();
    s.users()
        .bulk_create_users(authed(tokio_stream::iter(bulk), &admin))
        .await
        .unwrap();
    // A slow reader keeps the stream open (tiny flow-control window).
    let slow = s.slow_reader_channel().await;
    let mut client = activity_hub::proto::user::v1::user_service_client::UserServiceClient::new(slow);
    let mut stream = client
        .stream_users(authed(
            ListUsersRequest {
                limit: 1000,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
    let stopping = tokio::spawn(s.stop());
    let end = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(st) => return Some(st),
            }
        }
    })
    .await
    .expect("the stream ends after shutdown");
    let st = end.expect("the stream ends with a status, not a clean end");
    assert_eq!(st.code(), Code::Unavailable, "{st:?}");
    stopping.await.unwrap();
}
