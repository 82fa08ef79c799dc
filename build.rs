//! Generates the gRPC code from `proto/` with a vendored `protoc`, so a machine with only
//! the Rust toolchain builds the crate, and writes a file descriptor set for reflection.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    env::set_var("PROTOC", protoc);
    let out = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("activity_hub_descriptor.bin"))
        .bytes(".activity.v1.Event.payload")
        .bytes(".activity.v1.PublishRequest.payload")
        // Small per-call codec buffers: see `LeanCodec` in src/proto.rs.
        .codec_path("crate::proto::LeanCodec")
        .compile_protos(
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
