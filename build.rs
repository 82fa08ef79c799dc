//! Generates the gRPC service traits from `proto/` with a vendored `protoc`, so a machine
//! with only the Rust toolchain builds the crate, on top of the messages of
//! `activity-hub-proto` (`extern_path`: one Rust type per message, shared with the client),
//! and writes the file descriptor set that reflection serves.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let mut build = tonic_prost_build::configure()
        .build_client(false)
        .file_descriptor_set_path(out.join("activity_hub_descriptor.bin"))
        // Small per-call codec buffers: see `activity_hub_proto::LeanCodec`.
        .codec_path("::activity_hub_proto::LeanCodec");
    for package in ["user", "auth", "activity"] {
        build = build.extern_path(
            format!(".{package}.v1"),
            format!("::activity_hub_proto::{package}::v1"),
        );
    }
    build.compile_protos(
        &[
            "proto/user/v1/user.proto",
            "proto/auth/v1/auth.proto",
            "proto/activity/v1/activity.proto",
        ],
        &["proto"],
    )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
