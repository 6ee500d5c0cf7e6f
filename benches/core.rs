//! Criterion benches of the pure core: JSON-RPC inspection, the whole decision, and everything a
//! Check does between the gRPC frames (decode, decide, answer, metrics, audit record) next to
//! what the floor does (decode, answer OK). Run: `cargo bench --bench core`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test harness: a panic is the report

#[path = "common/generate.rs"]
mod generate;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use mcp_authz::audit::AuditRecord;
use mcp_authz::check::{Options, authorize};
use mcp_authz::decision::Verdict;
use mcp_authz::metrics::Metrics;
use mcp_authz::policy::{Governs, Snapshot, Timestamp, load_files, load_paths};
use mcp_authz::proto::auth::{CheckRequest, CheckResponse, OkHttpResponse, check_response};
use mcp_authz::request::CheckInput as Input;
use mcp_authz::request::{CheckInput, Headers};
use mcp_authz::response;
use mcp_authz::rpc;
use prost::Message;

fn tools_call(tool: &str, padding: usize) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}","arguments":{{"text":"{}","n":[1,2,3],"nested":{{"a":true,"b":null}}}},"_meta":{{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}}}}}"#,
        "x".repeat(padding)
    )
}

fn inspection(c: &mut Criterion) {
    let headers = Headers::new(vec![("content-type", "application/json")]);
    for (name, size) in [("inspect 0.5 KiB", 512usize), ("inspect 64 KiB", 64 * 1024)] {
        let base = tools_call("echo", 0).len();
        let body = tools_call("echo", size.saturating_sub(base));
        assert!((body.len() as isize - size as isize).abs() < 8);
        c.bench_function(name, |b| {
            b.iter(|| {
                rpc::inspect(
                    "POST",
                    &headers,
                    black_box(body.as_bytes()),
                    1 << 20,
                    Governs::TOOLS_ONLY,
                )
            })
        });
    }
}

fn input<'a>(path: &'a str, headers: Vec<(&'a str, &'a str)>, body: &'a str) -> CheckInput<'a> {
    CheckInput {
        method: "POST",
        path,
        headers: Headers::new(headers),
        body: body.as_bytes(),
        ..CheckInput::default()
    }
}

fn decisions(c: &mut Criterion) {
    let now = Timestamp::parse_rfc3339("2027-01-01T00:00:00Z").unwrap();
    let options = Options::default();

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/policies");
    let small = Snapshot::compile(load_paths(&[dir]).unwrap());
    let body = tools_call("echo", 0);
    let allowed = input(
        "/demo/mcp",
        vec![("x-mcp-human-id", "h1"), ("x-mcp-agent-id", "a1")],
        &body,
    );
    c.bench_function("decide conformance policies (allow)", |b| {
        b.iter(|| authorize(Some(&small), black_box(&allowed), &options, now).reason)
    });
    let upper = tools_call("upper", 0);
    let monitored = input("/demo/mcp", vec![("x-mcp-agent-id", "carrier")], &upper);
    c.bench_function("decide conformance policies (monitor grant, rerun)", |b| {
        b.iter(|| authorize(Some(&small), black_box(&monitored), &options, now).reason)
    });
    let denied = input("/demo/mcp", vec![("x-mcp-agent-id", "bot-7")], &body);
    for (name, input, verdict) in [
        ("answer an allow (wire bytes)", &allowed, Verdict::Allow),
        ("answer a denial (wire bytes)", &denied, Verdict::Deny),
    ] {
        let decision = authorize(Some(&small), input, &options, now);
        assert_eq!(decision.applied(), verdict, "{:?}", decision.reason);
        c.bench_function(name, |b| b.iter(|| response::encode(black_box(&decision))));
    }

    let files = generate::large();
    let borrowed: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_bytes()))
        .collect();
    let large = Snapshot::compile(load_files(&borrowed).unwrap());
    assert_eq!(large.counts().grants, 10_000);
    let call = tools_call("tool-4", 0);
    let caller = input(
        "/srv-17/mcp",
        vec![
            ("x-mcp-human-id", "human-41"),
            ("x-mcp-agent-id", "agent-42"),
            ("x-mcp-team-id", "team-3"),
        ],
        &call,
    );
    c.bench_function("decide 10,000 grants", |b| {
        b.iter(|| authorize(Some(&large), black_box(&caller), &options, now).reason)
    });
    c.bench_function("load and compile 10,000 grants", |b| {
        b.iter(|| Snapshot::compile(load_files(black_box(&borrowed)).unwrap()).counts())
    });
}

/// One Check's CPU work outside the HTTP/2 stack, for mcp-authz and for the floor.
fn whole_check(c: &mut Criterion) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    let snapshot = Snapshot::compile(load_paths(&[root.join("policies")]).unwrap());
    let bytes = std::fs::read(root.join("requests/04-echo-allowed.bin")).unwrap();
    let (options, metrics) = (Options::default(), Metrics::new());
    let mut out = Vec::with_capacity(4096);
    c.bench_function(
        "whole Check: decode, decide, answer, metrics, record",
        |b| {
            b.iter(|| {
                let started = std::time::SystemTime::now();
                let request = CheckRequest::decode(black_box(bytes.as_slice())).unwrap();
                let input = Input::from_proto(&request);
                let now = Timestamp::from_system(started);
                let decision = authorize(Some(&snapshot), &input, &options, now);
                let answer = response::encode(&decision);
                let ended = std::time::SystemTime::now();
                metrics.record_check(&decision, 1e-5);
                let record = AuditRecord::new([started, ended], None, &input, &decision);
                out.clear();
                out.extend_from_slice(&answer.0);
                black_box(record);
            })
        },
    );
    let ok = response::EncodedResponse::from_message(&CheckResponse {
        status: Some(Default::default()),
        http_response: Some(check_response::HttpResponse::OkResponse(
            OkHttpResponse::default(),
        )),
        dynamic_metadata: None,
    });
    c.bench_function("floor Check: decode, answer OK", |b| {
        b.iter(|| {
            let request = CheckRequest::decode(black_box(bytes.as_slice())).unwrap();
            let answer = ok.clone();
            out.clear();
            out.extend_from_slice(&answer.0);
            black_box(request);
        })
    });
}

criterion_group!(benches, inspection, decisions, whole_check);
criterion_main!(benches);
