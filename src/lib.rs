//! activity-hub: an actor-based real-time activity hub and the user accounts behind it.
//!
//! Modules, and how a call flows through them. The server's modules form layers; each
//! imports only the layers above it in this list (a unit test below checks it):
//!
//! 1. [`model`]: plain domain types (users, roles, statuses, the principal, user changes,
//!    subscription parameters) and the spec's field rules. Imports nothing from the crate.
//! 2. [`store`]: the one interface to SQLite or PostgreSQL: pool, migrations, queries
//!    (users, the event log) and error classification.
//! 3. Shared support, used by the layers below it and by none of theirs:
//!    [`error`] ([`error::ApiError`], converted from model and store errors, and the one
//!    place it becomes a `tonic::Status`), [`lifecycle`] (how response streams end,
//!    UNAVAILABLE at shutdown) and [`limits`] (rate limits per user and per Login peer +
//!    identifier).
//! 4. [`users`]: [`users::Users`] validates, hashes passwords (Argon2id), writes through
//!    the store while keeping a read cache coherent, and announces every write to the
//!    [`users::ChangeSink`] it is built with.
//! 5. [`auth`]: bearer-token authentication ([`auth::Auth`]), the authorization table
//!    ([`auth::policy`]) and JWT access tokens.
//! 6. [`hub`]: the actors of the activity hub: persistence (group commit), registry
//!    (routing), one subscription actor per stream, watchers for UserActivity. Takes and
//!    streams domain values; it is the users' change sink.
//! 7. [`api`]: the tonic edge: the `user.v1`, `auth.v1` and `activity.v1` handlers and
//!    every protobuf conversion. The only layer above that speaks prost ([`proto`]).
//! 8. [`web`]: the HTTP surface on the same port: gRPC-Web around each gRPC service,
//!    REST/JSON and Server-Sent Events routed from the protos' `google.api.http` rules
//!    (JSON by the descriptors, OpenAPI generated from them), health, CORS and the web
//!    console. A REST call is an in-process gRPC call through the services above, so it
//!    imports only [`error`] and [`proto`]'s descriptors.
//! 9. [`server`]: builds the pieces above from a config (wiring the hub into the users as
//!    their change sink) and serves them on one port with gRPC health and reflection;
//!    owns graceful shutdown.
//!
//! Beside the layers: [`config`] (the typed configuration, clap and environment
//! fallbacks), [`rpc`] (the tower layer every call passes: request ids, one tracing span
//! per RPC, `grpc_server_*` metrics, deadlines, unary load shedding), [`metrics`] (the
//! Prometheus endpoint: recorder, process metrics, build info), [`memory`] (glibc
//! allocator settings so freed memory goes back to the system), [`telemetry`] (log
//! formats and the optional OpenTelemetry export) and [`proto`] (the messages of
//! `activity-hub-proto` plus the service traits generated here).
//!
//! The rest of the workspace sits outside this crate: `activity-hub-proto` (messages,
//! client stubs, wire constants), `activity-hub-client` (the Rust client and, behind its
//! `cli` feature, the command-line commands this binary runs) and `activity-hub-bench`
//! (the load tool and its bare tonic baseline).
//!
//! A unary call: tonic decodes the request -> the [`api`] handler authenticates the bearer
//! token (a cached verification and a cached user look-up) -> the policy decides -> the
//! request becomes domain values -> the operation runs in [`users`] or [`hub`] against
//! the cache or the store -> the result is converted to protobuf, or the error is mapped
//! to a status in [`error`].
// Unsafe code is denied everywhere but in `memory`, whose two allocator calls are audited.
#![deny(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]

pub mod api;
pub mod auth;
pub mod config;
pub mod error;
pub mod hub;
pub mod lifecycle;
pub mod limits;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod proto;
pub mod rpc;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod users;
pub mod web;

/// The import order of the layers (see the crate docs), checked on the source text so a
/// forbidden import fails a unit test rather than waiting for a reviewer.
#[cfg(test)]
mod layering {
    use std::{fs, path::Path};

    /// Each layer (a module directory or file under `src/`) and the crate modules it may
    /// import besides itself. Everything else, `proto` above all, is refused.
    const LAYERS: &[(&str, &[&str])] = &[
        ("model", &[]),
        ("store", &["model"]),
        ("error.rs", &["model", "store"]),
        ("lifecycle.rs", &[]),
        ("limits.rs", &["error"]),
        ("users", &["model", "store", "error"]),
        ("auth", &["model", "store", "error", "limits", "users"]),
        (
            "hub",
            &["model", "store", "error", "lifecycle", "limits", "users"],
        ),
    ];

    /// Edge layers, which speak protobuf, and what they may import: the HTTP surface
    /// reaches the services only through in-process gRPC calls.
    const EDGES: &[(&str, &[&str])] = &[("web", &["error", "proto"])];

    fn rust_files(path: &Path, out: &mut Vec<std::path::PathBuf>) {
        if path.is_dir() {
            for entry in fs::read_dir(path).expect("readable source directory") {
                rust_files(&entry.expect("directory entry").path(), out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path.to_path_buf());
        }
    }

    /// `code` without its comments (good enough for this check: a `//` inside a string
    /// only hides the rest of its line).
    fn without_comments(code: &str) -> String {
        code.lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The top-level crate modules `code` names through `crate::` (in paths and in use
    /// trees such as `crate::{a::b, c}`), comments left out.
    fn crate_modules(code: &str) -> Vec<String> {
        let code = without_comments(code);
        let ident = |s: &str| -> String {
            s.trim_start()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        };
        let mut found = Vec::new();
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            let Some(group) = rest.strip_prefix('{') else {
                found.push(ident(rest));
                continue;
            };
            // The first segment of each top-level item of the group.
            let (mut depth, mut start) = (0usize, 0usize);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        found.push(ident(&group[start..i]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.push(ident(&group[start..i]));
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        }
        found.retain(|m| !m.is_empty() && m != "self");
        found
    }

    #[test]
    fn the_use_tree_parser_sees_every_module() {
        let code =
            "use crate::{\n    a::b,\n    c::{d, e::{f}},\n    g,\n};\n// crate::h\nlet x = crate::i::j();";
        assert_eq!(crate_modules(code), ["a", "c", "g", "i"]);
    }

    #[test]
    fn layers_import_only_the_layers_before_them() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut wrong = Vec::new();
        let layers = LAYERS.iter().map(|l| (l, false));
        for ((layer, allowed), speaks_prost) in layers.chain(EDGES.iter().map(|l| (l, true))) {
            let own = layer.trim_end_matches(".rs");
            let mut files = Vec::new();
            rust_files(&src.join(layer), &mut files);
            assert!(!files.is_empty(), "no sources for layer {layer}");
            for file in files {
                let code = fs::read_to_string(&file).expect("readable source file");
                for m in crate_modules(&code) {
                    if m != own && !allowed.contains(&m.as_str()) {
                        wrong.push(format!("{}: crate::{m}", file.display()));
                    }
                }
                if !speaks_prost && without_comments(&code).contains("prost") {
                    wrong.push(format!("{}: prost", file.display()));
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "imports against the layer order of src/lib.rs (move the type down, or the code up):\n{}",
            wrong.join("\n")
        );
    }
}
