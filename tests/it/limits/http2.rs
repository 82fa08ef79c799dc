//! HTTP/2 abuse (rapid reset, stream hoarding) and dead peers found by keepalive.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_flood_does_not_stop_other_clients() {
    let db = TestDb::new(Backend::Sqlite).await;
    let s = TestServer::start(&db, &[]).await;
    let token = s.admin_token().await;
    let addr = s.addr;
    let flood = tokio::spawn(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut h2, conn) = h2::client::handshake(tcp).await.unwrap();
        let conn = tokio::spawn(conn);
        let mut sent = 0u32;
        for _ in 0..20_000 {
            let Ok(ready) = h2.clone().ready().await else {
                break;
            };
            h2 = ready;
            match h2.send_request(grpc_request("/user.v1.UserService/GetUser", ""), false) {
                Ok((_resp, mut body)) => {
                    body.send_reset(h2::Reason::CANCEL);
                    sent += 1;
                }
                Err(_) => break,
            }
        }
        drop(h2);
        (sent, conn.await)
    });
    completes_calls(&s, &token, 200).await;
    let (sent, conn) = tokio::time::timeout(Duration::from_secs(30), flood)
        .await
        .unwrap()
        .unwrap();
    // Either the server told the flooder to go away, or it absorbed every reset.
    eprintln!("flooder sent {sent} reset streams; its connection ended with {conn:?}");
    assert!(sent > 0);
    completes_calls(&s, &token, 10).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_hoarding_idle_streams_does_not_stop_other_clients() {
    let db = TestDb::new(Backend::Sqlite).await;
    let s = TestServer::start(&db, &["--max-streams-per-connection", "8"]).await;
    let token = s.admin_token().await;
    let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let (h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut h2 = h2.ready().await.unwrap();
    let mut held = Vec::new();
    for _ in 0..8 {
        // Bidi Subscribe streams that never send their Start: open and idle.
        let (resp, body) = h2
            .send_request(
                grpc_request("/activity.v1.ActivityService/Subscribe", &token),
                false,
            )
            .unwrap();
        held.push((resp, body));
        h2 = h2.ready().await.unwrap();
    }
    // A ninth stream on this connection is not admitted: a complete GetUser (headers with
    // end of stream) would be answered at once if it were.
    let ninth = tokio::time::timeout(Duration::from_millis(500), async {
        let (resp, _body) = h2.send_request(grpc_request("/user.v1.UserService/GetUser", &token), true)?;
        resp.await
    })
    .await;
    assert!(
        !matches!(ninth, Ok(Ok(_))),
        "a ninth stream was admitted: {ninth:?}"
    );
    completes_calls(&s, &token, 50).await;
    drop(held);
    s.stop().await;
}

/// A TCP proxy that can freeze: it stops moving bytes but keeps both sockets open, the
/// way a peer that vanished (power loss, dropped route) looks to the server.
async fn freezable_proxy(
    to: std::net::SocketAddr,
) -> (std::net::SocketAddr, tokio_util::sync::CancellationToken) {
    async fn pump(
        mut r: tokio::net::tcp::OwnedReadHalf,
        mut w: tokio::net::tcp::OwnedWriteHalf,
        freeze: tokio_util::sync::CancellationToken,
    ) {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 16384];
        loop {
            let n = tokio::select! {
                biased;
                _ = freeze.cancelled() => break,
                n = r.read(&mut buf) => match n {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                },
            };
            if freeze.is_cancelled() || w.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        // Frozen: hold both sockets open and move nothing.
        std::future::pending::<()>().await;
        drop((r, w));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let freeze = tokio_util::sync::CancellationToken::new();
    let f = freeze.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect(to).await.unwrap();
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pump(cr, sw, f.clone()));
            tokio::spawn(pump(sr, cw, f.clone()));
        }
    });
    (addr, freeze)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_finds_dead_peers_of_idle_streams() {
    let db = TestDb::new(Backend::Sqlite).await;
    let s = TestServer::start(
        &db,
        &[
            "--http2-keepalive-interval",
            "200ms",
            "--http2-keepalive-timeout",
            "1s",
        ],
    )
    .await;
    let token = s.admin_token().await;
    let (proxy, freeze) = freezable_proxy(s.addr).await;
    let ch = Channel::from_shared(format!("http://{proxy}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let sub = Sub::open(&ch, &token, start(1))
        .await
        .expect("subscribe through the proxy");
    let hub = s.hub.clone();
    let active = || {
        hub.stats()
            .subscriptions
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    eventually(Duration::from_secs(5), "the subscription is registered", || {
        active() == 1
    })
    .await;
    // Idle for a second: pings are answered, the stream stays.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(active(), 1, "an idle but live peer keeps its stream");
    freeze.cancel();
    eventually(
        Duration::from_secs(10),
        "the dead peer's stream is released",
        || active() == 0,
    )
    .await;
    drop(sub);
    s.stop().await;
}
