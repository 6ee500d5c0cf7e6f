//! The real CLI: `validate` and `serve` exit codes, signals and health.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{BIN, Server, check_raw, conformance_dir, metadata_str};
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
            "ok: 4 files, 5 servers, 9 grants, 4 sessions, 0 warnings, revision sha256:"
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
