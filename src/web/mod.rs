//! The HTTP surface on the gRPC port (`API.md`, "The HTTP surface"): gRPC-Web around each
//! gRPC service (not the whole port, so plain HTTP requests get real answers), REST/JSON
//! and Server-Sent Events routed from the protos' `google.api.http` rules, `/healthz`,
//! `/readyz`, `/v1/openapi.json`, the web console at `/`, and CORS for
//! `--cors-allow-origin` only.
//!
//! A REST or SSE request becomes an in-process gRPC call through the same services and
//! `RpcLayer` as any gRPC client's (`grpc`), so authentication, limits, metrics and
//! errors have one implementation; this module only translates.

mod console;
pub mod grpc;
pub mod json;
pub mod openapi;
pub mod routes;
mod sse;

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use axum::{
    body::Body,
    extract::{Request, State},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use http::{header, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use prost_reflect::DescriptorPool;
use tonic::Code;
use tower::Layer;

use self::{
    grpc::{CallError, CallMeta, GrpcService, TonicService},
    routes::{Found, Routes},
};

/// Largest REST request body read (the gRPC decode limit applies after).
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// What the HTTP handlers share.
pub struct Surface {
    routes: Routes,
    grpc: GrpcService,
    openapi: bytes::Bytes,
    ready: Arc<AtomicBool>,
}

/// Whether the server is SERVING, as `/readyz` answers it (set by the health reporter).
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Sets the state `/readyz` reports.
    pub fn set(&self, serving: bool) {
        self.0.store(serving, Ordering::Relaxed);
    }
}

/// Why the HTTP surface could not be built (a defect in the protos' rules).
#[derive(Debug, thiserror::Error)]
pub enum SurfaceError {
    /// The descriptors do not decode.
    #[error("descriptors: {0}")]
    Descriptors(#[from] prost_reflect::DescriptorError),
    /// A `google.api.http` rule is unusable.
    #[error(transparent)]
    Rule(#[from] routes::RuleError),
}

/// The port's router: `grpc_services` (name, service already wrapped in the `RpcLayer`)
/// each behind gRPC-Web, the REST/SSE routes calling `internal` (the same services),
/// health, OpenAPI and the console; CORS when `cors_origins` is not empty.
pub fn router(
    grpc_services: Vec<(&'static str, TonicService)>,
    internal: GrpcService,
    readiness: Readiness,
    cors_origins: &[HeaderValue],
) -> Result<Router, SurfaceError> {
    let pool = DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET)?;
    let routes = Routes::from_pool(&pool)?;
    let openapi = openapi::document(&routes).to_string().into();
    let surface = Arc::new(Surface {
        routes,
        grpc: internal,
        openapi,
        ready: readiness.0,
    });
    let mut router = Router::new();
    for (name, svc) in grpc_services {
        router = router.route_service(
            &format!("/{name}/{{*rest}}"),
            tonic_web::GrpcWebLayer::new().layer(svc),
        );
    }
    let router = router
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/v1/openapi.json", get(openapi_json))
        .merge(console::routes())
        .fallback(|State(s): State<Arc<Surface>>, req: Request| async move {
            match grpc_content_type(&req) {
                Some(ct) => unknown_grpc(ct, req.uri().path()),
                None => rest(s, req).await,
            }
        })
        .with_state(surface);
    Ok(if cors_origins.is_empty() {
        router
    } else {
        router.layer(cors(cors_origins))
    })
}

fn cors(origins: &[HeaderValue]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins.iter().cloned()))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
            Method::PUT,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::HeaderName::from_static("last-event-id"),
            header::HeaderName::from_static("x-request-id"),
            header::HeaderName::from_static("x-grpc-web"),
            header::HeaderName::from_static("x-user-agent"),
            header::HeaderName::from_static("grpc-timeout"),
        ])
        .expose_headers([
            header::HeaderName::from_static("grpc-status"),
            header::HeaderName::from_static("grpc-message"),
            header::HeaderName::from_static("x-request-id"),
            header::RETRY_AFTER,
        ])
        .max_age(std::time::Duration::from_secs(600))
}

/// The content type of a gRPC or gRPC-Web request.
fn grpc_content_type(req: &Request) -> Option<HeaderValue> {
    req.headers()
        .get(header::CONTENT_TYPE)
        .filter(|v| v.as_bytes().starts_with(b"application/grpc"))
        .cloned()
}

/// A gRPC (or gRPC-Web) call to a service this server does not have: UNIMPLEMENTED, as a
/// trailers-only response, which both protocols read from the headers.
fn unknown_grpc(content_type: HeaderValue, path: &str) -> Response {
    let mut res = Response::new(Body::empty());
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert("grpc-status", HeaderValue::from(Code::Unimplemented as i32));
    let message = format!(
        "unknown service {}",
        path.trim_start_matches('/').split('/').next().unwrap_or("")
    );
    let encoded =
        percent_encoding::utf8_percent_encode(&message, percent_encoding::NON_ALPHANUMERIC).to_string();
    if let Ok(v) = HeaderValue::from_str(&encoded) {
        h.insert("grpc-message", v);
    }
    res
}

async fn readyz(State(s): State<Arc<Surface>>) -> Response {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn openapi_json(State(s): State<Arc<Surface>>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], s.openapi.clone()).into_response()
}

/// A REST or SSE request: route, assemble the message, call, answer.
async fn rest(s: Arc<Surface>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let (route, vars) = match s.routes.find(&parts.method, parts.uri.path()) {
        Found::Route(r, vars) => (r, vars),
        Found::WrongMethod(allowed) => {
            let allow = allowed.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
            let mut res = error(
                StatusCode::METHOD_NOT_ALLOWED,
                Code::Unimplemented,
                &format!("{} is not allowed here; allowed: {allow}", parts.method),
            );
            if let Ok(v) = HeaderValue::from_str(&allow) {
                res.headers_mut().insert(header::ALLOW, v);
            }
            return res;
        }
        Found::NotFound => {
            return error(
                StatusCode::NOT_FOUND,
                Code::NotFound,
                &format!("no route {} {}", parts.method, parts.uri.path()),
            )
        }
    };
    let mut query: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let mut authorization = parts.headers.get(header::AUTHORIZATION).cloned();
    if route.is_stream() {
        // EventSource cannot send headers: the token may come as a parameter (never logged).
        if let Some(i) = query.iter().position(|(k, _)| k == "accessToken") {
            let (_, token) = query.remove(i);
            if authorization.is_none() {
                authorization = HeaderValue::from_str(&format!("Bearer {token}")).ok();
            }
        }
    }
    let body = if route.body {
        match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
            Ok(b) => Some(b),
            Err(e) => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Code::ResourceExhausted,
                    &format!("body: {e} (at most {MAX_BODY_BYTES} bytes)"),
                )
            }
        }
    } else {
        let _ = body.collect().await;
        None
    };
    let meta = CallMeta {
        authorization,
        request_id: parts.headers.get(activity_hub_proto::REQUEST_ID).cloned(),
        extensions: parts.extensions.clone(),
    };
    if route.is_stream() {
        return sse::follow(&s, route, &vars, query, &parts.headers, meta).await;
    }
    let input = route.rpc.input();
    let message = match json::request(&input, body.as_deref(), &vars, &query, &[]) {
        Ok(m) => m,
        Err(e) => return api_error(e),
    };
    let frames = match grpc::call(&s.grpc, &route.grpc_path(), message, meta).await {
        Ok(f) => f,
        Err(e) => return call_error(&e),
    };
    let request_id = frames.request_id.clone();
    let answer = match frames.unary().await {
        Ok(bytes) => json::response(&route.rpc.output(), &bytes),
        Err(e) => return call_error(&e),
    };
    let mut res = match answer {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json.to_string()).into_response(),
        Err(e) => api_error(e),
    };
    if let Some(id) = request_id {
        res.headers_mut().insert(activity_hub_proto::REQUEST_ID, id);
    }
    res
}

/// The HTTP status of a gRPC code (`API.md`).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Cancelled => StatusCode::from_u16(499).expect("499 is a valid status"),
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `{"code": <gRPC code>, "message": "...", "details": []}` (google.rpc.Status as JSON).
pub fn status_json(code: Code, message: &str) -> serde_json::Value {
    serde_json::json!({"code": code as i32, "message": message, "details": []})
}

fn error(status: StatusCode, code: Code, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        status_json(code, message).to_string(),
    )
        .into_response()
}

fn call_error(e: &CallError) -> Response {
    let mut res = error(http_status(e.code), e.code, &e.message);
    if let Some(ms) = e.retry_after_ms {
        let secs = ms.div_ceil(1000).max(1);
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    res
}

fn api_error(e: crate::error::ApiError) -> Response {
    let status = tonic::Status::from(e);
    error(http_status(status.code()), status.code(), status.message())
}

/// `Body` is re-exported for the server's wiring.
pub type HttpBody = Body;
