//! Operator tools through the real binary: `mcp-authz check`, `/metrics`, `/healthz`, `/ready`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test harness: a panic is the report

mod common;

use std::fs;
use std::process::Command;
use std::time::Duration;

use common::{BIN, Server, admin_addr, check_raw, conformance_dir, http_get, scratch_dir};
use serde_json::Value;

const NOW: &str = "2027-01-01T00:00:00Z";

fn check(dir: &std::path::Path, args: &[&str]) -> (i32, Value) {
    let out = Command::new(BIN)
        .arg("check")
        .arg("--policy-dir")
        .arg(dir)
        .args(["--now", NOW])
        .args(args)
        .output()
        .unwrap();
    let code = out.status.code().unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (code, json)
}

fn grant<'j>(report: &'j Value, name: &str) -> &'j Value {
    report["grants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == name)
        .unwrap_or_else(|| panic!("no grant {name} in {report:#}"))
}

#[test]
fn check_allow_deny_and_would_deny() {
    let dir = conformance_dir().join("policies");
    let (code, allow) = check(
        &dir,
        &[
            "--server",
            "mcp-servers/demo",
            "--human",
            "h1",
            "--agent",
            "a1",
            "--tool",
            "echo",
        ],
    );
    assert_eq!(code, 0, "{allow:#}");
    assert_eq!(allow["decision"], "allow");
    assert_eq!(allow["reason"], "allowed");
    assert_eq!(allow["matched_grant"], "mcp-servers/g1");
    assert_eq!(
        allow["trust"],
        serde_json::json!({"required": "low", "admin": "high", "consented": "high", "effective": "high"})
    );
    assert_eq!(grant(&allow, "mcp-servers/g1")["contributes"], true);

    let (code, deny) = check(
        &dir,
        &[
            "--server",
            "mcp-servers/demo",
            "--agent",
            "carrier",
            "--tool",
            "upper",
        ],
    );
    assert_eq!(code, 1, "{deny:#}");
    assert_eq!(deny["reason"], "trust_too_low");
    assert_eq!(deny["would_deny"], false);
    assert_eq!(deny["trust"]["required"], "medium");
    assert_eq!(deny["trust"]["effective"], "low");
    assert_eq!(
        grant(&deny, "mcp-servers/a-carrier-tighten")["rule"],
        "deny"
    );
    assert_eq!(
        grant(&deny, "mcp-servers/a-carrier-tighten")["monitor"],
        true
    );

    let (code, would) = check(
        &dir,
        &[
            "--server",
            "mcp-servers/demo",
            "--agent",
            "a-new",
            "--tool",
            "upper",
        ],
    );
    assert_eq!(code, 3, "{would:#}");
    assert_eq!(would["decision"], "allow");
    assert_eq!(would["reason"], "trust_too_low");
    assert_eq!(would["would_deny"], true);
    assert_eq!(would["mode"], "monitor");
    assert_eq!(would["matched_grant"], "mcp-servers/rollout-low-trust");

    // --mode monitor turns the denial into a would-deny with the same reason.
    let (code, monitor) = check(
        &dir,
        &[
            "--server",
            "mcp-servers/demo",
            "--agent",
            "carrier",
            "--tool",
            "upper",
            "--mode",
            "monitor",
        ],
    );
    assert_eq!(
        (code, &monitor["reason"]),
        (3, &Value::from("trust_too_low"))
    );

    // Sessions and a bare server name.
    let (code, session) = check(
        &dir,
        &[
            "--server",
            "ledger",
            "--human",
            "alice",
            "--agent",
            "books-agent",
            "--team",
            "team-fin",
            "--session",
            "sess-alice",
            "--tool",
            "transfer",
        ],
    );
    assert_eq!(code, 1);
    assert_eq!(session["matched_session"], "finance/sess-alice");
    assert_eq!(session["trust"]["consented"], "medium");
}

#[test]
fn check_says_why_each_grant_was_skipped() {
    let dir = scratch_dir("check-skips");
    fs::write(
        dir.join("p.yaml"),
        "apiVersion: mcpruntime.org/v1alpha1
kind: MCPServer
metadata: {name: s, namespace: ops}
spec:
  tools: [{name: write, sideEffect: write}]
---
apiVersion: v1
kind: List
items:
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: a-disabled, namespace: ops},
     spec: {serverRef: {name: s}, subject: {agentID: x}, allowedSideEffects: [write], disabled: true}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: b-expired, namespace: ops},
     spec: {serverRef: {name: s}, subject: {agentID: x}, allowedSideEffects: [write], expiresAt: \"2026-01-01T00:00:00Z\"}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: c-other, namespace: ops},
     spec: {serverRef: {name: s}, subject: {agentID: other}}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: d-no-rule, namespace: ops},
     spec: {serverRef: {name: s}, subject: {agentID: x}, toolRules: [{name: read}]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: e-read-only, namespace: ops},
     spec: {serverRef: {name: s}, subject: {agentID: x}, allowedSideEffects: [read]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: f-monitor-deny, namespace: ops},
     spec: {serverRef: {name: s}, subject: {agentID: x}, mode: monitor, toolRules: [{name: write, decision: deny}]}}
  - {apiVersion: mcpruntime.org/v1alpha1, kind: MCPAccessGrant, metadata: {name: g-nobody, namespace: ops},
     spec: {serverRef: {name: s}, subject: {}}}
",
    )
    .unwrap();
    let (code, report) = check(
        &dir,
        &["--server", "ops/s", "--agent", "x", "--tool", "write"],
    );
    // The monitor deny rule is a would-deny over e-read-only's side_effect_not_allowed… which is
    // the enforce grants' own denial, so it is enforced.
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["reason"], "side_effect_not_allowed");
    let outcome = |name: &str| {
        grant(&report, name)["outcome"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(outcome("ops/a-disabled").contains("disabled"));
    assert!(outcome("ops/b-expired").contains("expired at 2026-01-01T00:00:00Z"));
    assert!(outcome("ops/c-other").contains("subject does not match"));
    assert!(outcome("ops/d-no-rule").contains("none for this tool"));
    assert!(outcome("ops/e-read-only").contains("does not allow its side effect `write`"));
    assert!(outcome("ops/f-monitor-deny").contains("deny rule"));
    assert_eq!(grant(&report, "ops/f-monitor-deny")["mode"], "monitor");
    assert!(outcome("ops/g-nobody").contains("matches no one"));
    assert_eq!(report["grants"].as_array().unwrap().len(), 7);
}

#[test]
fn check_exits_2_on_a_bad_policy_or_an_unknown_server() {
    let (code, _) = check(
        &conformance_dir().join("policies"),
        &["--server", "nope/x", "--tool", "t"],
    );
    assert_eq!(code, 2);
    let dir = scratch_dir("check-bad");
    fs::write(dir.join("bad.yaml"), "kind: [").unwrap();
    let (code, _) = check(&dir, &["--server", "a/b", "--tool", "t"]);
    assert_eq!(code, 2);
}

/// The value of one sample line, e.g. `name{labels} 3`.
fn sample(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_probes_from_the_running_binary() {
    let dir = scratch_dir("metrics");
    for entry in fs::read_dir(conformance_dir().join("policies")).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    let server = Server::start(&dir, &["--admin-listen", "127.0.0.1:0"]);
    let admin = admin_addr(&server);
    assert_eq!(http_get(&admin, "/healthz").0, 200);
    assert_eq!(http_get(&admin, "/ready").0, 200);
    assert_eq!(http_get(&admin, "/nope").0, 404);

    let channel = server.channel().await;
    let vector = |name: &str| fs::read(conformance_dir().join("requests").join(name)).unwrap();
    for (name, times) in [
        ("04-echo-allowed.bin", 3),
        ("12-monitor-grant-trust-too-low.bin", 2),
        ("13-monitor-grant-tool-not-granted.bin", 1),
        ("06-destructive-not-in-allowed-side-effects.bin", 1),
        ("26-unknown-path.bin", 1),
    ] {
        for _ in 0..times {
            check_raw(&channel, vector(name)).await.unwrap();
        }
    }
    let (status, metrics) = http_get(&admin, "/metrics");
    assert_eq!(status, 200);
    let demo = r#"server="mcp-servers/demo""#;
    let expect = [
        (format!(r#"mcp_authz_decisions_total{{{demo},decision="allow",reason="allowed",mode="enforce"}}"#), 3.0),
        (format!(r#"mcp_authz_decisions_total{{{demo},decision="allow",reason="trust_too_low",mode="monitor"}}"#), 2.0),
        (format!(r#"mcp_authz_decisions_total{{{demo},decision="deny",reason="side_effect_not_allowed",mode="enforce"}}"#), 1.0),
        (r#"mcp_authz_decisions_total{server="",decision="deny",reason="unknown_server",mode="enforce"}"#.to_string(), 1.0),
        (format!(r#"mcp_authz_would_deny_total{{{demo},grant="mcp-servers/rollout-low-trust",reason="trust_too_low"}}"#), 2.0),
        (format!(r#"mcp_authz_would_deny_total{{{demo},grant="",reason="tool_not_granted"}}"#), 1.0),
        (r#"mcp_authz_check_duration_seconds_count{decision="allow"}"#.to_string(), 6.0),
        (r#"mcp_authz_check_duration_seconds_count{decision="deny"}"#.to_string(), 2.0),
        (r#"mcp_authz_check_duration_seconds_bucket{le="0.1",decision="allow"}"#.to_string(), 6.0),
        (r#"mcp_authz_policy_objects{kind="MCPAccessGrant"}"#.to_string(), 13.0),
        ("mcp_authz_spans_dropped_total".to_string(), 0.0),
    ];
    for (prefix, value) in &expect {
        assert_eq!(
            sample(&metrics, prefix),
            Some(*value),
            "{prefix}\n{metrics}"
        );
    }
    let revision = server.find_log("policy loaded").unwrap();
    let revision = &revision[revision.find("sha256:").unwrap()..][..71];
    assert_eq!(
        sample(
            &metrics,
            &format!(r#"mcp_authz_policy_info{{revision="{revision}"}}"#)
        ),
        Some(1.0)
    );

    // A good reload, then a rejected one: counted, and /ready stays 200.
    fs::write(dir.join("extra.yaml"), "").unwrap();
    assert!(server.wait_log("policy reloaded", 1, Duration::from_secs(5)));
    fs::write(dir.join("extra.yaml"), "kind: [").unwrap();
    assert!(server.wait_log("policy reload rejected", 1, Duration::from_secs(5)));
    let (_, metrics) = http_get(&admin, "/metrics");
    assert_eq!(
        sample(
            &metrics,
            r#"mcp_authz_policy_reloads_total{result="success"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"mcp_authz_policy_reloads_total{result="failure"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metrics.matches("mcp_authz_policy_info{").count(),
        1,
        "one revision at a time"
    );
    assert_eq!(http_get(&admin, "/ready").0, 200);
}
