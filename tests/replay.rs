//! `mcp-authz replay` (SPEC §8): traffic recorded by the running service (audit lines and OTLP
//! spans) and a hand-written Jaeger export, replayed against an edited policy set.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test harness: a panic is the report

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{BIN, Server, check_raw, post, scratch_dir, tool_call, verdict};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/replay")
}

fn current() -> PathBuf {
    fixtures().join("current")
}

/// What the candidate adds: a deny rule for a1's `delete_row`, and a grant for a4.
const ADDED: &str = "
---
apiVersion: mcpruntime.org/v1alpha1
kind: MCPAccessGrant
metadata: {name: no-delete, namespace: mcp}
spec:
  serverRef: {name: demo}
  subject: {agentID: a1}
  toolRules:
    - {name: delete_row, decision: deny}
---
apiVersion: mcpruntime.org/v1alpha1
kind: MCPAccessGrant
metadata: {name: newcomer, namespace: mcp}
spec:
  serverRef: {name: demo}
  subject: {agentID: a4}
  allowedSideEffects: [read]
  toolRules:
    - {name: echo}
";

/// The candidate: the current set without the grant `mcp/ops`, plus [`ADDED`].
fn candidate(name: &str) -> PathBuf {
    let text = std::fs::read_to_string(current().join("policy.yaml")).unwrap();
    let documents: Vec<&str> = text.split("\n---\n").collect();
    let kept: Vec<&str> = documents
        .iter()
        .copied()
        .filter(|d| !d.contains("metadata: {name: ops, namespace: mcp}"))
        .collect();
    assert_eq!(
        kept.len(),
        documents.len() - 1,
        "the grant to remove is there"
    );
    let dir = scratch_dir(name);
    std::fs::write(dir.join("policy.yaml"), kept.join("\n---\n") + ADDED).unwrap();
    dir
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn replay(args: &[&str], stdin: Option<&[u8]>) -> Run {
    let mut child = Command::new(BIN)
        .arg("replay")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mcp-authz replay");
    if let Some(bytes) = stdin {
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `replay --format json` against `candidate` with `--enforce mcp/watch`; exit 0 expected.
fn report(candidate: &Path, extra: &[&str], files: &[&Path], stdin: Option<&[u8]>) -> Value {
    let mut args = vec![
        "--policy-dir",
        candidate.to_str().unwrap(),
        "--enforce",
        "mcp/watch",
        "--format",
        "json",
    ];
    args.extend(extra);
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    let run = replay(&args, stdin);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

/// A change group: `(kind, server, before, after, records, decisions)`, each outcome as
/// `verdict reason grant`.
type Row = (String, String, String, String, u64, f64);

/// The change groups of a report.
fn groups(report: &Value) -> Vec<Row> {
    let outcome = |o: &Value| {
        format!(
            "{} {} {}",
            o["verdict"].as_str().unwrap(),
            o["reason"].as_str().unwrap(),
            o["grant"].as_str().unwrap_or("-")
        )
    };
    report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["kind"].as_str().unwrap().to_string(),
                g["server"].as_str().unwrap_or("-").to_string(),
                outcome(&g["before"]),
                outcome(&g["after"]),
                g["records"].as_u64().unwrap(),
                g["decisions"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn group(kind: &str, before: &str, after: &str, n: u64, decisions: f64) -> Row {
    (
        kind.into(),
        "mcp/demo".into(),
        before.into(),
        after.into(),
        n,
        decisions,
    )
}

/// `(records, decisions)` of a total.
fn total(report: &Value, name: &str) -> (u64, f64) {
    let t = &report["totals"][name];
    (
        t["records"].as_u64().unwrap(),
        t["decisions"].as_f64().unwrap(),
    )
}

fn input(report: &Value, key: &str) -> u64 {
    report["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f[key].as_u64().unwrap())
        .sum()
}

/// The groups every recording of [`record_traffic`] gives against [`candidate`] with
/// `--enforce mcp/watch`.
fn traffic_groups() -> Vec<Row> {
    vec![
        group(
            "tighten",
            "allow allowed mcp/ops",
            "deny no_matching_grant -",
            2,
            2.0,
        ),
        group(
            "tighten",
            "allow allowed mcp/base",
            "deny tool_denied mcp/no-delete",
            1,
            1.0,
        ),
        group(
            "tighten",
            "would-deny trust_too_low mcp/watch",
            "deny trust_too_low mcp/watch",
            1,
            1.0,
        ),
        group(
            "loosen",
            "deny no_matching_grant -",
            "allow allowed mcp/newcomer",
            1,
            1.0,
        ),
    ]
}

/// Ten Checks, each answered as the current policy says.
async fn record_traffic(server: &Server) {
    let channel = server.channel().await;
    let agent = |a: &'static str| [("x-mcp-agent-id", a)];
    /// A request and its answer: decision, reason, grant.
    type Case = (Vec<u8>, (&'static str, &'static str, &'static str));
    let cases: Vec<Case> = vec![
        (
            tool_call("/demo/mcp", &agent("a1"), "echo"),
            ("allow", "allowed", "mcp/base"),
        ),
        (
            tool_call("/demo/mcp", &agent("a1"), "delete_row"),
            ("allow", "allowed", "mcp/base"),
        ),
        (
            tool_call("/demo/mcp", &agent("a2"), "echo"),
            ("allow", "allowed", "mcp/ops"),
        ),
        (
            tool_call("/demo/mcp", &agent("a2"), "upper"),
            ("allow", "allowed", "mcp/ops"),
        ),
        (
            tool_call("/demo/mcp", &agent("a3"), "echo"),
            ("allow", "allowed", "mcp/watch"),
        ),
        (
            tool_call("/demo/mcp", &agent("a3"), "upper"),
            ("allow", "trust_too_low", "mcp/watch"),
        ),
        (
            tool_call("/demo/mcp", &[], "echo"),
            ("deny", "missing_identity", ""),
        ),
        (
            post("/demo/mcp", &agent("a1"), "not json"),
            ("deny", "rpc_inspection_failed", ""),
        ),
        (
            post(
                "/demo/mcp",
                &agent("a1"),
                r#"{"jsonrpc":"2.0","id":9,"method":"tools/list"}"#,
            ),
            ("allow", "allowed", ""),
        ),
        (
            tool_call("/demo/mcp", &agent("a4"), "echo"),
            ("deny", "no_matching_grant", ""),
        ),
    ];
    for (request, (decision, reason, grant)) in cases {
        let answer = verdict(&check_raw(&channel, request).await.unwrap());
        assert_eq!(answer, (decision.into(), reason.into(), grant.into()));
    }
}

/// The totals and groups of a replay of [`record_traffic`]'s records.
fn assert_traffic_report(report: &Value) {
    assert_eq!(groups(report), traffic_groups(), "{report:#}");
    assert_eq!(total(report, "read"), (10, 10.0));
    assert_eq!(total(report, "replayed"), (10, 10.0));
    assert_eq!(total(report, "unchanged"), (5, 5.0));
    assert_eq!(total(report, "changed"), (5, 5.0));
    assert_eq!(total(report, "tighten"), (4, 4.0));
    assert_eq!(total(report, "loosen"), (1, 1.0));
    assert_eq!(total(report, "reason"), (0, 0.0));
    // The body that was not JSON keeps its reason: it did not depend on policy.
    assert_eq!(total(report, "kept_recorded_reason"), (1, 1.0));
    assert_eq!(total(report, "not_replayable"), (0, 0.0));
    let ops = &report["changes"][0]["examples"];
    let tools: Vec<&str> = ops
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["tool"].as_str().unwrap())
        .collect();
    assert_eq!(tools, ["echo", "upper"]);
    assert_eq!(ops[0]["caller"]["agent"], "a2");
    assert_eq!(ops[0]["request_id"], "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_lines_recorded_by_the_service_replay_to_exact_changes() {
    let server = Server::start(&current(), &["--log-format", "json"]);
    record_traffic(&server).await;
    assert!(
        server.wait_log(r#""message":"decision""#, 10, Duration::from_secs(10)),
        "ten audit lines"
    );
    let dir = scratch_dir("replay-lines");
    let log = dir.join("stderr.log");
    let lines = server.log.lock().unwrap().join("\n") + "\n";
    std::fs::write(&log, &lines).unwrap();
    let report = report(&candidate("replay-lines-candidate"), &[], &[&log], None);
    assert_traffic_report(&report);
    // The service's start-up lines are skipped and counted.
    let other = input(&report, "other_lines");
    assert!(other >= 2, "start-up lines: {other}");
    assert_eq!(input(&report, "audit_lines"), 10);
    assert_eq!(input(&report, "corrupt_lines"), 0);
    // Audit lines carry their span's trace id (SPEC §4), as spans do.
    let trace_id = &report["changes"][0]["examples"][0]["trace_id"];
    assert_eq!(trace_id.as_str().map(str::len), Some(32), "{trace_id}");
}

struct Collector(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_spans_recorded_by_the_service_replay_to_exact_changes() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let received = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(Arc::clone(&received))))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let server = Server::start(&current(), &["--otlp-endpoint", &endpoint]);
    record_traffic(&server).await;
    let spans = |r: &[ExportTraceServiceRequest]| -> usize {
        r.iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while spans(&received.lock().unwrap()) < 10 {
        assert!(Instant::now() < deadline, "ten spans exported");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let requests = received.lock().unwrap().clone();
    assert_eq!(spans(&requests), 10);

    // As the Collector's file exporter writes them, and as Jaeger v2's /api/v3/traces answers.
    let dir = scratch_dir("replay-otlp");
    let (file, wrapped) = (dir.join("otlp.jsonl"), dir.join("api-v3.json"));
    let mut lines = String::new();
    let mut results = String::new();
    for request in &requests {
        let json = serde_json::to_string(request).unwrap();
        lines += &format!("{json}\n");
        results += &format!("{{\"result\":{json}}}\n");
    }
    std::fs::write(&file, lines).unwrap();
    std::fs::write(&wrapped, results).unwrap();
    let candidate = candidate("replay-otlp-candidate");
    for path in [&file, &wrapped] {
        let report = report(&candidate, &[], &[path], None);
        assert_traffic_report(&report);
        assert_eq!(input(&report, "otlp"), requests.len() as u64);
        let trace = report["changes"][0]["examples"][0]["trace_id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(trace.len(), 32, "{trace}");
    }
}

#[test]
fn a_jaeger_export_replays_streamed_or_as_one_line_with_sample_rates() {
    let candidate = candidate("replay-jaeger-candidate");
    let pretty = fixtures().join("jaeger.json");
    let dir = scratch_dir("replay-jaeger");
    let one_line = dir.join("jaeger-line.json");
    let document: Value = serde_json::from_str(&std::fs::read_to_string(&pretty).unwrap()).unwrap();
    std::fs::write(&one_line, document.to_string() + "\n").unwrap();
    let expected = vec![
        // Kept at a sample rate of 0.5: one record, two decisions.
        group(
            "tighten",
            "allow allowed mcp/ops",
            "deny no_matching_grant -",
            1,
            2.0,
        ),
        group(
            "tighten",
            "would-deny trust_too_low mcp/watch",
            "deny trust_too_low mcp/watch",
            1,
            1.0,
        ),
    ];
    for file in [&pretty, &one_line] {
        let report = report(&candidate, &[], &[file], None);
        assert_eq!(groups(&report), expected, "{report:#}");
        assert_eq!(total(&report, "read"), (6, 10.0));
        // Both vault records stay allowed: the first edition's mcp.session.id is the agent
        // session, the second edition's is the transport session beside mcp.authz.session_id.
        assert_eq!(total(&report, "unchanged"), (4, 7.0));
        assert_eq!(input(&report, "jaeger"), 1);
        let lines = if file == &pretty { 806 } else { 1 };
        assert_eq!(input(&report, "lines"), lines);
        assert_eq!(input(&report, "other_spans"), 1);
        let example = &report["changes"][0]["examples"][0];
        assert_eq!(example["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        let time = |t: &str| mcp_authz::policy::Timestamp::parse_rfc3339(t).unwrap();
        assert_eq!(
            time(example["time"].as_str().unwrap()),
            time("2026-11-20T10:00:00.0001Z")
        );
    }
    // Against CURRENT the baseline is decided again, and agrees with what was recorded.
    let against = report(
        &candidate,
        &["--against", current().to_str().unwrap()],
        &[&pretty],
        None,
    );
    assert_eq!(groups(&against), expected);
    assert_eq!(against["baseline"]["revision"].as_str().unwrap().len(), 71);
    // Without --enforce the monitor grant's would-deny stays one.
    let run = replay(
        &[
            "--policy-dir",
            candidate.to_str().unwrap(),
            "--format",
            "json",
            pretty.to_str().unwrap(),
        ],
        None,
    );
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(groups(&report), expected[..1]);
}

/// Two audit lines, as the service writes them.
fn audit_line(agent: &str, tool: &str, decision: &str, reason: &str, grant: &str) -> String {
    format!(
        r#"{{"timestamp":"2026-11-20T10:00:00.000000Z","level":"INFO","message":"decision","decision":"{decision}","reason":"{reason}","would_deny":false,"mode":"enforce","status_code":200,"server":"mcp/demo","grant":"{grant}","agent":"{agent}","method":"tools/call","tool":"{tool}","request_id":"1","http_method":"POST","path":"/demo/mcp","target":"mcp_authz::audit"}}"#
    )
}

fn otlp_line(agent: &str) -> String {
    format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"mcp-authz"}}}}]}},"scopeSpans":[{{"scope":{{"name":"mcp-authz"}},"spans":[{{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"mcp.authz.check","kind":2,"startTimeUnixNano":"1795168800000000000","endTimeUnixNano":"1795168800000100000","attributes":[{{"key":"mcp.authz.decision","value":{{"stringValue":"allow"}}}},{{"key":"mcp.authz.reason","value":{{"stringValue":"allowed"}}}},{{"key":"mcp.authz.would_deny","value":{{"boolValue":false}}}},{{"key":"mcp.authz.matched_grant","value":{{"stringValue":"mcp/ops"}}}},{{"key":"mcp.server.name","value":{{"stringValue":"demo"}}}},{{"key":"mcp.server.namespace","value":{{"stringValue":"mcp"}}}},{{"key":"mcp.subject.agent_id","value":{{"stringValue":"{agent}"}}}},{{"key":"mcp.method.name","value":{{"stringValue":"tools/call"}}}},{{"key":"gen_ai.tool.name","value":{{"stringValue":"echo"}}}},{{"key":"mcp.authz.sample_rate","value":{{"doubleValue":1.0}}}}]}}]}}]}}]}}"#
    )
}

#[test]
fn corrupt_and_truncated_lines_are_counted_and_skipped() {
    let dir = scratch_dir("replay-corrupt");
    let file = dir.join("mixed.log");
    let otlp = otlp_line("a2");
    let text = [
        audit_line("a2", "echo", "allow", "allowed", "mcp/ops"),
        "this is not JSON".into(),
        r#"{"timestamp":"2026-11-20T10:00:00Z","level":"WARN","message":"audit records dropped"}"#
            .into(),
        String::new(),
        // A line cut short mid-file (a rotated or interrupted write), then a good one.
        otlp[..otlp.len() / 2].to_string(),
        otlp.clone(),
        "\u{1}\u{2}binary".into(),
    ]
    .join("\n")
        // The last line was cut short too: no newline, half a line.
        + "\n"
        + &audit_line("a2", "upper", "allow", "allowed", "mcp/ops")[..60];
    std::fs::write(&file, text).unwrap();
    let report = report(&candidate("replay-corrupt-candidate"), &[], &[&file], None);
    assert_eq!(input(&report, "lines"), 8);
    assert_eq!(input(&report, "records"), 2);
    assert_eq!(input(&report, "audit_lines"), 1);
    assert_eq!(input(&report, "otlp"), 1);
    assert_eq!(input(&report, "other_lines"), 1);
    assert_eq!(input(&report, "corrupt_lines"), 2);
    assert_eq!(input(&report, "truncated_lines"), 2);
    assert_eq!(total(&report, "read"), (2, 2.0));
    assert_eq!(
        groups(&report),
        [group(
            "tighten",
            "allow allowed mcp/ops",
            "deny no_matching_grant -",
            2,
            2.0
        )]
    );
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn gzip_files_and_standard_input_read_the_same() {
    let candidate = candidate("replay-gzip-candidate");
    let dir = scratch_dir("replay-gzip");
    let plain = std::fs::read(fixtures().join("jaeger.json")).unwrap();
    let compressed = dir.join("jaeger.json.gz");
    std::fs::write(&compressed, gzip(&plain)).unwrap();
    let expected = report(&candidate, &[], &[&fixtures().join("jaeger.json")], None);
    let from_gzip = report(&candidate, &[], &[&compressed], None);
    let from_stdin = report(&candidate, &[], &[Path::new("-")], Some(&gzip(&plain)));
    for report in [&from_gzip, &from_stdin] {
        assert_eq!(groups(report), groups(&expected));
        assert_eq!(report["totals"], expected["totals"]);
    }
    assert_eq!(from_stdin["input"][0]["name"], "-");

    // Rotated logs are several gzip members end to end; each line is read once.
    let lines = |agents: &[&str]| -> String {
        agents
            .iter()
            .map(|a| audit_line(a, "echo", "allow", "allowed", "mcp/ops") + "\n")
            .collect()
    };
    let members = dir.join("audit.log.gz");
    let mut bytes = gzip(lines(&["a2", "a2"]).as_bytes());
    bytes.extend(gzip(lines(&["a2"]).as_bytes()));
    std::fs::write(&members, bytes).unwrap();
    let plain_stdin = lines(&["a2"]);
    let report = report(
        &candidate,
        &[],
        &[&members, Path::new("-")],
        Some(plain_stdin.as_bytes()),
    );
    assert_eq!(total(&report, "read"), (4, 4.0));
    assert_eq!(total(&report, "tighten"), (4, 4.0));
}

#[test]
fn exit_codes() {
    let candidate = candidate("replay-exit-candidate");
    let dir = scratch_dir("replay-exit");
    let tighten_only = dir.join("tighten.log");
    std::fs::write(
        &tighten_only,
        audit_line("a2", "echo", "allow", "allowed", "mcp/ops") + "\n",
    )
    .unwrap();
    let loosen_only = dir.join("loosen.log");
    std::fs::write(
        &loosen_only,
        audit_line("a4", "echo", "deny", "no_matching_grant", "") + "\n",
    )
    .unwrap();
    let unchanged = dir.join("unchanged.log");
    std::fs::write(
        &unchanged,
        audit_line("a1", "echo", "allow", "allowed", "mcp/base") + "\n",
    )
    .unwrap();
    let code = |extra: &[&str], file: &Path| {
        let mut args = vec!["--policy-dir", candidate.to_str().unwrap()];
        args.extend(extra);
        args.push(file.to_str().unwrap());
        replay(&args, None).code
    };
    // Without --fail-on, 0 whatever changed.
    assert_eq!(code(&[], &tighten_only), 0);
    assert_eq!(code(&["--fail-on", "tighten"], &tighten_only), 4);
    assert_eq!(code(&["--fail-on", "loosen"], &tighten_only), 0);
    assert_eq!(code(&["--fail-on", "any"], &tighten_only), 4);
    assert_eq!(code(&["--fail-on", "loosen"], &loosen_only), 4);
    assert_eq!(code(&["--fail-on", "tighten"], &loosen_only), 0);
    assert_eq!(code(&["--fail-on", "any"], &unchanged), 0);
    // In monitor mode a new denial is a would-deny: a change of reason, not a tightening.
    assert_eq!(
        code(
            &["--mode", "monitor", "--fail-on", "tighten"],
            &tighten_only
        ),
        0
    );
    assert_eq!(
        code(&["--mode", "monitor", "--fail-on", "any"], &tighten_only),
        4
    );

    // An invalid policy set, an unknown --enforce name, no readable input: 2.
    let invalid = scratch_dir("replay-exit-invalid");
    std::fs::write(invalid.join("bad.yaml"), "kind: Nope\n").unwrap();
    let run = replay(
        &[
            "--policy-dir",
            invalid.to_str().unwrap(),
            unchanged.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("bad.yaml"), "{}", run.stderr);
    let run = replay(
        &[
            "--policy-dir",
            candidate.to_str().unwrap(),
            "--against",
            invalid.to_str().unwrap(),
            unchanged.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    let run = replay(
        &[
            "--policy-dir",
            candidate.to_str().unwrap(),
            "--enforce",
            "mcp/nope",
            unchanged.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("`mcp/nope`"), "{}", run.stderr);
    let missing = dir.join("missing.log");
    let run = replay(
        &[
            "--policy-dir",
            candidate.to_str().unwrap(),
            missing.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("missing.log"), "{}", run.stderr);
    let garbage = dir.join("garbage.log");
    std::fs::write(&garbage, "no\nrecords\nhere\n").unwrap();
    assert_eq!(code(&[], &garbage), 2);
    // A missing file beside a readable one is reported, not fatal.
    let run = replay(
        &[
            "--policy-dir",
            candidate.to_str().unwrap(),
            missing.to_str().unwrap(),
            tighten_only.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("missing.log"), "{}", run.stderr);
    assert!(
        run.stdout.contains("tighten on mcp/demo: 1 records"),
        "{}",
        run.stdout
    );
}
