//! `RUST_LOG` through the real binary: every `EnvFilter` directive works, including the one that
//! keeps the service's logs and silences the audit trail (`mcp_authz::audit=off`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test harness: a panic is the report

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, authorization_health, check_raw, conformance_dir, metadata_str};
use tonic::transport::Channel;

const CHECKS: usize = 5;

fn allowed() -> Vec<u8> {
    std::fs::read(conformance_dir().join("requests/04-echo-allowed.bin")).unwrap()
}

async fn send_checks(channel: &Channel) {
    for _ in 0..CHECKS {
        let response = check_raw(channel, allowed()).await.unwrap();
        assert_eq!(metadata_str(&response, "decision"), Some("allow"));
    }
}

/// Runs `serve` with `RUST_LOG=directive`, answers `CHECKS` Checks, stops it with SIGTERM (which
/// flushes the audit trail) and returns its stderr lines. Readiness is read from gRPC health,
/// since a directive may silence the log lines that announce it.
async fn log_of(directive: &str) -> Vec<String> {
    let addr = format!("127.0.0.1:{}", common::install::free_port());
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", &addr, "--admin-listen", "off"])
        .arg("--policy-dir")
        .arg(conformance_dir().join("policies"))
        .env("RUST_LOG", directive)
        .env_remove("MCP_AUTHZ_OTLP_ENDPOINT")
        .env_remove("MCP_AUTHZ_MODE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let channel = loop {
        if let Ok(channel) = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            // 1 is SERVING: the policy is loaded.
            && authorization_health(&channel).await == 1
        {
            break channel;
        }
        assert!(Instant::now() < deadline, "mcp-authz did not start");
        assert!(child.try_wait().unwrap().is_none(), "mcp-authz exited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    send_checks(&channel).await;
    drop(channel);
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0), "{stderr}");
    stderr.lines().map(str::to_string).collect()
}

fn audit_lines(log: &[String]) -> usize {
    log.iter()
        .filter(|l| l.contains("mcp_authz::audit:"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_off_directive_keeps_info_logs_and_drops_audit_lines() {
    let log = log_of("info,mcp_authz::audit=off").await;
    assert!(log.iter().any(|l| l.contains("policy loaded")), "{log:?}");
    assert!(log.iter().any(|l| l.contains("stopped")), "{log:?}");
    assert_eq!(audit_lines(&log), 0, "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_info_level_writes_every_audit_line() {
    let log = log_of("info").await;
    assert!(log.iter().any(|l| l.contains("policy loaded")), "{log:?}");
    assert_eq!(audit_lines(&log), CHECKS, "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_target_level_applies_to_that_target_only() {
    // Everything at warn but the audit trail: the audit lines stay, the info logs go.
    let log = log_of("warn,mcp_authz::audit=info").await;
    assert_eq!(audit_lines(&log), CHECKS, "{log:?}");
    assert!(!log.iter().any(|l| l.contains("policy loaded")), "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_warn_level_silences_info_logs_and_audit_lines() {
    let log = log_of("warn").await;
    assert!(!log.iter().any(|l| l.contains("INFO")), "{log:?}");
    assert_eq!(audit_lines(&log), 0, "{log:?}");
}
