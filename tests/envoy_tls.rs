//! A real Envoy 1.40 reaching mcp-authz over mutual TLS: the shipped
//! `deploy/envoy/envoy-tls.yaml` with its addresses and certificate files pointed at this test's.
//! With its client certificate Envoy gets decisions; without one, mcp-authz refuses the
//! connection and Envoy fails closed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test harness: a panic is the report

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::envoy::{Envoy, Ports, shipped_config};
use common::install::free_port;
use common::tls::{Leaf, Pki};
use common::upstream::Upstream;
use common::{Server, scratch_dir};

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The status of a `tools/call` of `tool` through Envoy's `agents` listener.
fn call(port: u16, agent: &str, tool: &str) -> u16 {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}","arguments":{{}}}}}}"#
    );
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "POST /demo/mcp HTTP/1.1\r\nhost: mcp.local\r\nconnection: close\r\nx-mcp-agent-id: {agent}\r\nx-mcp-team-id: support\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut status = String::new();
    BufReader::new(stream).read_line(&mut status).unwrap();
    status
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The shipped TLS config with this test's ports and files; `client_cert` false drops Envoy's
/// client certificate from the cluster.
fn tls_config(ports: &Ports, client: &Leaf, ca: &Path, client_cert: bool) -> String {
    let mut config = shipped_config("envoy-tls.yaml", ports)
        .replace("/etc/envoy/tls/ca.crt", &ca.display().to_string())
        .replace("/etc/envoy/tls/tls.crt", &client.cert.display().to_string())
        .replace("/etc/envoy/tls/tls.key", &client.key.display().to_string());
    assert!(
        !config.contains("filename: /etc/envoy/tls"),
        "templating missed a file"
    );
    assert!(config.contains("UpstreamTlsContext"));
    if !client_cert {
        let lines: Vec<&str> = config.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.trim() == "tls_certificates:")
            .expect("the cluster's client certificate");
        config = lines[..at]
            .iter()
            .chain(&lines[at + 2..])
            .copied()
            .collect::<Vec<_>>()
            .join("\n");
        assert!(!config.contains(&client.cert.display().to_string()));
    }
    config
}

/// Envoy on the TLS config, and the port of its agents' listener.
fn start_envoy(
    authz: u16,
    upstream: u16,
    client: &Leaf,
    ca: &Path,
    client_cert: bool,
) -> (Envoy, u16) {
    let ports = Ports {
        admin: free_port(),
        agents: free_port(),
        public: free_port(),
        authz,
        upstream,
        otel: free_port(),
    };
    let config = tls_config(&ports, client, ca, client_cert);
    let envoy = Envoy::start(&format!("envoy-tls-{}", ports.agents), &config, ports.admin);
    (envoy, ports.agents)
}

/// Waits until `call` answers `want` (Envoy's health check must see mcp-authz first).
fn wait_status(agents: u16, agent: &str, tool: &str, want: u16) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = call(agents, agent, tool);
        if status == want || Instant::now() > deadline {
            return status;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn envoy_reaches_mcp_authz_over_mutual_tls_and_fails_closed_without_a_client_certificate() {
    let dir = scratch_dir("envoy-tls");
    let pki = Pki::new(&dir, "ca");
    // mcp-authz's certificate names the Service Envoy reaches it by (envoy-tls.yaml checks it).
    let server_cert = pki.leaf_for("mcp-authz", &["mcp-authz"]);
    let client = pki.leaf("envoy");
    let (cert, key, ca) = (
        server_cert.cert.display().to_string(),
        server_cert.key.display().to_string(),
        pki.ca.display().to_string(),
    );
    let authz = Server::start(
        &manifest().join("deploy/policies"),
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &ca,
        ],
    );
    let authz_port: u16 = authz.addr.rsplit(':').next().unwrap().parse().unwrap();
    let upstream = Upstream::start().port;

    let (with_cert, agents) = start_envoy(authz_port, upstream, &client, &pki.ca, true);
    // Allowed: the support agent's search; denied: a tool no grant covers.
    assert_eq!(wait_status(agents, "support-bot", "search", 200), 200);
    assert_eq!(call(agents, "support-bot", "delete_ticket"), 403);
    drop(with_cert);

    let (_without, agents) = start_envoy(authz_port, upstream, &client, &pki.ca, false);
    // No client certificate: every handshake is refused, and ext_authz fails closed.
    for _ in 0..3 {
        assert_eq!(call(agents, "support-bot", "search"), 403);
    }
}
