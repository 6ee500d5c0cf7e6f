//! Envoy 1.40 for the end-to-end tests: started on a config of the test's, its access log
//! (stdout) collected, killed on drop; and the shipped Envoy configs of `deploy/envoy/`
//! re-addressed to a test's ports.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::install::{envoy, envoy_live};
use super::scratch_dir;

/// A running Envoy.
pub struct Envoy {
    child: Child,
    /// Lines Envoy wrote to stdout (the access logs of the test configs).
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Envoy {
    /// Starts Envoy on `config` (YAML text) and waits until its admin listener on `admin` says
    /// it is LIVE. `name` names the scratch directory the config is written to.
    pub fn start(name: &str, config: &str, admin: u16) -> Envoy {
        let path = scratch_dir(name).join("envoy.yaml");
        std::fs::write(&path, config).unwrap();
        Envoy::start_file(&path, admin)
    }

    fn start_file(path: &Path, admin: u16) -> Envoy {
        let mut child = Command::new(envoy())
            .arg("-c")
            .arg(path)
            .args(["--disable-hot-restart", "--log-level", "warn"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stdout, sink) = (child.stdout.take().unwrap(), Arc::clone(&log));
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut envoy = Envoy { child, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !envoy_live(admin) {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                panic!("Envoy exited with {status}");
            }
            assert!(Instant::now() < deadline, "Envoy did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        envoy
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The local ports the shipped Envoy config is re-addressed to.
pub struct Ports {
    pub admin: u16,
    /// The agents' listener (10000) and the public one (10080).
    pub agents: u16,
    pub public: u16,
    pub authz: u16,
    pub upstream: u16,
    pub otel: u16,
}

/// `deploy/envoy/<file>` as shipped (`envoy.yaml`, `envoy-tls.yaml`), its listeners and
/// clusters on `ports` of 127.0.0.1.
pub fn shipped_config(file: &str, ports: &Ports) -> String {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/envoy")
        .join(file);
    let mut config = std::fs::read_to_string(shipped).unwrap();
    for (from, port) in [
        ("0.0.0.0, port_value: 9901", ports.admin),
        ("0.0.0.0, port_value: 10000", ports.agents),
        ("0.0.0.0, port_value: 10080", ports.public),
        ("mcp-authz, port_value: 9191", ports.authz),
        ("demo-mcp, port_value: 8080", ports.upstream),
        ("jaeger, port_value: 4317", ports.otel),
    ] {
        let from = format!("address: {from}");
        assert!(config.contains(&from), "the shipped config has no `{from}`");
        config = config.replace(&from, &format!("address: 127.0.0.1, port_value: {port}"));
    }
    config
}
