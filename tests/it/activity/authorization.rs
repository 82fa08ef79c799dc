//! Who may do what (the authorization rows of the spec): publishing takes the publisher
//! or admin role; a stream, its history and its cursors belong to the recipient (and the
//! admin).

use activity_hub::proto::activity::v1::{GetCursorRequest, ListEventsRequest};
use tonic::Code;

use super::dsl::{client, event_req, start, Server};
use crate::helpers::{assert_status, authed, Backend};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_rows_of_the_spec() {
    let s = Server::start(Backend::Sqlite).await;
    let (publisher, alice, alice_token) = s.cast().await;
    let (bob, bob_token) = s.user_with_token("bob", &[]).await;
    let admin = s.admin_token().await;
    // Publish: admin and publisher; not a plain user; not anonymous.
    s.publish(&admin, event_req(&[alice.id], "t", "x")).await.unwrap();
    s.publish(&publisher, event_req(&[alice.id], "t", "x"))
        .await
        .unwrap();
    assert_status(
        s.publish(&bob_token, event_req(&[alice.id], "t", "x")).await,
        Code::PermissionDenied,
        "publish",
    );
    assert_status(
        client(&s.channel).publish(event_req(&[alice.id], "t", "x")).await,
        Code::Unauthenticated,
        "",
    );
    // Subscribe / ListEvents / GetCursor: the recipient or admin.
    s.subscribe(&alice_token, start(0)).await;
    s.subscribe(&admin, start(alice.id)).await;
    assert_status(
        s.open(&bob_token, start(alice.id)).await.map(|_| ()),
        Code::PermissionDenied,
        "",
    );
    assert_status(
        s.open(&publisher, start(alice.id)).await.map(|_| ()),
        Code::PermissionDenied,
        "",
    );
    let list = |uid: u64, token: &str| {
        let mut c = client(&s.channel);
        let req = authed(
            ListEventsRequest {
                user_id: uid,
                ..Default::default()
            },
            token,
        );
        async move { c.list_events(req).await }
    };
    assert_eq!(list(0, &alice_token).await.unwrap().into_inner().events.len(), 2);
    assert_eq!(list(alice.id, &admin).await.unwrap().into_inner().events.len(), 2);
    assert_status(list(alice.id, &bob_token).await, Code::PermissionDenied, "");
    assert!(list(0, &bob_token).await.unwrap().into_inner().events.is_empty());
    let cursor = |uid: u64, token: &str| {
        let mut c = client(&s.channel);
        let req = authed(
            GetCursorRequest {
                user_id: uid,
                consumer_id: "x".into(),
            },
            token,
        );
        async move { c.get_cursor(req).await }
    };
    cursor(bob.id, &bob_token).await.unwrap();
    cursor(bob.id, &admin).await.unwrap();
    assert_status(cursor(bob.id, &alice_token).await, Code::PermissionDenied, "");
    let empty = authed(
        GetCursorRequest {
            user_id: 0,
            consumer_id: String::new(),
        },
        &alice_token,
    );
    assert_status(
        client(&s.channel).get_cursor(empty).await,
        Code::InvalidArgument,
        "consumer_id",
    );
    s.stop().await;
}
