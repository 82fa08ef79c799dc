//! Assembly and lifecycle: builds the store, auth and services from a [`ServeConfig`],
//! serves them with health and reflection on one listener, and shuts down in order.
//!
//! Shutdown order: signal (or a failed hub actor) -> health NOT_SERVING -> open streams
//! end with UNAVAILABLE and the transport stops accepting and drains -> the hub's actors
//! are stopped and awaited, what they queued committed -> the store is closed; bounded by
//! `--shutdown-grace`.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::{
    server::{ServerTlsConfig, TcpIncoming},
    Certificate, Identity, Server,
};
use tonic_health::ServingStatus;
use tower::util::BoxCloneSyncService;

use crate::{
    api::{
        activity::{convert::PublishLimits, service::ActivityApi},
        auth::AuthApi,
        users::service::{StreamStats, UserApi},
    },
    auth::{session::Sessions, token::Tokens, Auth},
    config::{DurabilityMode, ServeConfig, UserCacheMode},
    hub::{Hub, HubConfig},
    limits::RateLimits,
    model::{Role, Roles},
    proto::{
        activity::v1::activity_service_server::ActivityServiceServer,
        auth::v1::auth_service_server::AuthServiceServer, user::v1::user_service_server::UserServiceServer,
    },
    rpc::{MethodTable, RpcLayer, RpcOptions},
    store::{Backend, Durability, Store, StoreError, StoreOptions, WriteHealth},
    users::{cache::UserCache, password::PasswordHasher, CreateUser, Users},
    web::{grpc::TonicService, Readiness},
};

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A configuration value is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The store could not be opened or migrated.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The hub's actors could not start.
    #[error("hub: {0}")]
    Hub(String),
    /// Bootstrapping the first admin failed.
    #[error("bootstrap admin: {0}")]
    Bootstrap(String),
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The HTTP surface could not be built from the protos' rules.
    #[error("http surface: {0}")]
    Http(String),
    /// Reflection descriptors could not be loaded.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The compiled descriptors could not be read for the RPC table.
    #[error("descriptors: {0}")]
    Descriptors(#[from] prost::DecodeError),
    /// A TLS file could not be read or used; the message names the flag.
    #[error("{0}")]
    Tls(String),
}

/// Everything a running server is made of; built before serving so tests can reach in.
pub struct App {
    /// The configuration it was built from.
    pub config: ServeConfig,
    /// The store.
    pub store: Store,
    /// The user directory.
    pub users: Users,
    /// The authenticator.
    pub auth: Auth,
    /// The user cache, when enabled.
    pub user_cache: Option<Arc<UserCache>>,
    user_api: UserApi,
    activity_api: ActivityApi,
    /// The activity hub.
    pub hub: Hub,
    /// Cancelled at shutdown: ends open streams with UNAVAILABLE.
    pub streams_shutdown: CancellationToken,
}

impl App {
    /// Opens and migrates the store, loads or creates the token secret, bootstraps the
    /// first admin when asked.
    pub async fn build(config: ServeConfig) -> Result<App, ServerError> {
        config.validate()?;
        crate::memory::give_back_freed_memory();
        crate::hub::metrics::register();
        let store = Store::connect(&StoreOptions {
            url: config.database_url.clone(),
            max_connections: config.db_max_connections,
            acquire_timeout: config.db_acquire_timeout,
            cache_kib: config.db_cache_mib.saturating_mul(1024),
            durability: match config.durability {
                DurabilityMode::PowerLoss => Durability::PowerLoss,
                DurabilityMode::ProcessCrash => Durability::ProcessCrash,
            },
        })
        .await?;
        let durability = store.durability().await?;
        tracing::info!(backend = ?store.backend(), ?durability, "store open");
        if config.durability == DurabilityMode::PowerLoss && durability != Durability::PowerLoss {
            tracing::warn!("the store does not fsync every commit (PostgreSQL's synchronous_commit is off): a power loss can lose answered publishes");
        }
        let secret = match &config.auth_secret {
            Some(s) => s.clone(),
            None => {
                let fresh: [u8; 32] = rand::random();
                let hex: String = fresh.iter().map(|b| format!("{b:02x}")).collect();
                store.setting_or_insert("auth_secret", &hex).await?
            }
        };
        let cache_on = match config.user_cache {
            UserCacheMode::On => true,
            UserCacheMode::Off => false,
            UserCacheMode::Auto => store.backend() == Backend::Sqlite,
        };
        let user_cache = cache_on.then(|| Arc::new(UserCache::new(config.user_cache_capacity)));
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let hasher = PasswordHasher::new(
            config.password_hash_memory_kib,
            config.password_hash_iterations,
            cores,
        )
        .map_err(|e| crate::config::ConfigError {
            flag: "--password-hash-memory-kib",
            reason: e,
        })?;
        let tokens = Arc::new(Tokens::new(secret.as_bytes(), config.token_ttl));
        let streams_shutdown = CancellationToken::new();
        let limits = RateLimits::new(
            config.user_rate_limit,
            config.user_rate_burst,
            config.login_rate_limit,
            config.login_rate_burst,
        );
        limits.spawn_sweeper(streams_shutdown.clone());
        let hub = Hub::start(
            store.clone(),
            HubConfig {
                default_window: config.default_window,
                heartbeat_interval: config.heartbeat_interval,
                publish_batch_max: config.publish_batch_max,
                retention_max_age: config.retention_max_age,
                retention_max_events: config.retention_max_events,
                retention_interval: config.retention_interval,
                idempotency_window: config.idempotency_window,
                inbox_merge_interval: config.inbox_merge_interval,
                cluster_bus: config.cluster_bus.clone(),
            },
            streams_shutdown.clone(),
        )
        .await
        .map_err(|e| ServerError::Hub(e.to_string()))?;
        // The hub's UserActivity watchers hear about every user write.
        let users = Users::new(store.clone(), user_cache.clone(), hasher, Arc::new(hub.clone()));
        let sessions = Arc::new(Sessions::new(store.clone(), config.refresh_token_ttl));
        // Revocations travel over the cluster bus both ways.
        hub.on_sessions_revoked(sessions.wake_handle());
        let announcer = hub.clone();
        sessions.on_revocation(Box::new(move || announcer.sessions_revoked()));
        sessions.spawn_poller(streams_shutdown.clone());
        let auth = Auth::new(tokens, sessions, users.clone(), limits);
        let activity_api = ActivityApi::new(
            hub.clone(),
            auth.clone(),
            users.clone(),
            PublishLimits {
                max_payload_bytes: config.max_payload_bytes,
                max_recipients: config.max_recipients,
            },
        );
        let user_api = UserApi::new(
            users.clone(),
            auth.clone(),
            hub.clone(),
            config.open_signup,
            streams_shutdown.clone(),
        );
        let app = App {
            config,
            store,
            users,
            auth,
            user_cache,
            user_api,
            activity_api,
            hub,
            streams_shutdown,
        };
        app.bootstrap_admin().await?;
        Ok(app)
    }

    async fn bootstrap_admin(&self) -> Result<(), ServerError> {
        let has_admin = self
            .users
            .has_admin()
            .await
            .map_err(|e| ServerError::Bootstrap(e.to_string()))?;
        match (
            &self.config.bootstrap_admin_email,
            &self.config.bootstrap_admin_password,
        ) {
            (Some(email), Some(password)) if !has_admin => {
                let created = self
                    .users
                    .create(CreateUser {
                        email: email.clone(),
                        username: "admin".into(),
                        password: password.clone(),
                        first_name: String::new(),
                        last_name: String::new(),
                        roles: Roles::only(Role::Admin),
                    })
                    .await;
                match created {
                    Ok(admin) => {
                        tracing::info!(user_id = admin.id, email = %admin.email, "created the bootstrap admin (username `admin`)")
                    }
                    // Servers of one deployment starting together race to create it.
                    Err(e) if self.users.has_admin().await.unwrap_or(false) => {
                        tracing::info!(reason = %e, "another server created the bootstrap admin")
                    }
                    Err(e) => return Err(ServerError::Bootstrap(e.to_string())),
                }
            }
            (_, _) if !has_admin => tracing::warn!(
                "the store has no admin: restart with --bootstrap-admin-email and \
                 --bootstrap-admin-password (or HUB_BOOTSTRAP_ADMIN_*) to create one"
            ),
            _ => {}
        }
        Ok(())
    }

    /// StreamUsers counters.
    pub fn stream_stats(&self) -> Arc<StreamStats> {
        self.user_api.stats()
    }
}

/// Builds the app from `config` and serves it on `listener` until `shutdown` resolves.
pub async fn run(
    config: ServeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let app = App::build(config).await?;
    serve(app, listener, shutdown).await
}

/// Serves a built app until `shutdown` resolves, then shuts down gracefully.
pub async fn serve(
    app: App,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let health = Arc::new(Health {
        reporter,
        state: tokio::sync::Mutex::default(),
        readiness: Readiness::default(),
    });
    health.set(ServingStatus::Serving).await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let addr = listener.local_addr().ok();
    let streams = app.streams_shutdown.clone();
    let stopping = CancellationToken::new();
    let watchdog = tokio::spawn(store_watchdog(
        app.store.clone(),
        health.clone(),
        stopping.clone(),
    ));
    let hub_failed = app.hub.failed();
    let signal = {
        let stopping = stopping.clone();
        let health = health.clone();
        let hub_failed = hub_failed.clone();
        async move {
            // A failed hub actor (logged by the hub's supervisor) cannot be served around.
            tokio::select! {
                _ = shutdown => {}
                _ = hub_failed.cancelled() => {}
            }
            tracing::info!("shutting down: health NOT_SERVING, ending open streams, draining calls");
            health.stop().await;
            streams.cancel();
            stopping.cancel();
        }
    };
    let c = &app.config;
    let table = MethodTable::from_descriptor_sets(&[
        crate::proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ])?;
    let rpc = RpcLayer::new(
        table,
        RpcOptions {
            max_concurrent_unary: c.max_concurrent_unary,
            unary_timeout: (!c.unary_timeout.is_zero()).then_some(c.unary_timeout),
            max_decode_message_bytes: c.max_decode_message_bytes,
            max_encode_message_bytes: c.max_encode_message_bytes,
            propagate_trace_context: c.otlp_endpoint.is_some(),
        },
    );
    let keepalive = (!c.http2_keepalive_interval.is_zero()).then_some(c.http2_keepalive_interval);
    let mut builder = Server::builder();
    if let Some(tls) = tls_config(c)? {
        builder = builder
            .tls_config(tls)
            .map_err(|e| ServerError::Tls(format!("--tls-cert/--tls-key: {e}")))?;
    }
    let (dec, enc) = (c.max_decode_message_bytes, c.max_encode_message_bytes);
    // Each gRPC service behind the RPC layer; the HTTP surface wraps each in gRPC-Web and
    // calls the application services in process for REST and SSE.
    let user = grpc(
        &rpc,
        UserServiceServer::new(app.user_api.clone())
            .max_decoding_message_size(dec)
            .max_encoding_message_size(enc),
    );
    let activity = grpc(
        &rpc,
        ActivityServiceServer::new(app.activity_api.clone())
            .max_decoding_message_size(dec)
            .max_encoding_message_size(enc),
    );
    let auth = grpc(
        &rpc,
        AuthServiceServer::new(AuthApi::new(app.users.clone(), app.auth.clone()))
            .max_decoding_message_size(dec)
            .max_encoding_message_size(enc),
    );
    let internal = crate::web::grpc::internal(vec![
        (USER_SERVICE, user.clone()),
        (ACTIVITY_SERVICE, activity.clone()),
        (AUTH_SERVICE, auth.clone()),
    ]);
    let cors: Vec<http::HeaderValue> = c
        .cors_allow_origin
        .iter()
        .filter_map(|o| http::HeaderValue::from_str(o).ok())
        .collect();
    let surface = crate::web::router(
        vec![
            (HEALTH_SERVICE, grpc(&rpc, health_service)),
            (REFLECTION_V1, grpc(&rpc, reflection_v1)),
            (REFLECTION_V1ALPHA, grpc(&rpc, reflection_v1alpha)),
            (USER_SERVICE, user),
            (ACTIVITY_SERVICE, activity),
            (AUTH_SERVICE, auth),
        ],
        internal,
        health.readiness.clone(),
        &cors,
    )
    .map_err(|e| ServerError::Http(e.to_string()))?;
    let router = builder
        .tcp_nodelay(true)
        .accept_http1(true)
        .max_concurrent_streams(Some(c.max_streams_per_connection))
        .http2_max_pending_accept_reset_streams(Some(c.http2_max_pending_resets))
        .http2_max_header_list_size(Some(c.http2_max_header_list_bytes))
        .http2_keepalive_interval(keepalive)
        .http2_keepalive_timeout(Some(c.http2_keepalive_timeout))
        .add_routes(tonic::service::Routes::from(surface));
    if let Some(addr) = addr {
        tracing::info!(
            %addr,
            node = %app.config.node(),
            metrics = %app.config.metrics_listen,
            database = %redact(&app.config.database_url),
            tls = app.config.tls_cert.is_some(),
            "activity-hub listening"
        );
    }
    let grace = app.config.shutdown_grace;
    // TcpIncoming (not a bare listener stream) so accepted sockets get TCP_NODELAY: without
    // it Nagle's algorithm and delayed ACKs cost unary calls about 3x in throughput.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let serving = router.serve_with_incoming_shutdown(incoming, signal);
    let _watchdog = AbortOnDrop(watchdog);
    let result = tokio::select! {
        r = serving => r.map_err(ServerError::from),
        _ = async { stopping.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(?grace, "grace period over; closing remaining calls");
            Ok(())
        }
    };
    // Streams have ended; stop and await the hub's actors, committing what is queued
    // (acks included), before closing the store.
    app.hub.shutdown(Duration::from_secs(2)).await;
    app.store.close().await;
    tracing::info!("stopped");
    if hub_failed.is_cancelled() {
        return Err(ServerError::Hub(
            "a hub actor failed (see the log); stopped".into(),
        ));
    }
    result
}

const USER_SERVICE: &str = "user.v1.UserService";
const ACTIVITY_SERVICE: &str = "activity.v1.ActivityService";
const AUTH_SERVICE: &str = "auth.v1.AuthService";
const HEALTH_SERVICE: &str = "grpc.health.v1.Health";
const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

/// A gRPC service behind the RPC layer, boxed for the router.
fn grpc<S>(rpc: &RpcLayer, svc: S) -> TonicService
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    use tower::{Layer, ServiceExt};
    BoxCloneSyncService::new(
        rpc.layer(svc)
            .map_response(|r: http::Response<crate::rpc::RpcBody>| r.map(tonic::body::Body::new)),
    )
}

/// TLS settings from `--tls-cert`, `--tls-key` and `--tls-client-ca`; errors name the flag.
fn tls_config(c: &ServeConfig) -> Result<Option<ServerTlsConfig>, ServerError> {
    let (Some(cert), Some(key)) = (&c.tls_cert, &c.tls_key) else {
        return Ok(None);
    };
    let read = |flag: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| ServerError::Tls(format!("{flag} {}: {e}", path.display())))
    };
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(
        read("--tls-cert", cert)?,
        read("--tls-key", key)?,
    ));
    if let Some(ca) = &c.tls_client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read("--tls-client-ca", ca)?));
    }
    Ok(Some(tls))
}

/// The URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..s + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// The health service's statuses: SERVING while the server runs and its store can write,
/// NOT_SERVING while store writes fail and from the start of shutdown on (for good).
struct Health {
    reporter: tonic_health::server::HealthReporter,
    /// What was last reported (the watchdog re-asserts it every second: only a change is
    /// sent, so `Health/Watch` clients see transitions, not repeats), and whether shutdown
    /// began; guarded together so the watchdog can never mark a stopping server SERVING.
    state: tokio::sync::Mutex<HealthState>,
    /// What `/readyz` answers: SERVING or not.
    readiness: Readiness,
}

#[derive(Default)]
struct HealthState {
    stopping: bool,
    reported: Option<ServingStatus>,
}

impl Health {
    const NAMES: [&'static str; 4] = [
        "",
        "user.v1.UserService",
        "auth.v1.AuthService",
        "activity.v1.ActivityService",
    ];

    async fn set(&self, status: ServingStatus) {
        let mut state = self.state.lock().await;
        if !state.stopping && state.reported != Some(status) {
            state.reported = Some(status);
            self.readiness.set(status == ServingStatus::Serving);
            for name in Self::NAMES {
                self.reporter.set_service_status(name, status).await;
            }
        }
    }

    async fn stop(&self) {
        let mut state = self.state.lock().await;
        state.stopping = true;
        self.readiness.set(false);
        for name in Self::NAMES {
            self.reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
    }
}

/// How often the watchdog checks that a healthy store is still reachable.
const PING_INTERVAL: Duration = Duration::from_secs(1);

/// How often the watchdog tries a write while the store's writes fail.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// Follows whether the store can write: NOT_SERVING as soon as a write fails for lack of
/// space or connection (or a ping every [`PING_INTERVAL`] finds it unreachable), and,
/// while it does, a probe write every [`PROBE_INTERVAL`], so
/// the server turns SERVING again by itself within about a second of the cause going
/// away, traffic or not.
async fn store_watchdog(store: Store, health: Arc<Health>, stopping: CancellationToken) {
    let mut writes = store.write_health();
    loop {
        let now = *writes.borrow_and_update();
        if now == WriteHealth::Ok {
            health.set(ServingStatus::Serving).await;
            tokio::select! {
                _ = stopping.cancelled() => return,
                changed = writes.changed() => if changed.is_err() { return },
                // A store that went away is noticed even while nothing writes.
                _ = tokio::time::sleep(PING_INTERVAL) => {
                    if let Err(e) = store.ping().await {
                        tracing::debug!(error = %e, "store ping failed");
                    }
                }
            }
        } else {
            tracing::warn!(store = ?now, "store writes fail: health NOT_SERVING until a write succeeds");
            health.set(ServingStatus::NotServing).await;
            loop {
                tokio::select! {
                    _ = stopping.cancelled() => return,
                    _ = tokio::time::sleep(PROBE_INTERVAL) => {}
                }
                match store.probe().await {
                    Ok(()) => {
                        tracing::info!("store writes work again: health SERVING");
                        break;
                    }
                    Err(e) => tracing::debug!(error = %e, "store write probe failed"),
                }
                if *writes.borrow() == WriteHealth::Ok {
                    break;
                }
            }
        }
    }
}

/// Aborts a background task when the server's serve call ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_passwords_are_not_logged() {
        assert_eq!(
            super::redact("postgres://hub:s3cret@db/hub"),
            "postgres://hub:***@db/hub"
        );
        assert_eq!(
            super::redact("sqlite://activity-hub.db"),
            "sqlite://activity-hub.db"
        );
    }
}
