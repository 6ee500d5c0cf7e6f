//! Compiles `proto/` with protox (a pure-Rust protobuf compiler), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["envoy/service/auth/v3/external_auth.proto"];
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Decode errors become INVALID_ARGUMENT rather than prost's INTERNAL (SPEC §3).
        .codec_path("crate::codec::Codec")
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
