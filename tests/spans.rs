//! Audit spans from the running binary, received by in-process OTLP collectors (gRPC and
//! http/protobuf).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test harness: a panic is the report

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{BIN, Server, check_raw, check_with_metadata, conformance_dir, post};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A received span with its resource's `service.name`.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    span: Span,
}

type Spans = Arc<Mutex<Vec<Received>>>;

fn collect(spans: &Spans, request: ExportTraceServiceRequest) {
    let mut all = spans.lock().unwrap();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(text)
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                all.push(Received {
                    service: service.clone(),
                    span,
                });
            }
        }
    }
}

struct GrpcCollector(Spans);

#[tonic::async_trait]
impl TraceService for GrpcCollector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        collect(&self.0, request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn grpc_collector() -> (String, Spans) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (format!("http://{addr}"), grpc_collector_on(listener))
}

fn grpc_collector_on(listener: tokio::net::TcpListener) -> Spans {
    let spans = Spans::default();
    let service = TraceServiceServer::new(GrpcCollector(Arc::clone(&spans)));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    spans
}

/// A minimal OTLP/HTTP receiver: `POST /v1/traces` with a protobuf body, keep-alive.
async fn http_collector() -> (String, Spans, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let spans = Spans::default();
    let paths = Arc::new(Mutex::new(Vec::new()));
    let (sink, seen) = (Arc::clone(&spans), Arc::clone(&paths));
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let (sink, seen) = (Arc::clone(&sink), Arc::clone(&seen));
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                loop {
                    let head_end = loop {
                        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    while buffer.len() < head_end + length {
                        let mut chunk = [0u8; 4096];
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body: Vec<u8> = buffer.drain(..head_end + length).skip(head_end).collect();
                    seen.lock()
                        .unwrap()
                        .push(head.lines().next().unwrap_or_default().to_string());
                    collect(
                        &sink,
                        ExportTraceServiceRequest::decode(body.as_slice()).unwrap(),
                    );
                    let reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if socket.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), spans, paths)
}

fn text(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attributes(span: &Span) -> BTreeMap<String, String> {
    span.attributes
        .iter()
        .map(|kv| (kv.key.clone(), text(kv)))
        .collect()
}

fn expected(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn wait_spans(spans: &Spans, count: usize) -> Vec<Received> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if spans.lock().unwrap().len() >= count {
            // Anything more than `count` would arrive in the same batch window.
            tokio::time::sleep(Duration::from_millis(400)).await;
            return spans.lock().unwrap().clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "only {} of {count} spans arrived",
        spans.lock().unwrap().len()
    );
}

fn vector(name: &str) -> Vec<u8> {
    std::fs::read(conformance_dir().join("requests").join(name)).unwrap()
}

fn revision() -> String {
    mcp_authz::policy::load_paths(&[conformance_dir().join("policies")])
        .unwrap()
        .revision
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_deny_and_would_deny_spans_are_exact() {
    let (endpoint, spans) = grpc_collector().await;
    let server = Server::start(
        &conformance_dir().join("policies"),
        &["--otlp-endpoint", &endpoint],
    );
    let channel = server.channel().await;
    for name in [
        "04-echo-allowed.bin",
        "06-destructive-not-in-allowed-side-effects.bin",
        "12-monitor-grant-trust-too-low.bin",
    ] {
        check_raw(&channel, vector(name)).await.unwrap();
    }
    let received = wait_spans(&spans, 3).await;
    assert_eq!(received.len(), 3);
    let revision = revision();
    let by_reason = |reason: &str| {
        received
            .iter()
            .find(|r| attributes(&r.span)["mcp.authz.reason"] == reason)
            .unwrap_or_else(|| panic!("no span for {reason}"))
            .clone()
    };
    let common = [
        ("mcp.authz.policy_revision", revision.as_str()),
        ("mcp.server.name", "demo"),
        ("mcp.server.namespace", "mcp-servers"),
        ("mcp.method.name", "tools/call"),
        ("jsonrpc.request.id", "1"),
        ("http.request.method", "POST"),
        ("url.path", "/demo/mcp"),
        ("mcp.authz.sample_rate", "1"),
    ];
    let with_common = |pairs: &[(&str, &str)]| {
        let mut all = expected(&common);
        all.extend(expected(pairs));
        all
    };

    let allow = by_reason("allowed");
    assert_eq!(
        attributes(&allow.span),
        with_common(&[
            ("mcp.authz.decision", "allow"),
            ("mcp.authz.reason", "allowed"),
            ("mcp.authz.would_deny", "false"),
            ("mcp.authz.mode", "enforce"),
            ("mcp.authz.status_code", "200"),
            ("mcp.authz.policy_version", "v1"),
            ("mcp.authz.matched_grant", "mcp-servers/g1"),
            ("mcp.authz.required_trust", "low"),
            ("mcp.authz.admin_trust", "high"),
            ("mcp.authz.consented_trust", "high"),
            ("mcp.authz.effective_trust", "high"),
            ("mcp.authz.required_side_effect", "read"),
            ("mcp.authz.risk_level", "low"),
            ("enduser.id", "h1"),
            ("mcp.subject.agent_id", "a1"),
            ("gen_ai.tool.name", "echo"),
        ])
    );
    assert_eq!(allow.span.name, "mcp.authz.check");
    assert_eq!(allow.span.kind, SpanKind::Server as i32);
    assert_eq!(allow.service, "mcp-authz");
    assert!(
        allow.span.parent_span_id.is_empty(),
        "no parent: a new trace"
    );
    assert!(allow.span.end_time_unix_nano >= allow.span.start_time_unix_nano);

    let deny = by_reason("side_effect_not_allowed");
    assert_eq!(
        attributes(&deny.span),
        with_common(&[
            ("mcp.authz.decision", "deny"),
            ("mcp.authz.reason", "side_effect_not_allowed"),
            ("mcp.authz.would_deny", "false"),
            ("mcp.authz.mode", "enforce"),
            ("mcp.authz.status_code", "403"),
            ("mcp.authz.policy_version", "v1"),
            ("mcp.authz.matched_grant", "mcp-servers/g1"),
            ("mcp.authz.required_trust", "high"),
            ("mcp.authz.required_side_effect", "destructive"),
            ("mcp.authz.risk_level", "high"),
            ("enduser.id", "h1"),
            ("mcp.subject.agent_id", "a1"),
            ("gen_ai.tool.name", "delete_row"),
        ])
    );

    let would_deny = by_reason("trust_too_low");
    assert_eq!(
        attributes(&would_deny.span),
        with_common(&[
            ("mcp.authz.decision", "allow"),
            ("mcp.authz.reason", "trust_too_low"),
            ("mcp.authz.would_deny", "true"),
            ("mcp.authz.would_deny_reason", "trust_too_low"),
            ("mcp.authz.mode", "monitor"),
            ("mcp.authz.status_code", "200"),
            ("mcp.authz.policy_version", "v1"),
            ("mcp.authz.matched_grant", "mcp-servers/rollout-low-trust"),
            ("mcp.authz.required_trust", "medium"),
            ("mcp.authz.admin_trust", "low"),
            ("mcp.authz.consented_trust", "low"),
            ("mcp.authz.effective_trust", "low"),
            ("mcp.authz.required_side_effect", "read"),
            ("mcp.subject.agent_id", "a-new"),
            ("gen_ai.tool.name", "upper"),
        ])
    );
}

/// A Check of `body` on the docs server (which governs prompts and resources) with `headers`.
fn docs_call(headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    post("/docs/mcp", headers, body)
}

/// A prompt, a resource, a tool call and an initialize on the docs server, with request ids
/// 11, "r-2", 3 and 4.
fn docs_calls() -> Vec<(Vec<(&'static str, &'static str)>, String)> {
    let bot = ("x-mcp-agent-id", "reader-bot");
    let transport = ("mcp-session-id", "transport-9");
    let meta = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2025-06-18"}"#;
    vec![
        (
            vec![bot],
            format!(
                r#"{{"jsonrpc":"2.0","id":11,"method":"prompts/get","params":{{"name":"summarize",{meta}}}}}"#
            ),
        ),
        (
            vec![bot, transport, ("mcp-protocol-version", "2025-11-25")],
            format!(
                r#"{{"jsonrpc":"2.0","id":"r-2","method":"resources/read","params":{{"uri":"kb://handbook",{meta}}}}}"#
            ),
        ),
        (
            vec![bot],
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"search"}}"#
                .to_string(),
        ),
        (
            vec![
                ("x-mcp-human-id", "alice"),
                bot,
                ("x-mcp-team-id", "support"),
                ("x-mcp-agent-session", "s-42"),
                transport,
            ],
            r#"{"jsonrpc":"2.0","id":4,"method":"initialize","params":{}}"#.to_string(),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_resource_tool_and_initialize_spans_name_their_target_and_caller() {
    let (endpoint, spans) = grpc_collector().await;
    let server = Server::start(
        &conformance_dir().join("policies"),
        &["--otlp-endpoint", &endpoint],
    );
    let channel = server.channel().await;
    let calls = docs_calls();
    for (headers, body) in &calls {
        check_raw(&channel, docs_call(headers, body)).await.unwrap();
    }
    let received = wait_spans(&spans, calls.len()).await;
    assert_eq!(received.len(), calls.len());
    let by_id = |id: &str| {
        received
            .iter()
            .map(|r| attributes(&r.span))
            .find(|a| a.get("jsonrpc.request.id").map(String::as_str) == Some(id))
            .unwrap_or_else(|| panic!("no span for request {id}"))
    };
    let targets = ["gen_ai.tool.name", "gen_ai.prompt.name", "mcp.resource.uri"];
    let only = |attributes: &BTreeMap<String, String>, key: &str, value: &str| {
        assert_eq!(
            attributes.get(key).map(String::as_str),
            Some(value),
            "{key}"
        );
        for other in targets.iter().filter(|t| **t != key) {
            assert!(
                !attributes.contains_key(*other),
                "{other} in {attributes:?}"
            );
        }
    };

    let prompt = by_id("11");
    only(&prompt, "gen_ai.prompt.name", "summarize");
    assert_eq!(prompt["mcp.method.name"], "prompts/get");
    assert_eq!(prompt["mcp.authz.reason"], "allowed");
    assert_eq!(prompt["mcp.protocol.version"], "2025-06-18", "from _meta");
    assert_eq!(prompt["mcp.subject.agent_id"], "reader-bot");
    assert!(!prompt.contains_key("mcp.session.id"));

    let resource = by_id("r-2");
    only(&resource, "mcp.resource.uri", "kb://handbook");
    assert_eq!(resource["mcp.method.name"], "resources/read");
    assert_eq!(
        resource["mcp.protocol.version"], "2025-11-25",
        "the header first"
    );
    assert_eq!(resource["mcp.session.id"], "transport-9");
    assert!(!resource.contains_key("mcp.authz.session_id"));

    let tool = by_id("3");
    only(&tool, "gen_ai.tool.name", "search");
    assert!(!tool.contains_key("mcp.protocol.version"));

    // initialize needs no identity, and its caller is recorded all the same.
    let initialize = by_id("4");
    for (key, value) in [
        ("mcp.method.name", "initialize"),
        ("mcp.authz.decision", "allow"),
        ("enduser.id", "alice"),
        ("mcp.subject.agent_id", "reader-bot"),
        ("mcp.subject.team_id", "support"),
        ("mcp.authz.session_id", "s-42"),
        ("mcp.session.id", "transport-9"),
        ("mcp.server.name", "docs"),
    ] {
        assert_eq!(
            initialize.get(key).map(String::as_str),
            Some(value),
            "{key}"
        );
    }
    for attributes in [prompt, resource, tool, initialize] {
        assert_eq!(attributes["mcp.authz.sample_rate"], "1");
        for target in targets {
            assert_ne!(attributes.get(target).map(String::as_str), Some(""));
        }
    }
}

const GRPC_PARENT: &str = "00-11111111111111111111111111111111-1111111111111111-01";
const HEADER_PARENT: &str = "00-22222222222222222222222222222222-2222222222222222-01";
const META_PARENT: &str = "00-33333333333333333333333333333333-3333333333333333-00";

fn call_with_meta(meta: Option<&str>) -> String {
    let meta = meta.map_or(String::new(), |t| {
        format!(r#","_meta":{{"traceparent":"{t}"}}"#)
    });
    format!(
        r#"{{"jsonrpc":"2.0","id":"req-7","method":"tools/call","params":{{"name":"echo"{meta}}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parents_follow_their_precedence_and_unsampled_parents_still_export() {
    let (endpoint, spans) = grpc_collector().await;
    let server = Server::start(
        &conformance_dir().join("policies"),
        &["--otlp-endpoint", &endpoint],
    );
    let channel = server.channel().await;
    let identity = [("x-mcp-human-id", "h1"), ("x-mcp-agent-id", "a1")];
    let with_header = [identity[0], identity[1], ("traceparent", HEADER_PARENT)];
    /// (gRPC metadata, request headers, `_meta`, expected parent).
    type Case<'a> = (
        Option<&'a str>,
        &'a [(&'a str, &'a str)],
        Option<&'a str>,
        &'a str,
    );
    let cases: [Case; 5] = [
        (
            Some(GRPC_PARENT),
            &with_header,
            Some(META_PARENT),
            GRPC_PARENT,
        ),
        (None, &with_header, Some(META_PARENT), HEADER_PARENT),
        (None, &identity, Some(META_PARENT), META_PARENT),
        (Some("00-garbage"), &with_header, None, HEADER_PARENT),
        (Some("bad"), &identity, Some("also bad"), ""),
    ];
    for (i, (grpc, headers, meta, _)) in cases.iter().enumerate() {
        let mut body = call_with_meta(*meta);
        body = body.replace("req-7", &format!("case-{i}"));
        let metadata: Vec<(&'static str, &str)> =
            grpc.iter().map(|t| ("traceparent", *t)).collect();
        check_with_metadata(&channel, post("/demo/mcp", headers, &body), &metadata)
            .await
            .unwrap();
    }
    let received = wait_spans(&spans, cases.len()).await;
    assert_eq!(received.len(), cases.len());
    for (i, (.., parent)) in cases.iter().enumerate() {
        let span = &received
            .iter()
            .find(|r| attributes(&r.span)["jsonrpc.request.id"] == format!("case-{i}"))
            .unwrap()
            .span;
        if parent.is_empty() {
            assert!(span.parent_span_id.is_empty(), "case {i}: new trace");
            continue;
        }
        let parts: Vec<&str> = parent.split('-').collect();
        assert_eq!(hex(&span.trace_id), parts[1], "case {i}: trace id");
        assert_eq!(
            hex(&span.parent_span_id),
            parts[2],
            "case {i}: parent span id"
        );
        assert_ne!(hex(&span.span_id), parts[2], "case {i}: a span of its own");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_checks_give_two_hundred_spans() {
    let (endpoint, spans) = grpc_collector().await;
    let server = Server::start(
        &conformance_dir().join("policies"),
        &["--otlp-endpoint", &endpoint],
    );
    let channel = server.channel().await;
    let names = [
        "04-echo-allowed.bin",
        "09-missing-identity.bin",
        "26-unknown-path.bin",
        "01-sse-get-passthrough.bin",
    ];
    for i in 0..200 {
        check_raw(&channel, vector(names[i % names.len()]))
            .await
            .unwrap();
    }
    let received = wait_spans(&spans, 200).await;
    assert_eq!(received.len(), 200, "exactly one span per Check");
    assert!(received.iter().all(|r| r.span.name == "mcp.authz.check"));
    let ids: std::collections::HashSet<Vec<u8>> =
        received.iter().map(|r| r.span.span_id.clone()).collect();
    assert_eq!(ids.len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_export_from_the_environment() {
    let (endpoint, spans, paths) = http_collector().await;
    let mut command = std::process::Command::new(BIN);
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "off",
            "--policy-dir",
        ])
        .arg(conformance_dir().join("policies"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env("OTEL_SERVICE_NAME", "authz-edge");
    let server = Server::spawn(command);
    let channel = server.channel().await;
    check_raw(&channel, vector("12-monitor-grant-trust-too-low.bin"))
        .await
        .unwrap();
    let received = wait_spans(&spans, 1).await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].service, "authz-edge");
    assert_eq!(
        attributes(&received[0].span)["mcp.authz.would_deny"],
        "true"
    );
    assert_eq!(paths.lock().unwrap()[0], "POST /v1/traces HTTP/1.1");
}

/// Vectors with the verdict each must get: `(vector, gRPC code, decision, reason, would_deny)`.
const VERDICTS: [(&str, i32, &str, &str, bool); 5] = [
    ("04-echo-allowed.bin", 0, "allow", "allowed", false),
    (
        "06-destructive-not-in-allowed-side-effects.bin",
        7,
        "deny",
        "side_effect_not_allowed",
        false,
    ),
    (
        "09-missing-identity.bin",
        16,
        "deny",
        "missing_identity",
        false,
    ),
    (
        "12-monitor-grant-trust-too-low.bin",
        0,
        "allow",
        "trust_too_low",
        true,
    ),
    ("26-unknown-path.bin", 7, "deny", "unknown_server", false),
];

/// Sends every vector of [`VERDICTS`] 60 times; returns the Checks whose answer was wrong.
async fn wrong_answers(server: &Server) -> Vec<String> {
    let channel = server.channel().await;
    let mut wrong = Vec::new();
    for round in 0..60 {
        for (name, code, decision, reason, would_deny) in VERDICTS {
            let got = match check_raw(&channel, vector(name)).await {
                Ok(response) => (
                    response.status.as_ref().map_or(0, |s| s.code),
                    common::metadata_str(&response, "decision").map(str::to_string),
                    common::metadata_str(&response, "reason").map(str::to_string),
                    common::metadata_bool(&response, "would_deny"),
                ),
                Err(status) => {
                    wrong.push(format!("round {round}, {name}: {status:?}"));
                    continue;
                }
            };
            let want = (
                code,
                Some(decision.to_string()),
                Some(reason.to_string()),
                Some(would_deny),
            );
            if got != want {
                wrong.push(format!("round {round}, {name}: {got:?}, not {want:?}"));
            }
        }
    }
    wrong
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_changes_nothing_for_callers() {
    // What a dead collector costs in latency is measured by `examples/load.rs` (side by side
    // with no endpoint); here: every Check is still answered, with the same verdict.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let baseline = Server::start(&conformance_dir().join("policies"), &[]);
    let wrong = wrong_answers(&baseline).await;
    assert!(wrong.is_empty(), "no endpoint: {wrong:#?}");
    let server = Server::start(
        &conformance_dir().join("policies"),
        &["--otlp-endpoint", &endpoint],
    );
    let wrong = wrong_answers(&server).await;
    assert!(wrong.is_empty(), "dead collector: {wrong:#?}");
    // SIGTERM still exits cleanly, reporting what could not be exported.
    server.signal("TERM");
    assert!(server.wait_log("stopped", 1, Duration::from_secs(15)));
    assert!(
        server.find_log("could not be exported").is_some(),
        "{:?}",
        server.log.lock().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_wait_for_a_collector_that_comes_up_late() {
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = reserved.local_addr().unwrap();
    drop(reserved);
    let server = Server::start(
        &conformance_dir().join("policies"),
        &["--otlp-endpoint", &format!("http://{addr}")],
    );
    let channel = server.channel().await;
    let check = async || {
        let response = check_raw(&channel, vector("04-echo-allowed.bin"))
            .await
            .unwrap();
        assert_eq!(common::metadata_str(&response, "decision"), Some("allow"));
    };
    // The first export fails: its record is counted as lost and the worker backs off.
    check().await;
    assert!(server.wait_log("cannot export audit spans", 1, Duration::from_secs(5)));
    // Records made while the collector is down wait in the queue...
    for _ in 0..100 {
        check().await;
    }
    // ...and reach it once it answers a probe.
    let spans = grpc_collector_on(tokio::net::TcpListener::bind(addr).await.unwrap());
    assert_eq!(wait_spans(&spans, 100).await.len(), 100);
    assert!(server.wait_log("exporting audit spans again", 1, Duration::from_secs(5)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_each_decision_is_one_log_line() {
    for format in ["text", "json"] {
        let server = Server::start(
            &conformance_dir().join("policies"),
            &["--log-format", format],
        );
        let channel = server.channel().await;
        check_raw(&channel, vector("12-monitor-grant-trust-too-low.bin"))
            .await
            .unwrap();
        assert!(server.wait_log("trust_too_low", 1, Duration::from_secs(5)));
        let line = server.find_log("trust_too_low").unwrap();
        assert_eq!(server.count_log("trust_too_low"), 1);
        if format == "json" {
            let json: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(json["reason"], "trust_too_low");
            assert_eq!(json["would_deny"], true);
            assert_eq!(json["grant"], "mcp-servers/rollout-low-trust");
            assert_eq!(json["tool"], "upper");
        } else {
            assert!(line.contains("would_deny=true"), "{line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_lines_carry_what_spans_do() {
    let server = Server::start(
        &conformance_dir().join("policies"),
        &["--log-format", "json"],
    );
    let channel = server.channel().await;
    let calls = docs_calls();
    let parent = "00-5555555555555555555555555555aaaa-5555555555555555-01";
    for (i, (headers, body)) in calls.iter().enumerate() {
        let metadata: Vec<(&'static str, &str)> = if i == 2 {
            vec![("traceparent", parent)]
        } else {
            vec![]
        };
        check_with_metadata(&channel, docs_call(headers, body), &metadata)
            .await
            .unwrap();
    }
    assert!(server.wait_log(r#""request_id":"4""#, 1, Duration::from_secs(5)));
    let line = |id: &str| -> serde_json::Value {
        let line = server
            .find_log(&format!(r#""request_id":"{id}""#))
            .unwrap_or_else(|| panic!("no line for request {id}"));
        serde_json::from_str(&line).unwrap()
    };
    let prompt = line("11");
    assert_eq!(prompt["prompt"], "summarize");
    assert_eq!(prompt["protocol_version"], "2025-06-18");
    assert!(prompt.get("tool").is_none() && prompt.get("resource").is_none());
    let resource = line("r-2");
    assert_eq!(resource["resource"], "kb://handbook");
    assert_eq!(resource["protocol_version"], "2025-11-25");
    assert_eq!(resource["mcp_session_id"], "transport-9");
    assert!(resource.get("tool").is_none() && resource.get("prompt").is_none());
    let tool = line("3");
    assert_eq!(tool["tool"], "search");
    assert_eq!(tool["trace_id"], "5555555555555555555555555555aaaa");
    let initialize = line("4");
    for (key, value) in [
        ("method", "initialize"),
        ("human", "alice"),
        ("agent", "reader-bot"),
        ("team", "support"),
        ("session_id", "s-42"),
        ("mcp_session_id", "transport-9"),
    ] {
        assert_eq!(initialize[key], value, "{key}");
    }
    for json in [prompt, resource, tool, initialize] {
        assert_eq!(json["sample_rate"], 1, "{json}");
        assert_eq!(json["trace_id"].as_str().map(str::len), Some(32), "{json}");
        let start = json["start_time"].as_str().unwrap();
        let end = json["timestamp"].as_str().unwrap();
        assert!(start <= end, "{start} then {end}");
        assert!(json.get("principal").is_none(), "header auth: {json}");
    }
}

/// A tools/call of `echo` (allowed for h1/a1) in the trace of `traceparent`.
fn echo_in_trace(id: &str, traceparent: &str) -> Vec<u8> {
    let headers = [
        ("x-mcp-human-id", "h1"),
        ("x-mcp-agent-id", "a1"),
        ("traceparent", traceparent),
    ];
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":"{id}","method":"tools/call","params":{{"name":"echo"}}}}"#
    );
    post("/demo/mcp", &headers, &body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_allowed_zero_keeps_every_denial_and_would_deny_and_no_allow() {
    let (endpoint, spans) = grpc_collector().await;
    let server = Server::start(
        &conformance_dir().join("policies"),
        &[
            "--otlp-endpoint",
            &endpoint,
            "--audit-allowed",
            "0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
    );
    let channel = server.channel().await;
    for _ in 0..20 {
        check_raw(&channel, vector("04-echo-allowed.bin"))
            .await
            .unwrap();
    }
    check_raw(
        &channel,
        vector("06-destructive-not-in-allowed-side-effects.bin"),
    )
    .await
    .unwrap();
    // The would-deny comes last: records are exported in order, so once it arrived every
    // record before it would have.
    check_raw(&channel, vector("12-monitor-grant-trust-too-low.bin"))
        .await
        .unwrap();
    let received = wait_spans(&spans, 2).await;
    let kept: Vec<_> = received.iter().map(|r| attributes(&r.span)).collect();
    let reasons: Vec<&str> = kept
        .iter()
        .map(|a| a["mcp.authz.reason"].as_str())
        .collect();
    assert_eq!(reasons, ["side_effect_not_allowed", "trust_too_low"]);
    assert!(kept.iter().all(|a| a["mcp.authz.sample_rate"] == "1"));
    // Metrics count every decision, kept or not.
    let (_, metrics) = common::http_get(&common::admin_addr(&server), "/metrics");
    let allowed = r#"mcp_authz_decisions_total{server="mcp-servers/demo",decision="allow",reason="allowed",mode="enforce"} 20"#;
    assert!(metrics.contains(allowed), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_allowed_keeps_or_drops_the_checks_of_a_trace_together() {
    let (endpoint, spans) = grpc_collector().await;
    let server = Server::start(
        &conformance_dir().join("policies"),
        &["--otlp-endpoint", &endpoint, "--audit-allowed", "0.5"],
    );
    let channel = server.channel().await;
    // Last 7 bytes 0x00…01 < 2^55: kept; 0xff…ff ≥ 2^55: dropped.
    let kept = "00-0123456789abcdef0100000000000001-1111111111111111-01";
    let dropped = "00-0123456789abcdef01ffffffffffffff-2222222222222222-01";
    for i in 0..3 {
        for (name, parent) in [("kept", kept), ("dropped", dropped)] {
            check_raw(&channel, echo_in_trace(&format!("{name}-{i}"), parent))
                .await
                .unwrap();
        }
    }
    // A denial in the dropped trace is kept all the same, and comes last.
    let headers = [("x-mcp-agent-id", "a1"), ("traceparent", dropped)];
    let body =
        r#"{"jsonrpc":"2.0","id":"denied","method":"tools/call","params":{"name":"delete_row"}}"#;
    check_raw(&channel, post("/demo/mcp", &headers, body))
        .await
        .unwrap();
    let received = wait_spans(&spans, 4).await;
    let mut ids: Vec<(String, String, String)> = received
        .iter()
        .map(|r| {
            let a = attributes(&r.span);
            (
                a["jsonrpc.request.id"].clone(),
                hex(&r.span.trace_id),
                a["mcp.authz.sample_rate"].clone(),
            )
        })
        .collect();
    ids.sort();
    let trace = |t: &str| t.split('-').nth(1).unwrap().to_string();
    let want = |id: &str, t: &str, rate: &str| (id.to_string(), trace(t), rate.to_string());
    assert_eq!(
        ids,
        [
            want("denied", dropped, "1"),
            want("kept-0", kept, "0.5"),
            want("kept-1", kept, "0.5"),
            want("kept-2", kept, "0.5"),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_allowed_one_keeps_every_line_and_invalid_ratios_are_refused() {
    let server = Server::start(
        &conformance_dir().join("policies"),
        &["--log-format", "json", "--audit-allowed", "1"],
    );
    let channel = server.channel().await;
    for _ in 0..10 {
        check_raw(&channel, vector("04-echo-allowed.bin"))
            .await
            .unwrap();
    }
    assert!(server.wait_log(r#""message":"decision""#, 10, Duration::from_secs(5)));
    let line = server.find_log(r#""message":"decision""#).unwrap();
    let json: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(json["sample_rate"], 1);

    for bad in ["1.5", "-0.1", "half", "NaN"] {
        let output = std::process::Command::new(BIN)
            .args([
                "serve",
                "--policy-dir",
                "unused",
                &format!("--audit-allowed={bad}"),
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("is not a number from 0 to 1"), "{stderr}");
    }
    let output = std::process::Command::new(BIN)
        .args(["serve", "--policy-dir", "unused"])
        .env("MCP_AUTHZ_AUDIT_ALLOWED", "2")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

/// One ext_proc exchange for a `tools/list` on deploy/policies' demo server by `caller`,
/// answered with four tools; returns the replies.
async fn filtered_list(
    channel: &tonic::transport::Channel,
    caller: &[(&str, &str)],
    request_body: &str,
) -> Vec<mcp_authz::proto::ext_proc::ProcessingResponse> {
    use mcp_authz::proto::core::{HeaderMap, HeaderValue};
    use mcp_authz::proto::ext_proc::external_processor_client::ExternalProcessorClient;
    use mcp_authz::proto::ext_proc::processing_request::Request;
    use mcp_authz::proto::ext_proc::{HttpBody, HttpHeaders, ProcessingRequest};

    let headers = |pairs: &[(&str, &str)]| HttpHeaders {
        headers: Some(HeaderMap {
            headers: pairs
                .iter()
                .map(|(k, v)| HeaderValue {
                    key: k.to_string(),
                    value: String::new(),
                    raw_value: v.as_bytes().to_vec(),
                })
                .collect(),
        }),
        end_of_stream: false,
    };
    let body = |text: &str| HttpBody {
        body: text.as_bytes().to_vec(),
        end_of_stream: true,
    };
    let answer = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"search"},{"name":"summarize"},{"name":"create_ticket"},{"name":"delete_ticket"}]}}"#;
    let mut request = vec![(":method", "POST"), (":path", "/demo/mcp")];
    request.extend_from_slice(caller);
    let messages = [
        Request::RequestHeaders(headers(&request)),
        Request::RequestBody(body(request_body)),
        Request::ResponseHeaders(headers(&[
            (":status", "200"),
            ("content-type", "application/json"),
        ])),
        Request::ResponseBody(body(answer)),
    ]
    .map(|request| ProcessingRequest {
        request: Some(request),
        ..ProcessingRequest::default()
    });
    let mut replies = ExternalProcessorClient::new(channel.clone())
        .process(tokio_stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(reply) = replies.message().await.unwrap() {
        out.push(reply);
    }
    out
}

fn strings(span: &Span, key: &str) -> Option<Vec<String>> {
    let kv = span.attributes.iter().find(|kv| kv.key == key)?;
    match kv.value.as_ref()?.value.as_ref()? {
        Value::ArrayValue(array) => Some(
            array
                .values
                .iter()
                .map(|v| match &v.value {
                    Some(Value::StringValue(s)) => s.clone(),
                    other => format!("{other:?}"),
                })
                .collect(),
        ),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_list_is_one_filter_span() {
    let (endpoint, spans) = grpc_collector().await;
    let policies = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/policies");
    let server = Server::start(&policies, &["--otlp-endpoint", &endpoint]);
    let channel = server.channel().await;
    let header_parent = "00-44444444444444444444444444444444-4444444444444444-01";
    let replies = filtered_list(
        &channel,
        &[
            ("x-mcp-agent-id", "support-bot"),
            ("x-mcp-team-id", "support"),
            ("traceparent", header_parent),
        ],
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
    )
    .await;
    assert_eq!(replies.len(), 4, "every message answered");
    let meta_parent = "00-66666666666666666666666666666666-6666666666666666-01";
    filtered_list(
        &channel,
        &[("x-mcp-agent-id", "triage-bot")],
        &format!(
            r#"{{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{{"_meta":{{"traceparent":"{meta_parent}"}}}}}}"#
        ),
    )
    .await;
    let received = wait_spans(&spans, 2).await;
    assert_eq!(
        received.len(),
        2,
        "one span per filtered list, no Check span"
    );
    let by_agent = |agent: &str| {
        received
            .iter()
            .find(|r| {
                attributes(&r.span)
                    .get("mcp.subject.agent_id")
                    .map(String::as_str)
                    == Some(agent)
            })
            .unwrap_or_else(|| panic!("no span for {agent}"))
            .span
            .clone()
    };
    let revision = mcp_authz::policy::load_paths(&[policies]).unwrap().revision;

    let support = by_agent("support-bot");
    assert_eq!(support.name, "mcp.authz.filter");
    assert_eq!(support.kind, SpanKind::Server as i32);
    assert_eq!(hex(&support.trace_id), "44444444444444444444444444444444");
    assert_eq!(hex(&support.parent_span_id), "4444444444444444");
    let mut want = expected(&[
        ("mcp.method.name", "tools/list"),
        ("mcp.server.name", "demo"),
        ("mcp.server.namespace", "mcp"),
        ("mcp.subject.agent_id", "support-bot"),
        ("mcp.subject.team_id", "support"),
        ("mcp.authz.policy_revision", &revision),
        ("mcp.authz.mode", "enforce"),
        ("mcp.authz.listed", "3"),
        ("mcp.authz.hidden", "1"),
        ("mcp.authz.would_hide", "0"),
    ]);
    let mut got = attributes(&support);
    got.remove("mcp.authz.hidden_names");
    assert_eq!(got, want);
    assert_eq!(
        strings(&support, "mcp.authz.hidden_names"),
        Some(vec!["delete_ticket".to_string()])
    );

    let triage = by_agent("triage-bot");
    assert_eq!(hex(&triage.trace_id), "66666666666666666666666666666666");
    let got = attributes(&triage);
    want = expected(&[
        ("mcp.authz.mode", "monitor"),
        ("mcp.authz.listed", "4"),
        ("mcp.authz.hidden", "0"),
        ("mcp.authz.would_hide", "3"),
    ]);
    for (key, value) in &want {
        assert_eq!(got.get(key), Some(value), "{key}");
    }
    assert_eq!(strings(&triage, "mcp.authz.hidden_names"), Some(vec![]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_a_filtered_list_is_one_log_line() {
    let policies = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/policies");
    let server = Server::start(&policies, &["--log-format", "json"]);
    let channel = server.channel().await;
    filtered_list(
        &channel,
        &[
            ("x-mcp-agent-id", "support-bot"),
            ("x-mcp-team-id", "support"),
        ],
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
    )
    .await;
    assert!(server.wait_log("list filtered", 1, Duration::from_secs(5)));
    let line: serde_json::Value =
        serde_json::from_str(&server.find_log("list filtered").unwrap()).unwrap();
    assert_eq!(line["target"], "mcp_authz::audit");
    assert_eq!(line["method"], "tools/list");
    assert_eq!(line["server"], "mcp/demo");
    assert_eq!(line["agent"], "support-bot");
    assert_eq!((&line["listed"], &line["hidden"]), (&3.into(), &1.into()));
    assert_eq!(line["hidden_names"], serde_json::json!(["delete_ticket"]));
    assert_eq!(server.count_log("list filtered"), 1);
}
