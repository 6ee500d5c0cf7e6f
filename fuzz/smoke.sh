#!/usr/bin/env bash
# A short run of every fuzz target on its seed corpus (CI). The long runs and their figures are
# in the README ("Robustness"). cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP=1 enables
# them on the stable toolchain this project builds with.
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
export RUSTC_BOOTSTRAP=1
for target in check_request rpc_inspect policy_loader; do
  work="target/smoke/$target"
  rm -rf "$work" && mkdir -p "$work"
  # The policy loader's seeds include a file nesting 100,000 levels (200 KB): read it whole.
  max_len=4096
  [ "$target" = policy_loader ] && max_len=262144
  cargo fuzz run -O "$target" "$work" "corpus/$target" -- -runs=20000 -max_len="$max_len" 2>&1 | tail -n 1
done
