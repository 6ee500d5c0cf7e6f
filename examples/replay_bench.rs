//! Replay throughput and memory: writes RECORDS recorded decisions (default 1 000 000), gzip'd,
//! as the service's JSON audit lines or as OTLP JSON (100 spans a line, as the Collector's file
//! exporter batches them), then replays them in a child process against an edited policy set
//! and prints records per second and the child's peak RSS.
//!
//! ```text
//! cargo run --release --example replay_bench -- [RECORDS] [lines|otlp]
//! ```
//!
//! Each record is a real decision: a Check built from one of ten kinds of request (allowed,
//! denied, would-deny, unidentified, not JSON, protocol traffic) is decided by `authorize` at
//! its own time over a week and written by the audit code, so the file is what the service
//! would have written. The candidate drops one grant and enforces every monitor grant: three
//! records in ten change.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test harness: a panic is the report

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use flate2::Compression;
use flate2::write::GzEncoder;
use mcp_authz::audit::AuditRecord;
use mcp_authz::audit::line::{self, LineFormat};
use mcp_authz::audit::otlp::AttrValue;
use mcp_authz::check::{Options, authorize};
use mcp_authz::policy::Timestamp;
use mcp_authz::policy::{Mode, Snapshot, load_paths};
use mcp_authz::replay::compare::{Baseline, Policy, Replayer};
use mcp_authz::replay::{self, Input};
use mcp_authz::request::{CheckInput, Headers};
use serde_json::json;

fn policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/replay/current")
}

/// The ten kinds of request: (agent, tool or raw body).
const KINDS: [(&str, &str); 10] = [
    ("a1", "echo"),
    ("a1", "delete_row"),
    ("a2", "echo"),
    ("a2", "upper"),
    ("a3", "echo"),
    ("a3", "upper"),
    ("", "echo"),
    ("a1", "{not json"),
    ("a1", r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
    ("a4", "echo"),
];

const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);
const SPANS_PER_LINE: usize = 100;

fn generate(path: &Path, records: u64, otlp: bool) {
    let snapshot = Snapshot::compile(load_paths(&[policies()]).expect("the test policies load"));
    let file = std::fs::File::create(path).expect("create the record file");
    let mut out = BufWriter::new(GzEncoder::new(file, Compression::fast()));
    let start = SystemTime::now() - WEEK;
    let step = WEEK / u32::try_from(records.max(1)).unwrap_or(u32::MAX);
    let mut line = Vec::new();
    let mut spans = Vec::new();
    for i in 0..records {
        let (agent, call) = KINDS[(i % KINDS.len() as u64) as usize];
        let body = if call.starts_with('{') {
            call.to_string()
        } else {
            format!(
                r#"{{"jsonrpc":"2.0","id":{i},"method":"tools/call","params":{{"name":"{call}"}}}}"#
            )
        };
        let headers = if agent.is_empty() {
            vec![("content-type", "application/json")]
        } else {
            vec![
                ("content-type", "application/json"),
                ("x-mcp-agent-id", agent),
            ]
        };
        let input = CheckInput {
            method: "POST",
            path: "/demo/mcp",
            headers: Headers::new(headers),
            body: body.as_bytes(),
            ..CheckInput::default()
        };
        let at = start + step * (i as u32);
        let decision = authorize(
            Some(&snapshot),
            &input,
            &Options::default(),
            Timestamp::from_system(at),
        );
        let record = AuditRecord::new([at; 2], None, &input, &decision);
        if otlp {
            spans.push(span(&record, i));
            if spans.len() == SPANS_PER_LINE || i + 1 == records {
                let request = json!({"resourceSpans": [{
                    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "mcp-authz"}}]},
                    "scopeSpans": [{"scope": {"name": "mcp-authz"}, "spans": std::mem::take(&mut spans)}],
                }]});
                serde_json::to_writer(&mut out, &request).expect("write a line");
                out.write_all(b"\n").expect("write a line");
            }
        } else {
            line::write(
                &record,
                LineFormat {
                    json: true,
                    ansi: false,
                },
                &mut line,
            );
            out.write_all(&line).expect("write a line");
            line.clear();
        }
    }
    out.into_inner()
        .ok()
        .and_then(|gz| gz.finish().ok())
        .expect("finish the gzip stream");
}

/// One record as an OTLP JSON span.
fn span(record: &AuditRecord, i: u64) -> serde_json::Value {
    let nanos = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
            .to_string()
    };
    let mut attributes: Vec<serde_json::Value> = Vec::new();
    record.for_each_attribute(|key, value| {
        let value = match value {
            AttrValue::Bool(b) => json!({"boolValue": b}),
            AttrValue::Int(n) => json!({"intValue": n.to_string()}),
            AttrValue::Double(f) => json!({"doubleValue": f}),
            AttrValue::Str(s) => json!({"stringValue": s}),
            AttrValue::Strs(items) => json!({"arrayValue": {"values": items
                .iter()
                .map(|s| json!({"stringValue": s}))
                .collect::<Vec<_>>()}}),
        };
        attributes.push(json!({"key": key, "value": value}));
    });
    json!({
        "traceId": format!("{:032x}", u128::from(i) * 0x9e37_79b9_7f4a_7c15 + 1),
        "spanId": format!("{:016x}", i + 1),
        "name": "mcp.authz.check",
        "kind": 2,
        "startTimeUnixNano": nanos(record.started),
        "endTimeUnixNano": nanos(record.ended),
        "attributes": attributes,
    })
}

/// Peak resident memory of this process, in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The measured part, in a process of its own so that its peak RSS is replay's alone.
fn measure(path: &Path) {
    let mut candidate = load_paths(&[policies()]).expect("the test policies load");
    candidate.grants.retain(|g| &*g.key.full != "mcp/ops");
    replay::enforce(&mut candidate, &["all".to_string()]).expect("enforce all");
    let replayer = Replayer {
        candidate: Policy::new(Snapshot::compile(candidate), Mode::Enforce),
        baseline: Baseline::Recorded,
    };
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let started = Instant::now();
    let replayed = replay::run(&replayer, &[Input::File(path.into())], workers, false);
    let seconds = started.elapsed().as_secs_f64();
    let tally = &replayed.tally;
    println!(
        "replayed {} records ({} changed, {} not replayable) in {seconds:.2} s on {workers} workers: {:.0} records/s, peak RSS {:.1} MiB",
        tally.read.records,
        tally.changed_total().records,
        tally.not_replayable_total().records,
        tally.read.records as f64 / seconds,
        peak_rss_mib()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, path] = args.as_slice()
        && flag == "--measure"
    {
        return measure(Path::new(path));
    }
    let records: u64 = args
        .first()
        .map(|n| n.parse().expect("RECORDS is a number"))
        .unwrap_or(1_000_000);
    let otlp = args.get(1).is_some_and(|f| f == "otlp");
    let path = std::env::temp_dir().join(format!(
        "mcp-authz-replay-bench-{}.{}.gz",
        std::process::id(),
        if otlp { "otlp.jsonl" } else { "log" }
    ));
    let started = Instant::now();
    generate(&path, records, otlp);
    let size = std::fs::metadata(&path).map_or(0, |m| m.len());
    println!(
        "wrote {records} records ({}) in {:.1} s: {:.1} MiB gzip'd",
        if otlp { "OTLP JSON" } else { "audit lines" },
        started.elapsed().as_secs_f64(),
        size as f64 / (1024.0 * 1024.0)
    );
    let status = std::process::Command::new(std::env::current_exe().expect("own path"))
        .arg("--measure")
        .arg(&path)
        .status();
    let _ = std::fs::remove_file(&path);
    assert!(status.is_ok_and(|s| s.success()), "the replay run failed");
}
