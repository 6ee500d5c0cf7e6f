//! The JSON-RPC inspector on arbitrary bodies: never a panic; a body that is not UTF-8 JSON is
//! never read as a call; and it reads bodies as serde_json does (`tests/reference`).
#![no_main]

#[path = "../../tests/reference/mod.rs"]
mod reference;

use libfuzzer_sys::fuzz_target;
use mcp_authz::policy::Governs;
use mcp_authz::request::Headers;
use mcp_authz::rpc;

/// A server that decides every primitive, so resource URIs go through their canonical form.
const GOVERNS_ALL: Governs = Governs {
    prompts: true,
    resources: true,
};

fuzz_target!(|data: &[u8]| {
    let headers = Headers::new(vec![("content-type", "application/json")]);
    let inspected = rpc::inspect("POST", &headers, data, 1 << 20, GOVERNS_ALL);
    if std::str::from_utf8(data).is_err() {
        assert!(inspected.is_err());
    }
    reference::check(data);
});
