//! End to end with three official MCP clients, through Envoy 1.40 and mcp-authz, to a FastMCP
//! upstream with tools, prompts and resources (`tests/e2e/`): what each client shows of a call
//! that is allowed, denied or a would-deny, in each `policy.denyAs` form (SPEC §3).
//!
//! The clients: the MCP Python SDK 1.x (initialize handshake, Mcp-Session-Id), the Python SDK 2.x
//! (protocol 2026-07-28: no initialize, the call mirrored in `mcp-method` / `mcp-name` headers)
//! and the TypeScript SDK, each pinned below and installed under `target/` on first use (two
//! venvs, since 1.x and 2.x cannot share one, and an npm prefix). The upstream runs on the 2.x
//! SDK, which speaks both protocol eras.
//!
//! `clients_show_each_denial_form` needs neither Envoy nor mcp-authz: a stand-in answers the
//! exact bodies of SPEC §3, so what each client makes of them is pinned down by itself.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test harness: a panic is the report

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::install::{envoy, free_port, npm_package, python_venv};
use common::{BIN, Server, scratch_dir};
use serde::Deserialize;
use serde_json::Value;

const MCP_V1: &str = "1.30.0";
const MCP_V2: &str = "2.3.0";
const TS_SDK: &str = "1.32.2";

/// The caller every grant in `tests/e2e/policies` is for.
const AGENT: [(&str, &str); 1] = [("x-mcp-agent-id", "e2e-agent")];

fn e2e(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/e2e")
        .join(file)
}

fn python_v1() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| python_venv("mcp-v1-venv", "mcp", MCP_V1))
}

fn python_v2() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| python_venv("mcp-v2-venv", "mcp", MCP_V2))
}

fn ts_sdk() -> &'static Path {
    static PREFIX: OnceLock<PathBuf> = OnceLock::new();
    PREFIX.get_or_init(|| npm_package("mcp-ts", "@modelcontextprotocol/sdk", TS_SDK))
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Client {
    /// MCP Python SDK 1.x.
    V1,
    /// MCP Python SDK 2.x, protocol 2026-07-28.
    V2,
    /// The TypeScript SDK on Node.js.
    Ts,
}

/// One line a client script prints for one action (`tests/e2e/clientlib.py`).
#[derive(Debug, Deserialize)]
struct Outcome {
    action: String,
    target: String,
    ok: bool,
    error_kind: Option<String>,
    code: Option<i64>,
    message: Option<String>,
    reason: Option<String>,
    text: Option<String>,
}

impl Client {
    const ALL: [Client; 3] = [Client::V1, Client::V2, Client::Ts];

    fn command(self) -> Command {
        match self {
            Client::V1 => {
                let mut command = Command::new(python_v1());
                command.arg(e2e("client_v1.py"));
                command
            }
            Client::V2 => {
                let mut command = Command::new(python_v2());
                command.arg(e2e("client_v2.py"));
                command
            }
            Client::Ts => {
                let mut command = Command::new("node");
                command.arg(e2e("client.mjs")).env("MCP_TS_SDK", ts_sdk());
                command
            }
        }
    }

    /// Runs `calls` against `url`, one outcome per call.
    fn run(self, url: &str, headers: &[(&str, &str)], calls: &[Call]) -> Vec<Outcome> {
        let mut command = self.command();
        command.arg(url);
        for (name, value) in headers {
            command.arg("-H").arg(format!("{name}:{value}"));
        }
        for call in calls {
            command.arg(format!("{}:{}", call.action, call.target));
        }
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{self:?} client failed: {stderr}");
        let outcomes: Vec<Outcome> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect();
        assert_eq!(
            outcomes.len(),
            calls.len(),
            "{self:?}: {outcomes:#?}\n{stderr}"
        );
        for (call, outcome) in calls.iter().zip(&outcomes) {
            assert_eq!(
                (outcome.action.as_str(), outcome.target.as_str()),
                (call.action, call.target)
            );
        }
        outcomes
    }

    /// Runs every client on `calls` at once: `(client, outcomes)`.
    fn run_all(url: &str, headers: &[(&str, &str)], calls: &[Call]) -> Vec<(Client, Vec<Outcome>)> {
        std::thread::scope(|scope| {
            let runs: Vec<_> = Client::ALL
                .map(|client| scope.spawn(move || (client, client.run(url, headers, calls))))
                .into();
            runs.into_iter().map(|run| run.join().unwrap()).collect()
        })
    }
}

/// What a call should come to for the caller `AGENT`.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Allowed: the upstream's answer, with this text.
    Allowed(&'static str),
    /// A would-deny for this reason: let through, the upstream's answer with this text.
    WouldDeny(&'static str, &'static str),
    /// Denied for this reason, never reaching the upstream.
    Denied(&'static str),
}

#[derive(Clone, Copy, Debug)]
struct Call {
    action: &'static str,
    target: &'static str,
    expect: Expect,
}

/// Every kind of call, for every primitive the servers govern.
const PLAN: [Call; 7] = [
    Call {
        action: "tools/call",
        target: "search",
        expect: Expect::Allowed("results for ''"),
    },
    Call {
        action: "tools/call",
        target: "delete_records",
        expect: Expect::Denied("tool_denied"),
    },
    Call {
        action: "tools/call",
        target: "export_report",
        expect: Expect::WouldDeny("tool_denied", "exported"),
    },
    Call {
        action: "prompts/get",
        target: "summarize",
        expect: Expect::Allowed("Summarize ."),
    },
    Call {
        action: "prompts/get",
        target: "admin_prompt",
        expect: Expect::Denied("prompt_denied"),
    },
    Call {
        action: "resources/read",
        target: "docs://public/readme",
        expect: Expect::Allowed("public readme"),
    },
    Call {
        action: "resources/read",
        target: "docs://secret/keys",
        expect: Expect::Denied("resource_denied"),
    },
];

/// A `policy.denyAs` form; each server of `tests/e2e/policies` uses one, under `/<form>/mcp`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum DenyAs {
    HttpStatus,
    JsonRpcError,
    ToolError,
}

impl DenyAs {
    const ALL: [DenyAs; 3] = [DenyAs::HttpStatus, DenyAs::JsonRpcError, DenyAs::ToolError];

    fn name(self) -> &'static str {
        match self {
            DenyAs::HttpStatus => "http-status",
            DenyAs::JsonRpcError => "jsonrpc-error",
            DenyAs::ToolError => "tool-error",
        }
    }

    fn path(self) -> String {
        format!("/{}/mcp", self.name())
    }

    /// The HTTP status a 403 denial is sent with.
    fn status(self) -> u16 {
        match self {
            DenyAs::HttpStatus => 403,
            DenyAs::JsonRpcError | DenyAs::ToolError => 200,
        }
    }
}

/// How a client shows a denial.
#[derive(Debug, PartialEq)]
enum Shown {
    /// It raises the JSON-RPC error, code and `data.reason` included.
    McpError,
    /// It returns the tool result, `isError` set, `_meta["mcp-authz/reason"]` included.
    ToolError,
    /// It fails on the HTTP status; what it tells is per client (see `assert_denied`).
    Transport,
}

/// What `client` shows of a 403 denial of an `action` sent in form `deny_as` (the README table).
fn shown(client: Client, deny_as: DenyAs, action: &str) -> Shown {
    match deny_as {
        // Only the 2.x client reads a JSON-RPC error at a 4xx status.
        DenyAs::HttpStatus if client == Client::V2 => Shown::McpError,
        DenyAs::HttpStatus => Shown::Transport,
        DenyAs::JsonRpcError => Shown::McpError,
        DenyAs::ToolError if action == "tools/call" => Shown::ToolError,
        DenyAs::ToolError => Shown::McpError,
    }
}

/// Asserts that `outcome` shows a denial for `reason`, sent as a JSON-RPC error with `code`
/// (or a tool error) at HTTP `status`, the way `shown` says `client` shows it.
fn assert_denied(
    client: Client,
    shown: Shown,
    outcome: &Outcome,
    reason: &str,
    code: i64,
    status: u16,
) {
    let context = format!("{client:?}, {shown:?}: {outcome:#?}");
    assert!(!outcome.ok, "{context}");
    match shown {
        Shown::McpError => {
            assert_eq!(
                outcome.error_kind.as_deref(),
                Some("mcp_error"),
                "{context}"
            );
            assert_eq!(outcome.code, Some(code), "{context}");
            assert_eq!(outcome.reason.as_deref(), Some(reason), "{context}");
            assert!(
                outcome.message.as_ref().is_some_and(|m| !m.is_empty()),
                "{context}"
            );
        }
        Shown::ToolError => {
            assert_eq!(
                outcome.error_kind.as_deref(),
                Some("tool_error"),
                "{context}"
            );
            assert_eq!(outcome.reason.as_deref(), Some(reason), "{context}");
            let text = outcome.text.as_deref().unwrap_or_default();
            assert!(text.ends_with(&format!("({reason})")), "{context}");
        }
        Shown::Transport => {
            assert_eq!(
                outcome.error_kind.as_deref(),
                Some("transport"),
                "{context}"
            );
            assert_eq!(outcome.code, Some(i64::from(status)), "{context}");
            let message = outcome.message.as_deref().unwrap_or_default();
            match client {
                // The TypeScript SDK puts the body into its error message, unparsed.
                Client::Ts => assert!(
                    message.contains(&format!(r#""reason":"{reason}""#)),
                    "{context}"
                ),
                // The 1.x SDK raises httpx's HTTPStatusError: the body is lost.
                Client::V1 => assert!(!message.contains(reason), "{context}"),
                Client::V2 => unreachable!("the 2.x SDK reads JSON-RPC errors at any status"),
            }
        }
    }
}

/// Asserts each outcome of `PLAN` as the contract has it for `deny_as`.
fn assert_plan(client: Client, deny_as: DenyAs, outcomes: &[Outcome]) {
    for (call, outcome) in PLAN.iter().zip(outcomes) {
        match call.expect {
            Expect::Allowed(text) | Expect::WouldDeny(_, text) => {
                assert!(outcome.ok, "{client:?} on {}: {outcome:#?}", deny_as.name());
                assert_eq!(
                    outcome.text.as_deref(),
                    Some(text),
                    "{client:?}: {outcome:#?}"
                );
            }
            Expect::Denied(reason) => {
                let shown = shown(client, deny_as, call.action);
                assert_denied(client, shown, outcome, reason, -32003, deny_as.status());
            }
        }
    }
}

/// A child process killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_listening(port: u16, what: &str, process: &mut Process) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = process.0.try_wait() {
            panic!("{what} exited with {status}");
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The FastMCP upstream (`tests/e2e/upstream.py`), recording what reaches it.
struct Upstream {
    port: u16,
    record: PathBuf,
    _process: Process,
}

impl Upstream {
    /// `response`: `json` or `sse`, how it answers a POST.
    fn start(response: &str) -> Upstream {
        let port = free_port();
        let record = scratch_dir(&format!("upstream-{port}")).join("seen.jsonl");
        let child = Command::new(python_v2())
            .arg(e2e("upstream.py"))
            .args([
                "--port",
                &port.to_string(),
                "--response",
                response,
                "--record",
            ])
            .arg(&record)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut process = Process(child);
        wait_listening(port, "the upstream", &mut process);
        Upstream {
            port,
            record,
            _process: process,
        }
    }

    /// The POSTs received so far.
    fn seen(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

/// The stand-in of `tests/e2e/standin.py` for Envoy and mcp-authz.
fn start_standin() -> (u16, Process) {
    let port = free_port();
    let child = Command::new(python_v2())
        .arg(e2e("standin.py"))
        .args(["--port", &port.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut process = Process(child);
    wait_listening(port, "the stand-in", &mut process);
    (port, process)
}

/// Envoy on `tests/e2e/envoy.yaml`, re-addressed to this test's ports.
struct Envoy {
    port: u16,
    process: common::envoy::Envoy,
}

impl Envoy {
    fn start(authz_port: u16, upstream_port: u16) -> Envoy {
        let (port, admin) = (free_port(), free_port());
        let config = std::fs::read_to_string(e2e("envoy.yaml"))
            .unwrap()
            .replace("port_value: 9901", &format!("port_value: {admin}"))
            .replace("port_value: 10000", &format!("port_value: {port}"))
            .replace("port_value: 9191", &format!("port_value: {authz_port}"))
            .replace("port_value: 8080", &format!("port_value: {upstream_port}"));
        let process = common::envoy::Envoy::start(&format!("clients-envoy-{port}"), &config, admin);
        Envoy { port, process }
    }

    fn url(&self, deny_as: DenyAs) -> String {
        format!("http://127.0.0.1:{}{}", self.port, deny_as.path())
    }

    /// The access log lines (JSON), once `complete` says they are all there (Envoy flushes its
    /// log now and then) or after 10 s.
    fn access_log(&self, complete: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let lines = || -> Vec<Value> {
            let log = self.process.log.lock().unwrap();
            log.iter()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !complete(&lines()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        lines()
    }
}

/// The upstream, mcp-authz on `tests/e2e/policies`, and Envoy in front of both.
struct Stack {
    upstream: Upstream,
    envoy: Envoy,
    _authz: Server,
}

impl Stack {
    fn start(response: &str) -> Stack {
        let upstream = Upstream::start(response);
        let authz = Server::start(&e2e("policies"), &[]);
        let authz_port = authz.addr.rsplit(':').next().unwrap().parse().unwrap();
        let envoy = Envoy::start(authz_port, upstream.port);
        Stack {
            upstream,
            envoy,
            _authz: authz,
        }
    }

    /// The upstream's records of the calls that came through `deny_as`'s route.
    fn seen(&self, deny_as: DenyAs) -> Vec<Value> {
        let path = deny_as.path();
        self.upstream
            .seen()
            .into_iter()
            .filter(|r| r["headers"]["x-envoy-original-path"] == path.as_str())
            .collect()
    }
}

/// A hand-written HTTP/1.1 POST: `(status, body)`.
fn post(port: u16, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: mcp.local\r\nconnection: close\r\n\
         content-type: application/json\r\naccept: application/json, text/event-stream\r\n\
         content-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// What the target of a call is recorded as: `name`, or `uri` for a resource.
fn target_key(action: &str) -> &'static str {
    if action == "resources/read" {
        "uri"
    } else {
        "name"
    }
}

fn through_envoy(response: &str) {
    let stack = Stack::start(response);
    for deny_as in DenyAs::ALL {
        for (client, outcomes) in Client::run_all(&stack.envoy.url(deny_as), &AGENT, &PLAN) {
            assert_plan(client, deny_as, &outcomes);
        }
    }

    for deny_as in DenyAs::ALL {
        let seen = stack.seen(deny_as);
        for call in PLAN {
            let key = target_key(call.action);
            let calls: Vec<&Value> = seen
                .iter()
                .filter(|r| r["method"] == call.action && r[key] == call.target)
                .collect();
            let context = format!("{} {}: {calls:#?}", deny_as.name(), call.target);
            let agents: BTreeSet<&str> = calls
                .iter()
                .filter_map(|r| r["headers"]["user-agent"].as_str())
                .collect();
            match call.expect {
                Expect::Allowed(_) => {
                    assert_eq!(
                        (calls.len(), agents.len()),
                        (3, 3),
                        "one per client: {context}"
                    );
                    assert!(
                        calls
                            .iter()
                            .all(|r| r["headers"].get("x-would-deny").is_none()),
                        "{context}"
                    );
                }
                Expect::WouldDeny(reason, _) => {
                    assert_eq!(
                        (calls.len(), agents.len()),
                        (3, 3),
                        "one per client: {context}"
                    );
                    for r in &calls {
                        assert_eq!(r["headers"]["x-would-deny"], "true", "{context}");
                        assert_eq!(r["headers"]["x-would-deny-reason"], reason, "{context}");
                    }
                }
                Expect::Denied(_) => {
                    assert!(calls.is_empty(), "a denied call got through: {context}")
                }
            }
        }
    }

    // Envoy's access log: the verdict from the dynamic metadata, and the status actually sent.
    let lines_of = |log: &[Value], deny_as: DenyAs, call: &Call| -> Vec<Value> {
        let primitive = match call.action {
            "tools/call" => "tool",
            "prompts/get" => "prompt",
            _ => "resource",
        };
        let server = format!("e2e/{}", deny_as.name());
        log.iter()
            .filter(|l| l["mcp_server"] == server.as_str() && l[primitive] == call.target)
            .cloned()
            .collect()
    };
    let log = stack.envoy.access_log(|log| {
        DenyAs::ALL
            .iter()
            .all(|&d| PLAN.iter().all(|c| lines_of(log, d, c).len() >= 3))
    });
    for deny_as in DenyAs::ALL {
        for call in PLAN {
            let lines = lines_of(&log, deny_as, &call);
            let context = format!("{} {}: {lines:#?}", deny_as.name(), call.target);
            assert_eq!(lines.len(), 3, "one per client: {context}");
            for line in &lines {
                match call.expect {
                    Expect::Allowed(_) => {
                        assert_eq!(line["decision"], "allow", "{context}");
                        assert_eq!(line["reason"], "allowed", "{context}");
                        assert_eq!(line["status"], 200, "{context}");
                    }
                    Expect::WouldDeny(reason, _) => {
                        let grant = format!("e2e/{}-tightening", deny_as.name());
                        assert_eq!(line["decision"], "allow", "{context}");
                        assert_eq!(line["would_deny"], true, "{context}");
                        assert_eq!(line["reason"], reason, "{context}");
                        assert_eq!(line["matched_grant"], grant.as_str(), "{context}");
                        assert_eq!(line["status"], 200, "{context}");
                    }
                    Expect::Denied(reason) => {
                        assert_eq!(line["decision"], "deny", "{context}");
                        assert_eq!(line["reason"], reason, "{context}");
                        assert_eq!(line["status"], deny_as.status(), "{context}");
                    }
                }
            }
        }
    }
}

#[test]
fn clients_through_envoy_with_json_answers() {
    through_envoy("json");
}

#[test]
fn clients_through_envoy_with_sse_answers() {
    through_envoy("sse");
}

#[test]
fn header_and_body_mismatch_is_refused() {
    let stack = Stack::start("json");
    let routing = |method: &'static str, name: &'static str| {
        [
            AGENT[0],
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", method),
            ("mcp-name", name),
        ]
    };
    // The request envelope of 2026-07-28, which the upstream checks.
    let call = |tool: &str| {
        serde_json::json!({
            "jsonrpc": "2.0",
            "id": "hand-1",
            "method": "tools/call",
            "params": {
                "name": tool,
                "arguments": {},
                "_meta": {
                    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                    "io.modelcontextprotocol/clientCapabilities": {},
                },
            },
        })
        .to_string()
    };
    for deny_as in DenyAs::ALL {
        let path = deny_as.path();
        // The headers name another tool than the body, either way round; and another method.
        let cases = [
            (routing("tools/call", "search"), call("delete_records")),
            (routing("tools/call", "delete_records"), call("search")),
            (routing("prompts/get", "search"), call("search")),
        ];
        for (headers, body) in cases {
            let (status, reply) = post(stack.envoy.port, &path, &headers, &body);
            let context = format!("{path} {headers:?}: {status} {reply}");
            assert_eq!(
                status,
                if deny_as == DenyAs::HttpStatus {
                    400
                } else {
                    200
                },
                "{context}"
            );
            let reply: Value = serde_json::from_str(&reply).unwrap_or_default();
            assert_eq!(reply["jsonrpc"], "2.0", "{context}");
            assert_eq!(reply["id"], "hand-1", "{context}");
            assert_eq!(reply["error"]["code"], -32020, "{context}");
            assert_eq!(
                reply["error"]["data"]["reason"], "rpc_header_mismatch",
                "{context}"
            );
            assert!(reply.get("result").is_none(), "{context}");
        }
        assert!(
            stack.seen(deny_as).is_empty(),
            "a mismatch got through on {path}"
        );

        // Headers that agree with the body pass.
        let (status, reply) = post(
            stack.envoy.port,
            &path,
            &routing("tools/call", "search"),
            &call("search"),
        );
        assert_eq!(status, 200, "{path}: {reply}");
        let reply: Value = serde_json::from_str(&reply).unwrap_or_default();
        assert_eq!(
            reply["result"]["content"][0]["text"], "results for ''",
            "{path}: {reply}"
        );
        let seen = stack.seen(deny_as);
        assert_eq!(seen.len(), 1, "{path}: {seen:#?}");
        assert_eq!(seen[0]["name"], "search");
    }
}

#[test]
fn denial_bodies_through_envoy() {
    let stack = Stack::start("json");
    let call = |id: &str, tool: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}"}}}}"#
        )
    };
    for deny_as in DenyAs::ALL {
        let path = deny_as.path();

        // An identity denial is in the JSON-RPC form too, `required_headers` in its data.
        let (status, reply) = post(stack.envoy.port, &path, &[], &call(r#""no-id""#, "search"));
        let context = format!("{path}: {status} {reply}");
        let reply: Value = serde_json::from_str(&reply).unwrap_or_default();
        assert_eq!(reply["id"], "no-id", "{context}");
        if deny_as == DenyAs::ToolError {
            assert_eq!(status, 200, "{context}");
            assert_eq!(reply["result"]["isError"], true, "{context}");
            assert_eq!(reply["result"]["resultType"], "complete", "{context}");
            let meta = &reply["result"]["_meta"];
            assert_eq!(meta["mcp-authz/reason"], "missing_identity", "{context}");
            let text = reply["result"]["content"][0]["text"]
                .as_str()
                .unwrap_or_default();
            assert!(text.ends_with("(missing_identity)"), "{context}");
        } else {
            assert_eq!(
                status,
                if deny_as == DenyAs::HttpStatus {
                    401
                } else {
                    200
                },
                "{context}"
            );
            assert_eq!(reply["error"]["code"], -32003, "{context}");
            assert_eq!(
                reply["error"]["data"]["reason"], "missing_identity",
                "{context}"
            );
            let required = reply["error"]["data"]["required_headers"].as_array();
            assert_eq!(required.map(Vec::len), Some(4), "{context}");
        }

        // A batch, or a request with `id: null`, keeps the plain body and its status.
        let batch = format!("[{}]", call("7", "delete_records"));
        for body in [batch, call("null", "delete_records")] {
            let (status, reply) = post(stack.envoy.port, &path, &AGENT, &body);
            let context = format!("{path} {body}: {status} {reply}");
            assert_eq!(status, 403, "{context}");
            let reply: Value = serde_json::from_str(&reply).unwrap_or_default();
            assert_eq!(reply["error"], "tool_denied", "{context}");
            assert!(reply.get("jsonrpc").is_none(), "{context}");
        }
        assert!(
            stack.seen(deny_as).is_empty(),
            "a denial got through on {path}"
        );
    }
}

#[test]
fn clients_show_each_denial_form() {
    let (port, _standin) = start_standin();
    let url = |form: &str| format!("http://127.0.0.1:{port}/{form}/mcp");
    for deny_as in DenyAs::ALL {
        for (client, outcomes) in Client::run_all(&url(deny_as.name()), &[], &PLAN) {
            assert_plan(client, deny_as, &outcomes);
        }
    }

    // A body that is not JSON-RPC (what mcp-authz keeps for batches, inspection failures, …).
    let denied: Vec<Call> = PLAN
        .into_iter()
        .filter(|c| matches!(c.expect, Expect::Denied(_)))
        .collect();
    for (client, outcomes) in Client::run_all(&url("plain"), &[], &denied) {
        for (call, outcome) in denied.iter().zip(&outcomes) {
            let Expect::Denied(reason) = call.expect else {
                unreachable!()
            };
            let context = format!("{client:?}: {outcome:#?}");
            let message = outcome.message.as_deref().unwrap_or_default();
            match client {
                // The 2.x SDK makes up an internal error: the reason is lost.
                Client::V2 => {
                    assert_eq!(
                        (outcome.error_kind.as_deref(), outcome.code),
                        (Some("mcp_error"), Some(-32603)),
                        "{context}"
                    );
                    assert_eq!(outcome.reason, None, "{context}");
                    assert!(!message.contains(reason), "{context}");
                }
                Client::V1 => {
                    assert_eq!(
                        (outcome.error_kind.as_deref(), outcome.code),
                        (Some("transport"), Some(403)),
                        "{context}"
                    );
                    assert!(!message.contains(reason), "{context}");
                }
                Client::Ts => {
                    assert_eq!(
                        (outcome.error_kind.as_deref(), outcome.code),
                        (Some("transport"), Some(403)),
                        "{context}"
                    );
                    assert!(
                        message.contains(&format!(r#""error":"{reason}""#)),
                        "{context}"
                    );
                }
            }
        }
    }

    // rpc_header_mismatch: HTTP 400, code -32020, whatever the call.
    for (client, outcomes) in Client::run_all(&url("header-mismatch"), &[], &denied) {
        for outcome in &outcomes {
            let shown = if client == Client::V2 {
                Shown::McpError
            } else {
                Shown::Transport
            };
            assert_denied(client, shown, outcome, "rpc_header_mismatch", -32020, 400);
        }
    }
}

#[test]
fn e2e_policies_validate() {
    let out = Command::new(BIN)
        .arg("validate")
        .arg(e2e("policies"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("3 servers, 6 grants"), "{stdout}");
}

#[test]
fn e2e_envoy_config_validates() {
    let out = Command::new(envoy())
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(e2e("envoy.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
