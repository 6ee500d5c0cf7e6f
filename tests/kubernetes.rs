//! The Kubernetes manifests as `kubectl apply -k` sends them: `deploy/kubernetes` and the example
//! overlay rendered by kustomize, every object validated offline against the Kubernetes schemas
//! (strict: an unknown field fails), and what the objects promise each other: the policies in
//! the ConfigMap, the volume that mounts it, the path from mcp-authz through the collector to
//! Jaeger.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test harness: a panic is the report

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::install::python_venv;
use common::manifests::{deploy, differing_kinds, parse_documents};
use common::{BIN, scratch_dir};
use serde_yaml_ng::Value;

const KUBERNETES_VALIDATE: &str = "1.37.0";

/// The oldest Kubernetes in which every field used is GA (gRPC probes: 1.27), and the newest
/// the schemas of that package describe.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.27", "1.37"];

/// Whether kubectl is here. Without it these tests are skipped, but not in CI.
fn have_kubectl() -> bool {
    let found = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs kubectl: `kubectl version --client` failed"
        );
        // Straight to stderr: libtest would hold back an `eprintln!` of a passing test.
        let _ = writeln!(
            std::io::stderr(),
            "skipped: no kubectl (`kubectl version --client` failed); CI runs this test"
        );
    }
    found
}

fn overlay_dir() -> PathBuf {
    deploy().join("overlays/example")
}

/// A kustomization rendered: its YAML as `kubectl kustomize` prints it, and its objects.
struct Rendered {
    yaml: String,
    objects: Vec<Value>,
}

fn render(dir: &Path) -> Rendered {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    let objects = parse_documents(&yaml, &dir.display().to_string());
    Rendered { yaml, objects }
}

impl Rendered {
    fn get(&self, kind: &str, name: &str) -> &Value {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
    }

    /// `kubernetes-validate --strict` on every object, for each of [`KUBERNETES_VERSIONS`];
    /// `Err` carries its report.
    fn validate(&self, scratch: &str) -> Result<(), String> {
        let python = python_venv(
            "kubernetes-validate-venv",
            "kubernetes-validate",
            KUBERNETES_VALIDATE,
        );
        let file = scratch_dir(scratch).join("rendered.yaml");
        std::fs::write(&file, &self.yaml).unwrap();
        let mut command = Command::new(python.with_file_name("kubernetes-validate"));
        command.arg("--strict");
        for version in KUBERNETES_VERSIONS {
            command.args(["--kubernetes-version", version]);
        }
        let out = command.arg(&file).output().unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // A kind without a schema is only a warning to kubernetes-validate: count the passes.
        let passed = report
            .lines()
            .filter(|l| l.starts_with("INFO ") && l.contains(" passed for resource "))
            .count();
        if out.status.success() && passed == self.objects.len() * KUBERNETES_VERSIONS.len() {
            Ok(())
        } else {
            Err(report)
        }
    }

    /// The policies ConfigMap that the mcp-authz Deployment mounts at its policy directory:
    /// `(its name, its files written to a scratch directory)`.
    fn mounted_policies(&self, scratch: &str) -> (String, PathBuf) {
        let pod = &self.get("Deployment", "mcp-authz")["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let policy_dir = env_value(container, "MCP_AUTHZ_POLICY_DIR");
        let mount = seq(&container["volumeMounts"])
            .iter()
            .find(|m| m["mountPath"] == policy_dir)
            .unwrap_or_else(|| panic!("nothing is mounted at {policy_dir}"));
        let volume = seq(&pod["volumes"])
            .iter()
            .find(|v| v["name"] == mount["name"])
            .expect("the mounted volume is defined");
        let name = text(&volume["configMap"]["name"]).to_string();
        let configmap = self.get("ConfigMap", &name);
        let dir = scratch_dir(scratch);
        for (file, contents) in configmap["data"].as_mapping().unwrap() {
            std::fs::write(dir.join(text(file)), text(contents)).unwrap();
        }
        (name, dir)
    }

    /// The Service `name`'s port `port` followed to the container behind it: `(the Deployment
    /// that runs it, the container port number)`.
    fn backend(&self, name: &str, port: u64) -> (&Value, u64) {
        let service = self.get("Service", name);
        let target = seq(&service["spec"]["ports"])
            .iter()
            .find(|p| p["port"] == port)
            .unwrap_or_else(|| panic!("Service {name} has no port {port}"))["targetPort"]
            .clone();
        let selector = service["spec"]["selector"].as_mapping().unwrap();
        let deployment = self
            .objects
            .iter()
            .find(|o| {
                let labels = &o["spec"]["template"]["metadata"]["labels"];
                o["kind"] == "Deployment" && selector.iter().all(|(k, v)| labels[k] == *v)
            })
            .unwrap_or_else(|| panic!("no Deployment behind Service {name}"));
        let container_port = seq(&deployment["spec"]["template"]["spec"]["containers"])
            .iter()
            .flat_map(|c| seq(&c["ports"]))
            .find(|p| p["name"] == target || p["containerPort"] == target)
            .unwrap_or_else(|| {
                panic!("Service {name} targets `{target:?}`, which no container has")
            });
        (
            deployment,
            container_port["containerPort"].as_u64().unwrap(),
        )
    }
}

fn seq(value: &Value) -> &[Value] {
    value
        .as_sequence()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("not a list: {value:?}"))
}

fn text(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value:?}"))
}

fn env_value<'c>(container: &'c Value, name: &str) -> &'c str {
    let var = seq(&container["env"])
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no env {name}"));
    text(&var["value"])
}

/// `host` and `port` of `scheme://host:port` or `host:port`.
fn host_port(endpoint: &str) -> (&str, u64) {
    let authority = endpoint.split_once("://").map_or(endpoint, |(_, a)| a);
    let (host, port) = authority.rsplit_once(':').unwrap();
    (host, port.trim_end_matches('/').parse().unwrap())
}

fn assert_validates_as_policies(dir: &Path) {
    let out = Command::new(BIN).arg("validate").arg(dir).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_base_renders_to_valid_objects_that_mount_the_shipped_policies() {
    if !have_kubectl() {
        return;
    }
    let base = render(&deploy().join("kubernetes"));
    base.validate("k8s-base").unwrap();

    let namespace = text(&base.get("Namespace", "mcp-system")["metadata"]["name"]);
    for object in &base.objects {
        let metadata = &object["metadata"];
        assert_eq!(
            metadata["labels"]["app.kubernetes.io/part-of"], "mcp-authz",
            "{metadata:?}"
        );
        if object["kind"] != "Namespace" {
            assert_eq!(metadata["namespace"], namespace, "{metadata:?}");
        }
    }
    let mut kinds: Vec<_> = base
        .objects
        .iter()
        .map(|o| format!("{}/{}", text(&o["kind"]), text(&o["metadata"]["name"])))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ConfigMap/mcp-authz-policies",
            "ConfigMap/otel-collector-config",
            "Deployment/jaeger",
            "Deployment/mcp-authz",
            "Deployment/otel-collector",
            "Namespace/mcp-system",
            "PodDisruptionBudget/mcp-authz",
            "Service/jaeger",
            "Service/mcp-authz",
            "Service/otel-collector",
        ]
    );

    let (name, dir) = base.mounted_policies("k8s-base-policies");
    assert_eq!(name, "mcp-authz-policies");
    assert_validates_as_policies(&dir);
    assert_eq!(
        differing_kinds(&deploy().join("policies"), &dir),
        Vec::<&str>::new(),
        "the rendered ConfigMap differs from deploy/policies"
    );
}

#[test]
fn mcp_authz_names_its_pod_and_namespace_in_its_resource_attributes() {
    if !have_kubectl() {
        return;
    }
    let base = render(&deploy().join("kubernetes"));
    let container =
        &base.get("Deployment", "mcp-authz")["spec"]["template"]["spec"]["containers"][0];
    let env = seq(&container["env"]);
    let field = |name: &str| {
        env.iter().find(|e| e["name"] == name).unwrap()["valueFrom"]["fieldRef"]["fieldPath"]
            .clone()
    };
    assert_eq!(field("K8S_POD_NAME"), "metadata.name");
    assert_eq!(field("K8S_NAMESPACE_NAME"), "metadata.namespace");
    assert_eq!(
        env_value(container, "OTEL_RESOURCE_ATTRIBUTES"),
        "k8s.pod.name=$(K8S_POD_NAME),k8s.namespace.name=$(K8S_NAMESPACE_NAME)"
    );
    // Kubernetes expands `$(VAR)` only for a variable defined earlier in the list; a later one
    // stays as the literal text.
    for (i, var) in env.iter().enumerate() {
        let Some(value) = var["value"].as_str() else {
            continue;
        };
        for reference in value.split("$(").skip(1) {
            let referenced = reference.split(')').next().unwrap();
            assert!(
                env[..i].iter().any(|e| e["name"] == referenced),
                "{} uses $({referenced}) before it is defined",
                text(&var["name"])
            );
        }
    }
}

#[test]
fn the_collector_takes_mcp_authz_spans_to_jaeger() {
    if !have_kubectl() {
        return;
    }
    let base = render(&deploy().join("kubernetes"));
    let authz = &base.get("Deployment", "mcp-authz")["spec"]["template"]["spec"]["containers"][0];

    // mcp-authz → the collector's OTLP gRPC receiver.
    let (host, port) = host_port(env_value(authz, "OTEL_EXPORTER_OTLP_ENDPOINT"));
    let (collector, receiving) = base.backend(host, port);
    assert_eq!(collector["metadata"]["name"], "otel-collector");
    let pod = &collector["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let config_path = seq(&container["args"])
        .iter()
        .find_map(|a| text(a).strip_prefix("--config="))
        .expect("the collector is given its config file");
    let (config_dir, config_file) = config_path.rsplit_once('/').unwrap();
    let mount = seq(&container["volumeMounts"])
        .iter()
        .find(|m| m["mountPath"] == config_dir)
        .expect("the config directory is mounted");
    let volume = seq(&pod["volumes"])
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    let configmap = base.get("ConfigMap", text(&volume["configMap"]["name"]));
    let config: Value = serde_yaml_ng::from_str(text(&configmap["data"][config_file])).unwrap();

    let protocols = &config["receivers"]["otlp"]["protocols"];
    assert_eq!(
        host_port(text(&protocols["grpc"]["endpoint"])),
        ("0.0.0.0", receiving)
    );
    assert_eq!(host_port(text(&protocols["http"]["endpoint"])).1, 4318);

    // Every component a pipeline names is configured; traces leave through OTLP to Jaeger.
    let service = &config["service"];
    for extension in seq(&service["extensions"]) {
        assert!(
            config["extensions"].get(text(extension)).is_some(),
            "{extension:?}"
        );
    }
    let traces = &service["pipelines"]["traces"];
    for section in ["receivers", "processors", "exporters"] {
        for component in seq(&traces[section]) {
            assert!(
                config[section].get(text(component)).is_some(),
                "{section}: {component:?} is not configured"
            );
        }
    }
    assert_eq!(seq(&traces["receivers"]), [Value::from("otlp")]);
    let exporter = text(&seq(&traces["exporters"])[0]);
    assert!(exporter.starts_with("otlp/"), "{exporter}");
    let (host, port) = host_port(text(&config["exporters"][exporter]["endpoint"]));
    let (jaeger, receiving) = base.backend(host, port);
    assert_eq!(jaeger["metadata"]["name"], "jaeger");
    assert_eq!(receiving, 4317, "Jaeger receives OTLP gRPC on 4317");
    assert!(
        text(&jaeger["spec"]["template"]["spec"]["containers"][0]["image"])
            .starts_with("jaegertracing/jaeger:2.")
    );

    // The collector's probes ask its health_check extension.
    let (_, health) = host_port(text(&config["extensions"]["health_check"]["endpoint"]));
    let probe_port = &container["readinessProbe"]["httpGet"]["port"];
    let declared = seq(&container["ports"])
        .iter()
        .find(|p| p["name"] == *probe_port)
        .unwrap();
    assert_eq!(declared["containerPort"], health);
}

#[test]
fn the_overlay_replaces_the_policies_and_nothing_else() {
    if !have_kubectl() {
        return;
    }
    let base = render(&deploy().join("kubernetes"));
    let overlay = render(&overlay_dir());
    overlay.validate("k8s-overlay").unwrap();

    // The Deployment still mounts the ConfigMap that is rendered, under the base's name.
    let (name, dir) = overlay.mounted_policies("k8s-overlay-policies");
    assert_eq!(name, "mcp-authz-policies");
    assert_validates_as_policies(&dir);
    let files = overlay_dir().join("policies");
    assert_eq!(differing_kinds(&files, &dir), Vec::<&str>::new());
    // Replaced, not merged: only the overlay's files, none of the base's beside them.
    let listing = |dir: &Path| {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    assert_eq!(listing(&dir), listing(&files));
    assert_eq!(
        differing_kinds(&deploy().join("policies"), &dir),
        ["servers", "grants"],
        "the overlay's policies are its own"
    );

    let others = |r: &Rendered| -> Vec<Value> {
        r.objects
            .iter()
            .filter(|o| o["metadata"]["name"] != name.as_str())
            .cloned()
            .collect()
    };
    assert_eq!(others(&overlay), others(&base));
}

#[test]
fn strict_validation_rejects_a_misspelt_probe_field() {
    if !have_kubectl() {
        return;
    }
    let copy = scratch_dir("k8s-misspelt").join("kubernetes");
    std::fs::create_dir(&copy).unwrap();
    for entry in std::fs::read_dir(deploy().join("kubernetes")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, copy.join(path.file_name().unwrap())).unwrap();
    }
    let deployment = copy.join("deployment.yaml");
    let text = std::fs::read_to_string(&deployment).unwrap();
    let misspelt = text.replacen("periodSeconds: 5", "periodSecond: 5", 1);
    assert_ne!(misspelt, text, "deployment.yaml has no `periodSeconds: 5`");
    std::fs::write(&deployment, misspelt).unwrap();

    let report = render(&copy)
        .validate("k8s-misspelt-validate")
        .expect_err("a misspelt probe field must not validate");
    assert!(
        report.contains("deployment/mcp-authz") && report.contains("'periodSecond' was unexpected"),
        "{report}"
    );
}

#[test]
fn the_tls_overlay_mounts_the_secret_and_passes_the_tls_flags() {
    if !have_kubectl() {
        return;
    }
    let base = render(&deploy().join("kubernetes"));
    let tls = render(&deploy().join("overlays/tls"));
    tls.validate("k8s-tls").unwrap();
    let pod = &tls.get("Deployment", "mcp-authz")["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let mount = seq(&container["volumeMounts"])
        .iter()
        .find(|m| m["name"] == "tls")
        .expect("the TLS volume is mounted");
    assert_eq!(mount["readOnly"], true);
    let dir = text(&mount["mountPath"]);
    let volume = seq(&pod["volumes"])
        .iter()
        .find(|v| v["name"] == "tls")
        .unwrap();
    assert_eq!(volume["secret"]["secretName"], "mcp-authz-tls");
    // Every flag names a file of the mounted Secret, under the keys cert-manager writes.
    for (var, key) in [
        ("MCP_AUTHZ_TLS_CERT", "tls.crt"),
        ("MCP_AUTHZ_TLS_KEY", "tls.key"),
        ("MCP_AUTHZ_TLS_CLIENT_CA", "ca.crt"),
    ] {
        assert_eq!(env_value(container, var), format!("{dir}/{key}"));
    }
    // The kubelet's gRPC probe has no TLS: no probe may speak gRPC to the TLS port.
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert!(
            container[probe]["grpc"].is_null(),
            "{probe} speaks plaintext gRPC to the TLS port"
        );
        assert_eq!(container[probe]["httpGet"]["port"], "admin", "{probe}");
    }
    // Nothing else changes.
    let others = |r: &Rendered| -> Vec<Value> {
        r.objects
            .iter()
            .filter(|o| o["kind"] != "Deployment" || o["metadata"]["name"] != "mcp-authz")
            .cloned()
            .collect()
    };
    assert_eq!(others(&tls), others(&base));
}
