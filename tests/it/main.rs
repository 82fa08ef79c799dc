//! The integration test binary: one crate, built once, with a module per area.
//! PostgreSQL variants run when TEST_DATABASE_URL is set and say they were skipped otherwise.

mod activity;
mod auth;
mod bench;
mod cli;
mod client;
mod client_balance;
mod cluster;
mod crash;
mod durability;
mod faults;
mod helpers;
mod inbox_tail;
mod limits;
mod metrics;
mod observability;
mod server;
mod sessions;
mod shared_db;
mod tls;
mod users;
mod web;
