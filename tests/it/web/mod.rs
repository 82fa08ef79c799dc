//! The HTTP surface on the gRPC port (spec: "The HTTP surface"): REST/JSON routes and
//! their error mapping, gRPC-Web framing, Server-Sent Events with resume across a
//! restart, Follow + Ack, CORS, health, OpenAPI and the web console, each over a real
//! socket with a client that is not the hub's.

pub mod client;

mod console;
mod cors;
mod follow;
mod grpc_web;
mod rest;
mod sse;
