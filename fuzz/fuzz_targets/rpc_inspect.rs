//! The JSON-RPC inspector on arbitrary bodies: never a panic; a body that is not UTF-8 JSON is
//! never read as a call.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_authz::request::Headers;
use mcp_authz::rpc;

fuzz_target!(|data: &[u8]| {
    let headers = Headers::new(vec![("content-type", "application/json")]);
    let inspected = rpc::inspect("POST", &headers, data, 1 << 20);
    if std::str::from_utf8(data).is_err() {
        assert!(inspected.is_err());
    }
});
