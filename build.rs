//! Compiles `proto/` with protox (a pure-Rust protobuf compiler), so no system `protoc` is needed.
//!
//! The messages and the client come from `proto/`. The server is generated from the same
//! service and method names with tonic-build's manual builder, so that it answers with
//! `response::EncodedResponse` (wire bytes written straight from the decision) instead of
//! building prost's `CheckResponse`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["envoy/service/auth/v3/external_auth.proto"];
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
    let service = tonic_build::manual::Service::builder()
        .name("Authorization")
        .package("envoy.service.auth.v3")
        .method(check)
        .build();
    tonic_build::manual::Builder::new()
        .build_client(false)
        .build_server(true)
        .compile(&[service]);
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
