//! A Rust client for activity-hub: several endpoints with client-side load balancing,
//! health checks, a circuit breaker per endpoint, retries with backoff for idempotent
//! calls, per-call deadlines, bearer tokens, TLS, and a [`Subscription`] stream that
//! survives disconnects and resumes exactly after the last event it yielded.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use activity_hub_client::{Client, ClientConfig, SubscribeOptions};
//! use futures_util::StreamExt;
//!
//! let client = Client::connect(ClientConfig::new(["http://127.0.0.1:50051"])).await?;
//! let token = client.login("admin@example.com", "admin-password").await?;
//! client.set_token(Some(token));
//! let mut events = client.subscribe(SubscribeOptions::consumer("phone"));
//! while let Some(event) = events.next().await {
//!     let event = event?;
//!     println!("{} {}", event.seq, event.r#type);
//!     events.ack(event.seq);
//! }
//! # Ok(()) }
//! ```
//!
//! Modules: [`ClientConfig`] and [`ClientError`] (`config`); endpoints, breakers and
//! which failures are transient (`endpoint`); [`Client`] itself, balancing and retries
//! (`client`); its typed calls (`calls`); [`Subscription`] and the Subscribe handshake
//! [`OpenStream`] (`subscription`); the token `activity-hub login` saves ([`token`]);
//! and, with the `cli` feature, the command-line commands ([`cli`]).
//!
//! The generated messages and stubs are re-exported as [`proto`], so an application
//! needs no second dependency to name a request.
#![forbid(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]

mod calls;
mod client;
mod config;
mod endpoint;
mod subscription;
pub mod token;

#[cfg(feature = "cli")]
pub mod cli;

pub use activity_hub_proto as proto;
pub use client::Client;
pub use config::{ClientConfig, ClientError};
pub use endpoint::{BreakerState, EndpointStatus};
pub use subscription::{OpenStream, SubscribeOptions, Subscription};
