//! Load benchmark: drives the running binaries over gRPC and prints throughput, latency
//! percentiles and peak RSS for mcp-authz and for the floor (`examples/floor.rs`, an ext_authz
//! server on the same tonic stack that answers OK without looking), measured in the same run.
//!
//! Every answer is compared, byte for byte, with the answer the same server gave the same request
//! before the run (decoded and checked then), so the load generator does the same work for
//! every server: it does not pay for decoding mcp-authz's larger answers (its dynamic metadata)
//! on the cores the servers share with it.
//!
//! Closed loop: 7 rounds in which the servers run in turn for `--seconds` each; each server's
//! median round is reported and the throughput ratio is the median of the rounds' ratios. Open
//! loop: 7 rounds in which the servers take turns in 0.5 s slices, `--seconds` in all each;
//! each server's median round (by p99) is reported. The dead collector's cost is measured side
//! by side: in each round, mcp-authz with and without the dead endpoint receive the same Checks
//! at the same time; the ratio is the median of the rounds' ratios.
//!
//! Run from the repository root: `cargo run --release --example load` (add `-- --seconds N` to
//! change each closed-loop phase's length, default 3, and `--verbose` to see every round's
//! figures). It
//! builds the release binaries it needs.

#[path = "../benches/common/client.rs"]
mod client;
#[path = "../benches/common/generate.rs"]
mod generate;

use std::collections::HashMap;
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

/// One request to a server and the answer it gives, as bytes.
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

/// A server process under test.
struct Process {
    child: Child,
    addr: String,
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

/// Waits until a Check is answered from a loaded policy (not 503); returns when.
async fn until_serving(addr: &str, probe: &Bytes) -> Instant {
    let channel = connect(addr).await;
    loop {
        if let Ok(r) = client::check_bytes(&channel, probe.clone(), &[]).await
            && decided(&r)
        {
            return Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn spawn_authz(policy_dir: &Path, extra: &[&str], stderr: Stdio) -> (Process, Instant) {
    let addr = free_addr();
    let started = Instant::now();
    let child = Command::new(root().join("target/release/mcp-authz"))
        .args([
            "serve",
            "--listen",
            &addr,
            "--admin-listen",
            "off",
            "--policy-dir",
        ])
        .arg(policy_dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("run target/release/mcp-authz");
    (Process { child, addr }, started)
}

fn spawn_floor() -> Process {
    let addr = free_addr();
    let child = Command::new(root().join("target/release/examples/floor"))
        .args(["--listen", &addr])
        .stderr(Stdio::null())
        .spawn()
        .expect("run target/release/examples/floor");
    Process { child, addr }
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
        "{name:<44} {:>9.0} {:>8.3} {:>8.3} {:>8.3} {:>6} {:>8.1}",
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
        "{:<44} {:>9} {:>8} {:>8} {:>8} {:>6} {:>8}",
        "", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "errors", "RSS MiB"
    );
    if cpu {
        print!(" {:>9} {:>9}", "server µs", "client µs");
    }
    println!();
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds: f64 = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let verbose = args.iter().any(|a| a == "--verbose");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(cargo)
        .current_dir(root())
        .args([
            "build",
            "--release",
            "--quiet",
            "--bin",
            "mcp-authz",
            "--example",
            "floor",
        ])
        .status()
        .expect("cargo build");
    assert!(built.success(), "build failed");

    let small_dir = root().join("tests/conformance/policies");
    let small_requests = vec![
        request(
            "/demo/mcp",
            &[("x-mcp-human-id", "h1"), ("x-mcp-agent-id", "a1")],
            "echo",
        ),
        request("/demo/mcp", &[("x-mcp-agent-id", "a-new")], "upper"),
        request("/demo/mcp", &[("x-mcp-agent-id", "carrier")], "echo"),
    ];
    let large_dir = root().join("target/load-policies");
    let _ = std::fs::remove_dir_all(&large_dir);
    generate::write(&large_dir, &generate::large());
    let large_requests: Vec<_> = (0..50)
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
        .collect();

    println!(
        "mcp-authz load benchmark: {STREAMS} concurrent streams (closed loop) and {RATE} req/s (open loop), {ROUNDS} rounds of {seconds} s per server, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let floor = spawn_floor();
    connect(&floor.addr).await;
    let (small, _) = spawn_authz(&small_dir, &[], Stdio::null());
    until_serving(&small.addr, &small_requests[0]).await;
    let (large, started) = spawn_authz(&large_dir, &[], Stdio::null());
    let serving = until_serving(&large.addr, &large_requests[0]).await;
    let start_to_serving = serving - started;
    let dead = free_addr();
    let (dead_otlp, _) = spawn_authz(
        &small_dir,
        &["--otlp-endpoint", &format!("http://{dead}")],
        Stdio::null(),
    );
    until_serving(&dead_otlp.addr, &small_requests[0]).await;
    let servers = [
        (&floor, calls(&floor.addr, &small_requests).await),
        (&small, calls(&small.addr, &small_requests).await),
        (&large, calls(&large.addr, &large_requests).await),
        (&dead_otlp, calls(&dead_otlp.addr, &small_requests).await),
    ];

    // Rounds in which every server runs in turn, starting with a different one each round:
    // drift and bursts on a shared machine hit all alike, each ratio is taken within a round,
    // and the median round is reported.
    let rps = |f: &Figures| f.rps;
    let mut closed: [Vec<Figures>; 3] = Default::default();
    for round in 0..ROUNDS {
        for i in (0..3).map(|i| (i + round) % 3) {
            let (server, calls) = &servers[i];
            closed[i].push(closed_loop(server, calls, seconds).await);
        }
        if verbose {
            let of = |i: usize| closed[i].last().map_or(f64::NAN, rps);
            println!(
                "round {round}: req/s {:.0} {:.0} {:.0}",
                of(0),
                of(1),
                of(2)
            );
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
    for (server, _) in &servers {
        channels.push(connect(&server.addr).await);
    }
    let mut open: [Vec<Figures>; 3] = Default::default();
    let mut side_by_side: [Vec<Figures>; 2] = Default::default();
    for round in 0..ROUNDS {
        let mut pooled: [(Vec<u64>, u64); 3] = Default::default();
        for slice in 0..slices {
            for i in (0..3).map(|i| (i + slice + round) % 3) {
                let (latencies, errors) = &mut pooled[i];
                *errors += open_loop(&channels[i], &servers[i].1, OPEN_SLICE, latencies).await;
            }
        }
        let turns = slices as f64 * OPEN_SLICE;
        for (i, (latencies, errors)) in pooled.into_iter().enumerate() {
            open[i].push(percentiles(latencies, turns, errors));
        }
        let (mut none, mut dead) = (Vec::new(), Vec::new());
        let (none_errors, dead_errors) = tokio::join!(
            open_loop(&channels[1], &servers[1].1, seconds, &mut none),
            open_loop(&channels[3], &servers[3].1, seconds, &mut dead),
        );
        side_by_side[0].push(percentiles(none, seconds, none_errors));
        side_by_side[1].push(percentiles(dead, seconds, dead_errors));
        if verbose {
            let of = |rounds: &[Figures]| rounds.last().map_or(f64::NAN, p99);
            println!(
                "round {round}: p99 ms {:.3} {:.3} {:.3}, side by side {:.3} {:.3}",
                of(&open[0]),
                of(&open[1]),
                of(&open[2]),
                of(&side_by_side[0]),
                of(&side_by_side[1]),
            );
        }
    }
    let dead_vs_none = ratio(&side_by_side[1], &side_by_side[0], p99);
    let open = open.map(|rounds| median(rounds, p99));
    let side_by_side = side_by_side.map(|rounds| median(rounds, p99));
    let vs_floor = ratio(&closed[1], &closed[0], rps);
    let large_vs_small = ratio(&closed[2], &closed[1], rps);
    let [floor_closed, small_closed, large_closed] = closed.map(|rounds| median(rounds, rps));
    header(
        &format!("closed loop, {STREAMS} streams (median round of {ROUNDS}; CPU per Check)"),
        true,
    );
    let names = [
        "floor (answers OK, no policy work)",
        "mcp-authz, conformance policies",
        "mcp-authz, 10,000 grants",
        "mcp-authz, OTLP endpoint on a dead port",
    ];
    for (i, figures) in [floor_closed, small_closed, large_closed]
        .iter()
        .enumerate()
    {
        row(names[i], figures, servers[i].0.peak_rss_mib());
    }
    header(
        &format!(
            "open loop, {RATE} req/s (median round of {ROUNDS} by p99; servers take turns in {OPEN_SLICE} s slices)"
        ),
        false,
    );
    for (i, figures) in open.iter().enumerate() {
        row(names[i], figures, servers[i].0.peak_rss_mib());
    }
    header(
        &format!(
            "open loop side by side, {RATE} req/s to each at once (median round of {ROUNDS} by p99)"
        ),
        false,
    );
    row(names[1], &side_by_side[0], small.peak_rss_mib());
    row(names[3], &side_by_side[1], dead_otlp.peak_rss_mib());
    let large_rss = large.peak_rss_mib();
    let small_open = open[1];
    drop(servers);
    drop((floor, small, dead_otlp));

    // Reload of the 10,000-grant set, timed by the service itself.
    let reload_ms = {
        drop(large);
        let (mut process, _) = spawn_authz(&large_dir, &[], Stdio::piped());
        until_serving(&process.addr, &large_requests[0]).await;
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
        // Without an info-level log line (e.g. RUST_LOG=warn) there is nothing to read.
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

    println!("\nratios and targets");
    println!(
        "throughput mcp-authz / floor (16 streams):   {vs_floor:.2}  (target >= 0.90; median of the rounds' ratios)"
    );
    println!(
        "p99 at {RATE} req/s, conformance policies:    {:.3} ms  (target <= 1 ms)",
        small_open.p99
    );
    println!("throughput 10,000 grants / conformance:      {large_vs_small:.2}  (target >= 0.80)");
    println!(
        "10,000 grants: start to SERVING {:.0} ms, reload {reload_ms:.0} ms (targets <= 1000 ms)",
        start_to_serving.as_secs_f64() * 1000.0
    );
    println!("10,000 grants: peak RSS {large_rss:.1} MiB under load (target <= 64 MiB)");
    println!(
        "p99 dead OTLP endpoint / no endpoint:        {dead_vs_none:.2}  (target <= 1.10; side by side, median of the rounds' ratios)"
    );
}
