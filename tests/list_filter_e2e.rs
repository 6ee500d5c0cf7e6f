//! List filtering end to end (SPEC §7): the shipped `deploy/envoy/envoy.yaml` (ext_authz, then
//! ext_proc, both answered by mcp-authz) re-addressed to this test's ports, mcp-authz on
//! `tests/list_filter/policies`, a FastMCP upstream (`tests/list_filter/upstream.py`) answering
//! in JSON or in event streams, and the MCP Python SDK 1.x client (`tests/list_filter/client.py`).
//!
//! The invariant: for every caller, `list_tools()` shows exactly the tools that `call_tool()`
//! lets through.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test harness: a panic is the report

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::envoy::{Envoy, Ports, shipped_config};
use common::install::{envoy, free_port, python_venv};
use common::{Server, scratch_dir};
use serde_json::{Value, json};

/// The SDK release `tests/mcp_clients.rs` uses, so both share one venv.
const MCP_V1: &str = "1.30.0";

/// Every tool `upstream.py` serves; `catalog` is not in the server's inventory.
const TOOLS: [&str; 7] = [
    "search",
    "summarize",
    "create_ticket",
    "delete_ticket",
    "big_report",
    "wait_for_ack",
    "catalog",
];

/// The length of `big_report`'s answer, over Envoy's default 1 MiB buffer.
const BIG_REPORT_BYTES: u64 = 1536 * 1024;

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn here(file: &str) -> PathBuf {
    manifest().join("tests/list_filter").join(file)
}

fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| python_venv("mcp-v1-venv", "mcp", MCP_V1))
}

/// A child process killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The upstream, mcp-authz and Envoy.
struct Stack {
    policies: PathBuf,
    authz: Server,
    agents: u16,
    _upstream: Process,
    _envoy: Envoy,
}

impl Stack {
    /// `response`: `json` or `sse`, how the upstream answers a POST.
    fn start(response: &str) -> Stack {
        let policies = scratch_dir(&format!("list-filter-{response}"));
        for file in ["servers.yaml", "grants.yaml"] {
            std::fs::copy(here("policies").join(file), policies.join(file)).unwrap();
        }
        let upstream_port = free_port();
        let mut upstream = Process(
            Command::new(python())
                .arg(here("upstream.py"))
                .args(["--port", &upstream_port.to_string(), "--response", response])
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let authz = Server::start(&policies, &[]);
        let authz_port = authz.addr.rsplit(':').next().unwrap().to_string();
        let ports = Ports {
            admin: free_port(),
            agents: free_port(),
            public: free_port(),
            authz: authz_port.parse().unwrap(),
            upstream: upstream_port,
            otel: free_port(),
        };
        let envoy = Envoy::start(
            &format!("list-filter-envoy-{response}"),
            &shipped_config("envoy.yaml", &ports),
            ports.admin,
        );
        let agents = ports.agents;
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", upstream_port)).is_err() {
            if let Ok(Some(status)) = upstream.0.try_wait() {
                panic!("the upstream exited with {status}");
            }
            assert!(Instant::now() < deadline, "the upstream did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Stack {
            policies,
            authz,
            agents,
            _upstream: upstream,
            _envoy: envoy,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/demo/mcp", self.agents)
    }

    /// Runs `script` as `agent` (no identity header for `None`); one JSON line per action.
    fn client(&self, agent: Option<&str>, script: &[Value]) -> Vec<Value> {
        let headers = match agent {
            Some(agent) => json!({"x-mcp-agent-id": agent}),
            None => json!({}),
        };
        let out = Command::new(python())
            .arg(here("client.py"))
            .arg(self.url())
            .arg(headers.to_string())
            .arg(Value::from(script.to_vec()).to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "client.py failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), script.len(), "{lines:?}");
        lines
    }

    /// What `agent`'s `list_tools()` shows (and its `x-would-hide`), asserted to be exactly
    /// what `call_tool()` lets through.
    fn listed_is_callable(&self, agent: Option<&str>) -> (BTreeSet<String>, Option<u64>) {
        let mut script = vec![json!({"do": "list_tools"})];
        script.extend(TOOLS.iter().map(|t| json!({"do": "call", "name": t})));
        let out = self.client(agent, &script);
        let listed: BTreeSet<String> = out[0]["names"]
            .as_array()
            .unwrap_or_else(|| panic!("{agent:?} could not list: {}", out[0]))
            .iter()
            .map(|n| n.as_str().unwrap().to_string())
            .collect();
        let callable: BTreeSet<String> = out[1..]
            .iter()
            .filter(|call| call["denied"].is_null())
            .map(|call| call["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(listed, callable, "{agent:?}: listed vs callable; {out:#?}");
        if let Some(big) = out[1..].iter().find(|c| c["name"] == "big_report")
            && big["denied"].is_null()
        {
            assert_eq!(big["length"], BIG_REPORT_BYTES, "{big}");
        }
        (listed, out[0]["would_hide"].as_u64())
    }

    /// Puts the server in monitor mode and waits until mcp-authz has reloaded it.
    fn server_to_monitor_mode(&self) {
        let path = self.policies.join("servers.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("mode: allow-list"));
        std::fs::write(&path, text.replace("mode: allow-list", "mode: monitor")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.authz.find_log("policy reloaded").is_none() {
            assert!(Instant::now() < deadline, "the policy was not reloaded");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// A plain POST through Envoy: the status.
fn post_status(port: u16, content_type: &str, body: &str) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "POST /demo/mcp HTTP/1.1\r\nhost: mcp.local\r\nconnection: close\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut status = String::new();
    BufReader::new(&mut stream).read_line(&mut status).unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    status
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn through_envoy(response: &str) -> Stack {
    let stack = Stack::start(response);
    let reader = stack.listed_is_callable(Some("reader-bot"));
    assert_eq!(
        reader,
        (set(&["search", "big_report", "wait_for_ack"]), None),
        "reader-bot may read at low trust"
    );
    let writer = stack.listed_is_callable(Some("writer-bot"));
    assert_eq!(
        writer,
        (
            set(&[
                "search",
                "summarize",
                "create_ticket",
                "big_report",
                "wait_for_ack"
            ]),
            None
        ),
        "writer-bot's deny rule hides delete_ticket"
    );
    // A monitor grant hides nothing and counts what it would hide: the trust, side effects
    // and the tool outside the inventory.
    let watcher = stack.listed_is_callable(Some("watcher-bot"));
    assert_eq!(watcher, (set(&TOOLS), Some(4)));
    for nobody in [None, Some("stranger")] {
        assert_eq!(stack.listed_is_callable(nobody), (set(&[]), None));
    }
    // An ext_authz denial goes through ext_proc as its 403, not as a 500.
    assert_eq!(post_status(stack.agents, "text/plain", "x"), 403);

    // A monitor-mode server lists everything and marks what enforcement would hide.
    stack.server_to_monitor_mode();
    assert_eq!(
        stack.listed_is_callable(Some("reader-bot")),
        (set(&TOOLS), Some(4))
    );
    stack
}

#[test]
fn json_answers_list_exactly_what_each_caller_may_call() {
    through_envoy("json");
}

#[test]
fn event_stream_answers_list_exactly_what_each_caller_may_call() {
    let stack = through_envoy("sse");
    // A tool call's progress reaches the client while the call runs: the tool waits for the
    // client to acknowledge its first notification, which an answer held back until the end
    // could never be.
    let ack = stack.policies.with_extension("ack");
    let out = stack.client(
        Some("reader-bot"),
        &[json!({"do": "progress", "ack": ack.to_str().unwrap()})],
    );
    assert_eq!(out[0]["text"], "acknowledged", "{out:?}");
    assert_eq!(out[0]["progress"], json!(["started", "acknowledged"]));
}

fn yaml(path: &str) -> serde_yaml_ng::Value {
    let text = std::fs::read_to_string(manifest().join(path)).unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

/// The Istio EnvoyFilter carries the shipped Envoy config's ext_proc filter (but for the
/// cluster, which is Istio's name for the mcp-authz service), and Envoy accepts it.
#[test]
fn the_istio_list_filter_is_the_envoy_one() {
    use serde_yaml_ng::Value as Yaml;
    let envoy_yaml = yaml("deploy/envoy/envoy.yaml");
    let shipped = envoy_yaml["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "envoy.filters.http.ext_proc")
        .expect("deploy/envoy has the ext_proc filter")
        .clone();
    let istio = yaml("deploy/istio/list-filter.yaml");
    let patches = istio["spec"]["configPatches"].as_sequence().unwrap();
    let mut filter = patches[0]["patch"]["value"].clone();
    assert_eq!(
        patches[0]["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"],
        Yaml::from("envoy.filters.http.ext_authz"),
        "right after ext_authz"
    );
    let cluster = filter["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        cluster,
        "outbound|9191||mcp-authz.mcp-system.svc.cluster.local"
    );
    filter["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"] = Yaml::from("mcp-authz");
    assert_eq!(filter, shipped);
    assert_eq!(
        patches[1]["patch"]["value"]["per_connection_buffer_limit_bytes"],
        envoy_yaml["static_resources"]["listeners"][0]["per_connection_buffer_limit_bytes"]
    );

    // Envoy validates the filter as Istio would insert it, with a cluster of Istio's name.
    let bootstrap = json!({
        "static_resources": {
            "listeners": [{
                "name": "inbound",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 15006}},
                "per_connection_buffer_limit_bytes": 8388608,
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "inbound",
                        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}]},
                        "http_filters": [
                            serde_json::to_value(&patches[0]["patch"]["value"]).unwrap(),
                            {"name": "envoy.filters.http.router", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
                        ],
                    },
                }]}],
            }],
            "clusters": [{
                "name": cluster,
                "type": "STATIC",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {}},
                    },
                },
                "load_assignment": {"cluster_name": cluster, "endpoints": [{"lb_endpoints": [{
                    "endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9191}}},
                }]}]},
            }],
        },
    });
    let path = scratch_dir("istio-list-filter").join("bootstrap.json");
    std::fs::write(&path, bootstrap.to_string()).unwrap();
    let out = Command::new(envoy())
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Without Envoy: health answers for the ext_proc service, and a Process stream for a GET is
/// answered at once with everything after its headers switched off.
#[tokio::test]
async fn the_processor_serves_beside_check_and_health() {
    use mcp_authz::proto::core::{HeaderMap, HeaderValue};
    use mcp_authz::proto::ext_proc::external_processor_client::ExternalProcessorClient;
    use mcp_authz::proto::ext_proc::processing_request::Request;
    use mcp_authz::proto::ext_proc::{HttpHeaders, ProcessingRequest};
    use tonic_health::pb::health_check_response::ServingStatus;

    let authz = Server::start(&here("policies"), &[]);
    let channel = authz.channel().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: mcp_authz::ext_proc::EXT_PROC_SERVICE.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);

    let header = |key: &str, value: &str| HeaderValue {
        key: key.into(),
        value: String::new(),
        raw_value: value.as_bytes().to_vec(),
    };
    let get = ProcessingRequest {
        request: Some(Request::RequestHeaders(HttpHeaders {
            headers: Some(HeaderMap {
                headers: vec![header(":method", "GET"), header(":path", "/demo/mcp")],
            }),
            end_of_stream: true,
        })),
        ..ProcessingRequest::default()
    };
    let mut replies = ExternalProcessorClient::new(channel)
        .process(tokio_stream::iter([get]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().expect("one reply");
    let mode = reply.mode_override.expect("switched off");
    assert_eq!(mode.response_body_mode, 0, "NONE");
    assert_eq!(replies.message().await.unwrap(), None);
}
