//! The files in `deploy/` work as shipped: every YAML parses, every policy validates, the
//! ConfigMap carries the same policies as `deploy/policies`, the manifests keep their promises,
//! and the compose demo server answers.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test harness: a panic is the report

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::manifests::{deploy, differing_kinds, documents};
use common::{BIN, scratch_dir};
use serde_yaml_ng::Value;

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn every_yaml_parses() {
    let mut all = Vec::new();
    files(&deploy(), &mut all);
    let yamls: Vec<_> = all
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    assert!(yamls.len() >= 10, "{yamls:?}");
    for path in yamls {
        assert!(!documents(&path).is_empty(), "{}", path.display());
    }
}

/// `mcp-authz validate PATH` succeeds.
fn assert_validates(path: &Path) {
    let out = Command::new(BIN)
        .arg("validate")
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn shipped_policies_validate_and_the_configmap_matches_them() {
    assert_validates(&deploy().join("policies"));

    let dir = configmap_files("deploy-configmap", |_, text| text.to_string());
    assert_validates(&dir);
    assert_eq!(
        differing_kinds(&deploy().join("policies"), &dir),
        Vec::<&str>::new(),
        "the ConfigMap differs from deploy/policies"
    );
}

/// The ConfigMap's files, each passed through `edit(name, text)`, in a scratch directory.
fn configmap_files(scratch: &str, edit: impl Fn(&str, &str) -> String) -> PathBuf {
    let configmap = &documents(&deploy().join("kubernetes/configmap.yaml"))[0];
    let dir = scratch_dir(scratch);
    for (name, text) in configmap["data"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        std::fs::write(dir.join(name), edit(name, text.as_str().unwrap())).unwrap();
    }
    dir
}

#[test]
fn the_configmap_comparison_sees_every_kind() {
    // deploy/policies holds no session today, so a passing ConfigMap test alone does not show
    // that sessions are compared: change each kind in the ConfigMap and see it reported.
    let session = "mode: monitor\n---\napiVersion: mcpruntime.org/v1alpha1\nkind: MCPAgentSession\nmetadata: {name: extra, namespace: mcp}\nspec: {serverRef: {name: demo}, subject: {agentID: support-bot}}\n";
    let cases = [
        (
            "servers.yaml",
            "requiredTrust: low",
            "requiredTrust: high",
            "servers",
        ),
        (
            "grants.yaml",
            "maxTrust: medium",
            "maxTrust: high",
            "grants",
        ),
        ("grants.yaml", "mode: monitor\n", session, "sessions"),
    ];
    for (file, from, to, kind) in cases {
        let dir = configmap_files(&format!("deploy-configmap-{kind}"), |name, text| {
            if name != file {
                return text.to_string();
            }
            let edited = text.replacen(from, to, 1);
            assert_ne!(edited, text, "{name} has no `{from}`");
            edited
        });
        assert_validates(&dir);
        assert_eq!(
            differing_kinds(&deploy().join("policies"), &dir),
            [kind],
            "{file}: `{from}` → `{to}`"
        );
    }
}

#[test]
fn kubernetes_manifests_keep_their_promises() {
    let deployment = &documents(&deploy().join("kubernetes/deployment.yaml"))[0];
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() >= 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], Value::Bool(true));
    let container = &pod["containers"][0];
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"],
        Value::Bool(true)
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"],
        Value::from("/ready")
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"],
        Value::from("/healthz")
    );
    assert!(container["resources"]["requests"]["memory"].is_string());
    let pdb = &documents(&deploy().join("kubernetes/pdb.yaml"))[0];
    assert_eq!(pdb["kind"], Value::from("PodDisruptionBudget"));

    let mesh = &documents(&deploy().join("istio/mesh-config.yaml"))[0];
    assert_eq!(
        mesh["spec"]["meshConfig"]["pathNormalization"]["normalization"],
        Value::from("DECODE_AND_MERGE_SLASHES"),
        "sidecars must route, authorize and forward on one normalized path"
    );
    let provider = &mesh["spec"]["meshConfig"]["extensionProviders"][0];
    assert_eq!(
        provider["envoyExtAuthzGrpc"]["failOpen"],
        Value::Bool(false)
    );
    assert!(
        provider["envoyExtAuthzGrpc"]["includeRequestBodyInCheck"]["packAsBytes"]
            .as_bool()
            .unwrap()
    );
    let policy = &documents(&deploy().join("istio/authorization-policy.yaml"))[0];
    assert_eq!(policy["spec"]["action"], Value::from("CUSTOM"));
    assert_eq!(policy["spec"]["provider"]["name"], provider["name"]);
}

#[test]
fn compose_refers_to_files_that_exist() {
    let compose = &documents(&deploy().join("compose/docker-compose.yaml"))[0];
    let base = deploy().join("compose");
    for service in compose["services"].as_mapping().unwrap().values() {
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let source = volume.as_str().unwrap().split(':').next().unwrap();
            assert!(base.join(source).exists(), "{source}");
        }
        if let Some(build) = service.get("build") {
            let context = base.join(build["context"].as_str().unwrap());
            assert!(context.join(build["dockerfile"].as_str().unwrap()).exists());
        }
    }
}

#[test]
fn the_compose_demo_server_answers_json_rpc() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new("python3")
        .arg(deploy().join("compose/demo-mcp/server.py"))
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let answer = loop {
        use std::io::{Read, Write};
        let body = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"search"}}"#;
        let attempt = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            write!(
                s,
                "POST /demo/mcp HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\nx-would-deny: true\r\nx-would-deny-reason: trust_too_low\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            Ok(text)
        });
        match attempt {
            Ok(text) => break text,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("demo server did not answer: {e}"),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let json: serde_json::Value =
        serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(json["id"], 7);
    assert_eq!(json["result"]["content"][0]["text"], "search ran");
    assert_eq!(json["result"]["wouldDeny"], "trust_too_low");
}
