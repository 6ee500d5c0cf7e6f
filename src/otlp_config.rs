//! The OTLP exporter's settings: the flags and the OpenTelemetry SDK environment (for the trace
//! signal, as the OpenTelemetry specification defines it) resolved into a typed [`Export`], the
//! TLS material and the resource the exporter (`crate::audit::otlp`) is built from.
//!
//! Resolution is pure (the environment is a lookup function), so every rule is unit-tested:
//! a flag wins over `OTEL_EXPORTER_OTLP_TRACES_*`, which wins over `OTEL_EXPORTER_OTLP_*`.
//! Every value is resolved here and handed to the exporter explicitly, so what it does never
//! depends on which variables a library version happens to read.

use std::path::PathBuf;
use std::time::Duration;

use opentelemetry_sdk::Resource;

use crate::audit::otlp::OwnedValue;

/// The service name when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names one.
pub const DEFAULT_SERVICE_NAME: &str = "mcp-authz";
/// `OTEL_EXPORTER_OTLP_TIMEOUT`'s default (the specification's 10 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A setting that cannot be used; the message names the flag or variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} `{value}` is not {expected}")]
    Invalid {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("{name}: `{header}` is not `key=value` with a valid header name and value")]
    Header { name: &'static str, header: String },
    #[error("{name} is set but {missing} is not: a client certificate needs its key")]
    Incomplete {
        name: &'static str,
        missing: &'static str,
    },
    #[error("{name}: cannot read `{path}`: {source}")]
    Read {
        name: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{name}: `{path}` holds no PEM {what}")]
    Pem {
        name: &'static str,
        path: String,
        what: &'static str,
    },
    #[error("the OTLP exporter cannot be built: {0}")]
    Build(String),
}

/// What becomes of the audit trail.
#[derive(Debug, Clone)]
pub enum Export {
    /// No endpoint: decisions are logged as lines.
    Lines,
    /// `OTEL_SDK_DISABLED=true`: nothing is exported, decisions are logged as lines.
    Disabled,
    Otlp(ExportConfig),
}

/// Certificate files for TLS to the collector (PEM).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// `OTEL_EXPORTER_OTLP_CERTIFICATE`: the CA that signs the collector's certificate, instead
    /// of the system roots.
    pub ca: Option<PathBuf>,
    /// `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` and `_CLIENT_KEY`: ours, for mutual TLS.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC (port 4317).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318).
    HttpProtobuf,
}

/// Where and how to export.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    /// The endpoint as configured.
    pub endpoint: String,
    /// The endpoint came from `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: used as is over HTTP.
    pub signal_endpoint: bool,
    pub protocol: Protocol,
    /// Sent with every export: gRPC metadata or HTTP headers (names lowercase).
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub gzip: bool,
    pub tls: TlsFiles,
}

/// One setting: the trace signal's variable, else the generic one.
struct Var {
    signal: &'static str,
    generic: &'static str,
}

const ENDPOINT: Var = Var {
    signal: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    generic: "OTEL_EXPORTER_OTLP_ENDPOINT",
};
const PROTOCOL: Var = Var {
    signal: "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    generic: "OTEL_EXPORTER_OTLP_PROTOCOL",
};
const HEADERS: Var = Var {
    signal: "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    generic: "OTEL_EXPORTER_OTLP_HEADERS",
};
const TIMEOUT: Var = Var {
    signal: "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    generic: "OTEL_EXPORTER_OTLP_TIMEOUT",
};
const COMPRESSION: Var = Var {
    signal: "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
    generic: "OTEL_EXPORTER_OTLP_COMPRESSION",
};
const CERTIFICATE: Var = Var {
    signal: "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
    generic: "OTEL_EXPORTER_OTLP_CERTIFICATE",
};
const CLIENT_CERTIFICATE: Var = Var {
    signal: "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
    generic: "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
};
const CLIENT_KEY: Var = Var {
    signal: "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
    generic: "OTEL_EXPORTER_OTLP_CLIENT_KEY",
};
const SDK_DISABLED: &str = "OTEL_SDK_DISABLED";
const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";

impl Export {
    /// From the flags, else the OpenTelemetry environment variables (`env` looks one up; empty
    /// counts as unset, as the specification says).
    pub fn resolve(
        endpoint_flag: Option<&str>,
        protocol_flag: Option<Protocol>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Export, ConfigError> {
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let lookup = |var: &Var| {
            env(var.signal)
                .map(|v| (var.signal, v))
                .or_else(|| env(var.generic).map(|v| (var.generic, v)))
        };
        let disabled = match env(SDK_DISABLED) {
            None => false,
            Some(v) if v.trim().eq_ignore_ascii_case("true") => true,
            Some(v) if v.trim().eq_ignore_ascii_case("false") => false,
            Some(value) => {
                return Err(ConfigError::Invalid {
                    name: SDK_DISABLED,
                    value,
                    expected: "`true` or `false`",
                });
            }
        };
        let protocol = match protocol_flag {
            Some(p) => p,
            None => match lookup(&PROTOCOL) {
                None => Protocol::Grpc,
                Some((_, v)) if v.trim() == "grpc" => Protocol::Grpc,
                Some((_, v)) if v.trim() == "http/protobuf" => Protocol::HttpProtobuf,
                Some((name, value)) => {
                    return Err(ConfigError::Invalid {
                        name,
                        value,
                        expected: "`grpc` or `http/protobuf`",
                    });
                }
            },
        };
        let headers = match lookup(&HEADERS) {
            None => Vec::new(),
            Some((name, value)) => parse_headers(name, &value)?,
        };
        let timeout = match lookup(&TIMEOUT) {
            None => DEFAULT_TIMEOUT,
            Some((name, value)) => match value.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => {
                    return Err(ConfigError::Invalid {
                        name,
                        value,
                        expected: "a positive whole number of milliseconds",
                    });
                }
            },
        };
        let gzip = match lookup(&COMPRESSION) {
            None => false,
            Some((_, v)) if v.trim().eq_ignore_ascii_case("gzip") => true,
            Some((_, v)) if v.trim().eq_ignore_ascii_case("none") => false,
            Some((name, value)) => {
                return Err(ConfigError::Invalid {
                    name,
                    value,
                    expected: "`gzip` or `none`",
                });
            }
        };
        let ca = lookup(&CERTIFICATE).map(|(_, v)| PathBuf::from(v.trim()));
        let client = match (lookup(&CLIENT_CERTIFICATE), lookup(&CLIENT_KEY)) {
            (None, None) => None,
            (Some((_, cert)), Some((_, key))) => {
                Some((PathBuf::from(cert.trim()), PathBuf::from(key.trim())))
            }
            (Some((name, _)), None) => {
                return Err(ConfigError::Incomplete {
                    name,
                    missing: CLIENT_KEY.generic,
                });
            }
            (None, Some((name, _))) => {
                return Err(ConfigError::Incomplete {
                    name,
                    missing: CLIENT_CERTIFICATE.generic,
                });
            }
        };
        let flag = endpoint_flag
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| (false, e.to_string()));
        let Some((signal_endpoint, endpoint)) = flag.or_else(|| {
            lookup(&ENDPOINT).map(|(name, v)| (name == ENDPOINT.signal, v.trim().to_string()))
        }) else {
            return Ok(if disabled {
                Export::Disabled
            } else {
                Export::Lines
            });
        };
        if disabled {
            return Ok(Export::Disabled);
        }
        let config = ExportConfig {
            endpoint,
            signal_endpoint,
            protocol,
            headers,
            timeout,
            gzip,
            tls: TlsFiles { ca, client },
        };
        if !config.url().starts_with("http://") && !config.url().starts_with("https://") {
            return Err(ConfigError::Invalid {
                name: if signal_endpoint {
                    ENDPOINT.signal
                } else {
                    "--otlp-endpoint or OTEL_EXPORTER_OTLP_ENDPOINT"
                },
                value: config.endpoint,
                expected: "an `http://` or `https://` URL",
            });
        }
        Ok(Export::Otlp(config))
    }

    /// [`Export::resolve`] with the process environment.
    pub fn from_env(
        endpoint_flag: Option<&str>,
        protocol_flag: Option<Protocol>,
    ) -> Result<Export, ConfigError> {
        Export::resolve(endpoint_flag, protocol_flag, |name| {
            std::env::var(name).ok()
        })
    }
}

/// `key1=value1,key2=value2`, values percent-decoded (the specification's format).
fn parse_headers(name: &'static str, value: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = || ConfigError::Header {
            name,
            header: entry.to_string(),
        };
        let (key, val) = entry.split_once('=').ok_or_else(bad)?;
        let key = key.trim().to_ascii_lowercase();
        let val = percent_encoding::percent_decode_str(val.trim())
            .decode_utf8()
            .map_err(|_| bad())?
            .into_owned();
        if hyper::header::HeaderName::from_bytes(key.as_bytes()).is_err()
            || hyper::header::HeaderValue::from_str(&val).is_err()
        {
            return Err(bad());
        }
        out.push((key, val));
    }
    Ok(out)
}

impl ExportConfig {
    /// The URL the exporter sends to. For http/protobuf, `/v1/traces` is appended to a base URL
    /// (`--otlp-endpoint`, `OTEL_EXPORTER_OTLP_ENDPOINT`), unless it already ends so; the trace
    /// signal's own endpoint is used as is.
    pub fn url(&self) -> String {
        let base = self.endpoint.trim();
        match self.protocol {
            Protocol::Grpc => base.to_string(),
            Protocol::HttpProtobuf if self.signal_endpoint || base.ends_with("/v1/traces") => {
                base.to_string()
            }
            Protocol::HttpProtobuf => format!("{}/v1/traces", base.trim_end_matches('/')),
        }
    }

    /// Reads and checks the certificate files, as the exporter will.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        TlsMaterial::load(&self.tls)?.rustls_client().map(drop)
    }

    pub(crate) fn https(&self) -> bool {
        self.url().starts_with("https://")
    }
}

/// The resource of every span: `OTEL_RESOURCE_ATTRIBUTES` merged with the SDK's own attributes
/// (opentelemetry_sdk's detectors); `service.name` is `OTEL_SERVICE_NAME`, else the one in
/// `OTEL_RESOURCE_ATTRIBUTES`, else `mcp-authz`.
pub fn resource() -> Resource {
    let detected = Resource::builder().build();
    let from_attributes = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .map(|v| v.as_str().into_owned())
        .filter(|v| !v.starts_with("unknown_service"));
    let name = std::env::var(SERVICE_NAME)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .or(from_attributes)
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_string());
    Resource::builder().with_service_name(name).build()
}

/// [`resource`]'s attributes as the exporter encodes them, and its schema URL.
pub fn resource_attributes() -> (Vec<(String, OwnedValue)>, Option<String>) {
    use opentelemetry::{Array, Value};
    let resource = resource();
    let attributes = resource
        .iter()
        .map(|(key, value)| {
            let value = match value {
                Value::Bool(b) => OwnedValue::Bool(*b),
                Value::I64(n) => OwnedValue::Int(*n),
                Value::F64(f) => OwnedValue::Double(*f),
                Value::String(s) => OwnedValue::Str(s.as_str().to_string()),
                Value::Array(Array::String(items)) => {
                    OwnedValue::Strs(items.iter().map(|s| s.as_str().to_string()).collect())
                }
                // Neither the SDK's detectors nor `OTEL_RESOURCE_ATTRIBUTES` make other arrays.
                other => OwnedValue::Str(other.to_string()),
            };
            (key.as_str().to_string(), value)
        })
        .collect();
    (attributes, resource.schema_url().map(str::to_string))
}

fn read(name: &'static str, path: &std::path::Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::Read {
        name,
        path: path.display().to_string(),
        source,
    })
}

/// The certificate files, read and checked (PEM).
pub(crate) struct TlsMaterial {
    ca: Option<Vec<u8>>,
    client: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsMaterial {
    pub(crate) fn load(files: &TlsFiles) -> Result<Self, ConfigError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = |name, path: &std::path::Path| -> Result<Vec<u8>, ConfigError> {
            let pem = read(name, path)?;
            let count = CertificateDer::pem_slice_iter(&pem)
                .take_while(Result::is_ok)
                .count();
            if count == 0 {
                return Err(ConfigError::Pem {
                    name,
                    path: path.display().to_string(),
                    what: "certificate",
                });
            }
            Ok(pem)
        };
        let ca = files
            .ca
            .as_deref()
            .map(|p| certs(CERTIFICATE.generic, p))
            .transpose()?;
        let client = match &files.client {
            None => None,
            Some((cert, key)) => {
                let cert = certs(CLIENT_CERTIFICATE.generic, cert)?;
                let pem = read(CLIENT_KEY.generic, key)?;
                if PrivateKeyDer::from_pem_slice(&pem).is_err() {
                    return Err(ConfigError::Pem {
                        name: CLIENT_KEY.generic,
                        path: key.display().to_string(),
                        what: "private key",
                    });
                }
                Some((cert, pem))
            }
        };
        Ok(TlsMaterial { ca, client })
    }

    /// rustls settings for HTTP: the CA file, else the system roots; the client certificate.
    /// Whether a CA or a client certificate is set.
    pub(crate) fn has_files(&self) -> bool {
        self.ca.is_some() || self.client.is_some()
    }

    pub(crate) fn rustls_client(&self) -> Result<rustls::ClientConfig, ConfigError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca {
            Some(pem) => {
                for cert in CertificateDer::pem_slice_iter(pem).flatten() {
                    roots
                        .add(cert)
                        .map_err(|e| ConfigError::Build(format!("{}: {e}", CERTIFICATE.generic)))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for error in &found.errors {
                    tracing::warn!(%error, "cannot read a system root certificate");
                }
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    tracing::warn!(
                        "no system root certificates found: set OTEL_EXPORTER_OTLP_CERTIFICATE or install the system CA bundle"
                    );
                }
            }
        }
        let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
        // hyper-rustls sets ALPN itself (`enable_http1`).
        let config = match &self.client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| {
                        ConfigError::Build(format!("{}: {e}", CLIENT_CERTIFICATE.generic))
                    })?;
                let key = PrivateKeyDer::from_pem_slice(key)
                    .map_err(|e| ConfigError::Build(format!("{}: {e}", CLIENT_KEY.generic)))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| ConfigError::Build(format!("client certificate: {e}")))?
            }
        };
        Ok(config)
    }

    /// tonic's settings for gRPC: the CA file, else the system roots; the client certificate.
    pub(crate) fn tonic_client(&self) -> tonic::transport::ClientTlsConfig {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let config = ClientTlsConfig::new();
        let config = match &self.ca {
            Some(pem) => config.ca_certificate(Certificate::from_pem(pem)),
            None => config.with_native_roots(),
        };
        match &self.client {
            Some((cert, key)) => config.identity(Identity::from_pem(cert, key)),
            None => config,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(
        flag: Option<&str>,
        protocol: Option<Protocol>,
        vars: &[(&str, &str)],
    ) -> Result<Export, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Export::resolve(flag, protocol, |name| vars.get(name).cloned())
    }

    fn otlp(export: Result<Export, ConfigError>) -> ExportConfig {
        match export.unwrap() {
            Export::Otlp(config) => config,
            other => panic!("not exported: {other:?}"),
        }
    }

    #[test]
    fn export_urls() {
        let config = |endpoint: &str, protocol, signal_endpoint| ExportConfig {
            endpoint: endpoint.into(),
            signal_endpoint,
            protocol,
            headers: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            gzip: false,
            tls: TlsFiles::default(),
        };
        assert_eq!(
            config("http://j:4317", Protocol::Grpc, false).url(),
            "http://j:4317"
        );
        assert_eq!(
            config("http://j:4318/", Protocol::HttpProtobuf, false).url(),
            "http://j:4318/v1/traces"
        );
        assert_eq!(
            config("http://j:4318/v1/traces", Protocol::HttpProtobuf, false).url(),
            "http://j:4318/v1/traces"
        );
        assert_eq!(
            config("https://j/custom", Protocol::HttpProtobuf, true).url(),
            "https://j/custom"
        );
    }

    #[test]
    fn nothing_set_logs_lines() {
        assert!(matches!(resolve(None, None, &[]), Ok(Export::Lines)));
        assert!(matches!(
            resolve(None, None, &[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]),
            Ok(Export::Lines)
        ));
    }

    #[test]
    fn flags_win_then_the_signal_then_the_generic_variable() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://signal:4318/t"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
        ];
        let config = otlp(resolve(None, None, &vars));
        assert_eq!(config.protocol, Protocol::HttpProtobuf);
        assert_eq!(config.url(), "http://signal:4318/t");
        let config = otlp(resolve(
            Some("http://flag:4317"),
            Some(Protocol::Grpc),
            &vars,
        ));
        assert_eq!(config.protocol, Protocol::Grpc);
        assert_eq!(config.url(), "http://flag:4317");
        let config = otlp(resolve(None, None, &vars[..1]));
        assert_eq!(config.protocol, Protocol::Grpc);
        assert_eq!(config.url(), "http://generic:4318");
    }

    #[test]
    fn headers_timeout_compression_and_certificates() {
        let config = otlp(resolve(
            None,
            None,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317"),
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    "X-Api-Key=s%20ecret, tenant=a",
                ),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/ca.pem"),
                ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/c.pem"),
                ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "/k.pem"),
            ],
        ));
        assert_eq!(
            config.headers,
            [
                ("x-api-key".to_string(), "s ecret".to_string()),
                ("tenant".to_string(), "a".to_string())
            ]
        );
        assert_eq!(config.timeout, Duration::from_millis(2500));
        assert!(config.gzip);
        assert_eq!(config.tls.ca, Some(PathBuf::from("/ca.pem")));
        assert_eq!(
            config.tls.client,
            Some((PathBuf::from("/c.pem"), PathBuf::from("/k.pem")))
        );
    }

    #[test]
    fn sdk_disabled_exports_nothing() {
        for value in ["true", "TRUE"] {
            assert!(matches!(
                resolve(Some("http://c:4317"), None, &[("OTEL_SDK_DISABLED", value)]),
                Ok(Export::Disabled)
            ));
        }
        assert!(matches!(
            resolve(
                Some("http://c:4317"),
                None,
                &[("OTEL_SDK_DISABLED", "false")]
            ),
            Ok(Export::Otlp(_))
        ));
    }

    #[test]
    fn invalid_values_name_their_variable() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317");
        for (var, value) in [
            ("OTEL_SDK_DISABLED", "yes"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "5s"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "bad key=v"),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/c.pem"),
        ] {
            let error = resolve(None, None, &[endpoint, (var, value)]).unwrap_err();
            assert!(error.to_string().contains(var), "{var}: {error}");
        }
        let error = resolve(None, None, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4317")]).unwrap_err();
        assert!(error.to_string().contains("OTEL_EXPORTER_OTLP_ENDPOINT"));
    }
}
