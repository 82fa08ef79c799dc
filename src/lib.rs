//! activity-hub: an actor-based real-time activity hub and the user accounts behind it.
//!
//! Modules, and how a call flows through them:
//!
//! - [`config`]: the typed configuration (clap, environment fallbacks).
//! - [`server`]: builds the pieces below from a config and serves them on one port with
//!   gRPC health and reflection; owns graceful shutdown.
//! - [`users`]: `user.v1.UserService`. The service module translates the wire, asks
//!   [`auth::policy`] whether the caller may, and calls [`users::Users`], which validates,
//!   hashes and writes through the [`store`] while keeping a read cache coherent.
//! - [`auth`]: bearer-token authentication ([`auth::Auth`]), the authorization table
//!   ([`auth::policy`]), Argon2id passwords, JWT tokens and `auth.v1.AuthService/Login`.
//! - [`hub`]: the actors of the activity hub: persistence (group commit), registry
//!   (routing), one subscription actor per stream, watchers for UserActivity.
//! - [`activity`]: `activity.v1.ActivityService`, the wire edge of the hub.
//! - [`store`]: the one interface to SQLite or PostgreSQL: pool, migrations, queries and
//!   error classification.
//! - [`lifecycle`]: how response streams end (UNAVAILABLE) when shutdown begins.
//! - [`rpc`]: the tower layer every call passes: request ids, one tracing span per RPC,
//!   `grpc_server_*` metrics, deadlines, unary load shedding.
//! - [`limits`]: rate limits per user and per Login peer + identifier.
//! - [`memory`]: glibc allocator settings so freed memory goes back to the system.
//! - [`telemetry`]: log formats and the optional OpenTelemetry (OTLP) export.
//! - [`error`]: [`error::ApiError`] and the one place it becomes a `tonic::Status`.
//! - [`proto`]: the wire types of `activity-hub-proto` plus the generated service
//!   traits; nothing outside the service edges speaks prost.
//!
//! The rest of the workspace: `activity-hub-proto` (messages, client stubs, wire
//! constants), `activity-hub-client` (the Rust client and, behind its `cli` feature, the
//! command-line commands this binary runs) and `activity-hub-bench` (the load tool).
//!
//! A unary call: tonic decodes the request -> the service authenticates the bearer token
//! (a cached verification and a cached user look-up) -> the policy decides -> the domain
//! operation runs against the cache or the store -> the result is converted to protobuf,
//! or the error is mapped to a status in [`error`].
// Unsafe code is denied everywhere but in `memory`, whose two allocator calls are audited.
#![deny(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]

pub mod activity;
pub mod auth;
pub mod config;
pub mod error;
pub mod hub;
pub mod lifecycle;
pub mod limits;
pub mod memory;
pub mod proto;
pub mod rpc;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod users;
