//! TLS and mutual TLS with certificates made at test time (rcgen): a TLS client works, a
//! plaintext client fails, and with --tls-client-ca a client without a certificate (or
//! with one from another CA) is refused.

use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

use crate::helpers::{Backend, TestDb, TestServer};

struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    client: Identity,
    stranger: Identity,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(names: &[&str], issuer: &CertifiedIssuer<'static, KeyPair>) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = p.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let root = ca("activity-hub test CA");
    let (cert, key) = leaf(&["localhost", "127.0.0.1"], &root);
    std::fs::write(dir.path().join("server.pem"), cert).unwrap();
    std::fs::write(dir.path().join("server.key"), key).unwrap();
    std::fs::write(dir.path().join("ca.pem"), root.pem()).unwrap();
    let (c, k) = leaf(&["client"], &root);
    std::fs::write(dir.path().join("client.pem"), &c).unwrap();
    std::fs::write(dir.path().join("client.key"), &k).unwrap();
    let other = ca("some other CA");
    let (sc, sk) = leaf(&["stranger"], &other);
    Pki {
        ca_pem: root.pem(),
        dir,
        client: Identity::from_pem(c, k),
        stranger: Identity::from_pem(sc, sk),
    }
}

impl Pki {
    fn path(&self, f: &str) -> String {
        self.dir.path().join(f).display().to_string()
    }

    /// A server with the test certificate; with `mtls`, client certificates required.
    async fn server(&self, db: &TestDb, mtls: bool) -> TestServer {
        let (cert, key, ca) = (
            self.path("server.pem"),
            self.path("server.key"),
            self.path("ca.pem"),
        );
        let mut args = vec!["--tls-cert", &cert, "--tls-key", &key];
        if mtls {
            args.extend(["--tls-client-ca", &ca]);
        }
        TestServer::start(db, &args).await
    }

    /// Trusts the test CA for `localhost`, presenting `id` when given.
    fn client_tls(&self, id: Option<&Identity>) -> ClientTlsConfig {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .domain_name("localhost");
        match id {
            Some(id) => tls.identity(id.clone()),
            None => tls,
        }
    }
}

async fn check(ch: Result<Channel, tonic::transport::Error>) -> Result<(), String> {
    let ch = ch.map_err(|e| format!("connect: {e:?}"))?;
    tokio::time::timeout(
        Duration::from_secs(10),
        HealthClient::new(ch).check(HealthCheckRequest::default()),
    )
    .await
    .map_err(|_| "timed out".to_string())?
    .map(|_| ())
    .map_err(|s| format!("{s:?}"))
}

async fn tls_channel(
    s: &TestServer,
    pki: &Pki,
    id: Option<&Identity>,
) -> Result<Channel, tonic::transport::Error> {
    Channel::from_shared(format!("https://{}", s.addr))
        .unwrap()
        .tls_config(pki.client_tls(id))?
        .connect()
        .await
}

async fn plaintext_channel(s: &TestServer) -> Result<Channel, tonic::transport::Error> {
    Channel::from_shared(format!("http://{}", s.addr))
        .unwrap()
        .connect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_tls_clients_and_refuses_plaintext() {
    let pki = pki();
    let db = TestDb::new(Backend::Sqlite).await;
    let s = pki.server(&db, false).await;
    check(tls_channel(&s, &pki, None).await)
        .await
        .expect("a TLS client is served");
    assert!(
        check(plaintext_channel(&s).await).await.is_err(),
        "plaintext must fail"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_requires_a_client_certificate_from_the_ca() {
    let pki = pki();
    let db = TestDb::new(Backend::Sqlite).await;
    let s = pki.server(&db, true).await;
    check(tls_channel(&s, &pki, Some(&pki.client)).await)
        .await
        .expect("a client with a certificate from the CA is served");
    assert!(
        check(tls_channel(&s, &pki, None).await).await.is_err(),
        "no client certificate must fail"
    );
    assert!(
        check(tls_channel(&s, &pki, Some(&pki.stranger)).await)
            .await
            .is_err(),
        "a certificate from another CA must fail"
    );
    assert!(
        check(plaintext_channel(&s).await).await.is_err(),
        "plaintext must fail"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_tls_files_are_named_at_startup() {
    let db = TestDb::new(Backend::Sqlite).await;
    let config = activity_hub::config::ServeConfig::from_args(crate::helpers::args_with(
        &db,
        &[
            "--tls-cert",
            "/nonexistent/cert.pem",
            "--tls-key",
            "/nonexistent/key.pem",
        ],
    ))
    .unwrap();
    let app = activity_hub::server::App::build(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = activity_hub::server::serve(app, listener, std::future::pending())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("--tls-cert /nonexistent/cert.pem"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_speaks_mtls() {
    use activity_hub_client::{Client, ClientConfig};
    let pki = pki();
    let db = TestDb::new(Backend::Sqlite).await;
    let s = pki.server(&db, true).await;
    let mut cfg = ClientConfig::new([format!("https://{}", s.addr)]);
    cfg.tls = Some(pki.client_tls(Some(&pki.client)));
    let client = Client::connect(cfg).await.unwrap();
    let token = client
        .login(crate::helpers::ADMIN_EMAIL, crate::helpers::ADMIN_PASSWORD)
        .await
        .expect("login over mTLS");
    client.set_token(Some(token));
    assert_eq!(client.get_user(1).await.unwrap().id, 1);
    s.stop().await;
}

/// The command line against an mTLS server: `--ca` with `--cert`/`--key` gets through
/// (a bare `HOST:PORT` becomes https when TLS flags are given); without a client
/// certificate it cannot, and says the server is unreachable (exit 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_presents_a_client_certificate() {
    let pki = pki();
    let db = TestDb::new(Backend::Sqlite).await;
    let s = pki.server(&db, true).await;
    let server = format!("localhost:{}", s.addr.port());
    let run = |extra: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_activity-hub"));
        c.args(["health", "--server", &server, "--ca", &pki.path("ca.pem")])
            .args(extra)
            .env("XDG_CONFIG_HOME", pki.dir.path());
        c.output().expect("the binary runs")
    };
    let (cert, key) = (pki.path("client.pem"), pki.path("client.key"));
    let ok = tokio::task::block_in_place(|| run(&["--cert", &cert, "--key", &key]));
    assert!(
        ok.status.success() && String::from_utf8_lossy(&ok.stdout).contains("SERVING"),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let refused = tokio::task::block_in_place(|| run(&[]));
    assert_eq!(refused.status.code(), Some(5));
    let half = tokio::task::block_in_place(|| run(&["--cert", &cert]));
    assert_eq!(half.status.code(), Some(2), "--cert needs --key");
    s.stop().await;
}
