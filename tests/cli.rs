//! The real CLI: `validate`, `serve` and `check` exit codes, signals and health.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test harness: a panic is the report

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{BIN, Server, check_raw, conformance_dir, metadata_str, post, verdict};
use serde_json::Value;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

fn mcp_authz(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("MCP_AUTHZ_POLICY_DIR")
        .output()
        .unwrap()
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mcp-authz-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn validate_prints_one_summary_line() {
    let dir = conformance_dir().join("policies");
    let out = mcp_authz(&["validate", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.starts_with(
            "ok: 5 files, 8 servers, 13 grants, 4 sessions, 0 warnings, revision sha256:"
        ),
        "{stdout}"
    );
}

#[test]
fn validate_reports_every_problem_and_exits_1() {
    let dir = scratch("bad");
    std::fs::write(
        dir.join("a.yaml"),
        "apiVersion: mcpruntime.org/v1alpha1\nkind: MCPAccessGrant\nmetadata: {name: g}\nspec:\n  serverRef: {name: s}\n  maxTrust: huge\n",
    )
    .unwrap();
    std::fs::write(dir.join("b.yaml"), "kind: [\n").unwrap();
    let file = conformance_dir().join("policies/servers.yaml");
    let out = mcp_authz(&["validate", dir.to_str().unwrap(), file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let a = format!(
        "{}/a.yaml:6: MCPAccessGrant default/g: spec.maxTrust: `huge` is not one of",
        dir.display()
    );
    assert!(stderr.contains(&a), "{stderr}");
    assert!(
        stderr.contains(&format!("{}/b.yaml:", dir.display())),
        "{stderr}"
    );
    assert!(stderr.contains("invalid policy set: 2 errors"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn serve_with_an_invalid_policy_prints_errors_and_exits_2() {
    let dir = scratch("serve-bad");
    std::fs::write(
        dir.join("x.yaml"),
        "apiVersion: nope\nkind: MCPServer\nmetadata: {name: s}\n",
    )
    .unwrap();
    let out = mcp_authz(&[
        "serve",
        "--policy-dir",
        dir.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "off",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("x.yaml:1: MCPServer default/s: apiVersion: unknown apiVersion `nope`"),
        "{stderr}"
    );

    let missing = mcp_authz(&[
        "serve",
        "--policy-dir",
        "/nonexistent",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn flags_also_come_from_environment_variables() {
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("MCP_AUTHZ_POLICY_DIR", "/nonexistent-from-env")
        .env("MCP_AUTHZ_ADMIN_LISTEN", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent-from-env"));

    let bad_mode = Command::new(BIN)
        .args(["serve", "--policy-dir", "x"])
        .env("MCP_AUTHZ_MODE", "loose")
        .output()
        .unwrap();
    assert_eq!(bad_mode.status.code(), Some(2), "clap rejects a bad value");
    assert!(String::from_utf8_lossy(&bad_mode.stderr).contains("loose"));
}

fn wait_exit(server: &mut Server) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            return status.code();
        }
        assert!(Instant::now() < deadline, "did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_service_mode_through_the_running_binary() {
    let server = Server::start(&conformance_dir().join("policies"), &["--mode", "monitor"]);
    let channel = server.channel().await;
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "envoy.service.auth.v3.Authorization"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "other".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    // --mode monitor: an enforced denial becomes a would-deny.
    let bytes = std::fs::read(
        conformance_dir().join("requests/06-destructive-not-in-allowed-side-effects.bin"),
    )
    .unwrap();
    let response = check_raw(&channel, bytes).await.unwrap();
    assert_eq!(metadata_str(&response, "decision"), Some("allow"));
    assert_eq!(
        metadata_str(&response, "reason"),
        Some("side_effect_not_allowed")
    );
}

#[test]
fn sigterm_and_sigint_stop_cleanly() {
    for signal in ["TERM", "INT"] {
        let mut server = Server::start(&conformance_dir().join("policies"), &[]);
        server.signal(signal);
        assert_eq!(wait_exit(&mut server), Some(0), "SIG{signal}");
        let log = server.log.lock().unwrap().join("\n");
        assert!(log.contains("shutting down"), "{log}");
    }
}

/// A signal while the service is still loading its policy (a slow start: thousands of
/// directories to watch) is a clean stop too, not the signal's default action.
#[test]
fn a_signal_during_start_up_stops_cleanly() {
    let dir = scratch("early-signal");
    for file in std::fs::read_dir(conformance_dir().join("policies")).unwrap() {
        let file = file.unwrap();
        std::fs::copy(file.path(), dir.join(file.file_name())).unwrap();
    }
    for n in 0..3000 {
        std::fs::create_dir_all(dir.join(format!("d{}/{n}", n % 30))).unwrap();
    }
    for signal in ["INT", "TERM"] {
        let mut command = Command::new(BIN);
        command.args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "off"]);
        command.arg("--policy-dir").arg(&dir);
        let mut server = Server::spawn_until(command, false);
        let early = server.find_log("policy loaded").is_none();
        server.signal(signal);
        assert_eq!(wait_exit(&mut server), Some(0), "SIG{signal}");
        let log = server.log.lock().unwrap().join("\n");
        assert!(log.contains("shutting down"), "{log}");
        if !early {
            eprintln!("SIG{signal}: the policy was already loaded when the signal was sent");
        }
    }
}

/// `mcp-authz check` on the conformance policies at a fixed time: exit status and report.
fn check(args: &[&str]) -> (Option<i32>, Value) {
    check_at(&[&["--now", "2027-01-01T00:00:00Z"], args].concat())
}

/// `mcp-authz check` on the conformance policies (at the time `args` give, else now).
fn check_at(args: &[&str]) -> (Option<i32>, Value) {
    let dir = conformance_dir().join("policies");
    let mut all = vec!["check", "--policy-dir", dir.to_str().unwrap()];
    all.extend(args);
    let out = mcp_authz(&all);
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), report)
}

fn grant<'r>(report: &'r Value, name: &str) -> &'r Value {
    report["grants"]
        .as_array()
        .and_then(|grants| grants.iter().find(|g| g["name"] == name))
        .unwrap_or_else(|| panic!("no grant {name} in {report:#}"))
}

#[test]
fn check_decides_prompts_and_resources() {
    let docs = ["--server", "kb/docs", "--agent", "reader-bot"];
    let run = |target: &[&str]| check(&[&docs[..], target].concat());

    let (code, allowed) = run(&["--prompt", "summarize"]);
    assert_eq!(code, Some(0), "{allowed:#}");
    assert_eq!(allowed["primitive"], "prompt");
    assert_eq!(allowed["prompt"], "summarize");
    assert_eq!(
        allowed.get("tool"),
        None,
        "the target is under its primitive's key"
    );
    assert_eq!(
        (&allowed["decision"], &allowed["reason"]),
        (&Value::from("allow"), &Value::from("allowed"))
    );
    assert_eq!(allowed["matched_grant"], "kb/readers");
    assert_eq!(allowed["prompt_facts"]["side_effect"], "read");
    let readers = grant(&allowed, "kb/readers");
    assert_eq!(
        (
            &readers["rule"],
            &readers["contributes"],
            &readers["decided"]
        ),
        (
            &Value::from("allow"),
            &Value::from(true),
            &Value::from(true)
        )
    );
    assert_eq!(grant(&allowed, "kb/writers")["matches"], false);

    let (code, denied) = run(&["--prompt", "draft_reply"]);
    assert_eq!(code, Some(1), "{denied:#}");
    assert_eq!(denied["reason"], "prompt_denied");
    assert_eq!(grant(&denied, "kb/readers")["rule"], "deny");

    // The longest uriPrefix rule decides, in canonical form; the report names the URI as given.
    for uri in [
        "kb://tickets/secret/9",
        "kb://tickets/%73ecret/9",
        "kb://tickets/x/../secret/9",
    ] {
        let (code, secret) = run(&["--resource", uri]);
        assert_eq!(code, Some(1), "{secret:#}");
        assert_eq!(secret["reason"], "resource_denied");
        assert_eq!(secret["resource"], uri);
        assert_eq!(
            grant(&secret, "kb/readers")["rule_name"],
            "kb://tickets/secret/"
        );
    }
    let (code, ticket) = run(&["--resource", "kb://tickets/9"]);
    assert_eq!(
        (code, &ticket["reason"]),
        (Some(0), &Value::from("allowed"))
    );
    let (code, unknown) = run(&["--resource", "kb://elsewhere"]);
    assert_eq!(
        (code, &unknown["reason"]),
        (Some(1), &Value::from("resource_not_granted"))
    );
    // No canonical form: refused as inspection refuses it.
    let (code, ambiguous) = run(&["--resource", "kb://tickets/%00"]);
    assert_eq!(
        (code, &ambiguous["reason"]),
        (Some(1), &Value::from("rpc_ambiguous"))
    );

    // A grant with tool rules only covers every prompt.
    let (code, writer) = check(&[
        "--server",
        "kb/docs",
        "--agent",
        "writer-bot",
        "--prompt",
        "summarize",
    ]);
    assert_eq!(
        (code, &writer["matched_grant"]),
        (Some(0), &Value::from("kb/writers"))
    );

    // kb/chat governs tools only; check decides its prompt as if it governed prompts.
    let (code, chat) = check(&[
        "--server", "kb/chat", "--agent", "chat-bot", "--prompt", "greet",
    ]);
    assert_eq!(
        (code, &chat["matched_grant"]),
        (Some(0), &Value::from("kb/chatters"))
    );
    let (code, ghost) = check(&[
        "--server", "kb/chat", "--agent", "chat-bot", "--prompt", "ghost",
    ]);
    assert_eq!(
        (code, &ghost["reason"]),
        (Some(1), &Value::from("prompt_unknown"))
    );
}

#[test]
fn check_takes_exactly_one_target() {
    let server = ["--server", "kb/docs", "--agent", "reader-bot"];
    for targets in [
        &[][..],
        &["--tool", "search", "--prompt", "summarize"][..],
        &["--prompt", "summarize", "--resource", "kb://handbook"][..],
    ] {
        let (code, report) = check(&[&server[..], targets].concat());
        assert_eq!(code, Some(2), "{targets:?}");
        assert_eq!(report, Value::Null, "{targets:?}");
    }
    let (code, _) = check(&["--server", "kb/nope", "--prompt", "summarize"]);
    assert_eq!(code, Some(2), "an unknown server");
    let (code, tool) = check(&[&server[..], &["--tool", "search"]].concat());
    assert_eq!((code, &tool["tool"]), (Some(0), &Value::from("search")));
    assert_eq!(tool["primitive"], "tool");
}

/// `check` gives the decision the running service gives for the same call and caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_agrees_with_the_service_for_every_primitive() {
    let server = Server::start(&conformance_dir().join("policies"), &[]);
    let channel = server.channel().await;
    let calls = [
        ("reader-bot", "--prompt", "summarize"),
        ("reader-bot", "--prompt", "draft_reply"),
        ("reader-bot", "--prompt", "nope"),
        ("writer-bot", "--prompt", "summarize"),
        ("stranger", "--prompt", "summarize"),
        ("reader-bot", "--resource", "kb://handbook"),
        ("reader-bot", "--resource", "kb://tickets/secret/1"),
        ("reader-bot", "--resource", "kb://tickets/%73ecret/1"),
        ("writer-bot", "--resource", "kb://tickets/1"),
        ("reader-bot", "--resource", "kb://other"),
        ("reader-bot", "--tool", "search"),
        ("writer-bot", "--tool", "nope"),
    ];
    for (agent, flag, target) in calls {
        let body = match flag {
            "--prompt" => format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{{"name":"{target}"}}}}"#
            ),
            "--resource" => format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{{"uri":"{target}"}}}}"#
            ),
            _ => format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{target}"}}}}"#
            ),
        };
        let request = post("/docs/mcp", &[("x-mcp-agent-id", agent)], &body);
        let served = verdict(&check_raw(&channel, request).await.unwrap());
        let (_, report) = check_at(&["--server", "kb/docs", "--agent", agent, flag, target]);
        let explained = (
            report["decision"].as_str().unwrap_or_default().to_string(),
            report["reason"].as_str().unwrap_or_default().to_string(),
            report["matched_grant"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
        assert_eq!(explained, served, "{agent} {flag} {target}");
    }
}
