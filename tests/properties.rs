//! Property tests: no input panics or hangs, bad input is never allowed, and the decision's
//! invariants hold across modes.

mod support;

use mcp_authz::check::{Options, authorize};
use mcp_authz::decision::{Reason, Verdict};
use mcp_authz::policy::{Mode, Snapshot, load_files, load_paths};
use mcp_authz::proto::auth::CheckRequest;
use mcp_authz::request::CheckInput;
use mcp_authz::response::check_response;
use mcp_authz::time::Timestamp;
use proptest::prelude::*;
use prost::Message;
use support::Req;

fn conformance() -> &'static Snapshot {
    static SNAPSHOT: std::sync::OnceLock<Snapshot> = std::sync::OnceLock::new();
    SNAPSHOT.get_or_init(|| {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/policies");
        Snapshot::compile(load_paths(&[dir]).unwrap())
    })
}

fn now() -> Timestamp {
    Timestamp::parse_rfc3339("2027-01-01T00:00:00Z").unwrap()
}

/// Pieces JSON-RPC bodies are made of, so generated bodies reach the deep branches.
fn json_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("{".to_string()),
        Just("}".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just(",".to_string()),
        Just(":".to_string()),
        Just("\"method\"".to_string()),
        Just("\"Method\"".to_string()),
        Just("\"params\"".to_string()),
        Just("\"name\"".to_string()),
        Just("\"id\"".to_string()),
        Just("\"result\"".to_string()),
        Just("\"tools/call\"".to_string()),
        Just("\"echo\"".to_string()),
        Just("\"upper\"".to_string()),
        Just("\"\\ud800\"".to_string()),
        Just("null".to_string()),
        Just("1e5".to_string()),
        Just(" ".to_string()),
        "[a-z]{0,3}".prop_map(|s| format!("\"{s}\"")),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        prop::collection::vec(json_piece(), 0..40).prop_map(|p| p.concat().into_bytes()),
    ]
}

fn header() -> impl Strategy<Value = (String, String)> {
    let name = prop_oneof![
        Just("x-mcp-human-id".to_string()),
        Just("X-MCP-Agent-ID".to_string()),
        Just("x-mcp-team-id".to_string()),
        Just("x-mcp-agent-session".to_string()),
        Just("content-type".to_string()),
        Just("content-length".to_string()),
        Just("x-envoy-auth-partial-body".to_string()),
        "[a-z-]{1,8}",
    ];
    let value = prop_oneof![
        Just("h1".to_string()),
        Just("a1".to_string()),
        Just("a-new".to_string()),
        Just("carrier".to_string()),
        Just("application/json".to_string()),
        Just("true".to_string()),
        "[ -~]{0,12}",
    ];
    (name, value)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_check_request_bytes_get_a_decision(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let snapshot = conformance();
        if let Ok(request) = CheckRequest::decode(bytes.as_slice()) {
            let input = CheckInput::from_proto(&request);
            let decision = authorize(Some(snapshot), &input, &Options::default(), now());
            let response = check_response(&decision);
            prop_assert!(response.status.is_some());
        }
    }

    #[test]
    fn arbitrary_bodies_and_headers_get_a_decision(
        body in body(),
        headers in prop::collection::vec(header(), 0..6),
        path in prop_oneof![Just("/demo/mcp"), Just("/labs/sandbox/mcp"), Just("/ledger/mcp"), Just("/x")],
    ) {
        let snapshot = conformance();
        let mut req = Req::post(path, "");
        req.headers = headers;
        let mut input = req.input();
        input.body = &body;
        let enforce = authorize(Some(snapshot), &input, &Options::default(), now());
        let monitor = authorize(Some(snapshot), &input, &Options { mode: Mode::Monitor, ..Options::default() }, now());
        check_response(&enforce);

        // Bad bodies are never allowed in enforce mode (outside monitor-mode servers).
        let bad_json = std::str::from_utf8(&body).ok().and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok()).is_none();
        if bad_json && enforce.server.is_some_and(|s| s.server.mode == Mode::Enforce) {
            prop_assert_eq!(enforce.applied(), Verdict::Deny, "{:?}", String::from_utf8_lossy(&body));
            prop_assert_ne!(enforce.reason, Reason::Allowed);
        }
        // Monitor mode lets through exactly what enforce denies, with the same reason and evidence.
        prop_assert_eq!(monitor.applied(), Verdict::Allow);
        prop_assert_eq!(monitor.reason, enforce.reason);
        prop_assert_eq!(monitor.verdict, enforce.verdict);
        prop_assert_eq!(monitor.grant_key(), enforce.grant_key());
        prop_assert_eq!(monitor.would_deny, enforce.verdict == Verdict::Deny);
    }

    #[test]
    fn arbitrary_policy_text_never_panics(text in prop::collection::vec(prop_oneof![
        Just("apiVersion: mcpruntime.org/v1alpha1\n"), Just("kind: MCPServer\n"), Just("kind: MCPAccessGrant\n"),
        Just("kind: List\n"), Just("items:\n"), Just("- "), Just("metadata: {name: x}\n"), Just("spec:\n"),
        Just("  tools: [{name: a}]\n"), Just("  subject: {humanID: no}\n"), Just("---\n"), Just("&a "), Just("*a\n"),
        Just("{"), Just("}"), Just("["), Just("]"), Just(": "), Just("\"q"), Just("'"), Just("\t"), Just("\n"),
        Just("  serverRef: {name: x}\n"), Just("  expiresAt: 2026-01-01T00:00:00Z\n"), Just("!!str "),
    ], 0..40)) {
        let text = text.concat();
        let _ = load_files(&[("p.yaml", text.as_bytes())]);
    }
}
