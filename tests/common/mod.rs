//! Shared test support: start the real binary on a free port and talk to it over gRPC.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcp_authz::proto::auth::CheckResponse;
use tonic::Status;
use tonic::transport::Channel;

pub mod envoy;
pub mod install;
pub mod manifests;
pub mod tls;
pub mod upstream;

pub const BIN: &str = env!("CARGO_BIN_EXE_mcp-authz");

pub fn conformance_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance")
}

/// A running `mcp-authz serve`, killed on drop.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `serve` on 127.0.0.1:0 and waits until the policy is loaded.
    pub fn start(policy_dir: &Path, extra: &[&str]) -> Server {
        let mut command = Command::new(BIN);
        command.args(["serve", "--listen", "127.0.0.1:0"]);
        if !extra.contains(&"--admin-listen") {
            command.args(["--admin-listen", "off"]);
        }
        command.arg("--policy-dir").arg(policy_dir).args(extra);
        Server::spawn(command)
    }

    /// Spawns a prepared `serve` command and waits until the policy is loaded.
    pub fn spawn(command: Command) -> Server {
        Server::spawn_until(command, true)
    }

    /// Spawns a prepared `serve` command and waits until it listens, and, if `loaded`, until
    /// its policy is loaded too.
    pub fn spawn_until(mut command: Command, loaded: bool) -> Server {
        let mut child = command
            .env_remove("MCP_AUTHZ_MODE")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mcp-authz");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut server = Server {
            child,
            addr: String::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(addr) = server
                .find_log("serving ext_authz")
                .and_then(|l| listen_addr(&l))
            {
                server.addr = addr;
            }
            if !server.addr.is_empty() && (!loaded || server.find_log("policy loaded").is_some()) {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "mcp-authz exited with {status}: {:?}",
                    server.log.lock().unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "mcp-authz did not start: {:?}",
                server.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn find_log(&self, needle: &str) -> Option<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(needle))
            .cloned()
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .expect("connect to mcp-authz")
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in a `listen=ADDR` (text) or `"listen":"ADDR"` (JSON) log field.
fn listen_addr(line: &str) -> Option<String> {
    let start = line
        .find("listen=")
        .map(|i| i + "listen=".len())
        .or_else(|| {
            line.find("\"listen\":\"")
                .map(|i| i + "\"listen\":\"".len())
        })?;
    let rest = &line[start..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '"')
        .unwrap_or(rest.len());
    Some(rest[..end].to_string())
}

#[path = "../../benches/common/client.rs"]
mod client;

#[allow(unused_imports)] // not every test file uses it
pub use client::peak_rss_mib;

/// Sends already-encoded CheckRequest bytes, exactly as given.
pub async fn check_raw(channel: &Channel, request: Vec<u8>) -> Result<CheckResponse, Status> {
    client::check_bytes(channel, request, &[]).await
}

/// Sends CheckRequest bytes with gRPC metadata (e.g. Envoy's `traceparent`).
pub async fn check_with_metadata(
    channel: &Channel,
    request: Vec<u8>,
    metadata: &[(&'static str, &str)],
) -> Result<CheckResponse, Status> {
    client::check_bytes(channel, request, metadata).await
}

/// Reads a string or bool field of the dynamic metadata.
pub fn metadata<'r>(
    response: &'r CheckResponse,
    key: &str,
) -> Option<&'r prost_types::value::Kind> {
    response
        .dynamic_metadata
        .as_ref()?
        .fields
        .get(key)?
        .kind
        .as_ref()
}

pub fn metadata_str<'r>(response: &'r CheckResponse, key: &str) -> Option<&'r str> {
    match metadata(response, key)? {
        prost_types::value::Kind::StringValue(s) => Some(s),
        _ => None,
    }
}

pub fn metadata_bool(response: &CheckResponse, key: &str) -> Option<bool> {
    match metadata(response, key)? {
        prost_types::value::Kind::BoolValue(b) => Some(*b),
        _ => None,
    }
}

impl Server {
    pub fn count_log(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits until a log line contains `needle`; false after `timeout`.
    pub fn wait_log(&self, needle: &str, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.count_log(needle) >= count {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

/// An encoded CheckRequest for a `tools/call` of `tool` on `path` with `headers`.
pub fn tool_call(path: &str, headers: &[(&str, &str)], tool: &str) -> Vec<u8> {
    let body =
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}"}}}}"#);
    post(path, headers, &body)
}

/// An encoded CheckRequest for a JSON POST of `body`.
pub fn post(path: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let headers = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([("content-type".to_string(), "application/json".to_string())])
        .collect();
    client::encode_request("POST", path, headers, body.as_bytes())
}

/// An encoded CheckRequest with any headers, e.g. thousands of them.
pub fn post_with_headers(headers: Vec<(String, String)>, path: &str, body: &str) -> Vec<u8> {
    client::encode_request("POST", path, headers.into_iter().collect(), body.as_bytes())
}

/// `(decision, reason, matched_grant)` of a response.
pub fn verdict(response: &CheckResponse) -> (String, String, String) {
    let get = |k| metadata_str(response, k).unwrap_or_default().to_string();
    (get("decision"), get("reason"), get("matched_grant"))
}

pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mcp-authz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A plain HTTP/1.1 GET: `(status, body)`.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The admin address from the start-up log.
pub fn admin_addr(server: &Server) -> String {
    let line = server
        .find_log("serving /metrics")
        .expect("admin endpoint started");
    let start = line.find("admin=").unwrap() + "admin=".len();
    line[start..].split_whitespace().next().unwrap().to_string()
}

/// The gRPC health status of the Authorization service.
pub async fn authorization_health(channel: &Channel) -> i32 {
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "envoy.service.auth.v3.Authorization".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}
