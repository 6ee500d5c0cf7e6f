//! Arbitrary CheckRequest bytes through decode, the whole decision and the answer, on the
//! conformance policies, in both service modes.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use mcp_authz::check::{Options, authorize};
use mcp_authz::decision::Verdict;
use mcp_authz::policy::{Mode, Snapshot, load_files};
use mcp_authz::proto::auth::CheckRequest;
use mcp_authz::request::CheckInput;
use mcp_authz::response::encode;
use mcp_authz::policy::Timestamp;
use prost::Message;

static SNAPSHOT: LazyLock<Snapshot> = LazyLock::new(|| {
    let files: [(&str, &[u8]); 4] = [
        ("finance.yaml", include_bytes!("../../tests/conformance/policies/finance.yaml")),
        ("grants.yaml", include_bytes!("../../tests/conformance/policies/grants.yaml")),
        ("identity.yaml", include_bytes!("../../tests/conformance/policies/identity.yaml")),
        ("servers.yaml", include_bytes!("../../tests/conformance/policies/servers.yaml")),
    ];
    Snapshot::compile(load_files(&files).expect("conformance policies are valid"))
});

fuzz_target!(|data: &[u8]| {
    let Ok(request) = CheckRequest::decode(data) else {
        return;
    };
    let input = CheckInput::from_proto(&request);
    let now = Timestamp::parse_rfc3339("2027-01-01T00:00:00Z").unwrap();
    let enforce = authorize(Some(&SNAPSHOT), &input, &Options::default(), now);
    let monitor = authorize(
        Some(&SNAPSHOT),
        &input,
        &Options { mode: Mode::Monitor, ..Options::default() },
        now,
    );
    // The answer is canonical wire bytes: the generated types decode it and encode it back.
    let encoded = encode(&enforce);
    let response = encoded.to_message();
    assert_eq!(response.encode_to_vec(), encoded.0.to_vec());
    assert!(response.status.is_some());
    assert_eq!(monitor.applied(), Verdict::Allow);
    assert_eq!(monitor.reason, enforce.reason);
});
