//! The policy loader on arbitrary documents: a set or a list of problems, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_authz::policy::{Snapshot, load_files};

fuzz_target!(|data: &[u8]| {
    match load_files(&[("fuzz.yaml", data)]) {
        Ok(set) => {
            Snapshot::compile(set);
        }
        Err(e) => assert!(!e.problems().is_empty()),
    }
});
