//! Refusals: a bad Start, a second Start, an ack beyond what was delivered, or a bad
//! publish is refused with a status naming the field; in a PublishStream the requests
//! before the bad one are still answered.

use activity_hub::proto::activity::v1::{subscribe_request, Start, SubscribeRequest};
use tonic::Code;

use super::dsl::{client, earliest, event_req, start, Server};
use crate::helpers::{assert_status, authed, Backend};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_errors_are_invalid_argument() {
    let s = Server::start(Backend::Sqlite).await;
    let (publisher, alice, alice_token) = s.cast().await;
    assert_status(
        s.open(
            &alice_token,
            Start {
                window: 10_001,
                ..start(0)
            },
        )
        .await
        .map(|_| ()),
        Code::InvalidArgument,
        "start.window",
    );
    assert_status(
        s.open(
            &alice_token,
            Start {
                types: vec!["Bad Type".into()],
                ..start(0)
            },
        )
        .await
        .map(|_| ()),
        Code::InvalidArgument,
        "start.types",
    );
    let mut sub = s.subscribe(&alice_token, start(0)).await;
    sub.tx
        .send(SubscribeRequest {
            msg: Some(subscribe_request::Msg::Start(start(0))),
        })
        .await
        .unwrap();
    assert_status(
        Err::<(), _>(sub.end().await),
        Code::InvalidArgument,
        "exactly one Start",
    );
    s.publish(&publisher, event_req(&[alice.id], "t", "x"))
        .await
        .unwrap();
    let mut sub = s.subscribe(&alice_token, earliest()).await;
    assert_eq!(sub.event().await.seq, 1);
    sub.ack(2).await;
    assert_status(Err::<(), _>(sub.end().await), Code::InvalidArgument, "ack.seq");
    assert_status(
        s.publish(&publisher, event_req(&[alice.id, 999_999], "t", "x"))
            .await,
        Code::NotFound,
        "999999",
    );
    assert_status(
        s.publish(&publisher, event_req(&[alice.id], "", "x")).await,
        Code::InvalidArgument,
        "type",
    );
    let big = vec![0u8; 300 * 1024];
    assert_status(
        s.publish(&publisher, event_req(&[alice.id], "t", big)).await,
        Code::ResourceExhausted,
        "payload",
    );
    // A bad request in a PublishStream: the ones before it are answered, then the error.
    let mut out = client(&s.channel)
        .publish_stream(authed(
            tokio_stream::iter(vec![
                event_req(&[alice.id], "t", "ok"),
                event_req(&[alice.id], "T!", "bad"),
                event_req(&[alice.id], "t", "never"),
            ]),
            &publisher,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.message().await.unwrap().unwrap().deliveries[0].seq, 2);
    assert_status(out.message().await, Code::InvalidArgument, "request 1: type");
    s.stop().await;
}
