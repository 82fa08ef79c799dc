//! The web console at `/`: a page, its script and its style sheet, compiled into the
//! binary (no external assets), using the REST routes and Server-Sent Events like any
//! browser client.

use std::sync::Arc;

use axum::{response::IntoResponse, routing::get, Router};
use http::header;

use super::Surface;

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/app.js");
const STYLE: &str = include_str!("console/console.css");

pub(super) fn routes() -> Router<Arc<Surface>> {
    Router::new()
        .route("/", get(|| async { page("text/html; charset=utf-8", INDEX) }))
        .route(
            "/console/app.js",
            get(|| async { page("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/console/console.css",
            get(|| async { page("text/css; charset=utf-8", STYLE) }),
        )
}

fn page(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            // Only its own script and the hub's routes.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
            ),
        ],
        body,
    )
}
