//! Compiles `proto/` with protox (a pure-Rust protobuf compiler), so no system `protoc` is needed.
//!
//! The messages and the clients come from `proto/`. The servers are generated from the same
//! service and method names with tonic-build's manual builder: Check's so that it answers with
//! `response::EncodedResponse` (wire bytes written straight from the decision) instead of
//! building prost's `CheckResponse`, and ext_proc's Process beside it (one builder for both,
//! since prost's would also generate an Authorization server).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a build script: a panic is the error report

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "envoy/service/auth/v3/external_auth.proto",
        "envoy/service/ext_proc/v3/external_processor.proto",
    ];
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        // Decode errors become INVALID_ARGUMENT rather than prost's INTERNAL (SPEC §3).
        .codec_path("crate::codec::Codec")
        .compile_fds(fds)?;
    let check = tonic_build::manual::Method::builder()
        .name("check")
        .route_name("Check")
        .input_type("crate::proto::auth::CheckRequest")
        .output_type("crate::response::EncodedResponse")
        .codec_path("crate::codec::CheckCodec")
        .build();
    let authorization = tonic_build::manual::Service::builder()
        .name("Authorization")
        .package("envoy.service.auth.v3")
        .method(check)
        .build();
    let process = tonic_build::manual::Method::builder()
        .name("process")
        .route_name("Process")
        .input_type("crate::proto::ext_proc::ProcessingRequest")
        .output_type("crate::proto::ext_proc::ProcessingResponse")
        .codec_path("crate::codec::Codec")
        .client_streaming()
        .server_streaming()
        .build();
    let processor = tonic_build::manual::Service::builder()
        .name("ExternalProcessor")
        .package("envoy.service.ext_proc.v3")
        .method(process)
        .build();
    tonic_build::manual::Builder::new()
        .build_client(false)
        .build_server(true)
        .compile(&[authorization, processor]);
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
