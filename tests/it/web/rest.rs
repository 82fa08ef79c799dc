//! REST/JSON: every route of the spec's table answers the canonical proto3 JSON of its
//! RPC, and errors answer the HTTP status of their gRPC code with a google.rpc.Status
//! body naming the bad field.

use http::Method;
use serde_json::{json, Value};

use super::client::{delete, get, post, send_json};
use crate::{
    activity::dsl::Server,
    dual,
    helpers::{Backend, ADMIN_EMAIL, ADMIN_PASSWORD, PASSWORD},
};

/// Logs in over REST; the whole LoginResponse JSON.
async fn login(s: &Server, email: &str, password: &str) -> Value {
    let r = post(
        s.addr,
        "/v1/auth/login",
        None,
        &json!({"email": email, "password": password}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    r.json()
}

dual!(accounts_and_sessions_over_rest, events_cursors_and_acks_over_rest);

async fn accounts_and_sessions_over_rest(b: Backend) {
    let s = Server::start(b).await;
    let session = login(&s, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let admin = session["accessToken"].as_str().unwrap().to_string();
    assert!(session["refreshToken"].as_str().unwrap().starts_with("ahr_"));
    // Timestamps are RFC 3339, 64-bit integers strings, enums names.
    assert!(session["expiresAt"].as_str().unwrap().ends_with('Z'), "{session}");
    assert!(session["user"]["id"].is_string(), "{session}");
    assert_eq!(session["user"]["roles"], json!(["USER_ROLE_ADMIN"]));

    let me = get(s.addr, "/v1/me", Some(&admin)).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["email"], ADMIN_EMAIL);

    let created = post(
        s.addr,
        "/v1/users",
        Some(&admin),
        &json!({"email": "ann@example.com", "username": "ann", "password": PASSWORD, "firstName": "Ann"}),
    )
    .await;
    assert_eq!(created.status, 200, "{created:?}");
    let ann = created.json();
    let id = ann["id"].as_str().expect("ids are strings").to_string();
    assert_eq!(ann["firstName"], "Ann");
    assert_eq!(ann["status"], "USER_STATUS_ACTIVE");

    let got = get(s.addr, &format!("/v1/users/{id}"), Some(&admin)).await;
    assert_eq!(got.json()["username"], "ann");

    let patched = send_json(
        s.addr,
        Method::PATCH,
        &format!("/v1/users/{id}"),
        Some(&admin),
        &json!({"lastName": "Lee", "preferences": {"theme": "dark"}}),
    )
    .await;
    assert_eq!(patched.status, 200, "{patched:?}");
    assert_eq!(patched.json()["lastName"], "Lee");
    assert_eq!(patched.json()["preferences"]["theme"], "dark");
    assert_eq!(patched.json()["firstName"], "Ann", "absent fields are left alone");

    let page = get(s.addr, "/v1/users?limit=1&search=ann", Some(&admin)).await;
    assert_eq!(page.status, 200, "{page:?}");
    let page = page.json();
    assert_eq!(page["users"].as_array().unwrap().len(), 1);
    assert_eq!(page["users"][0]["id"], id.as_str());
    assert_eq!(page["total"], 1);
    assert_eq!(page["hasMore"], false, "defaults are written out");
    let active = get(s.addr, "/v1/users?status=USER_STATUS_SUSPENDED", Some(&admin)).await;
    assert_eq!(active.json()["users"], json!([]));

    // Ann's own session: refresh rotates it, logout ends it.
    let ann_session = login(&s, "ann@example.com", PASSWORD).await;
    let refreshed = post(
        s.addr,
        "/v1/auth/refresh",
        None,
        &json!({"refreshToken": ann_session["refreshToken"]}),
    )
    .await;
    assert_eq!(refreshed.status, 200, "{refreshed:?}");
    let ann_token = refreshed.json()["accessToken"].as_str().unwrap().to_string();
    let out = post(s.addr, "/v1/auth/logout", Some(&ann_token), &json!({})).await;
    assert_eq!(out.status, 200, "{out:?}");
    assert_eq!(out.json(), json!({}));
    get(s.addr, "/v1/me", Some(&ann_token))
        .await
        .assert_error(401, 16, "");

    let gone = delete(s.addr, &format!("/v1/users/{id}"), Some(&admin)).await;
    assert_eq!(gone.status, 200, "{gone:?}");
    get(s.addr, &format!("/v1/users/{id}"), Some(&admin))
        .await
        .assert_error(404, 5, "not found");
}

async fn events_cursors_and_acks_over_rest(b: Backend) {
    let s = Server::start(b).await;
    let (publisher, alice, alice_token) = s.cast().await;
    for i in 0..3 {
        let r = post(
            s.addr,
            "/v1/events",
            Some(&publisher),
            &json!({"recipientIds": [alice.id.to_string()], "type": if i == 1 { "b" } else { "a" },
                    "payload": "aGk=", "contentType": "text/plain"}),
        )
        .await;
        assert_eq!(r.status, 200, "{r:?}");
        let j = r.json();
        assert_eq!(j["deliveries"][0]["seq"], (i + 1).to_string(), "{j}");
        assert_eq!(j["duplicate"], false);
    }
    let page = get(
        s.addr,
        "/v1/users/0/events?afterSeq=1&types=a&types=b&limit=10",
        Some(&alice_token),
    )
    .await;
    assert_eq!(page.status, 200, "{page:?}");
    let page = page.json();
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{page}");
    assert_eq!(events[0]["seq"], "2");
    assert_eq!(events[0]["type"], "b");
    assert_eq!(events[0]["payload"], "aGk=", "bytes are base64");
    assert_eq!(page["headSeq"], "3");

    let path = format!("/v1/users/{}/cursors/phone", alice.id);
    assert_eq!(
        get(s.addr, &path, Some(&alice_token)).await.json()["ackedSeq"],
        "0"
    );
    let acked = post(
        s.addr,
        &format!("{path}/ack"),
        Some(&alice_token),
        &json!({"seq": "2"}),
    )
    .await;
    assert_eq!(acked.status, 200, "{acked:?}");
    assert_eq!(acked.json()["ackedSeq"], "2");
    assert_eq!(acked.json()["headSeq"], "3");
    // Forward-only and committed: an older ack changes nothing, the cursor reads back.
    let older = post(
        s.addr,
        &format!("{path}/ack"),
        Some(&alice_token),
        &json!({"seq": 1}),
    )
    .await;
    assert_eq!(older.json()["ackedSeq"], "2");
    assert_eq!(
        get(s.addr, &path, Some(&alice_token)).await.json()["ackedSeq"],
        "2"
    );
    post(
        s.addr,
        &format!("{path}/ack"),
        Some(&alice_token),
        &json!({"seq": "9"}),
    )
    .await
    .assert_error(400, 3, "seq: 9 is above");
    // Somebody else's stream.
    let (_, bob_token) = s.user_with_token("bob", &[]).await;
    get(s.addr, &path, Some(&bob_token))
        .await
        .assert_error(403, 7, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_answer_the_status_of_their_code_naming_the_field() {
    let s = Server::start_with(
        Backend::Sqlite,
        &["--login-rate-limit", "1", "--login-rate-burst", "2"],
    )
    .await;
    let admin = s.admin_token().await;
    // 401 without credentials; 403 for a plain user's admin call.
    get(s.addr, "/v1/me", None).await.assert_error(401, 16, "");
    let (_, alice) = s.user_with_token("alice", &[]).await;
    get(s.addr, "/v1/users", Some(&alice))
        .await
        .assert_error(403, 7, "");
    // 404 for an unknown path, 405 with Allow for a wrong method.
    get(s.addr, "/v1/nowhere", None)
        .await
        .assert_error(404, 5, "no route GET /v1/nowhere");
    let wrong = send_json(s.addr, Method::PUT, "/v1/users/1", Some(&admin), &json!({})).await;
    wrong.assert_error(405, 12, "PUT is not allowed");
    let allow = wrong.header("allow").unwrap();
    for m in ["GET", "PATCH", "DELETE"] {
        assert!(allow.contains(m), "{allow}");
    }
    // 400 naming the field: malformed JSON, unknown fields, bad values, bad parameters.
    let bad = super::client::call(
        s.addr,
        super::client::request(Method::POST, "/v1/users", Some(&admin), &[], "{\"email\":".into()),
    )
    .await;
    bad.assert_error(400, 3, "body: malformed JSON");
    post(
        s.addr,
        "/v1/users",
        Some(&admin),
        &json!({"email": "x@y.z", "nickname": "x"}),
    )
    .await
    .assert_error(400, 3, "nickname");
    post(
        s.addr,
        "/v1/users",
        Some(&admin),
        &json!({"email": "x@y.z", "roles": ["USER_ROLE_KING"]}),
    )
    .await
    .assert_error(400, 3, "roles");
    post(
        s.addr,
        "/v1/users",
        Some(&admin),
        &json!({"email": "nope", "username": "xyz", "password": PASSWORD}),
    )
    .await
    .assert_error(400, 3, "email");
    get(s.addr, "/v1/users?limit=5000", Some(&admin))
        .await
        .assert_error(400, 3, "limit");
    get(s.addr, "/v1/users?limit=many", Some(&admin))
        .await
        .assert_error(400, 3, "limit");
    get(s.addr, "/v1/users?color=red", Some(&admin))
        .await
        .assert_error(400, 3, "color");
    get(s.addr, "/v1/users/abc", Some(&admin))
        .await
        .assert_error(400, 3, "userId");
    // 409 for a taken email.
    post(
        s.addr,
        "/v1/users",
        Some(&admin),
        &json!({"email": "alice@example.com", "username": "alice2", "password": PASSWORD}),
    )
    .await
    .assert_error(409, 6, "");
    // 429 with Retry-After once the login limit is spent.
    let wrong_password = json!({"email": "alice@example.com", "password": "wrong-password"});
    let first = post(s.addr, "/v1/auth/login", None, &wrong_password).await;
    first.assert_error(401, 16, "");
    let limited = post(s.addr, "/v1/auth/login", None, &wrong_password).await;
    limited.assert_error(429, 8, "rate limited");
    let secs: u64 = limited
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(secs >= 1, "{secs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_openapi_and_plain_http_share_the_grpc_port() {
    let s = Server::start(Backend::Sqlite).await;
    let h = get(s.addr, "/healthz", None).await;
    assert_eq!(h.status, 200);
    let r = get(s.addr, "/readyz", None).await;
    assert_eq!(r.status, 200, "{r:?}");
    // The console is a page, not a gRPC-Web 400.
    let page = get(s.addr, "/", None).await;
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").unwrap().starts_with("text/html"));

    let doc = get(s.addr, "/v1/openapi.json", None).await;
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    assert_eq!(doc["openapi"], "3.0.3");
    for (path, method) in [
        ("/v1/auth/login", "post"),
        ("/v1/auth/refresh", "post"),
        ("/v1/auth/logout", "post"),
        ("/v1/me", "get"),
        ("/v1/users", "post"),
        ("/v1/users", "get"),
        ("/v1/users/{userId}", "get"),
        ("/v1/users/{userId}", "patch"),
        ("/v1/users/{userId}", "delete"),
        ("/v1/events", "post"),
        ("/v1/users/{userId}/events", "get"),
        ("/v1/users/{userId}/cursors/{consumerId}", "get"),
        ("/v1/users/{userId}/cursors/{consumerId}/ack", "post"),
        ("/v1/users/{userId}/events/stream", "get"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} missing");
    }
    validate_openapi(&doc).await;
    // gRPC still works on the same port.
    let me = s
        .auth()
        .who_am_i(crate::helpers::authed((), &s.admin_token().await))
        .await
        .expect("gRPC WhoAmI");
    assert_eq!(me.into_inner().email, ADMIN_EMAIL);
}

/// Validates the document with an OpenAPI validator written apart from the hub
/// (`openapi-spec-validator`, from PyPI; `.ci/run` installs it).
async fn validate_openapi(doc: &Value) {
    let check = std::process::Command::new("python3")
        .args(["-c", "import openapi_spec_validator"])
        .output();
    if !check.is_ok_and(|o| o.status.success()) {
        crate::helpers::skip_without_tool(
            "web::rest::health_openapi_and_plain_http_share_the_grpc_port (OpenAPI validation)",
            "python3 -m openapi_spec_validator",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let out = tokio::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "openapi-spec-validator refused the document:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
