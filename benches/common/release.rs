//! The release binaries the benchmark programs measure: mcp-authz and the ext_authz floor.

use std::process::Command;

/// Builds `mcp-authz` and the `floor` example in release mode, from the repository root.
pub fn build() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "build",
            "--release",
            "--quiet",
            "--bin",
            "mcp-authz",
            "--example",
            "floor",
        ])
        .status()
        .expect("cargo build");
    assert!(built.success(), "build failed");
}
