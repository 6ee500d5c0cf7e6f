//! Every reason code and every branch of the decision (SPEC §2), on the pure core.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test harness: a panic is the report

mod support;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use mcp_authz::check::{Options, authorize};
use mcp_authz::decision::{Reason, TrustFigures};
use mcp_authz::policy::snapshot::Identity;
use mcp_authz::policy::{Mode, Primitive, Snapshot, Trust};
use mcp_authz::response::encode;
use support::{Req, Seen, at, decide_at, seen, snapshot};

const NOW: &str = "2026-06-01T00:00:00Z";

const POLICY: &str = r#"
apiVersion: mcpruntime.org/v1alpha1
kind: MCPServer
metadata: {name: shop, namespace: ns}
spec:
  ingressPath: /shop/mcp
  tools:
    - {name: read, requiredTrust: low, sideEffect: read, riskLevel: low}
    - {name: write, requiredTrust: medium, sideEffect: write}
    - {name: wipe, requiredTrust: high, sideEffect: destructive, riskLevel: high}
    - {name: mystery}
  policy: {policyVersion: shop-v3}
---
apiVersion: v1
kind: List
items:
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: base, namespace: ns},
     spec: {serverRef: {name: shop}, subject: {agentID: base}, maxTrust: medium, allowedSideEffects: [read, write], policyVersion: base-7}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: ruled-1-plain, namespace: ns},
     spec: {serverRef: {name: shop}, subject: {agentID: ruled}, maxTrust: medium, allowedSideEffects: [read], toolRules: [{name: read}]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: ruled-2-strict, namespace: ns},
     spec: {serverRef: {name: shop}, subject: {agentID: ruled}, maxTrust: medium, allowedSideEffects: [read], toolRules: [{name: read, requiredTrust: high}]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: ruled-3-strict, namespace: ns},
     spec: {serverRef: {name: shop}, subject: {agentID: ruled}, maxTrust: medium, allowedSideEffects: [read], toolRules: [{name: read, requiredTrust: high}]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: weak-1, namespace: ns},
     spec: {serverRef: {name: shop}, subject: {agentID: weak}, maxTrust: high, allowedSideEffects: [read]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: weak-2, namespace: ns},
     spec: {serverRef: {name: shop}, subject: {agentID: weak}, allowedSideEffects: [write]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: weak-3, namespace: ns},
     spec: {serverRef: {name: shop}, subject: {agentID: weak}, allowedSideEffects: [write]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: pick-1, namespace: ns},
     spec: {serverRef: {name: shop}, subject: {agentID: pick}, maxTrust: medium, allowedSideEffects: [read]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: pick-2, namespace: ns},
     spec: {serverRef: {name: shop}, subject: {agentID: pick}, maxTrust: high, allowedSideEffects: [read]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: denied-1, namespace: ns},
     spec: {serverRef: {name: shop}, subject: {agentID: denied}, maxTrust: high, allowedSideEffects: [read]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: denied-2, namespace: ns},
     spec: {serverRef: {name: shop}, subject: {agentID: denied}, toolRules: [{name: read, decision: DENY}]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: narrow, namespace: ns},
     spec: {serverRef: {name: shop}, subject: {agentID: narrow}, allowedSideEffects: [read, write], toolRules: [{name: read}]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: switched-off, namespace: ns},
     spec: {serverRef: {name: shop}, subject: {agentID: switched-off}, allowedSideEffects: [read], disabled: true}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: old, namespace: ns},
     spec: {serverRef: {name: shop}, subject: {agentID: old}, allowedSideEffects: [read], expiresAt: "2026-06-01T00:00:00Z"}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: mixed-1, namespace: ns},
     spec: {serverRef: {name: shop}, subject: {agentID: mixed}, allowedSideEffects: [read], expiresAt: 2026-01-01T00:00:00Z}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: mixed-2, namespace: ns},
     spec: {serverRef: {name: shop}, subject: {agentID: mixed}, allowedSideEffects: [read], disabled: true}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: watch, namespace: ns},
     spec: {serverRef: {name: shop}, subject: {agentID: watch}, allowedSideEffects: [read], mode: monitor}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: lift-1, namespace: ns},
     spec: {serverRef: {name: shop}, subject: {agentID: lift}, allowedSideEffects: [read, write]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: lift-2, namespace: ns},
     spec: {serverRef: {name: shop}, subject: {agentID: lift}, maxTrust: high, allowedSideEffects: [read, write], mode: observe}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: a-hide, namespace: ns},
     spec: {serverRef: {name: shop}, subject: {agentID: hide}, maxTrust: high, allowedSideEffects: [read, write], mode: monitor,
            toolRules: [{name: read, decision: deny}]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: b-hide, namespace: ns},
     spec: {serverRef: {name: shop}, subject: {agentID: hide}, allowedSideEffects: [read, write]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: alice, namespace: ns},
     spec: {serverRef: {name: shop}, subject: {humanID: alice}, maxTrust: high, allowedSideEffects: [read, write]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAgentSession, metadata: {name: alice-s, namespace: ns},
     spec: {serverRef: {name: shop}, subject: {humanID: alice}, consentedTrust: low}}
---
apiVersion: mcpruntime.org/v1alpha1
kind: MCPServer
metadata: {name: vault, namespace: sec}
spec:
  teamID: team-v
  tools: [{name: read, sideEffect: read}, {name: write, requiredTrust: medium, sideEffect: write}]
  session: {required: true}
  policy: {policyVersion: vault-1}
---
apiVersion: v1
kind: List
items:
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: bob, namespace: sec},
     spec: {serverRef: {name: vault}, subject: {humanID: bob}, maxTrust: high, allowedSideEffects: [read, write]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: nobody, namespace: sec},
     spec: {serverRef: {name: vault}, subject: {}, maxTrust: high, allowedSideEffects: [read, write]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAgentSession, metadata: {name: s-ok, namespace: sec},
     spec: {serverRef: {name: vault}, subject: {humanID: bob}, consentedTrust: low}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAgentSession, metadata: {name: s-revoked, namespace: sec},
     spec: {serverRef: {name: vault}, subject: {humanID: bob}, revoked: true, policyVersion: sess-9}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAgentSession, metadata: {name: s-expired, namespace: sec},
     spec: {serverRef: {name: vault}, subject: {humanID: bob}, expiresAt: "2026-01-01T00:00:00Z"}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAgentSession, metadata: {name: s-edge, namespace: sec},
     spec: {serverRef: {name: vault}, subject: {humanID: bob}, consentedTrust: high, expiresAt: "2026-06-01T00:00:00Z"}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAgentSession, metadata: {name: dup, namespace: b},
     spec: {serverRef: {name: vault, namespace: sec}, subject: {humanID: bob}, consentedTrust: low}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAgentSession, metadata: {name: dup, namespace: a},
     spec: {serverRef: {name: vault, namespace: sec}, subject: {humanID: bob}, consentedTrust: high}}
---
apiVersion: mcpruntime.org/v1alpha1
kind: MCPServer
metadata: {name: open, namespace: ns}
spec:
  tools: [{name: read, sideEffect: read}, {name: write, sideEffect: write}]
  policy: {defaultDecision: ALLOW}
---
apiVersion: v1
kind: List
items:
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: o-narrow, namespace: ns},
     spec: {serverRef: {name: open}, subject: {agentID: narrow}, allowedSideEffects: [read], toolRules: [{name: read}]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: o-blocked, namespace: ns},
     spec: {serverRef: {name: open}, subject: {agentID: blocked}, toolRules: [{name: read, decision: deny}]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: o-old, namespace: ns},
     spec: {serverRef: {name: open}, subject: {agentID: old}, expiresAt: "2020-01-01T00:00:00Z"}}
---
apiVersion: mcpruntime.org/v1alpha1
kind: MCPServer
metadata: {name: lab, namespace: ns}
spec:
  ingressPath: /lab
  tools: [{name: run, sideEffect: write}]
  policy: {mode: observe}
---
apiVersion: mcpruntime.org/v1alpha1
kind: MCPServer
metadata: {name: custom, namespace: ns}
spec:
  ingressPath: /custom/mcp
  tools: [{name: read, sideEffect: read}]
  auth: {humanIDHeader: X-User, agentIDHeader: X-Bot, teamIDHeader: X-Org, sessionIDHeader: X-Sess}
---
apiVersion: mcpruntime.org/v1alpha1
kind: MCPAccessGrant
metadata: {name: carol-custom, namespace: ns}
spec: {serverRef: {name: custom}, subject: {humanID: carol}, allowedSideEffects: [read]}
---
apiVersion: mcpruntime.org/v1alpha1
kind: MCPServer
metadata: {name: jwtsrv, namespace: ns}
spec:
  ingressPath: /jwt/mcp
  tools: [{name: read, sideEffect: read}]
  auth: {mode: jwt, jwtPayloadKey: claims}
---
apiVersion: mcpruntime.org/v1alpha1
kind: MCPAccessGrant
metadata: {name: carol-jwt, namespace: ns}
spec: {serverRef: {name: jwtsrv}, subject: {humanID: carol, agentID: cli, teamID: t1}, allowedSideEffects: [read]}
---
apiVersion: mcpruntime.org/v1alpha1
kind: MCPServer
metadata: {name: mesh, namespace: ns}
spec:
  ingressPath: /mesh/mcp
  teamID: team-m
  tools: [{name: read, sideEffect: read}]
  auth: {mode: MTLS, trustDomain: td.local}
---
apiVersion: v1
kind: List
items:
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: mesh-agents, namespace: ns},
     spec: {serverRef: {name: mesh}, subject: {agentID: m1}, allowedSideEffects: [read]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAgentSession, metadata: {name: m-ok, namespace: team-a},
     spec: {serverRef: {name: mesh, namespace: ns}, subject: {agentID: m1}}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAgentSession, metadata: {name: m-revoked, namespace: team-a},
     spec: {serverRef: {name: mesh, namespace: ns}, subject: {agentID: m1}, revoked: true}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAgentSession, metadata: {name: m-other, namespace: team-a},
     spec: {serverRef: {name: shop, namespace: ns}, subject: {agentID: m1}}}
---
apiVersion: mcpruntime.org/v1alpha1
kind: MCPServer
metadata: {name: twin, namespace: one}
spec: {ingressPath: /twin-one}
---
apiVersion: mcpruntime.org/v1alpha1
kind: MCPServer
metadata: {name: twin, namespace: two}
spec: {ingressPath: /twin-two}
"#;

fn policy() -> Snapshot {
    snapshot(POLICY)
}

fn expect(
    decision: &'static str,
    reason: &'static str,
    would_deny: bool,
    grant: Option<&str>,
    session: Option<&str>,
) -> Seen {
    Seen {
        decision,
        reason,
        would_deny,
        grant: grant.map(str::to_string),
        session: session.map(str::to_string),
    }
}

fn allow(grant: &str) -> Seen {
    expect("allow", "allowed", false, Some(grant), None)
}

fn deny(reason: &'static str, grant: Option<&str>) -> Seen {
    expect("deny", reason, false, grant, None)
}

fn would_deny(reason: &'static str, grant: Option<&str>) -> Seen {
    expect("allow", reason, true, grant, None)
}

fn run_mode(snapshot: &Snapshot, req: &Req, mode: Mode) -> Seen {
    seen(&decide_at(snapshot, &req.input(), mode, at(NOW)))
}

fn run(snapshot: &Snapshot, req: &Req) -> Seen {
    run_mode(snapshot, req, Mode::Enforce)
}

fn shop(tool: &str) -> Req {
    Req::tool("/shop/mcp", tool)
}

#[test]
fn grant_steps_and_their_attribution() {
    let p = policy();
    let cases = [
        (shop("read").agent("base"), allow("ns/base")),
        (shop("write").agent("base"), allow("ns/base")),
        (
            shop("wipe").agent("base"),
            deny("side_effect_not_allowed", Some("ns/base")),
        ),
        (
            shop("mystery").agent("base"),
            deny("tool_side_effect_unknown", Some("ns/base")),
        ),
        (
            shop("undeclared").agent("base"),
            deny("tool_side_effect_unknown", Some("ns/base")),
        ),
        // A rule's requiredTrust above the tool's own: blame the first grant with that rule.
        (
            shop("read").agent("ruled"),
            deny("trust_too_low", Some("ns/ruled-2-strict")),
        ),
        // Otherwise the first contributing grant with the admin trust.
        (
            shop("write").agent("weak"),
            deny("trust_too_low", Some("ns/weak-2")),
        ),
        (shop("read").agent("pick"), allow("ns/pick-2")),
        // A deny rule wins at once, even behind a covering grant.
        (
            shop("read").agent("denied"),
            deny("tool_denied", Some("ns/denied-2")),
        ),
        (shop("read").agent("narrow"), allow("ns/narrow")),
        (
            shop("write").agent("narrow"),
            deny("tool_not_granted", None),
        ),
        (
            shop("read").agent("switched-off"),
            deny("tool_not_granted", None),
        ),
        (shop("read").agent("mixed"), deny("grant_expired", None)),
        (
            shop("read").agent("stranger"),
            deny("no_matching_grant", None),
        ),
        // Subjects match on every non-empty field.
        (shop("read").agent("base").human("anyone"), allow("ns/base")),
    ];
    for (req, want) in cases {
        assert_eq!(run(&p, &req), want, "{}", req.body);
    }
}

#[test]
fn a_callers_grants_come_in_name_order_whichever_field_indexes_them() {
    // Grants are indexed by their subject's first field; a caller matched through several
    // indexes must still see its grants in `namespace/name` order (steps 6–8 pick the first).
    let p = snapshot(
        r#"
apiVersion: mcpruntime.org/v1alpha1
kind: MCPServer
metadata: {name: shop, namespace: ns}
spec: {ingressPath: /shop/mcp, tools: [{name: read, sideEffect: read}]}
---
apiVersion: v1
kind: List
items:
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: a, namespace: ns},
     spec: {serverRef: {name: shop}, subject: {teamID: t}, allowedSideEffects: [read]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: b, namespace: ns},
     spec: {serverRef: {name: shop}, subject: {agentID: x}, allowedSideEffects: [read]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: c, namespace: ns},
     spec: {serverRef: {name: shop}, subject: {humanID: h, agentID: x}, allowedSideEffects: [read]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: d, namespace: ns},
     spec: {serverRef: {name: shop}, subject: {agentID: x, teamID: t}, allowedSideEffects: [read]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: e, namespace: ns},
     spec: {serverRef: {name: shop}, subject: {teamID: t}, allowedSideEffects: [read]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: f, namespace: ns},
     spec: {serverRef: {name: shop}, subject: {humanID: someone-else}, allowedSideEffects: [read]}}
"#,
    );
    let server = p.server_named("shop").unwrap();
    let caller = Identity {
        human: Some("h".into()),
        agent: Some("x".into()),
        team: Some("t".into()),
    };
    let names: Vec<&str> = server
        .matching_grants(&caller)
        .iter()
        .map(|g| &*g.grant.key.name)
        .collect();
    assert_eq!(names, ["a", "b", "c", "d", "e"]);
}

#[test]
fn expiry_is_strict() {
    let p = policy();
    let req = shop("read").agent("old");
    assert_eq!(
        seen(&decide_at(&p, &req.input(), Mode::Enforce, at(NOW))),
        allow("ns/old")
    );
    let later = at("2026-06-01T00:00:00.000000001Z");
    assert_eq!(
        seen(&decide_at(&p, &req.input(), Mode::Enforce, later)),
        deny("grant_expired", None)
    );
}

#[test]
fn trust_arithmetic_is_reported() {
    let p = policy();
    let req = Req::tool("/vault/mcp", "write")
        .human("bob")
        .team("team-v")
        .session("s-ok");
    let d = decide_at(&p, &req.input(), Mode::Enforce, at(NOW));
    assert_eq!(d.reason, Reason::TrustTooLow);
    assert_eq!(
        d.trust,
        Some(TrustFigures {
            required: Trust::Medium,
            admin: Trust::High,
            consented: Trust::Low,
            effective: Trust::Low,
        })
    );
    let tool = d.tool.unwrap();
    assert_eq!(tool.required_trust, Trust::Medium);
    assert_eq!(d.policy_version.map(|v| &**v), Some("vault-1"));
    assert_eq!(d.session_id.as_deref(), Some("s-ok"));
    assert_eq!(d.session_key(), Some("sec/s-ok"));
}

#[test]
fn sessions() {
    let p = policy();
    let vault = |tool: &str| Req::tool("/vault/mcp", tool).human("bob").team("team-v");
    fn sess(s: &str) -> Option<&str> {
        Some(s)
    }
    let cases = [
        (vault("read"), deny("missing_session", None)),
        (
            vault("read").session("s-ok"),
            expect("allow", "allowed", false, Some("sec/bob"), sess("sec/s-ok")),
        ),
        (
            vault("read").session("nope"),
            deny("session_not_found", None),
        ),
        (
            vault("read").session("s-revoked"),
            expect(
                "deny",
                "session_revoked",
                false,
                None,
                sess("sec/s-revoked"),
            ),
        ),
        (
            vault("read").session("s-expired"),
            expect(
                "deny",
                "session_expired",
                false,
                None,
                sess("sec/s-expired"),
            ),
        ),
        // Equal to expiresAt is still valid.
        (
            vault("write").session("s-edge"),
            expect(
                "allow",
                "allowed",
                false,
                Some("sec/bob"),
                sess("sec/s-edge"),
            ),
        ),
        // Two namespaces hold `dup`: the first in namespace/name order (a/dup, consent high).
        (
            vault("write").session("dup"),
            expect("allow", "allowed", false, Some("sec/bob"), sess("a/dup")),
        ),
        // The session's subject inherits the server's team: no team header, no session.
        (
            Req::tool("/vault/mcp", "read").human("bob").session("s-ok"),
            deny("session_not_found", None),
        ),
        // Optional sessions: a sent id is checked; without one, consent is the admin trust.
        (
            shop("read").human("alice").session("nope"),
            deny("session_not_found", None),
        ),
        (shop("write").human("alice"), allow("ns/alice")),
        (
            shop("write").human("alice").session("alice-s"),
            expect(
                "deny",
                "trust_too_low",
                false,
                Some("ns/alice"),
                sess("ns/alice-s"),
            ),
        ),
    ];
    for (req, want) in cases {
        assert_eq!(run(&p, &req), want, "{:?}", req.headers);
    }
    let revoked = vault("read").session("s-revoked");
    let d = decide_at(&p, &revoked.input(), Mode::Enforce, at(NOW));
    assert_eq!(d.policy_version.map(|v| &**v), Some("sess-9"));
}

#[test]
fn empty_subject_matches_no_one_even_with_a_team_default() {
    let p = policy();
    let req = Req::tool("/vault/mcp", "read")
        .team("team-v")
        .session("s-ok");
    // Only the empty-subject grant `nobody` could match a team-only caller; it matches no one.
    assert_eq!(run(&p, &req), deny("session_not_found", None));
    let agent = Req::tool("/vault/mcp", "read").agent("x").team("team-v");
    assert_eq!(run(&p, &agent), deny("missing_session", None));
}

#[test]
fn default_decision_allow_covers_only_the_nothing_grants_it_reasons() {
    let p = policy();
    let open = |tool: &str| Req::tool("/open/mcp", tool);
    let cases = [
        (
            open("read").agent("stranger"),
            expect("allow", "no_matching_grant", false, None, None),
        ),
        (
            open("write").agent("narrow"),
            expect("allow", "tool_not_granted", false, None, None),
        ),
        (
            open("read").agent("old"),
            expect("allow", "grant_expired", false, None, None),
        ),
        (
            open("read").agent("blocked"),
            deny("tool_denied", Some("ns/o-blocked")),
        ),
        (open("read").agent("narrow"), allow("ns/o-narrow")),
    ];
    for (req, want) in cases {
        assert_eq!(run(&p, &req), want, "{:?}", req.headers);
    }
}

#[test]
fn monitor_grants() {
    let p = policy();
    let cases = [
        // Every live grant of the caller is in monitor mode: the denial is let through.
        (
            shop("write").agent("watch"),
            would_deny("side_effect_not_allowed", Some("ns/watch")),
        ),
        (shop("read").agent("watch"), allow("ns/watch")),
        // A monitor grant's allows are real: its higher trust lifts the enforce grant's limit.
        (shop("write").agent("lift"), allow("ns/lift-2")),
        // A monitor deny rule over an enforce allow: would-deny, attributed to the monitor grant.
        (
            shop("read").agent("hide"),
            would_deny("tool_denied", Some("ns/a-hide")),
        ),
        // It never hides the enforce grant's own denial.
        (
            shop("write").agent("hide"),
            deny("trust_too_low", Some("ns/b-hide")),
        ),
    ];
    for (req, want) in cases {
        assert_eq!(run(&p, &req), want, "{:?}", req.headers);
    }
    let req = shop("read").agent("watch");
    let d = decide_at(&p, &req.input(), Mode::Enforce, at(NOW));
    assert_eq!(
        d.mode,
        Mode::Monitor,
        "an allow by a monitor grant is a monitor-mode decision"
    );
    let req = shop("read").agent("base");
    let d = decide_at(&p, &req.input(), Mode::Enforce, at(NOW));
    assert_eq!(d.mode, Mode::Enforce);
}

#[test]
fn service_monitor_mode_lets_every_denial_through_with_the_same_evidence() {
    let p = policy();
    let reqs = [
        shop("write").agent("weak"),
        shop("read").agent("denied"),
        shop("read"),
        Req::tool("/nowhere", "read").agent("base"),
        Req::post("/shop/mcp", "{").agent("base"),
        Req::tool("/vault/mcp", "read").human("bob").team("team-v"),
        shop("read").agent("base"),
    ];
    for req in reqs {
        let enforce = run_mode(&p, &req, Mode::Enforce);
        let monitor = run_mode(&p, &req, Mode::Monitor);
        assert_eq!(monitor.decision, "allow", "{req:?}", req = req.path);
        assert_eq!(monitor.reason, enforce.reason);
        assert_eq!(monitor.grant, enforce.grant);
        assert_eq!(monitor.would_deny, enforce.decision == "deny");
    }
    let req = shop("read");
    let none = authorize(
        None,
        &req.input(),
        &Options {
            mode: Mode::Monitor,
            ..Options::default()
        },
        at(NOW),
    );
    assert!(none.would_deny);
    assert_eq!(none.reason, Reason::PolicyUnavailable);
}

#[test]
fn server_monitor_mode_covers_inspection_identity_and_grant_denials() {
    let p = policy();
    let cases = [
        (
            Req::tool("/lab", "run"),
            would_deny("missing_identity", None),
        ),
        (
            Req::tool("/lab/sub", "run").human("h"),
            would_deny("no_matching_grant", None),
        ),
        (
            Req::post("/lab", "[]").human("h"),
            would_deny("rpc_inspection_failed", None),
        ),
        (
            Req::post("/lab", "{}").header("content-length", "99"),
            would_deny("rpc_body_truncated", None),
        ),
    ];
    for (req, want) in cases {
        assert_eq!(run(&p, &req), want, "{}", req.body);
    }
    let req = Req::tool("/lab", "run");
    let d = decide_at(&p, &req.input(), Mode::Enforce, at(NOW));
    assert_eq!(d.mode, Mode::Monitor);
    assert_eq!(d.http_status(), 200);
}

#[test]
fn server_selection() {
    let p = policy();
    let cases = [
        (
            shop("read").agent("base").server("ns/shop"),
            allow("ns/base"),
        ),
        (
            Req::tool("/elsewhere", "read").agent("base").server("shop"),
            allow("ns/base"),
        ),
        // Present but unknown or ambiguous: no fall-back to the path.
        (
            shop("read").agent("base").server("ns/none"),
            deny("unknown_server", None),
        ),
        (
            shop("read").agent("base").server("twin"),
            deny("unknown_server", None),
        ),
        (
            shop("read").agent("base").server(""),
            deny("unknown_server", None),
        ),
        (
            Req::tool("/shop/mcp/x/y", "read").agent("base"),
            allow("ns/base"),
        ),
        (
            Req::tool("/shop/mcp?x=/y", "read").agent("base"),
            allow("ns/base"),
        ),
        (
            Req::tool("/shop/mcpx", "read").agent("base"),
            deny("unknown_server", None),
        ),
        (
            Req::tool("/shop", "read").agent("base"),
            deny("unknown_server", None),
        ),
        (
            Req::tool("/shop%2Fmcp", "read").agent("base"),
            deny("unknown_server", None),
        ),
        (
            Req::tool("", "read").agent("base"),
            deny("unknown_server", None),
        ),
    ];
    for (req, want) in cases {
        assert_eq!(run(&p, &req), want, "{} {:?}", req.path, req.mcp_server);
    }
    let req = Req::tool("/twin-two/x", "t");
    let d = decide_at(&p, &req.input(), Mode::Enforce, at(NOW));
    assert_eq!(d.server_key(), Some("two/twin"));

    let nested = snapshot(
        r#"
apiVersion: mcpruntime.org/v1alpha1
kind: MCPServer
metadata: {name: root}
spec: {ingressPath: /}
---
apiVersion: mcpruntime.org/v1alpha1
kind: MCPServer
metadata: {name: admin}
spec: {ingressPath: /a/mcp/admin}
"#,
    );
    let server = |path: &str| {
        let req = Req::post(path, "{}");
        decide_at(&nested, &req.input(), Mode::Enforce, at(NOW))
            .server_key()
            .map(str::to_string)
    };
    assert_eq!(server("/a/mcp/admin/x").as_deref(), Some("default/admin"));
    assert_eq!(server("/a/mcp/adminx").as_deref(), Some("default/root"));
    assert_eq!(server("/").as_deref(), Some("default/root"));
}

#[test]
fn identity_modes() {
    let p = policy();
    let cases = [
        (shop("read"), deny("missing_identity", None)),
        (shop("read").agent(" \t "), deny("missing_identity", None)),
        (
            shop("read").header("X-MCP-AGENT-ID", "\tbase "),
            allow("ns/base"),
        ),
        // Custom header names; the default ones are not identity there.
        (
            Req::tool("/custom/mcp", "read").header("x-user", "carol"),
            allow("ns/carol-custom"),
        ),
        (
            Req::tool("/custom/mcp", "read").human("carol"),
            deny("missing_identity", None),
        ),
        // jwt: claims from the configured payload key, with fallbacks over empty claims.
        (
            Req::tool("/jwt/mcp", "read").claims(
                "claims",
                &[
                    ("sub", "carol"),
                    ("azp", ""),
                    ("client_id", "cli"),
                    ("team_id", ""),
                    ("tid", "t1"),
                ],
            ),
            allow("ns/carol-jwt"),
        ),
        (
            Req::tool("/jwt/mcp", "read").claims(
                "claims",
                &[("sub", "carol"), ("azp", "cli"), ("tenant_id", "t1")],
            ),
            allow("ns/carol-jwt"),
        ),
        (
            Req::tool("/jwt/mcp", "read").claims("jwt_payload", &[("sub", "carol")]),
            deny("missing_identity", None),
        ),
        (
            Req::tool("/jwt/mcp", "read")
                .human("carol")
                .agent("cli")
                .team("t1"),
            deny("missing_identity", None),
        ),
        // mtls: the principal names the session; identity headers are ignored.
        (
            Req::tool("/mesh/mcp", "read")
                .principal("spiffe://td.local/ns/team-a/session/m-ok")
                .agent("evil"),
            expect(
                "allow",
                "allowed",
                false,
                Some("ns/mesh-agents"),
                Some("team-a/m-ok"),
            ),
        ),
        (
            Req::tool("/mesh/mcp", "read").principal("spiffe://other/ns/team-a/session/m-ok"),
            deny("invalid_spiffe_identity", None),
        ),
        (
            Req::tool("/mesh/mcp", "read").agent("m1"),
            deny("invalid_spiffe_identity", None),
        ),
        (
            Req::tool("/mesh/mcp", "read").principal("spiffe://td.local/ns/team-a/session/m-other"),
            deny("session_not_found", None),
        ),
        (
            Req::tool("/mesh/mcp", "read").principal("spiffe://td.local/ns/team-b/session/m-ok"),
            deny("session_not_found", None),
        ),
        (
            Req::tool("/mesh/mcp", "read")
                .principal("spiffe://td.local/ns/team-a/session/m-revoked"),
            expect(
                "deny",
                "session_revoked",
                false,
                None,
                Some("team-a/m-revoked"),
            ),
        ),
    ];
    for (req, want) in cases {
        assert_eq!(
            run(&p, &req),
            want,
            "{} {:?} {:?}",
            req.path,
            req.headers,
            req.jwt
        );
    }
    // mtls: the identity is the session's subject with the server's team.
    let req = Req::tool("/mesh/mcp", "read").principal("spiffe://td.local/ns/team-a/session/m-ok");
    let d = decide_at(&p, &req.input(), Mode::Enforce, at(NOW));
    assert_eq!(d.caller.agent.as_deref(), Some("m1"));
    assert_eq!(d.caller.team.as_deref(), Some("team-m"));
    assert_eq!(d.session_id.as_deref(), Some("m-ok"));
}

#[test]
fn non_calls_need_no_identity() {
    let p = policy();
    let cases = [
        Req {
            method: "GET".into(),
            path: "/shop/mcp".into(),
            ..Req::default()
        },
        Req {
            method: "DELETE".into(),
            path: "/shop/mcp".into(),
            ..Req::default()
        },
        Req::post(
            "/shop/mcp",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        ),
        Req::post(
            "/shop/mcp",
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        ),
        Req::post(
            "/shop/mcp",
            r#"{"jsonrpc":"2.0","id":"x","error":{"code":1}}"#,
        ),
    ];
    for req in cases {
        assert_eq!(
            run(&p, &req),
            expect("allow", "allowed", false, None, None),
            "{}",
            req.body
        );
    }
    // An SSE GET to an unknown path is still an unknown server.
    let get = Req {
        method: "GET".into(),
        path: "/nowhere".into(),
        ..Req::default()
    };
    assert_eq!(run(&p, &get), deny("unknown_server", None));
}

#[test]
fn batches_report_their_deciding_element() {
    let p = policy();
    let call = |id: u32, tool: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}"}}}}"#
        )
    };
    let batch = |elements: &[String]| format!("[{}]", elements.join(","));
    let note = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_string();

    let denied = Req::post(
        "/shop/mcp",
        &batch(&[
            note.clone(),
            call(1, "read"),
            call(2, "wipe"),
            call(3, "mystery"),
        ]),
    )
    .agent("base");
    let d = decide_at(&p, &denied.input(), Mode::Enforce, at(NOW));
    assert_eq!(seen(&d), deny("side_effect_not_allowed", Some("ns/base")));
    assert_eq!(d.call.as_ref().and_then(|c| c.id.as_deref()), Some("2"));
    assert_eq!(
        d.call
            .as_ref()
            .and_then(|c| c.target_of(mcp_authz::policy::Primitive::Tool)),
        Some("wipe")
    );

    // A denial anywhere beats an earlier would-deny.
    let mixed = Req::post("/shop/mcp", &batch(&[call(1, "read"), call(2, "write")])).agent("hide");
    let d = decide_at(&p, &mixed.input(), Mode::Enforce, at(NOW));
    assert_eq!(seen(&d), deny("trust_too_low", Some("ns/b-hide")));

    // Server monitor mode decides element by element: the first would-deny is reported.
    let lab = Req::post("/lab", &batch(&[call(1, "run"), call(2, "run")]));
    assert_eq!(run(&p, &lab), would_deny("missing_identity", None));

    let only_would_deny =
        Req::post("/shop/mcp", &batch(&[call(1, "read"), call(2, "read")])).agent("hide");
    assert_eq!(
        run(&p, &only_would_deny),
        would_deny("tool_denied", Some("ns/a-hide"))
    );

    let allowed = Req::post("/shop/mcp", &batch(&[note.clone(), call(5, "read")])).agent("base");
    let d = decide_at(&p, &allowed.input(), Mode::Enforce, at(NOW));
    assert_eq!(seen(&d), allow("ns/base"));
    assert_eq!(d.call.as_ref().and_then(|c| c.id.as_deref()), Some("5"));

    let notes = Req::post("/shop/mcp", &batch(&[note.clone(), note]));
    let d = decide_at(&p, &notes.input(), Mode::Enforce, at(NOW));
    assert_eq!(
        d.call.as_ref().map(|c| c.method.as_ref()),
        Some("notifications/initialized")
    );
}

#[test]
fn bad_bodies_get_their_reason_never_an_allow() {
    let p = policy();
    let deep = format!(
        r#"{{"method":"tools/call","params":{{"name":"read","a":{}{}}}}}"#,
        "[".repeat(70),
        "]".repeat(70)
    );
    let cases: [(Req, &str); 9] = [
        (
            shop("read")
                .agent("base")
                .header("x-envoy-auth-partial-body", "true"),
            "rpc_body_truncated",
        ),
        (
            shop("read")
                .agent("base")
                .header("content-length", "100000"),
            "rpc_body_truncated",
        ),
        (
            Req::post("/shop/mcp", "")
                .agent("base")
                .header("content-length", "10"),
            "rpc_body_missing",
        ),
        (
            Req::post("/shop/mcp", "").agent("base"),
            "rpc_inspection_failed",
        ),
        (
            Req::post("/shop/mcp", "not json").agent("base"),
            "rpc_inspection_failed",
        ),
        (
            Req::post("/shop/mcp", &deep).agent("base"),
            "rpc_inspection_failed",
        ),
        (
            Req::post(
                "/shop/mcp",
                r#"{"method":"tools/list","METHOD":"tools/call","params":{"name":"wipe"}}"#,
            )
            .agent("base"),
            "rpc_ambiguous",
        ),
        (
            shop("read")
                .agent("base")
                .header("content-type", "text/plain"),
            "rpc_inspection_failed",
        ),
        (
            shop(&"x".repeat(2 * 1024 * 1024)).agent("base"),
            "rpc_inspection_failed",
        ),
    ];
    for (req, reason) in cases {
        assert_eq!(run(&p, &req), deny(reason, None), "{:.80}", req.body);
    }
    let mut invalid_utf8 = shop("read").agent("base");
    invalid_utf8.body = String::from_utf8_lossy(b"{\"method\":\"tools/call\"}").into_owned();
    let bytes = b"{\"method\":\"tools/call\",\"x\":\"\xff\"}".to_vec();
    let mut input = invalid_utf8.input();
    input.body = &bytes;
    assert_eq!(
        seen(&decide_at(&p, &input, Mode::Enforce, at(NOW))),
        deny("rpc_inspection_failed", None)
    );
}

#[test]
fn responses_follow_the_decision() {
    use mcp_authz::proto::auth::check_response::HttpResponse;
    let p = policy();
    let body = |req: &Req| {
        let d = decide_at(&p, &req.input(), Mode::Enforce, at(NOW));
        match encode(&d).to_message().http_response {
            Some(HttpResponse::DeniedResponse(denied)) => {
                let body: serde_json::Value = serde_json::from_str(&denied.body).unwrap();
                // A single request with an id is answered in JSON-RPC, its fields under
                // `error.data`; the plain body has them at the top, under `error` for the reason.
                match body["error"].get("data") {
                    Some(data) => {
                        assert_eq!(body["jsonrpc"], "2.0");
                        assert_eq!(body["error"]["code"], -32003);
                        let mut fields = data.clone();
                        fields["error"] = data["reason"].clone();
                        fields
                    }
                    None => body,
                }
            }
            other => panic!("not denied: {other:?}"),
        }
    };
    let missing = body(&shop("read"));
    assert_eq!(missing["error"], "missing_identity");
    let mut without_id = shop("read");
    without_id.body = without_id.body.replace(r#""id":1"#, r#""id":null"#);
    assert!(
        without_id.body.contains(r#""id":null"#),
        "{}",
        without_id.body
    );
    let plain = body(&without_id);
    assert_eq!(plain["error"], "missing_identity");
    assert!(plain.get("jsonrpc").is_none());
    assert_eq!(plain["required_headers"], missing["required_headers"]);
    assert_eq!(
        missing["required_headers"],
        serde_json::json!([
            "X-MCP-Human-ID",
            "X-MCP-Agent-ID",
            "X-MCP-Team-ID",
            "X-MCP-Agent-Session"
        ])
    );
    let custom = body(&Req::tool("/custom/mcp", "read"));
    assert_eq!(
        custom["required_headers"],
        serde_json::json!(["X-User", "X-Bot", "X-Org", "X-Sess"])
    );
    let jwt = body(&Req::tool("/jwt/mcp", "read"));
    assert!(jwt.get("required_headers").is_none());
    let session = body(&Req::tool("/vault/mcp", "read").human("bob").team("team-v"));
    assert_eq!(session["error"], "missing_session");
    assert!(session["required_headers"].is_array());
    let other = body(&shop("read").agent("stranger"));
    assert!(other.get("required_headers").is_none());

    let req = shop("read");
    let unavailable = authorize(None, &req.input(), &Options::default(), at(NOW));
    let response = encode(&unavailable).to_message();
    assert_eq!(response.status.unwrap().code, 14);
    match response.http_response {
        Some(HttpResponse::DeniedResponse(denied)) => assert_eq!(denied.status.unwrap().code, 503),
        other => panic!("{other:?}"),
    }
}

#[test]
fn jsonrpc_denials_echo_the_id_exactly_as_sent() {
    use mcp_authz::proto::auth::check_response::HttpResponse;
    let p = policy();
    let denied_body = |id: &str| {
        let req = Req::post(
            "/shop/mcp",
            &format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"read"}}}}"#
            ),
        );
        let d = decide_at(&p, &req.input(), Mode::Enforce, at(NOW));
        match encode(&d).to_message().http_response {
            Some(HttpResponse::DeniedResponse(denied)) => denied.body,
            other => panic!("not denied: {other:?}"),
        }
    };
    let long = "1".repeat(40);
    for id in [r#""a\"b\u00e9""#, "-0.5e10", long.as_str(), r#""""#] {
        let body = denied_body(id);
        assert!(
            body.starts_with(&format!(r#"{{"jsonrpc":"2.0","id":{id},"error":"#)),
            "{body}"
        );
        serde_json::from_str::<serde_json::Value>(&body).expect("the body is JSON");
    }
    // Ids that cannot be echoed get the plain body.
    for id in ["null", "true", "{}", "[1]"] {
        let body: serde_json::Value = serde_json::from_str(&denied_body(id)).unwrap();
        assert_eq!(body["error"], "missing_identity", "{id}");
    }
}

/// The contract, beside the checkout; its §6 lists the reason codes and their statuses.
const SPEC: &str = "../shared/SPEC.md";

/// The backticked words of `text`, in order.
fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// SPEC §6: every reason code with the HTTP status it is denied with, in the contract's order.
///
/// The section is the list of codes, then one sentence of statuses: `NNN: <codes>` clauses,
/// `NNN: the X and Y ones` (the codes with `X` or `Y` among their words) and `all others NNN`.
fn contract_reasons(spec: &str) -> Vec<(String, u16)> {
    let section: String = spec
        .lines()
        .skip_while(|l| !l.starts_with("## 6."))
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .collect::<Vec<_>>()
        .join(" ");
    let statuses_at = section
        .as_bytes()
        .windows(4)
        .position(|w| w[..3].iter().all(u8::is_ascii_digit) && w[3] == b':')
        .expect("SPEC §6 gives the statuses as `NNN: …`");
    let (list, statuses) = section.split_at(statuses_at);
    let mut named = Vec::new();
    let mut families = Vec::new();
    let mut others = None;
    for clause in statuses.split(';').map(|c| c.trim().trim_end_matches('.')) {
        if let Some(status) = clause.strip_prefix("all others ") {
            others = Some(status.parse::<u16>().expect("`all others NNN`"));
            continue;
        }
        let (status, what) = clause.split_once(':').expect("`NNN: …`");
        let status: u16 = status.parse().expect("`NNN: …`");
        let codes = backticked(what);
        if codes.is_empty() {
            let words = what
                .trim()
                .strip_prefix("the ")
                .and_then(|w| w.strip_suffix(" ones"));
            let words = words.unwrap_or_else(|| panic!("a status clause not understood: {clause}"));
            families.extend(words.split(" and ").map(|w| (w.to_string(), status)));
        } else {
            named.extend(codes.into_iter().map(|c| (c.to_string(), status)));
        }
    }
    let others = others.expect("SPEC §6 gives the status of all other codes");
    let codes = backticked(list);
    for (code, _) in &named {
        assert!(
            codes.contains(&code.as_str()),
            "§6 gives a status to unlisted `{code}`"
        );
    }
    codes
        .into_iter()
        .map(|code| {
            let named = named.iter().find(|(c, _)| c == code).map(|(_, s)| *s);
            let family = families
                .iter()
                .find(|(word, _)| code.split('_').any(|w| w == word))
                .map(|(_, s)| *s);
            (code.to_string(), named.or(family).unwrap_or(others))
        })
        .collect()
}

#[test]
fn reason_codes_and_statuses_are_the_contracts() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(SPEC);
    let Ok(spec) = std::fs::read_to_string(&path) else {
        // CI always lays shared/ beside the checkout: there a missing contract is a failure.
        assert!(
            std::env::var_os("CI").is_none(),
            "no {SPEC} beside the checkout in CI"
        );
        eprintln!("no {SPEC} beside the checkout: nothing to compare");
        return;
    };
    let contract = contract_reasons(&spec);
    let implemented: BTreeMap<&str, u16> = Reason::ALL
        .iter()
        .map(|r| (r.as_str(), r.denial_status()))
        .collect();
    assert_eq!(
        implemented.len(),
        Reason::ALL.len(),
        "two reasons share a code"
    );
    let expected: BTreeMap<&str, u16> = contract
        .iter()
        .map(|(code, status)| (code.as_str(), *status))
        .collect();
    let differing: Vec<String> = expected
        .keys()
        .chain(implemented.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|code| expected.get(*code) != implemented.get(*code))
        .map(|code| {
            format!(
                "`{code}`: SPEC §6 {:?}, Reason::ALL {:?}",
                expected.get(code),
                implemented.get(code)
            )
        })
        .collect();
    assert!(
        differing.is_empty(),
        "reason codes (and their denial status) differ from the contract:\n{}",
        differing.join("\n")
    );
}

#[test]
fn every_reason_code_is_reachable() {
    let p = policy();
    let lib = snapshot(PRIMITIVES);
    let vault = |tool: &str| Req::tool("/vault/mcp", tool).human("bob").team("team-v");
    let ambiguous = r#"{"method":"tools/list","METHOD":"tools/call","params":{"name":"wipe"}}"#;
    // (the reason it must get, the policy, the request), decided in enforce mode.
    let rows: Vec<(&str, Option<&Snapshot>, Req)> = vec![
        ("allowed", Some(&p), shop("read").agent("base")),
        (
            "unknown_server",
            Some(&p),
            Req::tool("/nowhere", "read").agent("base"),
        ),
        (
            "rpc_inspection_failed",
            Some(&p),
            Req::post("/shop/mcp", "not json").agent("base"),
        ),
        (
            "rpc_body_truncated",
            Some(&p),
            shop("read")
                .agent("base")
                .header("x-envoy-auth-partial-body", "true"),
        ),
        (
            "rpc_body_missing",
            Some(&p),
            Req::post("/shop/mcp", "")
                .agent("base")
                .header("content-length", "10"),
        ),
        (
            "rpc_ambiguous",
            Some(&p),
            Req::post("/shop/mcp", ambiguous).agent("base"),
        ),
        (
            "rpc_header_mismatch",
            Some(&p),
            shop("read").agent("base").header("mcp-name", "write"),
        ),
        ("policy_unavailable", None, shop("read").agent("base")),
        ("missing_identity", Some(&p), shop("read")),
        ("missing_session", Some(&p), vault("read")),
        ("session_not_found", Some(&p), vault("read").session("nope")),
        (
            "session_revoked",
            Some(&p),
            vault("read").session("s-revoked"),
        ),
        (
            "session_expired",
            Some(&p),
            vault("read").session("s-expired"),
        ),
        (
            "invalid_spiffe_identity",
            Some(&p),
            Req::tool("/mesh/mcp", "read").agent("m1"),
        ),
        (
            "no_matching_grant",
            Some(&p),
            shop("read").agent("stranger"),
        ),
        ("grant_expired", Some(&p), shop("read").agent("mixed")),
        ("tool_not_granted", Some(&p), shop("write").agent("narrow")),
        ("tool_denied", Some(&p), shop("read").agent("denied")),
        (
            "tool_side_effect_unknown",
            Some(&p),
            shop("mystery").agent("base"),
        ),
        (
            "side_effect_not_allowed",
            Some(&p),
            shop("wipe").agent("base"),
        ),
        ("trust_too_low", Some(&p), shop("write").agent("weak")),
        (
            "prompt_not_granted",
            Some(&lib),
            library("prompt", "draft").agent("narrow"),
        ),
        (
            "prompt_denied",
            Some(&lib),
            library("prompt", "audit").agent("narrow"),
        ),
        (
            "prompt_unknown",
            Some(&lib),
            library("prompt", "ghost").agent("all"),
        ),
        (
            "resource_not_granted",
            Some(&lib),
            library("resource", "file:///other/a").agent("narrow"),
        ),
        (
            "resource_denied",
            Some(&lib),
            library("resource", "file:///pub/vault/x").agent("narrow"),
        ),
        (
            "resource_unknown",
            Some(&lib),
            library("resource", "kb://elsewhere").agent("all"),
        ),
    ];
    let mut reached = HashSet::new();
    for (want, snapshot, req) in &rows {
        let d = authorize(*snapshot, &req.input(), &Options::default(), at(NOW));
        assert_eq!(
            d.reason.as_str(),
            *want,
            "{} {:?} {}",
            req.path,
            req.headers,
            req.body
        );
        reached.insert(d.reason);
    }
    let unreached: Vec<&str> = Reason::ALL
        .iter()
        .filter(|r| !reached.contains(*r))
        .map(|r| r.as_str())
        .collect();
    assert!(
        unreached.is_empty(),
        "no request here reaches {unreached:?}"
    );
}

#[test]
fn policy_versions() {
    let p = policy();
    let version = |req: Req| {
        decide_at(&p, &req.input(), Mode::Enforce, at(NOW))
            .policy_version
            .map(|v| v.to_string())
    };
    assert_eq!(
        version(shop("read").agent("base")).as_deref(),
        Some("base-7")
    );
    assert_eq!(
        version(shop("read").agent("pick")).as_deref(),
        Some("shop-v3")
    );
    assert_eq!(
        version(shop("read").agent("stranger")).as_deref(),
        Some("shop-v3")
    );
    assert_eq!(
        version(Req::tool("/open/mcp", "read")).as_deref(),
        Some("v1")
    );
}

/// A server that governs prompts and resources, its twin with `defaultDecision: allow`, and one
/// that declares them but governs tools only.
const PRIMITIVES: &str = r#"
apiVersion: mcpruntime.org/v1alpha1
kind: MCPServer
metadata: {name: library, namespace: lib}
spec:
  ingressPath: /library/mcp
  tools:
    - {name: search, sideEffect: read}
  prompts:
    - {name: summarize}
    - {name: draft, requiredTrust: medium}
    - {name: audit, requiredTrust: high}
  resources:
    - {uriPrefix: "file:///pub/", requiredTrust: low}
    - {uriPrefix: "file:///pub/vault/", requiredTrust: high}
    - {uri: "file:///pub/vault/index", requiredTrust: low}
  policy: {govern: [tools, prompts, resources], policyVersion: lib-2}
---
apiVersion: mcpruntime.org/v1alpha1
kind: MCPServer
metadata: {name: open-library, namespace: lib}
spec:
  ingressPath: /open/mcp
  prompts:
    - {name: summarize}
    - {name: draft}
  resources:
    - {uriPrefix: "file:///pub/"}
  policy: {govern: [tools, prompts, resources], defaultDecision: allow}
---
apiVersion: mcpruntime.org/v1alpha1
kind: MCPServer
metadata: {name: tools-only, namespace: lib}
spec:
  ingressPath: /tools-only/mcp
  tools:
    - {name: search, sideEffect: read}
  prompts:
    - {name: summarize}
  resources:
    - {uriPrefix: "file:///pub/"}
---
apiVersion: v1
kind: List
items:
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: all, namespace: lib},
     spec: {serverRef: {name: library}, subject: {agentID: all}, maxTrust: high, allowedSideEffects: [read]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: writer, namespace: lib},
     spec: {serverRef: {name: library}, subject: {agentID: writer}, maxTrust: high, allowedSideEffects: [write]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: tool-ruled, namespace: lib},
     spec: {serverRef: {name: library}, subject: {agentID: tool-ruled}, maxTrust: low, allowedSideEffects: [read],
            toolRules: [{name: nothing-else}]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: narrow, namespace: lib},
     spec: {serverRef: {name: library}, subject: {agentID: narrow}, maxTrust: medium, allowedSideEffects: [read],
            promptRules: [{name: summarize}, {name: audit, decision: deny}],
            resourceRules: [{uriPrefix: "file:///pub/"}, {uriPrefix: "file:///pub/vault/", decision: deny},
                            {uri: "file:///pub/vault/index"}]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: ruled, namespace: lib},
     spec: {serverRef: {name: library}, subject: {agentID: ruled}, maxTrust: medium, allowedSideEffects: [read],
            promptRules: [{name: summarize, requiredTrust: medium}],
            resourceRules: [{uriPrefix: "file:///pub/", requiredTrust: medium}, {uriPrefix: "file:///pub/deep/"}]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: watch, namespace: lib},
     spec: {serverRef: {name: library}, subject: {agentID: watch}, mode: monitor, maxTrust: medium,
            allowedSideEffects: [read], promptRules: [{name: summarize}]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: mix-1-monitor, namespace: lib},
     spec: {serverRef: {name: library}, subject: {agentID: mix}, mode: monitor, maxTrust: high, allowedSideEffects: [read],
            promptRules: [{name: draft, decision: deny}, {name: audit}]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: mix-2-enforce, namespace: lib},
     spec: {serverRef: {name: library}, subject: {agentID: mix}, maxTrust: medium, allowedSideEffects: [read],
            resourceRules: [{uriPrefix: "file:///pub/vault/", decision: deny}]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: open-narrow, namespace: lib},
     spec: {serverRef: {name: open-library}, subject: {agentID: narrow}, allowedSideEffects: [read],
            promptRules: [{name: summarize}, {name: banned, decision: deny}],
            resourceRules: [{uri: "file:///pub/a"}]}}
"#;

fn library(primitive: &str, target: &str) -> Req {
    match primitive {
        "prompt" => Req::prompt("/library/mcp", target),
        _ => Req::resource("/library/mcp", target),
    }
}

#[test]
fn prompts_are_decided_by_the_same_steps_as_tools() {
    let p = snapshot(PRIMITIVES);
    let prompt = |name: &str| library("prompt", name);
    let cases = [
        (prompt("summarize").agent("all"), allow("lib/all")),
        (prompt("audit").agent("all"), allow("lib/all")),
        // A prompt's side effect is `read`: a grant that allows only `write` does not contribute.
        (
            prompt("summarize").agent("writer"),
            deny("side_effect_not_allowed", Some("lib/writer")),
        ),
        // Tool rules say nothing about prompts: the grant has no prompt rules, so it covers them.
        (
            prompt("summarize").agent("tool-ruled"),
            allow("lib/tool-ruled"),
        ),
        (prompt("summarize").agent("narrow"), allow("lib/narrow")),
        (
            prompt("draft").agent("narrow"),
            deny("prompt_not_granted", None),
        ),
        (
            prompt("audit").agent("narrow"),
            deny("prompt_denied", Some("lib/narrow")),
        ),
        // The rule's trust raises the prompt's own.
        (prompt("summarize").agent("ruled"), allow("lib/ruled")),
        // Not declared: nothing can grant it, even a grant that covers every prompt.
        (
            prompt("ghost").agent("all"),
            deny("prompt_unknown", Some("lib/all")),
        ),
        (prompt("summarize"), deny("missing_identity", None)),
        (
            prompt("summarize").agent("stranger"),
            deny("no_matching_grant", None),
        ),
    ];
    for (req, want) in cases {
        assert_eq!(run(&p, &req), want, "{:?} {}", req.headers, req.body);
    }

    let req = prompt("draft").agent("all");
    let d = decide_at(&p, &req.input(), Mode::Enforce, at(NOW));
    assert_eq!(d.tool.map(|f| f.required_trust), Some(Trust::Medium));
    assert_eq!(
        d.call.as_ref().and_then(|c| c.target_of(Primitive::Prompt)),
        Some("draft")
    );
    let req = prompt("summarize").agent("ruled");
    let d = decide_at(&p, &req.input(), Mode::Enforce, at(NOW));
    assert_eq!(
        d.trust,
        Some(TrustFigures {
            required: Trust::Medium,
            admin: Trust::Medium,
            consented: Trust::Medium,
            effective: Trust::Medium,
        })
    );
    assert_eq!(d.policy_version.map(|v| &**v), Some("lib-2"));
}

#[test]
fn resources_match_exactly_else_by_the_longest_prefix_in_canonical_form() {
    let p = snapshot(PRIMITIVES);
    let resource = |uri: &str| library("resource", uri);
    let cases = [
        (
            resource("file:///pub/a").agent("narrow"),
            allow("lib/narrow"),
        ),
        // The longest rule prefix (`file:///pub/vault/`, deny) wins over the shorter allow.
        (
            resource("file:///pub/vault/x").agent("narrow"),
            deny("resource_denied", Some("lib/narrow")),
        ),
        // An exact rule wins over every prefix rule, and the exact entry over every prefix entry.
        (
            resource("file:///pub/vault/index").agent("narrow"),
            allow("lib/narrow"),
        ),
        (
            resource("file:///other/a").agent("narrow"),
            deny("resource_not_granted", None),
        ),
        // Matched in canonical form: dot segments and percent-encoding do not step around a rule.
        (
            resource("file:///pub/a/../vault/x").agent("narrow"),
            deny("resource_denied", Some("lib/narrow")),
        ),
        (
            resource("file:///pub/%76ault/x").agent("narrow"),
            deny("resource_denied", Some("lib/narrow")),
        ),
        // The inventory's longest prefix asks for high trust; the grant gives medium.
        (
            resource("file:///pub/vault/x").agent("ruled"),
            deny("trust_too_low", Some("lib/ruled")),
        ),
        (
            resource("file:///pub/vault/x").agent("all"),
            allow("lib/all"),
        ),
        (
            resource("file:///pub/deep/x").agent("ruled"),
            allow("lib/ruled"),
        ),
        (
            resource("kb://elsewhere").agent("all"),
            deny("resource_unknown", Some("lib/all")),
        ),
    ];
    for (req, want) in cases {
        assert_eq!(run(&p, &req), want, "{:?} {}", req.headers, req.body);
    }

    let trust = |uri: &str| {
        decide_at(
            &p,
            &resource(uri).agent("ruled").input(),
            Mode::Enforce,
            at(NOW),
        )
        .trust
        .map(|t| (t.required, t.admin))
    };
    // The rule for `file:///pub/` requires medium; the one for `file:///pub/deep/` nothing more
    // than the inventory's low; under `file:///pub/vault/` the inventory requires high.
    assert_eq!(trust("file:///pub/x"), Some((Trust::Medium, Trust::Medium)));
    assert_eq!(
        trust("file:///pub/deep/x"),
        Some((Trust::Low, Trust::Medium))
    );
    assert_eq!(
        trust("file:///pub/vault/x"),
        Some((Trust::High, Trust::Medium))
    );

    // The decision reports the target as sent, not its canonical form.
    let sent = "file:///pub/a/../vault/x";
    let req = resource(sent).agent("narrow");
    let d = decide_at(&p, &req.input(), Mode::Enforce, at(NOW));
    assert_eq!(
        d.call
            .as_ref()
            .and_then(|c| c.target_of(Primitive::Resource)),
        Some(sent)
    );
    assert_eq!(d.tool.map(|f| f.required_trust), Some(Trust::High));
}

#[test]
fn prompts_and_resources_a_server_does_not_govern_are_protocol_traffic() {
    let p = snapshot(PRIMITIVES);
    for req in [
        Req::prompt("/tools-only/mcp", "summarize"),
        Req::prompt("/tools-only/mcp", "ghost").agent("stranger"),
        Req::resource("/tools-only/mcp", "file:///pub/a"),
        Req::resource("/tools-only/mcp", "file:///pub/%5C"),
    ] {
        let d = decide_at(&p, &req.input(), Mode::Enforce, at(NOW));
        assert_eq!(seen(&d), expect("allow", "allowed", false, None, None));
        assert_eq!(d.tool, None, "not decided, so not looked up: {}", req.body);
    }
    // The same server decides its tool calls.
    assert_eq!(
        run(&p, &Req::tool("/tools-only/mcp", "search")),
        deny("missing_identity", None)
    );
}

#[test]
fn default_decision_allow_for_prompts_and_resources() {
    let p = snapshot(PRIMITIVES);
    let cases = [
        (
            Req::prompt("/open/mcp", "draft").agent("narrow"),
            expect("allow", "prompt_not_granted", false, None, None),
        ),
        (
            Req::resource("/open/mcp", "file:///pub/b").agent("narrow"),
            expect("allow", "resource_not_granted", false, None, None),
        ),
        (
            Req::prompt("/open/mcp", "draft").agent("stranger"),
            expect("allow", "no_matching_grant", false, None, None),
        ),
        (
            Req::resource("/open/mcp", "file:///pub/a").agent("narrow"),
            allow("lib/open-narrow"),
        ),
        // Only the "nothing grants it" reasons: a deny rule and an undeclared target still deny.
        (
            Req::prompt("/open/mcp", "banned").agent("narrow"),
            deny("prompt_denied", Some("lib/open-narrow")),
        ),
        (
            Req::prompt("/open/mcp", "summarize").agent("narrow"),
            allow("lib/open-narrow"),
        ),
    ];
    for (req, want) in cases {
        assert_eq!(run(&p, &req), want, "{:?} {}", req.headers, req.body);
    }
    // A prompt the server does not declare is denied even when the default is allow.
    let undeclared = snapshot(&PRIMITIVES.replace(
        "promptRules: [{name: summarize}, {name: banned, decision: deny}]",
        "promptRules: [{name: summarize}, {name: banned}]",
    ));
    assert_eq!(
        run(
            &undeclared,
            &Req::prompt("/open/mcp", "banned").agent("narrow")
        ),
        deny("prompt_unknown", Some("lib/open-narrow"))
    );
}

#[test]
fn monitor_grants_for_prompts_and_resources() {
    let p = snapshot(PRIMITIVES);
    let cases = [
        // Every live grant of the caller is a monitor grant: its denials are let through.
        (
            library("prompt", "draft").agent("watch"),
            would_deny("prompt_not_granted", None),
        ),
        (
            library("prompt", "summarize").agent("watch"),
            allow("lib/watch"),
        ),
        // A monitor deny rule over an enforce grant that allows: a would-deny.
        (
            library("prompt", "draft").agent("mix"),
            would_deny("prompt_denied", Some("lib/mix-1-monitor")),
        ),
        // An enforce deny rule is enforced, whatever the monitor grant allows.
        (
            library("resource", "file:///pub/vault/x").agent("mix"),
            deny("resource_denied", Some("lib/mix-2-enforce")),
        ),
        // The monitor grant's allows are real: its higher trust admits what needs high.
        (
            library("prompt", "audit").agent("mix"),
            allow("lib/mix-1-monitor"),
        ),
    ];
    for (req, want) in cases {
        assert_eq!(run(&p, &req), want, "{:?} {}", req.headers, req.body);
    }
}

#[test]
fn batches_decide_every_governed_primitive() {
    let p = snapshot(PRIMITIVES);
    let tool = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}"#;
    let prompt = r#"{"jsonrpc":"2.0","id":2,"method":"prompts/get","params":{"name":"audit"}}"#;
    let resource =
        r#"{"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"file:///pub/a"}}"#;
    let batch = format!("[{tool},{resource},{prompt}]");

    let req = Req::post("/library/mcp", &batch).agent("narrow");
    let d = decide_at(&p, &req.input(), Mode::Enforce, at(NOW));
    assert_eq!(seen(&d), deny("prompt_denied", Some("lib/narrow")));
    assert_eq!(d.call.as_ref().and_then(|c| c.id.as_deref()), Some("2"));
    assert_eq!(
        d.call.as_ref().and_then(|c| c.target_of(Primitive::Prompt)),
        Some("audit")
    );

    let req = Req::post("/library/mcp", &batch).agent("all");
    let d = decide_at(&p, &req.input(), Mode::Enforce, at(NOW));
    assert_eq!(seen(&d), allow("lib/all"));
    assert_eq!(d.call.as_ref().and_then(|c| c.id.as_deref()), Some("1"));

    // Where only tools are governed, the prompt and the resource in a batch are not decided.
    let req = Req::post("/tools-only/mcp", &format!("[{prompt},{resource}]"));
    let d = decide_at(&p, &req.input(), Mode::Enforce, at(NOW));
    assert_eq!(seen(&d), expect("allow", "allowed", false, None, None));
    assert_eq!(d.call.as_ref().and_then(|c| c.id.as_deref()), Some("2"));
}
