//! A store that goes away: SQLite's write lock held by another process; PostgreSQL
//! behind a TCP proxy the test cuts and refuses.

use super::*;

/// A TCP proxy in front of PostgreSQL that the test can cut (close every connection) and
/// take down (refuse new connections) and bring back on the same port.
struct PgProxy {
    port: u16,
    upstream: String,
    up: Option<JoinHandle<()>>,
}

impl PgProxy {
    async fn start(upstream: String) -> PgProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut p = PgProxy {
            port,
            upstream,
            up: None,
        };
        p.up = Some(p.serve(listener));
        p
    }

    fn serve(&self, listener: TcpListener) -> JoinHandle<()> {
        let upstream = self.upstream.clone();
        tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut down, _)) = listener.accept().await {
                let upstream = upstream.clone();
                conns.spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
            }
        })
    }

    /// Closes every proxied connection and refuses new ones (the JoinSet of the accept
    /// task is dropped with it, aborting every copy).
    async fn down(&mut self) {
        if let Some(t) = self.up.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// Accepts again on the same port.
    async fn up(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("rebind the proxy port");
        self.up = Some(self.serve(listener));
    }
}

/// `url` with its host:port replaced by 127.0.0.1:`port`.
fn via_port(url: &str, port: u16) -> String {
    let at = url.find('@').map_or("postgres://".len(), |i| i + 1);
    let end = url[at..].find('/').map_or(url.len(), |i| at + i);
    format!("{}127.0.0.1:{port}{}", &url[..at], &url[end..])
}

/// Where TEST_DATABASE_URL's server listens, as host:port.
fn pg_host_port(url: &str) -> String {
    let at = url.find('@').map_or("postgres://".len(), |i| i + 1);
    let end = url[at..].find('/').map_or(url.len(), |i| at + i);
    let hp = &url[at..end];
    if hp.contains(':') {
        hp.to_string()
    } else {
        format!("{hp}:5432")
    }
}

crate::dual!(a_store_that_goes_away_fails_fast_and_recovers);

async fn a_store_that_goes_away_fails_fast_and_recovers(b: Backend) {
    let db = TestDb::new(b).await;
    let mut proxy = match b {
        Backend::Postgres => Some(PgProxy::start(pg_host_port(&db.url)).await),
        Backend::Sqlite => None,
    };
    let hub_db = TestDb::at(
        proxy
            .as_ref()
            .map_or(db.url.clone(), |p| via_port(&db.url, p.port)),
    );
    let s = TestServer::start(&hub_db, &[]).await;
    let load = Load::start(&s, "away").await;
    let ledger = &load.ledger;

    if let Some(p) = proxy.as_mut() {
        // Killed connections, several times under load: the batches in flight fail whole
        // and the pool reconnects.
        for round in 0..3 {
            p.down().await;
            p.up().await;
            let acked = ledger.acked();
            acked_beyond(
                ledger,
                acked,
                50,
                &format!("after killed connections, round {round}"),
            )
            .await;
        }
    }

    // The store goes away: SQLite's write lock is held by another process's connection
    // (every hub write waits for it); PostgreSQL's port refuses connections.
    let mut locker = None;
    match proxy.as_mut() {
        Some(p) => p.down().await,
        None => {
            use sqlx::Connection as _;
            let mut c = sqlx::SqliteConnection::connect(&db.url)
                .await
                .expect("second connection");
            sqlx::query("BEGIN EXCLUSIVE")
                .execute(&mut c)
                .await
                .expect("take the write lock");
            locker = Some(c);
        }
    }
    let failed = ledger.failed();
    failed_beyond(ledger, failed, 12, "store away").await;
    health_becomes(&s.channel, ServingStatus::NotServing, "store away").await;
    // Publishers set a 5 s deadline: the store's 1 s acquire timeout answers first.
    assert!(
        ledger.failed_with(Code::Unavailable) >= 12,
        "an unreachable store answers UNAVAILABLE, before the caller's deadline: {:?}",
        ledger.failed.lock().unwrap()
    );

    match proxy.as_mut() {
        Some(p) => p.up().await,
        None => {
            let mut c = locker.take().unwrap();
            sqlx::query("ROLLBACK")
                .execute(&mut c)
                .await
                .expect("release the write lock");
            drop(c);
        }
    }
    load.finish(s, &db, "after the store came back").await;
}
