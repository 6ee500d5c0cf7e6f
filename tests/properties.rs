//! Property tests: no input panics or hangs, bad input is never allowed, and the decision's
//! invariants hold across modes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test harness: a panic is the report

mod reference;
mod support;

use mcp_authz::check::{self, Options, authorize};
use mcp_authz::decide::{CallOutcome, Evidence, NoRecord, SessionInput, decide_call};
use mcp_authz::decision::{Decision, Reason, Target, Verdict};
use mcp_authz::explain;
use mcp_authz::identity::Caller;
use mcp_authz::policy::Timestamp;
use mcp_authz::policy::snapshot::Identity;
use mcp_authz::policy::{Mode, Primitive, Snapshot, Trust, load_files, load_paths};
use mcp_authz::proto::auth::{CheckRequest, CheckResponse};
use mcp_authz::request::CheckInput;
use mcp_authz::response::encode;
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

/// The answer to `decision`, checked to be canonical wire bytes: the generated types decode it
/// and encode it back to the same bytes (so no field is misnumbered, misplaced or mistyped).
fn answer(decision: &Decision) -> Result<CheckResponse, TestCaseError> {
    let encoded = encode(decision);
    let message = encoded.to_message();
    prop_assert_eq!(message.encode_to_vec(), encoded.0.to_vec());
    Ok(message)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_check_request_bytes_get_a_decision(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let snapshot = conformance();
        if let Ok(request) = CheckRequest::decode(bytes.as_slice()) {
            let input = CheckInput::from_proto(&request);
            let decision = authorize(Some(snapshot), &input, &Options::default(), now());
            let response = answer(&decision)?;
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
        answer(&enforce)?;
        answer(&monitor)?;

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

/// A small random policy: one server, four tools, a handful of grants for two callers.
#[derive(Debug, Clone)]
struct Policy {
    default_allow: bool,
    tools: Vec<(usize, Option<usize>)>,
    grants: Vec<GrantSpec>,
}

#[derive(Debug, Clone)]
struct GrantSpec {
    agent: usize,
    human: bool,
    max_trust: usize,
    side_effects: Vec<usize>,
    rules: Vec<(usize, bool, usize)>,
    disabled: bool,
    expiry: usize,
    monitor: bool,
}

const TRUST: [&str; 3] = ["low", "medium", "high"];
const EFFECTS: [&str; 3] = ["read", "write", "destructive"];
const EXPIRY: [&str; 3] = ["", "2020-01-01T00:00:00Z", "2030-01-01T00:00:00Z"];

fn grant_spec(monitor: bool) -> impl Strategy<Value = GrantSpec> {
    (
        0..2usize,
        any::<bool>(),
        0..3usize,
        prop::collection::vec(0..3usize, 0..3),
        prop::collection::vec((0..4usize, prop::bool::weighted(0.25), 0..3usize), 0..3),
        prop::bool::weighted(0.15),
        prop_oneof![6 => Just(0usize), 1 => Just(1usize), 1 => Just(2usize)],
        if monitor {
            prop::bool::weighted(0.4).boxed()
        } else {
            Just(false).boxed()
        },
    )
        .prop_map(
            |(agent, human, max_trust, mut side_effects, mut rules, disabled, expiry, monitor)| {
                side_effects.sort_unstable();
                side_effects.dedup();
                rules.sort_by_key(|r| r.0);
                rules.dedup_by_key(|r| r.0);
                GrantSpec {
                    agent,
                    human,
                    max_trust,
                    side_effects,
                    rules,
                    disabled,
                    expiry,
                    monitor,
                }
            },
        )
}

fn policy(monitor: bool) -> impl Strategy<Value = Policy> {
    (
        any::<bool>(),
        prop::collection::vec((0..3usize, prop::option::weighted(0.85, 0..3usize)), 4),
        prop::collection::vec(grant_spec(monitor), 1..6),
    )
        .prop_map(|(default_allow, tools, grants)| Policy {
            default_allow,
            tools,
            grants,
        })
}

impl Policy {
    fn yaml(&self) -> String {
        let mut out = format!(
            "apiVersion: mcpruntime.org/v1alpha1\nkind: MCPServer\nmetadata: {{name: s, namespace: p}}\nspec:\n  policy: {{defaultDecision: {}, govern: [tools, prompts, resources]}}\n  tools:\n",
            if self.default_allow { "allow" } else { "deny" }
        );
        for (i, (trust, effect)) in self.tools.iter().enumerate() {
            let effect = effect.map_or(String::new(), |e| format!(", sideEffect: {}", EFFECTS[e]));
            out.push_str(&format!(
                "    - {{name: t{i}, requiredTrust: {}{effect}}}\n",
                TRUST[*trust]
            ));
        }
        // The prompts and resources mirror the tools; an undeclared side effect is an undeclared
        // prompt or resource.
        let declared: Vec<(usize, &str)> = self
            .tools
            .iter()
            .enumerate()
            .filter(|(_, (_, effect))| effect.is_some())
            .map(|(i, (trust, _))| (i, TRUST[*trust]))
            .collect();
        let entries = |entry: &dyn Fn(usize) -> String| {
            declared
                .iter()
                .map(|(i, trust)| format!("{{{}, requiredTrust: {trust}}}", entry(*i)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "  prompts: [{}]\n  resources: [{}]\n",
            entries(&|i| format!("name: t{i}")),
            entries(&|i| format!("uriPrefix: \"r://t{i}/\"")),
        ));
        for (i, g) in self.grants.iter().enumerate() {
            let human = if g.human { ", humanID: hh" } else { "" };
            let effects: Vec<&str> = g.side_effects.iter().map(|e| EFFECTS[*e]).collect();
            let rules = |key: &dyn Fn(usize) -> String| {
                g.rules
                    .iter()
                    .map(|(tool, deny, trust)| {
                        format!(
                            "{{{}, decision: {}, requiredTrust: {}}}",
                            key(*tool),
                            if *deny { "deny" } else { "allow" },
                            TRUST[*trust]
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let expiry = match EXPIRY[g.expiry] {
                "" => String::new(),
                t => format!("\n  expiresAt: \"{t}\""),
            };
            out.push_str(&format!(
                "---\napiVersion: mcpruntime.org/v1alpha1\nkind: MCPAccessGrant\nmetadata: {{name: g{i}, namespace: p}}\nspec:\n  serverRef: {{name: s}}\n  subject: {{agentID: ag{}{human}}}\n  maxTrust: {}\n  allowedSideEffects: [{}]\n  toolRules: [{}]\n  promptRules: [{}]\n  resourceRules: [{}]\n  disabled: {}\n  mode: {}{expiry}\n",
                g.agent,
                TRUST[g.max_trust],
                effects.join(", "),
                rules(&|i| format!("name: t{i}")),
                rules(&|i| format!("name: t{i}")),
                rules(&|i| format!("uriPrefix: \"r://t{i}/\"")),
                g.disabled,
                if g.monitor { "monitor" } else { "enforce" },
            ));
        }
        out
    }

    fn snapshot(&self) -> Snapshot {
        let text = self.yaml();
        Snapshot::compile(
            load_files(&[("p.yaml", text.as_bytes())]).expect("generated policy is valid"),
        )
    }
}

fn call(tool: usize, id: usize) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"t{tool}"}}}}"#)
}

/// (applied verdict, reason, would-deny) of `body` from caller `agent` (and human `hh`).
fn decide(snapshot: &Snapshot, agent: usize, human: bool, body: &str) -> (Verdict, Reason, bool) {
    let mut req = Req::post("/s/mcp", body).header("x-mcp-agent-id", &format!("ag{agent}"));
    if human {
        req = req.human("hh");
    }
    let d = authorize(Some(snapshot), &req.input(), &Options::default(), now());
    (d.applied(), d.reason, d.would_deny)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn a_batch_is_decided_by_its_worst_element(
        p in policy(true),
        tools in prop::collection::vec(0..4usize, 1..5),
        agent in 0..2usize,
        human in any::<bool>(),
    ) {
        let snapshot = p.snapshot();
        let singles: Vec<_> = tools.iter().map(|t| decide(&snapshot, agent, human, &call(*t, 1))).collect();
        let batch_body = format!("[{}]", tools.iter().enumerate().map(|(i, t)| call(*t, i)).collect::<Vec<_>>().join(","));
        let batch = decide(&snapshot, agent, human, &batch_body);
        let expected = singles
            .iter()
            .find(|s| s.0 == Verdict::Deny)
            .or_else(|| singles.iter().find(|s| s.2))
            .copied()
            .unwrap_or((Verdict::Allow, singles[0].1, false));
        if expected.1 == Reason::Allowed || expected.0 == Verdict::Deny || expected.2 {
            prop_assert_eq!(batch, expected, "{}", p.yaml());
        } else {
            // Every element allowed: the batch is allowed (reasons may differ under default allow).
            prop_assert_eq!((batch.0, batch.2), (Verdict::Allow, false));
        }
    }

    #[test]
    fn adding_a_deny_rule_never_turns_a_deny_into_an_allow(
        p in policy(true),
        tool in 0..4usize,
        target in 0..6usize,
        agent in 0..2usize,
        human in any::<bool>(),
    ) {
        let before = decide(&p.snapshot(), agent, human, &call(tool, 1));
        let mut denied = p.clone();
        let index = target % denied.grants.len();
        let grant = &mut denied.grants[index];
        grant.rules.retain(|r| r.0 != tool);
        grant.rules.push((tool, true, 0));
        let after = decide(&denied.snapshot(), agent, human, &call(tool, 1));
        if before.0 == Verdict::Deny {
            prop_assert_eq!(after.0, Verdict::Deny, "{}\n→\n{}", p.yaml(), denied.yaml());
        }
    }

    /// Disabling or expiring a grant never widens access. Four exceptions are the contract's
    /// own and are left out here: a grant carrying a deny rule (its rule goes with it), a grant
    /// whose allow rule raises the tool's required trust (step 8: the required trust is the
    /// highest of the contributing rules', so it falls with the grant), a server with
    /// `defaultDecision: allow` (no grant left means allowed), and the all-monitor-grants rule
    /// (removing a caller's last enforce grant leaves only monitor grants, whose denials are let
    /// through).
    #[test]
    fn disabling_or_expiring_a_grant_never_widens_access(
        p in policy(false),
        tool in 0..4usize,
        target in 0..6usize,
        expire in any::<bool>(),
        agent in 0..2usize,
        human in any::<bool>(),
    ) {
        let mut p = p;
        p.default_allow = false;
        let index = target % p.grants.len();
        let raises = |r: &(usize, bool, usize)| r.0 == tool && r.2 > p.tools[tool].0;
        prop_assume!(p.grants[index].rules.iter().all(|r| !r.1 && !raises(r)));
        let before = decide(&p.snapshot(), agent, human, &call(tool, 1));
        let mut narrowed = p.clone();
        if expire {
            narrowed.grants[index].expiry = 1;
        } else {
            narrowed.grants[index].disabled = true;
        }
        let after = decide(&narrowed.snapshot(), agent, human, &call(tool, 1));
        if before.0 == Verdict::Deny {
            prop_assert_eq!(after.0, Verdict::Deny, "{}\n→\n{}", p.yaml(), narrowed.yaml());
        }
    }

    #[test]
    fn monitor_mode_keeps_the_reason_and_never_denies(
        p in policy(true),
        tool in 0..4usize,
        agent in 0..2usize,
        human in any::<bool>(),
    ) {
        let snapshot = p.snapshot();
        let mut req = Req::post("/s/mcp", &call(tool, 1)).header("x-mcp-agent-id", &format!("ag{agent}"));
        if human {
            req = req.human("hh");
        }
        let enforce = authorize(Some(&snapshot), &req.input(), &Options::default(), now());
        let monitor = authorize(Some(&snapshot), &req.input(), &Options { mode: Mode::Monitor, ..Options::default() }, now());
        prop_assert_eq!(monitor.applied(), Verdict::Allow);
        prop_assert_eq!(monitor.reason, enforce.reason);
        prop_assert_eq!(monitor.grant_key(), enforce.grant_key());
        prop_assert_eq!(monitor.trust, enforce.trust);
        // The all-monitor-grants rule: a caller whose live grants are all in monitor mode is
        // never blocked by the grant steps.
        let live: Vec<&GrantSpec> = p
            .grants
            .iter()
            .filter(|g| g.agent == agent && (!g.human || human) && !g.disabled && g.expiry != 1)
            .collect();
        if !live.is_empty() && live.iter().all(|g| g.monitor) {
            prop_assert_eq!(enforce.applied(), Verdict::Allow, "{}", p.yaml());
        }
    }
}

/// The target of call `n` of `primitive` in the generated policy: `t{n}`, or a URI under the
/// resource prefix `r://t{n}/`.
fn target(primitive: Primitive, n: usize) -> String {
    match primitive {
        Primitive::Resource => format!("r://t{n}/x"),
        Primitive::Tool | Primitive::Prompt => format!("t{n}"),
    }
}

fn call_of(primitive: Primitive, target: &str) -> String {
    let (method, key) = match primitive {
        Primitive::Tool => ("tools/call", "name"),
        Primitive::Prompt => ("prompts/get", "name"),
        Primitive::Resource => ("resources/read", "uri"),
    };
    format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{{"{key}":"{target}"}}}}"#)
}

fn identity(agent: usize, human: bool) -> Identity<'static> {
    Identity {
        human: human.then(|| "hh".into()),
        agent: Some(format!("ag{agent}").into()),
        team: None,
    }
}

/// Everything a decision says, to compare two of them.
fn summary<'d>(d: &'d Decision) -> impl PartialEq + std::fmt::Debug + 'd {
    (
        (d.verdict, d.reason, d.would_deny, d.mode),
        (
            d.grant_key(),
            d.session_key(),
            d.policy_version.map(|v| &**v),
        ),
        (d.trust, d.tool),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    /// The evaluation with the collecting recorder is the one the service runs with the no-op
    /// recorder: recording changes nothing.
    #[test]
    fn recording_the_evidence_does_not_change_the_decision(
        p in policy(true),
        primitive in prop::sample::select(Primitive::ALL.to_vec()),
        n in 0..4usize,
        agent in 0..2usize,
        human in any::<bool>(),
    ) {
        let snapshot = p.snapshot();
        let server = snapshot.server_named("p/s").unwrap();
        let (caller, target) = (identity(agent, human), target(primitive, n));
        let plain =
            decide_call(server, &caller, SessionInput::None, primitive, &target, now(), &mut NoRecord);
        let mut evidence = Evidence::default();
        let recorded =
            decide_call(server, &caller, SessionInput::None, primitive, &target, now(), &mut evidence);
        let key = |o: &CallOutcome| {
            (
                (o.verdict, o.reason, o.would_deny),
                o.grant.map(|g| g.grant.key.full.clone()),
                (o.trust, o.facts),
            )
        };
        prop_assert_eq!(key(&plain), key(&recorded), "{}", p.yaml());
    }

    /// `check` gives the service's decision for any caller and call, and its `grants[]` tells
    /// the same story: who matched, who is live, who decided, and the trust arithmetic.
    #[test]
    fn check_renders_the_decision_the_service_gives(
        p in policy(true),
        primitive in prop::sample::select(Primitive::ALL.to_vec()),
        n in 0..4usize,
        agent in 0..2usize,
        human in any::<bool>(),
        service_monitor in prop::bool::weighted(0.2),
    ) {
        let snapshot = p.snapshot();
        let server = snapshot.server_named("p/s").unwrap();
        let options = Options {
            mode: if service_monitor { Mode::Monitor } else { Mode::Enforce },
            ..Options::default()
        };
        let target = target(primitive, n);
        let mut req = Req::post("/s/mcp", &call_of(primitive, &target)).header("x-mcp-agent-id", &format!("ag{agent}"));
        if human {
            req = req.human("hh");
        }
        let served = authorize(Some(&snapshot), &req.input(), &options, now());
        let caller = Caller { identity: identity(agent, human), session_id: None, session: None };
        let mut evidence = Evidence::default();
        let explained = check::decide_call(
            &snapshot,
            server,
            caller,
            Target { primitive, name: target.as_str().into() },
            &options,
            now(),
            &mut evidence,
        );
        prop_assert_eq!(summary(&explained), summary(&served), "{}", p.yaml());

        let report = explain::report(&explained, &evidence, now());
        let yaml = p.yaml();
        prop_assert_eq!(&report["decision"], served.applied().as_str());
        prop_assert_eq!(&report["reason"], served.reason.as_str());
        prop_assert_eq!(&report["would_deny"], served.would_deny);
        prop_assert_eq!(report["matched_grant"].as_str(), served.grant_key());
        prop_assert_eq!(&report[primitive.key()], target.as_str());
        let grants = report["grants"].as_array().unwrap();
        prop_assert_eq!(grants.len(), p.grants.len());
        let mut decided = Vec::new();
        let mut denied_by_rule = false;
        for (i, spec) in p.grants.iter().enumerate() {
            let g = &grants[i];
            prop_assert_eq!(&g["name"], &format!("p/g{i}"));
            let matches = spec.agent == agent && (!spec.human || human);
            prop_assert_eq!(&g["matches"], matches, "g{} in {}", i, yaml);
            if !g["live"].is_null() {
                prop_assert!(matches);
                prop_assert_eq!(&g["live"], !spec.disabled && spec.expiry != 1, "g{} in {}", i, yaml);
            }
            denied_by_rule |= g["rule"] == "deny";
            if g["decided"] == true {
                decided.push(g);
            }
        }
        // A matching grant the steps never reached lies after a deny rule.
        let unreached = grants.iter().any(|g| g["matches"] == true && g["live"].is_null());
        prop_assert!(!unreached || denied_by_rule, "{:#}", report);
        prop_assert_eq!(decided.len(), usize::from(served.grant.is_some()));
        if let Some(g) = decided.first() {
            prop_assert_eq!(g["name"].as_str(), served.grant_key());
            if served.reason == Reason::for_primitive(primitive)[1] {
                prop_assert_eq!(&g["rule"], "deny");
            }
        }
        // Without monitor rule 3, the figures come from the grants that contribute.
        if report["monitor_rule"].is_null() {
            let contributing: Vec<&serde_json::Value> =
                grants.iter().filter(|g| g["contributes"] == true).collect();
            let trust = |v: &serde_json::Value| v.as_str().and_then(Trust::parse).unwrap_or(Trust::Low);
            match served.trust {
                Some(figures) => {
                    let admin = contributing.iter().map(|g| trust(&g["max_trust"])).max();
                    let rules = contributing.iter().map(|g| trust(&g["rule_required_trust"])).max();
                    let own = served.tool.map(|f| f.required_trust);
                    prop_assert_eq!(Some(figures.admin), admin, "{:#}", report);
                    prop_assert_eq!(Some(figures.required), rules.max(own), "{:#}", report);
                }
                None => prop_assert!(contributing.is_empty() || served.reason == Reason::for_primitive(primitive)[1], "{:#}", report),
            }
        }
    }
}

/// JSON white space between tokens.
fn ws() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["", "", " ", "\n", "\t", "\r\n ", "  "])
}

/// A JSON string literal of `text`, the characters `mask` picks written as `\u` escapes
/// (astral ones as surrogate pairs) and the rest as themselves or their short escape.
fn literal(text: &str, mask: u64) -> String {
    let mut out = String::from("\"");
    for (i, c) in text.chars().enumerate() {
        let escape = mask >> (i % 64) & 1 == 1;
        match c {
            '"' if !escape => out.push_str("\\\""),
            '\\' if !escape => out.push_str("\\\\"),
            '/' if !escape && mask & 1 == 1 => out.push_str("\\/"),
            '\n' if !escape => out.push_str("\\n"),
            c if escape || (c as u32) < 0x20 => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// String literals made of pieces that matter to the inspector: method and key names, their
/// case-folded look-alikes, escapes, quotes, astral characters.
fn json_string() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "tools/call",
        "name",
        "echo",
        "uri",
        "id",
        "method",
        "NAME",
        "ſ",
        "K",
        "é",
        "😀",
        "\"",
        "\\",
        "/",
        "\u{1}",
        "\n",
        " ",
        "x",
        "file:///a b",
    ]);
    (prop::collection::vec(piece, 0..4), any::<u64>())
        .prop_map(|(pieces, mask)| literal(&pieces.concat(), mask))
}

fn json_number() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "0",
        "-0",
        "1",
        "42",
        "-7",
        "1.5",
        "1e3",
        "2E-2",
        "1.0",
        "-0.0",
        "1E+2",
        "12345678901234567890",
        "123456789012345678901234567890",
    ])
    .prop_map(str::to_string)
}

fn json_object(members: Vec<(String, String)>, ws: &str) -> String {
    let body: Vec<String> = members
        .iter()
        .map(|(k, v)| format!("{ws}{k}{ws}:{ws}{v}{ws}"))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        Just("false".to_string()),
        json_number(),
        json_string(),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            (prop::collection::vec(inner.clone(), 0..4), ws())
                .prop_map(|(items, ws)| format!("[{ws}{}{ws}]", items.join(&format!("{ws},")))),
            (prop::collection::vec((json_key(), inner), 0..4), ws())
                .prop_map(|(members, ws)| json_object(members, ws)),
        ]
    })
}

/// Member names: JSON-RPC's, their case-folded look-alikes, any string.
fn json_key() -> impl Strategy<Value = String> {
    let known = (
        prop::sample::select(vec![
            "jsonrpc",
            "id",
            "method",
            "params",
            "name",
            "uri",
            "result",
            "error",
            "_meta",
            "arguments",
            "Method",
            "ID",
            "naMe",
            "ſ",
            "uRI",
            "traceparent",
        ]),
        any::<u64>(),
    )
        .prop_map(|(key, mask)| literal(key, mask & 0b11));
    prop_oneof![3 => known, 1 => json_string()]
}

/// One JSON-RPC-like message: the members a call or a response has, each perhaps missing or
/// of another type, with other members, in any order.
fn json_message() -> impl Strategy<Value = String> {
    let method = prop_oneof![
        4 => (
            prop::sample::select(vec![
                "tools/call", "prompts/get", "resources/read", "resources/subscribe",
                "call_tool", "tools/list", "initialize", " ", "", "tools/call ",
            ]),
            any::<u64>(),
        )
            .prop_map(|(m, mask)| literal(m, mask & 0b101)),
        1 => json_value(),
    ];
    let id = prop_oneof![
        json_number(),
        json_string(),
        Just("null".to_string()),
        json_value()
    ];
    let params = (
        prop::option::of(prop_oneof![3 => json_string(), 1 => json_value()]),
        prop::option::of(prop_oneof![3 => json_string(), 1 => json_value()]),
        prop::collection::vec((json_key(), json_value()), 0..3),
        ws(),
    )
        .prop_map(|(name, uri, mut members, ws)| {
            members.extend(name.map(|n| ("\"name\"".to_string(), n)));
            members.extend(uri.map(|u| ("\"uri\"".to_string(), u)));
            json_object(members, ws)
        });
    (
        prop::option::of(method),
        prop::option::of(id),
        prop::option::of(prop_oneof![4 => params, 1 => json_value()]),
        prop::option::of(json_value()),
        prop::collection::vec((json_key(), json_value()), 0..3),
        ws(),
        any::<u64>(),
    )
        .prop_map(|(method, id, params, result, mut members, ws, order)| {
            members.push(("\"jsonrpc\"".into(), "\"2.0\"".into()));
            members.extend(method.map(|m| ("\"method\"".to_string(), m)));
            members.extend(id.map(|i| ("\"id\"".to_string(), i)));
            members.extend(params.map(|p| ("\"params\"".to_string(), p)));
            members.extend(result.map(|r| ("\"result\"".to_string(), r)));
            let n = members.len();
            members.rotate_left(order as usize % n);
            if order >> 32 & 1 == 1 {
                members.reverse();
            }
            json_object(members, ws)
        })
}

/// A body: one message or a batch of them.
fn json_rpc_body() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (json_message(), ws(), ws()).prop_map(|(m, a, b)| format!("{a}{m}{b}")),
        1 => (prop::collection::vec(json_message(), 0..4), ws())
            .prop_map(|(items, ws)| format!("[{ws}{}{ws}]", items.join(&format!("{ws},")))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    /// The inspector reads generated JSON-RPC as serde_json does (tests/reference).
    #[test]
    fn inspector_agrees_with_serde_json(body in json_rpc_body()) {
        reference::check(body.as_bytes());
    }

    /// And on bodies pieced together from JSON tokens, mostly not JSON at all.
    #[test]
    fn inspector_agrees_with_serde_json_on_pieces(body in body()) {
        reference::check(&body);
    }
}
