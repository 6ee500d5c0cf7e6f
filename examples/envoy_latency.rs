//! Added latency through a real Envoy: what an agent sees of the ext_authz hop.
//!
//! One Envoy 1.40 (installed under `target/` by the tests' helper) with three listeners in front
//! of the same trivial upstream (an HTTP/1.1 server in this process answering 200): no
//! ext_authz; ext_authz to the floor (`examples/floor.rs`, answers OK without looking); and
//! ext_authz to mcp-authz with the conformance policies, the body sent (`with_request_body`),
//! audit trail on (its default: one line per decision, its stderr to a file). An open-loop
//! HTTP/1.1 client with keep-alive sends an allowed `tools/call` at a fixed rate (1,000 and
//! 2,000 requests/s); each request's latency is measured from its departure to the end of the
//! answer's body. The three ways take turns in 1 s slices, `--seconds` in all per way and rate
//! (default 5), so noise on a shared machine falls on all three alike.
//!
//! Run from the repository root: `cargo run --release --example envoy_latency` (add
//! `-- --seconds N`). It builds the release binaries it needs; Envoy is installed on first use
//! (as `cargo test --test envoy_e2e` does).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test harness: a panic is the report

#[path = "../tests/common/install.rs"]
#[allow(dead_code)]
mod install;
#[path = "../benches/common/release.rs"]
mod release;

use std::convert::Infallible;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

const RATES: [u64; 2] = [1000, 2000];
const SLICE: f64 = 1.0;
const WAYS: [&str; 3] = [
    "no ext_authz",
    "ext_authz to the floor",
    "ext_authz to mcp-authz (conformance policies, body sent)",
];
const BODY: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}}"#;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(program: PathBuf, args: &[&str], log: &str) -> Process {
    let dir = root().join("target/envoy-latency");
    std::fs::create_dir_all(&dir).unwrap();
    let stderr = std::fs::File::create(dir.join(log)).unwrap();
    let child = Command::new(&program)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    Process(child)
}

/// The upstream: answers every request 200 `ok`, after reading its body, with keep-alive.
async fn upstream() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                    let _ = request.into_body().collect().await;
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    port
}

/// Envoy's configuration: listener `i` is way `i`.
fn envoy_config(admin: u16, listeners: [u16; 3], upstream: u16, floor: u16, authz: u16) -> String {
    let ext_authz = |cluster: &str| {
        format!(
            r#"
                  - name: envoy.filters.http.ext_authz
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
                      transport_api_version: V3
                      grpc_service: {{envoy_grpc: {{cluster_name: {cluster}}}, timeout: 5s}}
                      failure_mode_allow: false
                      with_request_body: {{max_request_bytes: 1048576, allow_partial_message: true, pack_as_bytes: true}}"#
        )
    };
    let listener = |i: usize, port: u16, filter: String| {
        format!(
            r#"
    - name: way{i}
      address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: way{i}
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes: [{{match: {{prefix: /}}, route: {{cluster: upstream}}}}]
                http_filters:{filter}
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"#
        )
    };
    let grpc_cluster = |name: &str, port: u16| {
        format!(
            r#"
    - name: {name}
      type: STATIC
      connect_timeout: 1s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config: {{http2_protocol_options: {{}}}}
      load_assignment:
        cluster_name: {name}
        endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}}}]}}]"#
        )
    };
    format!(
        r#"admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:{}{}{}
  clusters:{}{}
    - name: upstream
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: upstream
        endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}}}}}]}}]
"#,
        listener(0, listeners[0], String::new()),
        listener(1, listeners[1], ext_authz("floor")),
        listener(2, listeners[2], ext_authz("mcp-authz")),
        grpc_cluster("floor", floor),
        grpc_cluster("mcp-authz", authz),
    )
}

/// Keep-alive connections to one listener, reused as they come free.
struct Pool {
    port: u16,
    free: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl Pool {
    async fn take(&self) -> Option<SendRequest<Full<Bytes>>> {
        let free = self.free.lock().unwrap().pop();
        if let Some(sender) = free {
            return Some(sender);
        }
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .ok()?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(connection);
        Some(sender)
    }

    /// One request; its latency in µs when answered 200 with the upstream's body.
    async fn send(&self) -> Option<u64> {
        let mut sender = self.take().await?;
        sender.ready().await.ok()?;
        let request = Request::post("/demo/mcp")
            .header("host", "mcp.local")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("x-mcp-human-id", "h1")
            .header("x-mcp-agent-id", "a1")
            .body(Full::new(Bytes::from_static(BODY.as_bytes())))
            .unwrap();
        let departed = Instant::now();
        let response = sender.send_request(request).await.ok()?;
        let status = response.status();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        let micros = departed.elapsed().as_micros() as u64;
        self.free.lock().unwrap().push(sender);
        (status == StatusCode::OK && body.as_ref() == b"ok").then_some(micros)
    }
}

/// Requests started at `rate` per second for `seconds`, whatever the answers do; adds their
/// latencies to `latencies` and returns how many failed and how far the sender fell behind.
async fn open_loop(
    pool: &Arc<Pool>,
    rate: u64,
    seconds: f64,
    latencies: &mut Vec<u64>,
) -> (u64, Duration) {
    let total = (rate as f64 * seconds) as u64;
    let start = tokio::time::Instant::now() + Duration::from_millis(5);
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        tokio::time::sleep_until(start + Duration::from_nanos(i * 1_000_000_000 / rate)).await;
        let pool = Arc::clone(pool);
        tasks.push(tokio::spawn(async move { pool.send().await }));
    }
    let lag = tokio::time::Instant::now()
        .saturating_duration_since(start + Duration::from_secs_f64(seconds));
    let mut errors = 0;
    for task in tasks {
        match task.await.unwrap() {
            Some(micros) => latencies.push(micros),
            None => errors += 1,
        }
    }
    (errors, lag)
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds: f64 = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    release::build();
    let envoy = install::envoy().to_path_buf();

    let upstream = upstream().await;
    let port = install::free_port;
    let (floor_port, authz_port, admin) = (port(), port(), port());
    let listeners = [port(), port(), port()];
    let _floor = spawn(
        root().join("target/release/examples/floor"),
        &["--listen", &format!("127.0.0.1:{floor_port}")],
        "floor.log",
    );
    let policies = root().join("tests/conformance/policies");
    let _authz = spawn(
        root().join("target/release/mcp-authz"),
        &[
            "serve",
            "--listen",
            &format!("127.0.0.1:{authz_port}"),
            "--admin-listen",
            "off",
            "--policy-dir",
            policies.to_str().unwrap(),
        ],
        "mcp-authz.log",
    );
    let dir = root().join("target/envoy-latency");
    let config = dir.join("envoy.yaml");
    std::fs::write(
        &config,
        envoy_config(admin, listeners, upstream, floor_port, authz_port),
    )
    .unwrap();
    let log = dir.join("envoy.log");
    let _envoy = spawn(
        envoy,
        &[
            "--config-path",
            config.to_str().unwrap(),
            "--log-level",
            "warn",
            "--log-path",
            log.to_str().unwrap(),
            "--disable-hot-restart",
        ],
        "envoy.stderr",
    );
    let pools: Vec<Arc<Pool>> = listeners
        .iter()
        .map(|&port| {
            Arc::new(Pool {
                port,
                free: Mutex::default(),
            })
        })
        .collect();
    // Ready when every way answers the request 200 (mcp-authz once its policy is loaded).
    let deadline = Instant::now() + Duration::from_secs(60);
    for (pool, way) in pools.iter().zip(WAYS) {
        while pool.send().await.is_none() {
            assert!(
                Instant::now() < deadline,
                "\"{way}\" does not answer 200 (see {})",
                dir.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!(
        "added latency through Envoy {}: an allowed tools/call over HTTP/1.1 keep-alive, open loop, {seconds} s per way and rate in {SLICE} s turns, {} cores; logs in {}",
        install::ENVOY_VERSION,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        dir.display()
    );
    // Warm-up: connections, Envoy's and the servers' first requests.
    for pool in &pools {
        open_loop(pool, RATES[0], 0.5, &mut Vec::new()).await;
    }
    let slices = ((seconds / SLICE).round() as usize).max(1);
    for rate in RATES {
        let mut pooled: Vec<(Vec<u64>, u64, Duration)> = vec![Default::default(); WAYS.len()];
        for slice in 0..slices {
            for i in (0..WAYS.len()).map(|i| (i + slice) % WAYS.len()) {
                let (latencies, errors, lag) = &mut pooled[i];
                let (e, l) = open_loop(&pools[i], rate, SLICE, latencies).await;
                *errors += e;
                *lag = (*lag).max(l);
            }
        }
        println!(
            "\n{rate} req/s{:<52} {:>8} {:>8} {:>8} {:>9} {:>10} {:>10} {:>6}",
            "", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "+p50 ms", "+p99 ms", "errors"
        );
        let mut base = (f64::NAN, f64::NAN);
        for (i, (mut latencies, errors, lag)) in pooled.into_iter().enumerate() {
            latencies.sort_unstable();
            let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
            if i == 0 {
                base = (p50, p99);
            }
            print!(
                "{:<62} {p50:>8.3} {:>8.3} {p99:>8.3} {:>9.3} {:>+10.3} {:>+10.3} {errors:>6}",
                WAYS[i],
                percentile(&latencies, 0.9),
                percentile(&latencies, 0.999),
                p50 - base.0,
                p99 - base.1,
            );
            if lag > Duration::from_millis(50) {
                print!("  (the sender fell {lag:?} behind)");
            }
            println!();
        }
    }
}
