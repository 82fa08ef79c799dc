//! Servers sharing one PostgreSQL store act as one hub: a publish on one reaches a
//! subscriber on another live, and a consumer reconnecting elsewhere replaces its old
//! stream.

use tonic::Code;

use super::dsl::{consumer, event_req, Server};
use crate::helpers::Backend;

/// Two servers on one PostgreSQL database: a publish on one reaches a subscriber on the
/// other live, and a consumer reconnecting to the other server replaces its old stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_sharing_postgres_deliver_and_replace_across() {
    if crate::helpers::skip_without_pg("servers_sharing_postgres_deliver_and_replace_across") {
        return;
    }
    let a = Server::start(Backend::Postgres).await;
    let b = Server::on(a.db(), &[]).await;
    let (publisher, alice, alice_token) = a.cast().await;
    let mut on_b = b.subscribe(&alice_token, consumer("phone")).await;
    for i in 1..=3u64 {
        let r = a
            .publish(&publisher, event_req(&[alice.id], "t", format!("{i}")))
            .await
            .unwrap();
        assert_eq!(r.deliveries[0].seq, i);
        let e = on_b.event().await;
        assert_eq!(
            (e.seq, &e.payload[..]),
            (i, format!("{i}").as_bytes()),
            "live across servers"
        );
        on_b.ack(i).await;
    }
    // The device reconnects to server A: its stale stream on B ends with ABORTED.
    let _on_a = a.subscribe(&alice_token, consumer("phone")).await;
    let end = on_b.end().await;
    assert_eq!(end.code(), Code::Aborted, "{end:?}");
    a.stop().await;
    b.stop().await;
}
