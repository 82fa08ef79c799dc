//! CORS answers only the origins given with `--cors-allow-origin`.

use http::Method;

use super::client::{call, request};
use crate::{activity::dsl::Server, helpers::Backend};

async fn preflight(s: &Server, origin: &str) -> super::client::Reply {
    call(
        s.addr,
        request(
            Method::OPTIONS,
            "/v1/me",
            None,
            &[
                ("origin", origin),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "authorization"),
            ],
            Default::default(),
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_listed_origins_get_cors_headers() {
    let s = Server::start_with(
        Backend::Sqlite,
        &["--cors-allow-origin", "http://app.test,http://localhost:3000"],
    )
    .await;
    let ok = preflight(&s, "http://localhost:3000").await;
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("http://localhost:3000"),
        "{ok:?}"
    );
    assert!(ok
        .header("access-control-allow-headers")
        .unwrap()
        .contains("authorization"));
    let other = preflight(&s, "http://evil.test").await;
    assert_eq!(other.header("access-control-allow-origin"), None, "{other:?}");
    // A simple request from a listed origin is answered with the header too.
    let me = call(
        s.addr,
        request(
            Method::GET,
            "/healthz",
            None,
            &[("origin", "http://app.test")],
            Default::default(),
        ),
    )
    .await;
    assert_eq!(me.header("access-control-allow-origin"), Some("http://app.test"));

    let closed = Server::start(Backend::Sqlite).await;
    let r = preflight(&closed, "http://localhost:3000").await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        None,
        "no CORS by default: {r:?}"
    );
}
