//! Load benchmark: drives the running binaries over gRPC and prints throughput, latency
//! percentiles, CPU per Check and peak RSS for mcp-authz and for the floor
//! (`examples/floor.rs`, an ext_authz server on the same tonic stack that answers OK without
//! looking), measured in the same run, the way operators run it: every server's stderr goes to
//! a file on disk (`target/load-logs/`), as a container runtime writes it.
//!
//! The rows: mcp-authz with the audit trail on (its default: one line per decision, to the
//! file; the headline), with it off (`RUST_LOG=warn`), exporting spans over OTLP/gRPC to a live
//! sink in this process that accepts and discards as fast as it can, keeping 1 % of the allowed
//! decisions (`--audit-allowed 0.01`; skipped with a note where the binary has no such flag),
//! and the 10,000-grant set (audit on).
//!
//! Every answer is compared, byte for byte, with the answer the same server gave the same request
//! before the run (decoded and checked then), so the load generator does the same work for
//! every server: it does not pay for decoding mcp-authz's larger answers (its dynamic metadata)
//! on the cores the servers share with it.
//!
//! Closed loop: 7 rounds in which the servers run in turn for `--seconds` each; each server's
//! median round is reported and every ratio is the median of the rounds' ratios. Open loop: 7
//! rounds in which the servers take turns in 0.5 s slices, `--seconds` in all each; each
//! server's median round (by p99) is reported. The dead collector's cost is measured side by
//! side: in each round, mcp-authz with and without the dead endpoint receive the same Checks at
//! the same time; the ratio is the median of the rounds' ratios.
//!
//! Run from the repository root: `cargo run --release --example load` (add `-- --seconds N` to
//! change each closed-loop phase's length, default 3, and `--verbose` to see every round's
//! figures). It builds the release binaries it needs (`--no-build` measures those in place, e.g.
//! an earlier build copied into `target/release` to compare two).
//!
//! `-- --callgrind N` instead counts instructions per Check under `valgrind --tool=callgrind`
//! (repeatable on a noisy machine): for the floor and mcp-authz with the audit trail off, on
//! (lines to a file) and exporting spans to the sink, N Checks each after a warm-up, counted
//! between `callgrind_control --zero` and `--dump`. Outputs stay in `target/callgrind/` for
//! `callgrind_annotate`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test harness: a panic is the report

#[path = "../benches/common/client.rs"]
mod client;
#[path = "../benches/common/generate.rs"]
mod generate;
#[path = "../benches/common/release.rs"]
mod release;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mcp_authz::proto::auth::CheckResponse;
use prost::Message;
use tonic::transport::Channel;

const STREAMS: usize = 16;
const RATE: u64 = 2000;
/// Closed-loop rounds; in each, the servers run one after the other.
const ROUNDS: usize = 7;
/// The open loop's turns, in seconds.
const OPEN_SLICE: f64 = 0.5;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[derive(Clone)]
struct Call {
    request: Bytes,
    answer: Bytes,
}

/// The calls of `requests` on the server at `addr`: each answer decoded once and checked to be
/// a decision (not `policy_unavailable`), then kept as bytes.
async fn calls(addr: &str, requests: &[Bytes]) -> Vec<Call> {
    let channel = connect(addr).await;
    let mut out = Vec::new();
    for request in requests {
        let answer = client::check_undecoded(&channel, request.clone())
            .await
            .expect("an answer");
        let decoded = CheckResponse::decode(answer.clone()).expect("a CheckResponse");
        assert!(decided(&decoded), "no decision from {addr}");
        out.push(Call {
            request: request.clone(),
            answer,
        });
    }
    out
}

/// An answer from a loaded policy: not 14 UNAVAILABLE (`policy_unavailable`).
fn decided(answer: &CheckResponse) -> bool {
    answer.status.as_ref().is_some_and(|s| s.code != 14)
}

/// Sends `call`'s request; true when the answer is the expected one.
async fn answered(channel: &Channel, call: &Call) -> bool {
    client::check_undecoded(channel, call.request.clone())
        .await
        .is_ok_and(|answer| answer == call.answer)
}

/// An encoded CheckRequest, shared by reference count between many Checks.
fn request(path: &str, headers: &[(&str, &str)], tool: &str) -> Bytes {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}","arguments":{{"text":"hello"}}}}}}"#
    );
    let mut all: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all.extend([
        ("content-type".into(), "application/json".into()),
        (":authority".into(), "mcp.local".into()),
        ("user-agent".into(), "agent/1.0".into()),
        (
            "x-request-id".into(),
            "0f8fad5b-d9cb-469f-a165-70867728950e".into(),
        ),
    ]);
    client::encode_request("POST", path, all, body.as_bytes()).into()
}

#[derive(Clone, Copy, Default, Debug)]
struct Figures {
    rps: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    errors: u64,
    /// CPU time per answered Check, in microseconds: the server's and the load generator's.
    server_cpu_us: f64,
    client_cpu_us: f64,
    /// Bytes of log written per answered Check.
    log_bytes: f64,
}

fn percentiles(mut micros: Vec<u64>, seconds: f64, errors: u64) -> Figures {
    micros.sort_unstable();
    let at = |q: f64| {
        if micros.is_empty() {
            return f64::NAN;
        }
        let i = ((micros.len() as f64 * q).ceil() as usize).clamp(1, micros.len()) - 1;
        micros[i] as f64 / 1000.0
    };
    Figures {
        rps: micros.len() as f64 / seconds,
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
        errors,
        ..Figures::default()
    }
}

/// `STREAMS` callers, each sending the next Check as soon as the last is answered.
async fn closed_loop(server: &Process, calls: &[Call], seconds: f64) -> Figures {
    let channel = connect(&server.addr).await;
    let cpu = || (server.cpu_seconds(), cpu_seconds("/proc/self/stat"));
    let before = cpu();
    let logged = server.log_bytes();
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for stream in 0..STREAMS {
        let (channel, stop, errors) = (channel.clone(), Arc::clone(&stop), Arc::clone(&errors));
        let calls = calls.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(200_000);
            let mut i = stream;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                if answered(&channel, &calls[i % calls.len()]).await {
                    latencies.push(started.elapsed().as_micros() as u64);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let after = cpu();
    let per_check = |seconds: f64| seconds * 1e6 / all.len().max(1) as f64;
    Figures {
        server_cpu_us: per_check(after.0 - before.0),
        client_cpu_us: per_check(after.1 - before.1),
        log_bytes: (server.log_bytes() - logged) as f64 / all.len().max(1) as f64,
        ..percentiles(all, seconds, errors.load(Ordering::Relaxed))
    }
}

/// Checks started at a fixed rate whatever the answers do, for `seconds`, on an open
/// `channel`; adds their latencies (µs) to `latencies` and returns the failed ones. tokio's timer
/// ticks every millisecond, so Checks leave in bursts of two; latency is measured from each
/// one's departure.
async fn open_loop(
    channel: &Channel,
    calls: &[Call],
    seconds: f64,
    latencies: &mut Vec<u64>,
) -> u64 {
    let total = (RATE as f64 * seconds) as u64;
    let errors = Arc::new(AtomicU64::new(0));
    let start = tokio::time::Instant::now() + Duration::from_millis(10);
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        tokio::time::sleep_until(start + Duration::from_nanos(i * 1_000_000_000 / RATE)).await;
        let (channel, errors) = (channel.clone(), Arc::clone(&errors));
        let call = calls[i as usize % calls.len()].clone();
        let departed = Instant::now();
        tasks.push(tokio::spawn(async move {
            if answered(&channel, &call).await {
                Some(departed.elapsed().as_micros() as u64)
            } else {
                errors.fetch_add(1, Ordering::Relaxed);
                None
            }
        }));
    }
    let lag = tokio::time::Instant::now()
        .saturating_duration_since(start + Duration::from_secs_f64(seconds));
    if lag > Duration::from_millis(50) {
        println!("  (the sender fell {lag:?} behind the schedule)");
    }
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    errors.load(Ordering::Relaxed)
}

fn median_of(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The median round of a server by `key`.
fn median(mut rounds: Vec<Figures>, key: fn(&Figures) -> f64) -> Figures {
    rounds.sort_by(|a, b| key(a).total_cmp(&key(b)));
    rounds[rounds.len() / 2]
}

/// The median over rounds of `a`'s figure divided by `b`'s in the same round.
fn ratio(a: &[Figures], b: &[Figures], key: fn(&Figures) -> f64) -> f64 {
    median_of(a.iter().zip(b).map(|(a, b)| key(a) / key(b)).collect())
}

fn row(name: &str, f: &Figures, rss: f64) {
    print!(
        "{name:<46} {:>9.0} {:>8.3} {:>8.3} {:>8.3} {:>6} {:>8.1}",
        f.rps, f.p50, f.p99, f.p999, f.errors, rss
    );
    if f.server_cpu_us > 0.0 {
        print!(" {:>9.1} {:>9.1}", f.server_cpu_us, f.client_cpu_us);
    }
    println!();
}

fn header(title: &str, cpu: bool) {
    println!("\n{title}");
    print!(
        "{:<46} {:>9} {:>8} {:>8} {:>8} {:>6} {:>8}",
        "", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "errors", "RSS MiB"
    );
    if cpu {
        print!(" {:>9} {:>9}", "server µs", "client µs");
    }
    println!();
}

/// `count` Checks from `STREAMS` callers, each sending the next as soon as the last is answered.
async fn closed_count(channel: &Channel, calls: &[Call], count: usize) {
    let mut tasks = Vec::new();
    for stream in 0..STREAMS {
        let (channel, calls) = (channel.clone(), calls.to_vec());
        tasks.push(tokio::spawn(async move {
            for i in (stream..count).step_by(STREAMS) {
                assert!(
                    answered(&channel, &calls[i % calls.len()]).await,
                    "a wrong answer"
                );
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// A server process under test.
struct Process {
    child: Child,
    addr: String,
    /// Where its stderr goes.
    log: Option<PathBuf>,
    /// Its admin listener (metrics), if any.
    admin: Option<String>,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    fn peak_rss_mib(&self) -> f64 {
        client::peak_rss_mib(self.child.id())
    }

    /// CPU time (user + system) the process has used so far, in seconds.
    fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&format!("/proc/{}/stat", self.child.id()))
    }

    /// The size of its log file so far.
    fn log_bytes(&self) -> u64 {
        self.log
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len())
    }

    /// A counter from its `/metrics` (NaN where unknown).
    fn metric(&self, name: &str) -> f64 {
        let Some(admin) = &self.admin else {
            return f64::NAN;
        };
        let mut text = String::new();
        if let Ok(mut socket) = std::net::TcpStream::connect(admin) {
            let _ = write!(
                socket,
                "GET /metrics HTTP/1.1\r\nhost: {admin}\r\nconnection: close\r\n\r\n"
            );
            let _ = socket.read_to_string(&mut text);
        }
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(f64::NAN)
    }
}

/// User + system CPU seconds from a `/proc/<pid>/stat` file (0 where unknown).
fn cpu_seconds(stat: &str) -> f64 {
    let text = std::fs::read_to_string(stat).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = text
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Clock ticks are 100 per second on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

async fn connect(addr: &str) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(channel) = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
        {
            return channel;
        }
        assert!(Instant::now() < deadline, "no server on {addr}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until a Check is answered from a loaded policy (not 503); returns when, or `None`
/// when the process ends first (e.g. it rejects a flag).
async fn until_serving(process: &mut Process, probe: &Bytes) -> Option<Instant> {
    let deadline = Instant::now() + Duration::from_secs(300);
    let url = format!("http://{}", process.addr);
    loop {
        if process.child.try_wait().ok().flatten().is_some() {
            return None;
        }
        if let Ok(channel) = Channel::from_shared(url.clone()).unwrap().connect().await
            && let Ok(r) = client::check_bytes(&channel, probe.clone(), &[]).await
            && decided(&r)
        {
            return Some(Instant::now());
        }
        assert!(
            Instant::now() < deadline,
            "no decision from {}",
            process.addr
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Where the servers' stderr goes: a file each, as a container runtime writes it.
fn logs_dir() -> PathBuf {
    root().join("target/load-logs")
}

/// A file for a server's stderr (emptied).
fn log_file(name: &str) -> (PathBuf, Stdio) {
    let path = logs_dir().join(format!("{name}.log"));
    let file = std::fs::File::create(&path).expect("create a log file");
    (path, Stdio::from(file))
}

/// How an mcp-authz process is started.
struct Setup<'a> {
    /// Names its log file.
    name: &'a str,
    policy_dir: &'a Path,
    args: Vec<String>,
    env: Vec<(&'a str, &'a str)>,
    /// Runs the binary under this command (e.g. valgrind).
    wrapper: Vec<String>,
}

impl<'a> Setup<'a> {
    fn new(name: &'a str, policy_dir: &'a Path) -> Self {
        Setup {
            name,
            policy_dir,
            args: vec![],
            env: vec![],
            wrapper: vec![],
        }
    }

    fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.into());
        self
    }

    fn env(mut self, key: &'a str, value: &'a str) -> Self {
        self.env.push((key, value));
        self
    }

    /// Starts it with stderr to its log file (or to `stderr` when given).
    fn spawn(&self, stderr: Option<Stdio>) -> (Process, Instant) {
        let (addr, admin) = (free_addr(), free_addr());
        let (log, stderr) = match stderr {
            Some(stderr) => (None, stderr),
            None => {
                let (path, file) = log_file(self.name);
                (Some(path), file)
            }
        };
        let binary = root().join("target/release/mcp-authz");
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(&binary);
                command
            }
            None => Command::new(&binary),
        };
        let started = Instant::now();
        let child = command
            .args(["serve", "--listen", &addr, "--admin-listen", &admin])
            .arg("--policy-dir")
            .arg(self.policy_dir)
            .args(&self.args)
            .env_remove("RUST_LOG")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
            .envs(self.env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("run target/release/mcp-authz");
        let process = Process {
            child,
            addr,
            log,
            admin: Some(admin),
        };
        (process, started)
    }
}

fn spawn_floor(wrapper: &[String]) -> Process {
    let addr = free_addr();
    let (path, stderr) = log_file("floor");
    let binary = root().join("target/release/examples/floor");
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(&binary);
            command
        }
        None => Command::new(&binary),
    };
    let child = command
        .args(["--listen", &addr])
        .stderr(stderr)
        .spawn()
        .expect("run target/release/examples/floor");
    Process {
        child,
        addr,
        log: Some(path),
        admin: None,
    }
}

/// Three Checks on the conformance policies: a grant, a monitor-mode rollout, a carrier.
fn small_requests() -> Vec<Bytes> {
    vec![
        request(
            "/demo/mcp",
            &[("x-mcp-human-id", "h1"), ("x-mcp-agent-id", "a1")],
            "echo",
        ),
        request("/demo/mcp", &[("x-mcp-agent-id", "a-new")], "upper"),
        request("/demo/mcp", &[("x-mcp-agent-id", "carrier")], "echo"),
    ]
}

/// Fifty Checks on the 10,000-grant set, spread over its servers, subjects and tools.
fn large_requests() -> Vec<Bytes> {
    (0..50)
        .map(|s| {
            let g = (s * 37) % 200;
            let (human, agent) = (format!("human-{}", g + 1), format!("agent-{}", g + 2));
            request(
                &format!("/srv-{s}/mcp"),
                &[
                    ("x-mcp-human-id", &human),
                    ("x-mcp-agent-id", &agent),
                    ("x-mcp-team-id", "team-3"),
                ],
                &format!("tool-{}", s % 20),
            )
        })
        .collect()
}

/// A server in the comparison and the calls it answers.
struct Server {
    name: &'static str,
    process: Process,
    calls: Vec<Call>,
}

const FLOOR: &str = "floor (answers OK, no policy work)";
const AUDIT_ON: &str = "mcp-authz, audit on (lines to a file)";
const AUDIT_OFF: &str = "mcp-authz, audit off (RUST_LOG=warn)";
const OTLP_SINK: &str = "mcp-authz, spans over OTLP/gRPC to a live sink";
const SAMPLED: &str = "mcp-authz, --audit-allowed 0.01 (lines)";
const LARGE: &str = "mcp-authz, 10,000 grants (audit on)";
const DEAD: &str = "mcp-authz, OTLP endpoint on a dead port";

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let seconds: f64 = value("--seconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let verbose = args.iter().any(|a| a == "--verbose");
    // `--no-build`: measure the binaries in place (e.g. an earlier build copied there).
    if !args.iter().any(|a| a == "--no-build") {
        release::build();
    }
    let _ = std::fs::remove_dir_all(logs_dir());
    std::fs::create_dir_all(logs_dir()).unwrap();
    let small_dir = root().join("tests/conformance/policies");
    if let Some(count) = value("--callgrind") {
        let count = count.parse().expect("--callgrind N: a number of Checks");
        return callgrind(&small_dir, count).await;
    }
    let large_dir = root().join("target/load-policies");
    let _ = std::fs::remove_dir_all(&large_dir);
    generate::write(&large_dir, &generate::large());
    let (small_requests, large_requests) = (small_requests(), large_requests());

    println!(
        "mcp-authz load benchmark: {STREAMS} concurrent streams (closed loop) and {RATE} req/s (open loop), {ROUNDS} rounds of {seconds} s per server, {} cores, servers' stderr to files in {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        logs_dir().display()
    );

    let sink = sink::Sink::default();
    let sink_url = sink.start().await;
    let mut floor = spawn_floor(&[]);
    until_serving(&mut floor, &small_requests[0]).await;
    let mut servers = vec![Server {
        name: FLOOR,
        calls: calls(&floor.addr, &small_requests).await,
        process: floor,
    }];
    let setups = [
        (AUDIT_ON, Setup::new("audit-on", &small_dir)),
        (
            AUDIT_OFF,
            Setup::new("audit-off", &small_dir).env("RUST_LOG", "warn"),
        ),
        (
            OTLP_SINK,
            Setup::new("otlp-sink", &small_dir)
                .arg("--otlp-endpoint")
                .arg(&sink_url),
        ),
        (
            SAMPLED,
            Setup::new("audit-allowed-0.01", &small_dir)
                .arg("--audit-allowed")
                .arg("0.01"),
        ),
        (LARGE, Setup::new("large", &large_dir)),
    ];
    let mut start_to_serving = Duration::ZERO;
    for (name, setup) in &setups {
        let requests = if *name == LARGE {
            &large_requests
        } else {
            &small_requests
        };
        let (mut process, started) = setup.spawn(None);
        let Some(serving) = until_serving(&mut process, &requests[0]).await else {
            let log = std::fs::read_to_string(process.log.as_ref().unwrap()).unwrap_or_default();
            println!(
                "skipped \"{name}\": the binary did not start with {:?}: {}",
                setup.args,
                log.lines().next().unwrap_or("")
            );
            continue;
        };
        if *name == LARGE {
            start_to_serving = serving - started;
        }
        servers.push(Server {
            name,
            calls: calls(&process.addr, requests).await,
            process,
        });
    }
    let dead = free_addr();
    let dead_url = format!("http://{dead}");
    let (mut dead_otlp, _) = Setup::new("dead-otlp", &small_dir)
        .arg("--otlp-endpoint")
        .arg(&dead_url)
        .spawn(None);
    until_serving(&mut dead_otlp, &small_requests[0]).await;
    let dead_calls = calls(&dead_otlp.addr, &small_requests).await;
    let n = servers.len();
    let index = |name: &str| servers.iter().position(|s| s.name == name);
    let on = index(AUDIT_ON).unwrap();

    // Rounds in which every server runs in turn, starting with a different one each round:
    // drift and bursts on a shared machine hit all alike, each ratio is taken within a round,
    // and the median round is reported.
    let rps = |f: &Figures| f.rps;
    let mut closed: Vec<Vec<Figures>> = vec![Vec::new(); n];
    for round in 0..ROUNDS {
        for i in (0..n).map(|i| (i + round) % n) {
            let server = &servers[i];
            closed[i].push(closed_loop(&server.process, &server.calls, seconds).await);
        }
        if verbose {
            let figures: Vec<String> = closed
                .iter()
                .map(|r| format!("{:.0}", r.last().map_or(f64::NAN, rps)))
                .collect();
            println!("round {round}: req/s {}", figures.join(" "));
        }
    }
    // Open loop, in rounds of `seconds` per server. Within a round the servers take turns in
    // short slices, each turn starting with a different server, so a burst of noise (which
    // lasts seconds on this machine) falls on every server alike; each round's latencies are
    // pooled per server and the median round is reported. Then the dead collector's cost, side
    // by side: the same Checks at the same rate to mcp-authz with and without the dead endpoint
    // at once, so both see the same noise; its ratio is the median of the rounds' ratios.
    let p99 = |f: &Figures| f.p99;
    let slices = ((seconds / OPEN_SLICE).round() as usize).max(1);
    let mut channels = Vec::new();
    for server in &servers {
        channels.push(connect(&server.process.addr).await);
    }
    let dead_channel = connect(&dead_otlp.addr).await;
    let mut open: Vec<Vec<Figures>> = vec![Vec::new(); n];
    let mut side_by_side: [Vec<Figures>; 2] = Default::default();
    for round in 0..ROUNDS {
        let mut pooled: Vec<(Vec<u64>, u64)> = vec![Default::default(); n];
        for slice in 0..slices {
            for i in (0..n).map(|i| (i + slice + round) % n) {
                let (latencies, errors) = &mut pooled[i];
                *errors += open_loop(&channels[i], &servers[i].calls, OPEN_SLICE, latencies).await;
            }
        }
        let turns = slices as f64 * OPEN_SLICE;
        for (i, (latencies, errors)) in pooled.into_iter().enumerate() {
            open[i].push(percentiles(latencies, turns, errors));
        }
        let (mut none, mut dead) = (Vec::new(), Vec::new());
        let (none_errors, dead_errors) = tokio::join!(
            open_loop(&channels[on], &servers[on].calls, seconds, &mut none),
            open_loop(&dead_channel, &dead_calls, seconds, &mut dead),
        );
        side_by_side[0].push(percentiles(none, seconds, none_errors));
        side_by_side[1].push(percentiles(dead, seconds, dead_errors));
        if verbose {
            let of = |rounds: &[Figures]| format!("{:.3}", rounds.last().map_or(f64::NAN, p99));
            let figures: Vec<String> = open.iter().map(|r| of(r)).collect();
            println!(
                "round {round}: p99 ms {}, side by side {} {}",
                figures.join(" "),
                of(&side_by_side[0]),
                of(&side_by_side[1]),
            );
        }
    }
    let dead_vs_none = ratio(&side_by_side[1], &side_by_side[0], p99);
    let cpu = |f: &Figures| f.server_cpu_us;
    let vs_floor: Vec<[f64; 4]> = (0..n)
        .map(|i| {
            [
                ratio(&closed[i], &closed[0], rps),
                ratio(&closed[i], &closed[0], cpu),
                ratio(&closed[i], &closed[0], p99),
                ratio(&open[i], &open[0], p99),
            ]
        })
        .collect();
    let large_vs_small = index(LARGE).map(|l| ratio(&closed[l], &closed[on], rps));
    let open_median: Vec<Figures> = open.into_iter().map(|r| median(r, p99)).collect();
    let closed_median: Vec<Figures> = closed.into_iter().map(|r| median(r, rps)).collect();
    let side_by_side = side_by_side.map(|rounds| median(rounds, p99));
    header(
        &format!("closed loop, {STREAMS} streams (median round of {ROUNDS}; CPU per Check)"),
        true,
    );
    for (server, figures) in servers.iter().zip(&closed_median) {
        row(server.name, figures, server.process.peak_rss_mib());
    }
    header(
        &format!(
            "open loop, {RATE} req/s (median round of {ROUNDS} by p99; servers take turns in {OPEN_SLICE} s slices)"
        ),
        false,
    );
    for (server, figures) in servers.iter().zip(&open_median) {
        row(server.name, figures, server.process.peak_rss_mib());
    }
    header(
        &format!(
            "open loop side by side, {RATE} req/s to each at once (median round of {ROUNDS} by p99)"
        ),
        false,
    );
    row(
        AUDIT_ON,
        &side_by_side[0],
        servers[on].process.peak_rss_mib(),
    );
    row(DEAD, &side_by_side[1], dead_otlp.peak_rss_mib());

    println!(
        "\nagainst the floor (medians of the rounds' ratios)\n{:<46} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "", "req/s", "CPU/Check", "p99 sat.", "p99 2k/s", "log B/Chk", "dropped"
    );
    for (i, server) in servers.iter().enumerate().skip(1) {
        let [r, c, s, o] = vs_floor[i];
        println!(
            "{:<46} {r:>10.2} {c:>10.2} {s:>10.2} {o:>10.2} {:>10.0} {:>8}",
            server.name,
            closed_median[i].log_bytes,
            server.process.metric("mcp_authz_spans_dropped_total"),
        );
    }
    println!(
        "the OTLP sink received {} exports, {:.1} MiB",
        sink.exports.load(Ordering::Relaxed),
        sink.bytes.load(Ordering::Relaxed) as f64 / (1 << 20) as f64
    );
    let large_rss = index(LARGE).map_or(f64::NAN, |l| servers[l].process.peak_rss_mib());
    let on_open = open_median[on];
    let [on_rps, _, on_sat, on_2k] = vs_floor[on];
    drop(servers);
    drop(dead_otlp);

    // Reload of the 10,000-grant set, timed by the service itself.
    let reload_ms = {
        let (mut process, _) = Setup::new("reload", &large_dir).spawn(Some(Stdio::piped()));
        until_serving(&mut process, &large_requests[0]).await;
        let stderr = process.child.stderr.take().unwrap();
        let pid = process.child.id().to_string();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
                .find(|l| l.contains("policy reloaded"))
                .and_then(|l| {
                    let at = l.find("elapsed_ms=")? + "elapsed_ms=".len();
                    l[at..].split_whitespace().next()?.parse::<f64>().ok()
                })
        });
        Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !reader.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !reader.is_finished() {
            let _ = process.child.kill();
        }
        let ms = reader.join().unwrap().unwrap_or(f64::NAN);
        drop(process);
        ms
    };

    println!("\nratios and targets (audit on, lines to a file)");
    println!("throughput / floor (16 streams):             {on_rps:.2}  (target >= 0.90)");
    println!("p99 at saturation / floor (16 streams):      {on_sat:.2}  (target <= 1.30)");
    println!("p99 at {RATE} req/s / floor:                  {on_2k:.2}  (target <= 1.20)");
    println!(
        "p99 at {RATE} req/s, conformance policies:    {:.3} ms  (target <= 1 ms)",
        on_open.p99
    );
    if let Some(large_vs_small) = large_vs_small {
        println!(
            "throughput 10,000 grants / conformance:      {large_vs_small:.2}  (target >= 0.80)"
        );
    }
    println!(
        "10,000 grants: start to SERVING {:.0} ms, reload {reload_ms:.0} ms (targets <= 1000 ms)",
        start_to_serving.as_secs_f64() * 1000.0
    );
    println!("10,000 grants: peak RSS {large_rss:.1} MiB under load (target <= 64 MiB)");
    println!(
        "p99 dead OTLP endpoint / no endpoint:        {dead_vs_none:.2}  (target <= 1.10; side by side)"
    );
}

/// Instructions per Check under callgrind, for the floor and three audit settings.
async fn callgrind(small_dir: &Path, count: usize) {
    let dir = root().join("target/callgrind");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let wrapper = |name: &str| {
        vec![
            "valgrind".to_string(),
            "--tool=callgrind".into(),
            format!("--callgrind-out-file={}/{name}.out", dir.display()),
        ]
    };
    let sink = sink::Sink::default();
    let sink_url = sink.start().await;
    let requests = small_requests();
    println!(
        "instructions per Check under callgrind ({count} Checks from {STREAMS} streams after a warm-up; user space only)"
    );
    let setups = [
        (
            AUDIT_OFF,
            Setup::new("audit-off", small_dir).env("RUST_LOG", "warn"),
        ),
        (AUDIT_ON, Setup::new("audit-on", small_dir)),
        (
            OTLP_SINK,
            Setup::new("otlp-sink", small_dir)
                .arg("--otlp-endpoint")
                .arg(&sink_url),
        ),
    ];
    let mut floor = None;
    for (name, setup) in
        std::iter::once((FLOOR, None)).chain(setups.into_iter().map(|(n, s)| (n, Some(s))))
    {
        let label = setup.as_ref().map_or("floor", |s| s.name).to_string();
        let mut process = match setup {
            None => spawn_floor(&wrapper(&label)),
            Some(mut setup) => {
                setup.wrapper = wrapper(&label);
                setup.spawn(None).0
            }
        };
        if until_serving(&mut process, &requests[0]).await.is_none() {
            println!("{name}: did not start");
            continue;
        }
        let calls = calls(&process.addr, &requests).await;
        let channel = connect(&process.addr).await;
        closed_count(&channel, &calls, count / 4).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        // callgrind_control is now and then interrupted: try again.
        let control = |flag: &str| {
            let done = (0..5).any(|_| {
                Command::new("callgrind_control")
                    .args([flag, &process.child.id().to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            });
            assert!(done, "callgrind_control {flag} failed");
        };
        control("--zero");
        closed_count(&channel, &calls, count).await;
        // The audit worker wakes every 20 ms (slower under valgrind): let it finish the batch.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        control("--dump");
        let total = newest_total(&dir, &label);
        let per_check = total / count as f64;
        let versus = floor.map_or(String::new(), |f: f64| {
            format!("  ({:+.0} over the floor)", per_check - f)
        });
        if label == "floor" {
            floor = Some(per_check);
        }
        println!("{name:<46} {per_check:>8.0}{versus}");
        drop(process);
    }
}

/// The instruction total of the latest callgrind dump of `label`.
fn newest_total(dir: &Path, label: &str) -> f64 {
    let prefix = format!("{label}.out");
    let newest = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .expect("a callgrind dump");
    let text = std::fs::read_to_string(newest.path()).unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary: ")
                .or_else(|| l.strip_prefix("totals: "))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("a callgrind total")
}

/// A live OTLP/gRPC trace collector that accepts every export and discards it undecoded, as
/// fast as it can: the cost of exporting spans to a collector that keeps up is the exporter's
/// alone. It counts the exports and their bytes.
mod sink {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::task::{Context, Poll};

    use bytes::Buf;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    use tonic::{Status, body::Body};

    #[derive(Clone, Default)]
    pub struct Sink {
        pub exports: Arc<AtomicU64>,
        pub bytes: Arc<AtomicU64>,
    }

    impl Sink {
        /// Serves on a free port of 127.0.0.1; returns the endpoint URL.
        pub async fn start(&self) -> String {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let service = self.clone();
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming(mcp_authz::service::incoming(listener)),
            );
            format!("http://{addr}")
        }
    }

    impl tonic::server::NamedService for Sink {
        const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    }

    impl tonic::codegen::Service<http::Request<Body>> for Sink {
        type Response = http::Response<Body>;
        type Error = std::convert::Infallible;
        type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<Body>) -> Self::Future {
            let sink = self.clone();
            Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(Discard);
                Ok(grpc.unary(sink, request).await)
            })
        }
    }

    /// Every export, whatever its path, is answered with an empty (valid)
    /// `ExportTraceServiceResponse`.
    impl tonic::server::UnaryService<usize> for Sink {
        type Response = ();
        type Future = std::future::Ready<Result<tonic::Response<()>, Status>>;

        fn call(&mut self, request: tonic::Request<usize>) -> Self::Future {
            self.exports.fetch_add(1, Ordering::Relaxed);
            self.bytes
                .fetch_add(*request.get_ref() as u64, Ordering::Relaxed);
            std::future::ready(Ok(tonic::Response::new(())))
        }
    }

    /// Reads a message as its length; writes an empty one.
    #[derive(Clone, Copy)]
    struct Discard;

    impl Codec for Discard {
        type Encode = ();
        type Decode = usize;
        type Encoder = Discard;
        type Decoder = Discard;

        fn encoder(&mut self) -> Discard {
            Discard
        }

        fn decoder(&mut self) -> Discard {
            Discard
        }
    }

    impl Encoder for Discard {
        type Item = ();
        type Error = Status;

        fn encode(&mut self, _: (), _: &mut EncodeBuf<'_>) -> Result<(), Status> {
            Ok(())
        }
    }

    impl Decoder for Discard {
        type Item = usize;
        type Error = Status;

        fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<usize>, Status> {
            let n = buf.remaining();
            buf.advance(n);
            Ok(Some(n))
        }
    }
}
