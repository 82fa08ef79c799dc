//! A Rust client for activity-hub: several endpoints (listed, or the addresses of a DNS
//! name) with client-side load balancing, health checks, a circuit breaker per endpoint, retries with backoff for idempotent
//! calls, per-call deadlines, bearer tokens, TLS, and a [`Subscription`] stream that
//! survives disconnects and resumes exactly after the last event it yielded.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use activity_hub_client::{Client, ClientConfig, Delivery, SubscribeOptions};
//! use futures_util::StreamExt;
//!
//! let client = Client::connect(ClientConfig::new(["http://127.0.0.1:50051"])).await?;
//! // A session: the client refreshes its access token by itself from now on.
//! let session = client.login_session("admin@example.com", "change-me-now").await?;
//! client.use_session(&session);
//! let mut events = client.subscribe(SubscribeOptions::consumer("phone"));
//! while let Some(item) = events.next().await {
//!     match item? {
//!         Delivery::Event(event) => {
//!             println!("{} {}", event.seq, event.r#type);
//!             events.ack(event.seq);
//!         }
//!         // Never silent: retention removed events before this consumer read them.
//!         Delivery::Pruned(gap) => eprintln!("{} events were pruned unread", gap.count()),
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Modules: [`ClientConfig`] and [`ClientError`] (`config`); which endpoints exist,
//! static or resolved from DNS and followed as the records change (`discovery`, with
//! [`Resolver`]); one endpoint's channel, health checker, breaker and in-flight count,
//! and which failures are transient (`endpoint`); which endpoint a call takes
//! ([`Balance`]: round robin, pick first, least pending; `balance`); [`Client`] itself
//! and retries (`client`); its typed calls (`calls`); [`Subscription`] and the Subscribe handshake
//! [`OpenStream`] (`subscription`); sessions that refresh themselves (`session`); the
//! tokens `activity-hub login` saves ([`token`]);
//! and, with the `cli` feature, the command-line commands ([`cli`]).
//!
//! The generated messages and stubs are re-exported as [`proto`], so an application
//! needs no second dependency to name a request.
#![forbid(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]

mod balance;
mod calls;
mod client;
mod config;
mod discovery;
mod endpoint;
mod session;
mod subscription;
pub mod token;

#[cfg(feature = "cli")]
pub mod cli;

pub use activity_hub_proto as proto;
pub use balance::Balance;
pub use calls::UserWatch;
pub use client::Client;
pub use config::{ClientConfig, ClientError};
pub use discovery::{Resolution, Resolver};
pub use endpoint::{BreakerState, EndpointStatus};
pub use subscription::{ConnectionState, Delivery, OpenStream, Pruned, SubscribeOptions, Subscription};
