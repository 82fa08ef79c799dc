//! Request ids, the per-RPC span in the logs (and no secret in any log line), plain text
//! logs when stderr is no terminal, the startup line, and OpenTelemetry spans continuing
//! the caller's W3C trace.

use std::{process::Stdio, time::Duration};

use activity_hub::proto::{
    auth::v1::{auth_service_client::AuthServiceClient, login_request::Identifier, LoginRequest},
    user::v1::{user_service_client::UserServiceClient, CreateUserRequest},
};
use tokio::io::AsyncReadExt;
use tonic::Code;

use crate::{
    activity::dsl::{start, Sub},
    crash::{admin, free_port, spawn_server_logging, spawn_server_on},
    helpers::{authed, Backend, TestDb, TestServer},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_echoed_or_made_on_every_kind_of_answer() {
    let db = TestDb::new(Backend::Sqlite).await;
    let s = TestServer::start(&db, &[]).await;
    let token = s.admin_token().await;
    let mut users = s.users();

    let mut req = authed(crate::helpers::by_id(1), &token);
    req.metadata_mut()
        .insert("x-request-id", "client-chosen-42".parse().unwrap());
    let ok = users.get_user(req).await.unwrap();
    assert_eq!(ok.metadata().get("x-request-id").unwrap(), "client-chosen-42");

    let mut req = authed(crate::helpers::by_id(987_654), &token);
    req.metadata_mut()
        .insert("x-request-id", "failing-call-7".parse().unwrap());
    let err = users.get_user(req).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.metadata().get("x-request-id").unwrap(), "failing-call-7");

    let made =
        |r: &tonic::metadata::MetadataMap| r.get("x-request-id").unwrap().to_str().unwrap().to_string();
    let a = made(
        users
            .get_user(authed(crate::helpers::by_id(1), &token))
            .await
            .unwrap()
            .metadata(),
    );
    let b = made(
        users
            .get_user(authed(crate::helpers::by_id(1), &token))
            .await
            .unwrap()
            .metadata(),
    );
    assert_eq!(a.len(), 32, "a generated id: {a}");
    assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(a, b, "each call gets its own id");

    // Streams carry it in their response headers.
    let sub = Sub::open(&s.channel, &token, start(1)).await.unwrap();
    assert!(sub.headers.get("x-request-id").is_some());
    s.stop().await;
}

/// The real binary's text log written to a pipe (as to a file or a log collector) holds
/// no ANSI escape, and its startup line names both the gRPC and the metrics address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_is_no_terminal_has_no_colour_and_the_startup_line_names_both_addresses() {
    use tokio::io::AsyncBufReadExt;
    let db = TestDb::new(Backend::Sqlite).await;
    let (port, metrics_port) = (free_port(), free_port());
    let metrics = format!("127.0.0.1:{metrics_port}");
    let flags = [
        "--log-level",
        "info",
        "--log-format",
        "text",
        "--metrics-listen",
        &metrics,
    ];
    let (mut child, _ch) = spawn_server_on(port, &db, &flags, Stdio::piped()).await;
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    let startup = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.expect("readable stderr") {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("activity-hub listening") {
                return line;
            }
        }
        panic!("the server's log ended without the startup line:\n{seen}")
    })
    .await
    .expect("the startup line within 20 s");
    assert!(
        !seen.contains("\x1b["),
        "ANSI escapes in a log that is not a terminal:\n{seen:?}"
    );
    for field in [format!("addr=127.0.0.1:{port}"), format!("metrics={metrics}")] {
        assert!(
            startup.contains(&field),
            "the startup line lacks {field}: {startup}"
        );
    }
}

/// The real binary logging JSON at debug level for everything: each RPC's finishing line
/// carries method, peer, request id, user id, code and duration, and neither a password
/// nor a token appears anywhere in the output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_carry_the_rpc_span_and_never_a_secret() {
    let db = TestDb::new(Backend::Sqlite).await;
    let port = free_port();
    let (mut child, ch) = spawn_server_on(
        port,
        &db,
        &["--log-level", "debug", "--log-format", "json"],
        Stdio::piped(),
    )
    .await;
    let mut stderr = child.stderr.take().unwrap();
    let reader = tokio::spawn(async move {
        let mut all = String::new();
        let _ = stderr.read_to_string(&mut all).await;
        all
    });
    let (token, me) = admin(&ch).await;
    let secret_password = "Sekrit-Passw0rd-XYZ";
    let mut users = UserServiceClient::new(ch.clone());
    let created = users
        .create_user(authed(
            CreateUserRequest {
                email: "carol@example.com".into(),
                username: "carol".into(),
                password: secret_password.into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    let login = AuthServiceClient::new(ch.clone())
        .login(LoginRequest {
            identifier: Some(Identifier::Username("carol".into())),
            password: secret_password.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let wrong = AuthServiceClient::new(ch.clone())
        .login(LoginRequest {
            identifier: Some(Identifier::Username("carol".into())),
            password: "Wrong-Guess-Passw0rd".into(),
        })
        .await;
    assert_eq!(wrong.unwrap_err().code(), Code::Unauthenticated);
    let mut req = authed(crate::helpers::by_id(created.id), &login.access_token);
    req.metadata_mut()
        .insert("x-request-id", "trace-me-123".parse().unwrap());
    users.get_user(req).await.unwrap();
    // Bad tokens are not logged either.
    let forged = format!("{}x", login.access_token);
    let bad = users.get_user(authed(crate::helpers::by_id(me), &forged)).await;
    assert_eq!(bad.unwrap_err().code(), Code::Unauthenticated);

    // Nor is the token an EventSource passes as a query parameter, good or forged.
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let path = |t: &str| format!("/v1/users/0/events/stream?accessToken={t}");
    let mut sse = crate::web::client::sse(addr, &path(&login.access_token), &[]).await;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.message().await.unwrap().event.as_deref(), Some("subscribed"));
    drop(sse);
    let refused = crate::web::client::get(addr, &path(&forged), None).await;
    assert_eq!(refused.status, 401);
    let me = crate::web::client::get(addr, "/v1/me", Some(&login.access_token)).await;
    assert_eq!(me.status, 200);

    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    let log = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .unwrap()
        .unwrap();
    assert!(log.lines().count() > 10, "debug logging produced output:\n{log}");

    let line = log
        .lines()
        .find(|l| l.contains("rpc finished") && l.contains("trace-me-123"))
        .unwrap_or_else(|| panic!("no finishing line for the GetUser call in:\n{log}"));
    let v: serde_json::Value = serde_json::from_str(line).expect("JSON log line");
    let span = &v["span"];
    assert_eq!(span["name"], "rpc");
    assert_eq!(span["service"], "user.v1.UserService");
    assert_eq!(span["method"], "GetUser");
    assert_eq!(span["request_id"], "trace-me-123");
    assert_eq!(span["user_id"], created.id);
    assert_eq!(span["grpc_code"], "OK");
    assert!(span["duration_ms"].as_f64().is_some(), "{line}");
    assert!(
        span["peer"].as_str().is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{line}"
    );

    for secret in [
        secret_password,
        "Wrong-Guess-Passw0rd",
        crate::helpers::ADMIN_PASSWORD,
        login.access_token.as_str(),
        token.as_str(),
    ] {
        assert!(!log.contains(secret), "a secret ({secret:.12}...) was logged");
        // Nor the signature part of a token on its own.
        if let Some(sig) = secret.rsplit('.').next().filter(|s| s.len() > 20) {
            assert!(!log.contains(sig), "a token signature was logged");
        }
    }
}

/// With OpenTelemetry on, the RPC span is exported as a server span in the caller's
/// trace (W3C `traceparent`), with the request id and user id as attributes.
#[test]
fn otel_spans_continue_the_callers_trace() {
    use opentelemetry::trace::{SpanId, SpanKind, TraceId};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use tracing_subscriber::layer::SubscriberExt;

    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry().with(activity_hub::telemetry::otel_layer(&provider));
    // One thread runs the server and the client, so the thread-local subscriber sees all.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = tracing::subscriber::set_default(subscriber);

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let me = rt.block_on(async {
        let db = TestDb::new(Backend::Sqlite).await;
        // The endpoint only switches propagation on here: export goes to the test's exporter.
        let s = TestServer::start(&db, &["--otlp-endpoint", "http://127.0.0.1:9"]).await;
        let token = s.admin_token().await;
        let mut req = authed(crate::helpers::by_id(1), &token);
        req.metadata_mut().insert(
            "traceparent",
            format!("00-{trace_id}-{parent_id}-01").parse().unwrap(),
        );
        req.metadata_mut()
            .insert("x-request-id", "otel-call-1".parse().unwrap());
        let me = s.users().get_user(req).await.unwrap().into_inner().id;
        // Without a traceparent the span starts a trace of its own.
        s.users()
            .get_user(authed(crate::helpers::by_id(1), &token))
            .await
            .unwrap();
        s.stop().await;
        me
    });
    // Dropping the runtime ends the connection tasks that still hold span handles.
    drop(rt);
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let get: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "/user.v1.UserService/GetUser")
        .collect();
    assert_eq!(
        get.len(),
        2,
        "one span per GetUser call: {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let child = get
        .iter()
        .find(|s| {
            s.attributes
                .iter()
                .any(|kv| kv.key.as_str() == "request_id" && kv.value.as_str() == "otel-call-1")
        })
        .expect("the span with our request id");
    assert_eq!(
        child.span_context.trace_id(),
        TraceId::from_hex(trace_id).unwrap()
    );
    assert_eq!(child.parent_span_id, SpanId::from_hex(parent_id).unwrap());
    assert_eq!(child.span_kind, SpanKind::Server);
    let attr = |k: &str| {
        child
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == k)
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(attr("user_id").as_deref(), Some(me.to_string().as_str()));
    assert_eq!(attr("grpc_code").as_deref(), Some("OK"));
    let other = get
        .iter()
        .find(|s| s.span_context.span_id() != child.span_context.span_id())
        .unwrap();
    assert_ne!(other.span_context.trace_id(), child.span_context.trace_id());
    // Login spans were exported too (every RPC gets one).
    assert!(spans.iter().any(|s| s.name == "/auth.v1.AuthService/Login"));
}

/// The real binary with `--otlp-endpoint` exports its RPC spans over OTLP/gRPC to a
/// collector (a test double speaking the OTLP trace service), in the caller's trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exports_spans_over_otlp() {
    use opentelemetry_proto::tonic::collector::trace::v1::{
        trace_service_server::{TraceService, TraceServiceServer},
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    struct Collector(tokio::sync::mpsc::UnboundedSender<ExportTraceServiceRequest>);
    #[tonic::async_trait]
    impl TraceService for Collector {
        async fn export(
            &self,
            req: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            let _ = self.0.send(req.into_inner());
            Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
        }
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(tx)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let db = TestDb::new(Backend::Sqlite).await;
    let endpoint = format!("http://{collector}");
    let (mut child, ch) = spawn_server_logging(&db, &["--otlp-endpoint", &endpoint], Stdio::inherit()).await;
    let (token, me) = admin(&ch).await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let parent_id = "b7ad6b7169203331";
    let mut req = authed(crate::helpers::by_id(me), &token);
    req.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent_id}-01").parse().unwrap(),
    );
    UserServiceClient::new(ch.clone()).get_user(req).await.unwrap();
    // SIGTERM: a graceful stop flushes the batch exporter.
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut found = None;
    while let Ok(Some(batch)) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
        for span in batch
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
        {
            if span.name == "/user.v1.UserService/GetUser" {
                found = Some(span.clone());
            }
        }
        if found.is_some() {
            break;
        }
    }
    let span = found.expect("the GetUser span reached the collector");
    assert_eq!(hex(&span.trace_id), trace_id);
    assert_eq!(hex(&span.parent_span_id), parent_id);
    assert!(
        span.attributes.iter().any(|kv| kv.key == "user_id"),
        "attributes: {:?}",
        span.attributes
    );
}
