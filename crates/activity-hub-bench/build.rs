//! Generates the server traits of the bare baseline (`serve-baseline`) on top of the
//! messages of `activity-hub-proto`, with a vendored `protoc`.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    let proto = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let mut build = tonic_prost_build::configure()
        .build_client(false)
        .codec_path("::activity_hub_client::proto::LeanCodec");
    for package in ["user", "auth", "activity"] {
        build = build.extern_path(
            format!(".{package}.v1"),
            format!("::activity_hub_client::proto::{package}::v1"),
        );
    }
    let files = [
        "user/v1/user.proto",
        "auth/v1/auth.proto",
        "activity/v1/activity.proto",
    ];
    build.compile_protos(&files.map(|f| proto.join(f)), std::slice::from_ref(&proto))?;
    println!("cargo:rerun-if-changed={}", proto.display());
    Ok(())
}
