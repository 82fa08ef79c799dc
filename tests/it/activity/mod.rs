//! The activity hub's guarantees (spec: activity.v1), each proven end to end over gRPC,
//! a module per promise, all written in the vocabulary of [`dsl`].

pub mod dsl;

mod authorization;
mod cluster;
mod errors;
mod idempotency;
mod lifecycle;
mod publish;
mod resume;
mod retention;
mod subscribe;
mod user_activity;
mod window;
