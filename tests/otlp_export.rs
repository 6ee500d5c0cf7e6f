//! The OpenTelemetry SDK environment and TLS to the collector, through the running binary:
//! in-process OTLP receivers over gRPC (tonic, server TLS) and HTTP (hyper over tokio-rustls),
//! with certificates made in the test.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test harness: a panic is the report

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::tls::{Leaf, Pki, first_cert_der, server_config};
use common::{BIN, Server, check_raw, conformance_dir, scratch_dir};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;

/// One export as received.
#[derive(Debug, Clone, Default)]
struct Received {
    path: String,
    /// Request headers (gRPC metadata), lowercase names.
    headers: BTreeMap<String, String>,
    /// The DER of the client certificate the exporter presented.
    client_cert: Option<Vec<u8>>,
    /// The first resource's attributes.
    resource: BTreeMap<String, String>,
    spans: usize,
}

type Exports = Arc<Mutex<Vec<Received>>>;

fn record(exports: &Exports, mut received: Received, request: ExportTraceServiceRequest) {
    for resource_spans in &request.resource_spans {
        if received.resource.is_empty() {
            for kv in resource_spans.resource.iter().flat_map(|r| &r.attributes) {
                let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(Value::StringValue(s)) => s.clone(),
                    other => format!("{other:?}"),
                };
                received.resource.insert(kv.key.clone(), value);
            }
        }
        received.spans += resource_spans
            .scope_spans
            .iter()
            .map(|s| s.spans.len())
            .sum::<usize>();
    }
    exports.lock().unwrap().push(received);
}

struct Collector(Exports);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let received = Received {
            path: "grpc".into(),
            headers: request
                .metadata()
                .clone()
                .into_headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_string()))
                .collect(),
            client_cert: request
                .peer_certs()
                .and_then(|certs| certs.first().map(|c| c.to_vec())),
            ..Received::default()
        };
        record(&self.0, received, request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A gRPC OTLP receiver on 127.0.0.1; with `tls`, over TLS with that certificate, requiring a
/// client certificate signed by the given CA if one is given.
async fn grpc_receiver(tls: Option<(&Leaf, Option<&Path>)>) -> (u16, Exports) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let exports = Exports::default();
    let service = TraceServiceServer::new(Collector(Arc::clone(&exports)))
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let mut builder = tonic::transport::Server::builder();
    if let Some((leaf, client_ca)) = tls {
        use tonic::transport::{Certificate, Identity, ServerTlsConfig};
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(
            std::fs::read(&leaf.cert).unwrap(),
            std::fs::read(&leaf.key).unwrap(),
        ));
        if let Some(ca) = client_ca {
            config = config.client_ca_root(Certificate::from_pem(std::fs::read(ca).unwrap()));
        }
        builder = builder.tls_config(config).unwrap();
    }
    tokio::spawn(
        builder
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (port, exports)
}

/// An OTLP/HTTP receiver (hyper), over TLS with `tls` (tokio-rustls; a client certificate signed
/// by the given CA required if one is given): any path, protobuf body, gzip or not.
async fn http_receiver_on(tls: Option<(&Leaf, Option<&Path>)>) -> (u16, Exports) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let exports = Exports::default();
    let acceptor = tls.map(|(leaf, client_ca)| {
        tokio_rustls::TlsAcceptor::from(Arc::new(server_config(leaf, client_ca, &[b"http/1.1"])))
    });
    let sink = Arc::clone(&exports);
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let (acceptor, sink) = (acceptor.clone(), Arc::clone(&sink));
            tokio::spawn(async move {
                match acceptor {
                    None => serve_http(socket, None, sink).await,
                    Some(acceptor) => {
                        let Ok(tls) = acceptor.accept(socket).await else {
                            return;
                        };
                        let client_cert = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first().map(|c| c.to_vec()));
                        serve_http(tls, client_cert, sink).await;
                    }
                }
            });
        }
    });
    (port, exports)
}

async fn http_receiver(leaf: &Leaf, client_ca: Option<&Path>) -> (u16, Exports) {
    http_receiver_on(Some((leaf, client_ca))).await
}

async fn serve_http<IO>(io: IO, client_cert: Option<Vec<u8>>, sink: Exports)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::BodyExt;
    let service =
        hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let (sink, client_cert) = (Arc::clone(&sink), client_cert.clone());
            async move {
                let (parts, body) = request.into_parts();
                let body = body.collect().await?.to_bytes().to_vec();
                let headers: BTreeMap<String, String> = parts
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_string()))
                    .collect();
                let body = if headers.get("content-encoding").map(String::as_str) == Some("gzip") {
                    let mut out = Vec::new();
                    std::io::Read::read_to_end(
                        &mut flate2::read::GzDecoder::new(body.as_slice()),
                        &mut out,
                    )
                    .unwrap();
                    out
                } else {
                    body
                };
                let received = Received {
                    path: parts.uri.path().to_string(),
                    headers,
                    client_cert,
                    ..Received::default()
                };
                record(
                    &sink,
                    received,
                    ExportTraceServiceRequest::decode(body.as_slice()).unwrap(),
                );
                Ok::<_, hyper::Error>(
                    http::Response::builder()
                        .status(200)
                        .header("content-type", "application/x-protobuf")
                        .body(http_body_util::Full::new(bytes::Bytes::new()))
                        .unwrap(),
                )
            }
        });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .await;
}

/// Every OTEL_* variable this service reads: none is inherited from the test's environment.
const OTEL_VARS: &[&str] = &[
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_EXPORTER_OTLP_COMPRESSION",
    "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
    "OTEL_EXPORTER_OTLP_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CLIENT_KEY",
    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

fn serve_command(env: &[(&str, String)]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "off"])
        .arg("--policy-dir")
        .arg(conformance_dir().join("policies"));
    for var in OTEL_VARS {
        command.env_remove(var);
    }
    for var in ["MCP_AUTHZ_OTLP_ENDPOINT", "MCP_AUTHZ_OTLP_PROTOCOL"] {
        command.env_remove(var);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

fn start(env: &[(&str, String)]) -> Server {
    Server::spawn(serve_command(env))
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

async fn one_check(server: &Server) {
    let request = std::fs::read(conformance_dir().join("requests/04-echo-allowed.bin")).unwrap();
    let response = check_raw(&server.channel().await, request).await.unwrap();
    assert_eq!(
        common::metadata_str(&response, "decision"),
        Some("allow"),
        "Checks answer"
    );
}

async fn wait_export(exports: &Exports) -> Received {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(first) = exports.lock().unwrap().first() {
            return first.clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no export arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_mutual_tls_with_headers_gzip_and_resource() {
    let dir = scratch_dir("otlp-grpc-tls");
    let pki = Pki::new(&dir, "ca");
    let collector = pki.leaf("collector");
    let client = pki.leaf("mcp-authz");
    let (port, exports) = grpc_receiver(Some((&collector, Some(&pki.ca)))).await;
    let server = start(&[
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("https://localhost:{port}"),
        ),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", path(&pki.ca)),
        ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", path(&client.cert)),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", path(&client.key)),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "x-api-key=s3cr%3Dt,x-tenant=acme".into(),
        ),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip".into()),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=test,k8s.pod.name=pod-1,service.name=overridden".into(),
        ),
        ("OTEL_SERVICE_NAME", "audit-under-test".into()),
    ]);
    one_check(&server).await;
    let received = wait_export(&exports).await;
    assert_eq!(received.spans, 1);
    assert_eq!(received.headers["x-api-key"], "s3cr=t");
    assert_eq!(received.headers["x-tenant"], "acme");
    assert_eq!(received.headers["grpc-encoding"], "gzip");
    assert_eq!(
        received.client_cert.as_deref(),
        Some(first_cert_der(&client.cert).as_slice()),
        "the client certificate is presented"
    );
    assert_eq!(received.resource["service.name"], "audit-under-test");
    assert_eq!(received.resource["deployment.environment"], "test");
    assert_eq!(received.resource["k8s.pod.name"], "pod-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_over_mutual_tls_with_system_roots_signal_settings_and_resource() {
    let dir = scratch_dir("otlp-http-tls");
    let pki = Pki::new(&dir, "ca");
    let collector = pki.leaf("collector");
    let client = pki.leaf("mcp-authz");
    let (port, exports) = http_receiver(&collector, Some(&pki.ca)).await;
    // No OTEL_EXPORTER_OTLP_CERTIFICATE: the system roots, which SSL_CERT_FILE replaces.
    let server = start(&[
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            format!("https://localhost:{port}/custom/traces"),
        ),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:4318".into()),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf".into()),
        ("SSL_CERT_FILE", path(&pki.ca)),
        (
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
            path(&client.cert),
        ),
        ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", path(&client.key)),
        (
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "authorization=Bearer%20token-1".into(),
        ),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-generic=unused".into()),
        ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip".into()),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "service.name=from-attributes,k8s.namespace.name=ns-1".into(),
        ),
    ]);
    one_check(&server).await;
    let received = wait_export(&exports).await;
    assert_eq!(received.spans, 1);
    assert_eq!(received.path, "/custom/traces", "the signal endpoint as is");
    assert_eq!(received.headers["authorization"], "Bearer token-1");
    assert!(!received.headers.contains_key("x-generic"));
    assert_eq!(received.headers["content-encoding"], "gzip");
    assert_eq!(
        received.client_cert.as_deref(),
        Some(first_cert_der(&client.cert).as_slice())
    );
    assert_eq!(received.resource["service.name"], "from-attributes");
    assert_eq!(received.resource["k8s.namespace.name"], "ns-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_base_endpoint_gets_v1_traces_and_the_default_service_name() {
    let dir = scratch_dir("otlp-http-base");
    let pki = Pki::new(&dir, "ca");
    let collector = pki.leaf("collector");
    let (port, exports) = http_receiver(&collector, None).await;
    let server = start(&[
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("https://localhost:{port}/base/"),
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", path(&pki.ca)),
    ]);
    one_check(&server).await;
    let received = wait_export(&exports).await;
    assert_eq!(received.path, "/base/v1/traces");
    assert_eq!(received.client_cert, None);
    assert_eq!(received.resource["service.name"], "mcp-authz");
    assert!(!received.headers.contains_key("content-encoding"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_or_a_missing_client_certificate_is_refused_and_checks_keep_answering() {
    let dir = scratch_dir("otlp-refused");
    let pki = Pki::new(&dir, "ca");
    let other = Pki::new(&dir.join("other"), "other");
    let collector = pki.leaf("collector");
    let client = pki.leaf("mcp-authz");
    for protocol in ["grpc", "http/protobuf"] {
        for wrong_ca in [true, false] {
            let (port, exports) = if protocol == "grpc" {
                grpc_receiver(Some((&collector, Some(&pki.ca)))).await
            } else {
                http_receiver(&collector, Some(&pki.ca)).await
            };
            let mut env = vec![
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    format!("https://localhost:{port}"),
                ),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_string()),
            ];
            if wrong_ca {
                // The right client certificate, but the collector's is not trusted.
                env.extend([
                    ("OTEL_EXPORTER_OTLP_CERTIFICATE", path(&other.ca)),
                    ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", path(&client.cert)),
                    ("OTEL_EXPORTER_OTLP_CLIENT_KEY", path(&client.key)),
                ]);
            } else {
                // The collector is trusted, but it requires a client certificate.
                env.push(("OTEL_EXPORTER_OTLP_CERTIFICATE", path(&pki.ca)));
            }
            let server = start(&env);
            one_check(&server).await;
            assert!(
                server.wait_log("cannot export audit spans", 1, Duration::from_secs(30)),
                "{protocol} wrong_ca={wrong_ca}: the failure is logged: {:?}",
                server.log.lock().unwrap()
            );
            one_check(&server).await;
            assert!(
                exports.lock().unwrap().is_empty(),
                "{protocol} wrong_ca={wrong_ca}: nothing delivered"
            );
            // What could not be exported is counted when the service stops.
            server.signal("TERM");
            assert!(
                server.wait_log("could not be exported", 1, Duration::from_secs(30)),
                "{protocol} wrong_ca={wrong_ca}: {:?}",
                server.log.lock().unwrap()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_timeout_applies() {
    // A collector that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let server = start(&[
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        ),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "200".into()),
    ]);
    one_check(&server).await;
    assert!(server.wait_log("cannot export audit spans", 1, Duration::from_secs(30)));
    let line = server.find_log("cannot export audit spans").unwrap();
    // The service's own limit per batch (5 s) says "no answer within"; the exporter's does not.
    assert!(!line.contains("no answer within"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_disabled_exports_nothing_and_logs_lines() {
    let (port, exports) = grpc_receiver(None).await;
    let server = start(&[
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        ),
        ("OTEL_SDK_DISABLED", "true".into()),
    ]);
    assert!(server.find_log("OTEL_SDK_DISABLED").is_some());
    one_check(&server).await;
    assert!(server.wait_log("mcp_authz::audit", 1, Duration::from_secs(10)));
    server.signal("TERM");
    assert!(server.wait_log("stopped", 1, Duration::from_secs(30)));
    assert!(exports.lock().unwrap().is_empty());
}

#[test]
fn invalid_settings_exit_2_naming_the_variable() {
    let dir = scratch_dir("otlp-invalid");
    let missing = path(&dir.join("missing.pem"));
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    let endpoint = (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "https://localhost:4317".into(),
    );
    for (var, value) in [
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon".to_string()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json".into()),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli".into()),
        ("OTEL_EXPORTER_OTLP_HEADERS", "no-equals-sign".into()),
        ("OTEL_SDK_DISABLED", "maybe".into()),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", missing.clone()),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", path(&not_pem)),
        ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", missing.clone()),
    ] {
        let output = serve_command(&[endpoint.clone(), (var, value.clone())])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{var}={value}: {stderr}");
        assert!(stderr.contains(var), "{var}={value}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_grpc_and_http_carry_headers_gzip_and_resource_attributes() {
    for protocol in ["grpc", "http/protobuf"] {
        let (port, exports) = if protocol == "grpc" {
            grpc_receiver(None).await
        } else {
            http_receiver_on(None).await
        };
        let server = start(&[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{port}"),
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_string()),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=plain-key".into()),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip".into()),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=dev".into(),
            ),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "3000".into()),
        ]);
        one_check(&server).await;
        let received = wait_export(&exports).await;
        assert_eq!(received.spans, 1, "{protocol}");
        assert_eq!(received.headers["x-api-key"], "plain-key", "{protocol}");
        let encoding = if protocol == "grpc" {
            "grpc-encoding"
        } else {
            "content-encoding"
        };
        assert_eq!(received.headers[encoding], "gzip", "{protocol}");
        assert_eq!(received.resource["deployment.environment"], "dev");
        assert_eq!(received.resource["service.name"], "mcp-authz");
        if protocol != "grpc" {
            assert_eq!(received.path, "/v1/traces");
        }
    }
}
