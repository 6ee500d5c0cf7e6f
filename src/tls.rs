//! TLS on the service port (`--tls-cert`, `--tls-key`, `--tls-client-ca`): rustls, the
//! certificate files re-read when they change, mutual TLS when a client CA is given.
//!
//! Every accepted connection takes the configuration current at its handshake, so a rotated
//! certificate applies to new connections at once while established ones keep theirs. A new set
//! of files that does not load (half-written, a key that does not match) is logged and the last
//! good configuration keeps serving.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tonic::codegen::tokio_stream::Stream;

/// How often the certificate files are looked at.
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);
/// A handshake not done by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further connections wait in the listen backlog.
const MAX_HANDSHAKES: usize = 256;
/// Handshaken connections not yet taken by the server.
const READY_QUEUE: usize = 64;
/// The largest certificate or key file read.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The certificate files of the service port (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Require a client certificate signed by one of these CAs.
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{flag}: cannot read `{path}`: {source}")]
    Read {
        flag: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{flag}: `{path}` is larger than {MAX_FILE_BYTES} bytes")]
    TooLarge { flag: &'static str, path: String },
    #[error("{flag}: `{path}` holds no PEM {what}")]
    Pem {
        flag: &'static str,
        path: String,
        what: &'static str,
    },
    #[error("--tls-client-ca: {0}")]
    ClientCa(String),
    #[error("--tls-cert and --tls-key: {0}")]
    Certificate(String),
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let error = |source| TlsError::Read {
        flag,
        path: path.display().to_string(),
        source,
    };
    let length = std::fs::metadata(path).map_err(error)?.len();
    if length > MAX_FILE_BYTES {
        return Err(TlsError::TooLarge {
            flag,
            path: path.display().to_string(),
        });
    }
    std::fs::read(path).map_err(error)
}

/// The files' contents, to see whether they changed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl Contents {
    fn read(files: &TlsFiles) -> Result<Self, TlsError> {
        Ok(Contents {
            cert: read("--tls-cert", &files.cert)?,
            key: read("--tls-key", &files.key)?,
            client_ca: files
                .client_ca
                .as_deref()
                .map(|p| read("--tls-client-ca", p))
                .transpose()?,
        })
    }

    fn config(&self, files: &TlsFiles) -> Result<rustls::ServerConfig, TlsError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&self.cert)
            .map_while(Result::ok)
            .collect();
        if chain.is_empty() {
            return Err(TlsError::Pem {
                flag: "--tls-cert",
                path: files.cert.display().to_string(),
                what: "certificate",
            });
        }
        let key = PrivateKeyDer::from_pem_slice(&self.key).map_err(|_| TlsError::Pem {
            flag: "--tls-key",
            path: files.key.display().to_string(),
            what: "private key",
        })?;
        let builder = rustls::ServerConfig::builder();
        let builder = match (&self.client_ca, &files.client_ca) {
            (Some(pem), Some(path)) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem).map_while(Result::ok) {
                    roots
                        .add(cert)
                        .map_err(|e| TlsError::ClientCa(format!("`{}`: {e}", path.display())))?;
                }
                if roots.is_empty() {
                    return Err(TlsError::Pem {
                        flag: "--tls-client-ca",
                        path: path.display().to_string(),
                        what: "certificate",
                    });
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                    .build()
                    .map_err(|e| TlsError::ClientCa(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Certificate(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

/// The service port's TLS configuration, swapped when the files change.
pub struct ServerTls {
    files: TlsFiles,
    current: ArcSwap<rustls::ServerConfig>,
    /// What was last read, good or not: a bad set is logged once, not every second.
    seen: Mutex<Contents>,
}

impl ServerTls {
    /// Loads the files; an error here stops the start-up.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let contents = Contents::read(&files)?;
        let config = contents.config(&files)?;
        Ok(Arc::new(ServerTls {
            files,
            current: ArcSwap::from_pointee(config),
            seen: Mutex::new(contents),
        }))
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Re-reads the files; swaps in a new configuration when they changed and load. `Ok(true)`
    /// when swapped; an error leaves the current configuration serving.
    pub fn refresh(&self) -> Result<bool, TlsError> {
        let contents = Contents::read(&self.files)?;
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == contents {
                return Ok(false);
            }
            *seen = contents.clone();
        }
        let config = contents.config(&self.files)?;
        self.current.store(Arc::new(config));
        Ok(true)
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }
}

/// Re-reads the certificate files every [`RELOAD_EVERY`] until `stop` turns true.
pub async fn watch(tls: Arc<ServerTls>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RELOAD_EVERY) => {}
            _ = stop.changed() => return,
        }
        let refresh = Arc::clone(&tls);
        match tokio::task::spawn_blocking(move || refresh.refresh()).await {
            Ok(Ok(true)) => {
                failing = false;
                tracing::info!(cert = %tls.files.cert.display(), "TLS certificate reloaded");
            }
            Ok(Ok(false)) => failing = false,
            Ok(Err(e)) => {
                // A missing file mid-rotation is reported once until it loads again.
                if !failing {
                    tracing::warn!(error = %e, "TLS certificate not reloaded: the previous one keeps serving");
                }
                failing = true;
            }
            Err(e) => tracing::warn!(error = %e, "TLS certificate reload panicked"),
        }
    }
}

/// The TLS connections accepted on `listener`. Handshakes run off the accept loop, at most
/// [`MAX_HANDSHAKES`] at once and each within [`HANDSHAKE_TIMEOUT`]; a failed one (no client
/// certificate when one is required, an untrusted one) is logged at debug level and dropped.
pub fn incoming(listener: TcpListener, tls: Arc<ServerTls>) -> TlsIncoming {
    let (ready, queue) = tokio::sync::mpsc::channel(READY_QUEUE);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                permit = Arc::clone(&handshakes).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
                _ = ready.closed() => return,
            };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = ready.closed() => return,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let (acceptor, ready) = (tls.acceptor(), ready.clone());
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let _ = ready.send(stream).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    TlsIncoming(queue)
}

/// The handshaken connections of [`incoming`].
pub struct TlsIncoming(tokio::sync::mpsc::Receiver<TlsStream<TcpStream>>);

impl Stream for TlsIncoming {
    type Item = std::io::Result<TlsStream<TcpStream>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|next| next.map(Ok))
    }
}
