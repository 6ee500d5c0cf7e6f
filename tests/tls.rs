//! TLS on the service port, through the running binary: mutual TLS with a tonic client,
//! certificate rotation seen by new handshakes, a bad new certificate keeps the old one serving.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test harness: a panic is the report

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::tls::{Leaf, Pki, client_config, first_cert_der};
use common::{Server, conformance_dir, scratch_dir};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

fn port(server: &Server) -> u16 {
    server.addr.rsplit(':').next().unwrap().parse().unwrap()
}

fn start(cert: &Leaf, client_ca: Option<&Path>) -> Server {
    let (cert_path, key_path) = (
        cert.cert.display().to_string(),
        cert.key.display().to_string(),
    );
    let mut args = vec!["--tls-cert", &cert_path, "--tls-key", &key_path];
    let ca;
    if let Some(path) = client_ca {
        ca = path.display().to_string();
        args.extend(["--tls-client-ca", &ca]);
    }
    let server = Server::start(&conformance_dir().join("policies"), &args);
    assert!(server.find_log("tls=true").is_some());
    server
}

/// A Check over TLS trusting `ca`, presenting `client` if given.
async fn check(
    server: &Server,
    ca: &Path,
    client: Option<&Leaf>,
) -> Result<String, Box<dyn std::error::Error>> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca)?))
        .domain_name("localhost");
    if let Some(leaf) = client {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(&leaf.cert)?,
            std::fs::read(&leaf.key)?,
        ));
    }
    let channel = Channel::from_shared(format!("https://localhost:{}", port(server)))?
        .tls_config(tls)?
        .connect()
        .await?;
    let request = std::fs::read(conformance_dir().join("requests/04-echo-allowed.bin"))?;
    let response = common::check_raw(&channel, request).await?;
    Ok(common::metadata_str(&response, "decision")
        .unwrap_or_default()
        .to_string())
}

/// The certificate the service presents to a new handshake.
async fn presented(server: &Server, ca: &Path, client: Option<&Leaf>) -> Vec<u8> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(ca, client)));
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port(server)))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, stream).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_answers_a_client_certificate_and_refuses_the_rest() {
    let dir = scratch_dir("tls-mutual");
    let pki = Pki::new(&dir, "ca");
    let other = Pki::new(&dir.join("other"), "other");
    let server_cert = pki.leaf("mcp-authz");
    let envoy = pki.leaf("envoy");
    let stranger = other.leaf("stranger");
    let server = start(&server_cert, Some(&pki.ca));
    assert_eq!(
        check(&server, &pki.ca, Some(&envoy)).await.unwrap(),
        "allow"
    );
    assert!(
        check(&server, &pki.ca, None).await.is_err(),
        "no client certificate"
    );
    assert!(
        check(&server, &pki.ca, Some(&stranger)).await.is_err(),
        "a client certificate of another CA"
    );
    // A plaintext gRPC client gets nowhere either.
    let plain = async {
        let channel = server.channel().await;
        let request = std::fs::read(conformance_dir().join("requests/04-echo-allowed.bin"))?;
        common::check_raw(&channel, request)
            .await
            .map_err(Box::<dyn std::error::Error>::from)
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(20), plain)
            .await
            .map_or(true, |r| r.is_err())
    );
    // And the service still answers the right caller.
    assert_eq!(
        check(&server, &pki.ca, Some(&envoy)).await.unwrap(),
        "allow"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_tls_without_a_client_ca_answers_any_caller() {
    let dir = scratch_dir("tls-server-only");
    let pki = Pki::new(&dir, "ca");
    let server = start(&pki.leaf("mcp-authz"), None);
    assert_eq!(check(&server, &pki.ca, None).await.unwrap(), "allow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_seen_by_new_handshakes_and_a_bad_one_keeps_the_old() {
    let dir = scratch_dir("tls-rotate");
    let pki = Pki::new(&dir, "ca");
    let first = pki.leaf("first");
    let second = pki.leaf("second");
    let envoy = pki.leaf("envoy");
    // The service reads `served.pem`, which the test replaces as a Secret rotation would.
    let served = Leaf {
        cert: dir.join("served.pem"),
        key: dir.join("served-key.pem"),
    };
    std::fs::copy(&first.cert, &served.cert).unwrap();
    std::fs::copy(&first.key, &served.key).unwrap();
    let server = start(&served, Some(&pki.ca));
    assert_eq!(
        presented(&server, &pki.ca, Some(&envoy)).await,
        first_cert_der(&first.cert)
    );

    // Rotation: write the new pair beside, then rename over (as kubelet's symlink swap does).
    for (from, to) in [(&second.key, &served.key), (&second.cert, &served.cert)] {
        let staged = to.with_extension("new");
        std::fs::copy(from, &staged).unwrap();
        std::fs::rename(&staged, to).unwrap();
    }
    assert!(server.wait_log("TLS certificate reloaded", 1, Duration::from_secs(20)));
    assert_eq!(
        presented(&server, &pki.ca, Some(&envoy)).await,
        first_cert_der(&second.cert)
    );
    assert_eq!(
        check(&server, &pki.ca, Some(&envoy)).await.unwrap(),
        "allow"
    );

    // A broken new certificate: logged, and the last good one keeps serving.
    std::fs::write(&served.cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    assert!(server.wait_log("TLS certificate not reloaded", 1, Duration::from_secs(20)));
    assert_eq!(
        presented(&server, &pki.ca, Some(&envoy)).await,
        first_cert_der(&second.cert)
    );
    assert_eq!(
        check(&server, &pki.ca, Some(&envoy)).await.unwrap(),
        "allow"
    );
}

#[test]
fn unusable_tls_files_stop_the_start_with_exit_2() {
    let dir = scratch_dir("tls-invalid");
    let pki = Pki::new(&dir, "ca");
    let leaf = pki.leaf("mcp-authz");
    let other = pki.leaf("other");
    let cases: [(&str, Vec<String>); 3] = [
        (
            "--tls-cert",
            vec![
                "--tls-cert".into(),
                dir.join("missing.pem").display().to_string(),
                "--tls-key".into(),
                leaf.key.display().to_string(),
            ],
        ),
        (
            // A key that is not the certificate's.
            "--tls-key",
            vec![
                "--tls-cert".into(),
                leaf.cert.display().to_string(),
                "--tls-key".into(),
                other.key.display().to_string(),
            ],
        ),
        (
            "--tls-client-ca",
            vec![
                "--tls-cert".into(),
                leaf.cert.display().to_string(),
                "--tls-key".into(),
                leaf.key.display().to_string(),
                "--tls-client-ca".into(),
                leaf.key.display().to_string(),
            ],
        ),
    ];
    for (flag, args) in cases {
        let output = std::process::Command::new(common::BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "off"])
            .arg("--policy-dir")
            .arg(conformance_dir().join("policies"))
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag}: {stderr}");
        assert!(stderr.contains(flag), "{flag}: {stderr}");
    }
}
