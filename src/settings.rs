//! The command line: flags, their `MCP_AUTHZ_*` variables, and what they mean.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

use crate::policy::Timestamp;
use crate::policy::{Mode, Primitive};

#[derive(Debug, Parser)]
#[command(
    name = "mcp-authz",
    version,
    about = "Envoy ext_authz service for MCP traffic"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve envoy.service.auth.v3.Authorization/Check over gRPC.
    Serve(ServeArgs),
    /// Validate policy files and directories as one set.
    Validate {
        /// Directories (read recursively) and files.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Explain the decision for one call of a tool, prompt or resource, as JSON (exit 0 allowed,
    /// 1 denied, 3 would-deny).
    Check(CheckArgs),
    /// Decide recorded decisions again against a candidate policy set and report what changes.
    Replay(ReplayArgs),
}

/// `replay` (SPEC §8).
#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// The candidate policy set (directory or file).
    #[arg(long)]
    pub policy_dir: PathBuf,
    /// Compare with the records decided against this policy set instead of as recorded.
    #[arg(long, value_name = "CURRENT")]
    pub against: Option<PathBuf>,
    /// Treat this monitor grant or server of the candidate (`namespace/name`), or `all`, as
    /// enforce; repeatable.
    #[arg(long, value_name = "NS/NAME|all")]
    pub enforce: Vec<String>,
    /// The service mode the records are decided in.
    #[arg(long, value_enum, default_value = "enforce")]
    pub mode: ServiceMode,
    #[arg(long, value_enum, default_value = "text")]
    pub format: ReportFormat,
    /// Exit 4 when a change of this kind is found.
    #[arg(long, value_enum)]
    pub fail_on: Option<FailOn>,
    /// Audit lines, OTLP JSON or Jaeger JSON, gzip or not; `-` is standard input.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}

/// Which changes fail a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    Any,
    Tighten,
    Loosen,
}

/// The caller's identity as resolved, whatever the server's auth mode, and exactly one target.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["tool", "prompt", "resource"])))]
pub struct CheckArgs {
    #[arg(long, env = "MCP_AUTHZ_POLICY_DIR")]
    pub policy_dir: PathBuf,
    /// `namespace/name` (or a name only one server has).
    #[arg(long)]
    pub server: String,
    #[arg(long)]
    pub human: Option<String>,
    #[arg(long)]
    pub agent: Option<String>,
    #[arg(long)]
    pub team: Option<String>,
    /// The MCPAgentSession name the caller sends.
    #[arg(long)]
    pub session: Option<String>,
    /// The tool called (`tools/call`).
    #[arg(long)]
    pub tool: Option<String>,
    /// The prompt got (`prompts/get`), decided as if the server governed prompts.
    #[arg(long)]
    pub prompt: Option<String>,
    /// The resource URI read (`resources/read`), decided as if the server governed resources.
    #[arg(long)]
    pub resource: Option<String>,
    /// Evaluation time (RFC 3339); default now.
    #[arg(long, value_parser = parse_time)]
    pub now: Option<Timestamp>,
    #[arg(long, value_enum, default_value = "enforce")]
    pub mode: ServiceMode,
}

impl CheckArgs {
    /// The call's primitive and target, as given.
    pub fn target(&self) -> (Primitive, &str) {
        [
            (Primitive::Tool, &self.tool),
            (Primitive::Prompt, &self.prompt),
            (Primitive::Resource, &self.resource),
        ]
        .into_iter()
        .find_map(|(primitive, name)| Some((primitive, name.as_deref()?)))
        // The `target` group requires one; clap has rejected the arguments otherwise.
        .unwrap_or((Primitive::Tool, ""))
    }
}

fn parse_time(value: &str) -> Result<Timestamp, String> {
    Timestamp::parse_rfc3339(value).map_err(|e| e.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServiceMode {
    Enforce,
    Monitor,
}

impl From<ServiceMode> for Mode {
    fn from(mode: ServiceMode) -> Mode {
        match mode {
            ServiceMode::Enforce => Mode::Enforce,
            ServiceMode::Monitor => Mode::Monitor,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OtlpProtocol {
    #[value(name = "grpc")]
    Grpc,
    #[value(name = "http/protobuf")]
    HttpProtobuf,
}

impl From<OtlpProtocol> for crate::otlp_config::Protocol {
    fn from(protocol: OtlpProtocol) -> Self {
        match protocol {
            OtlpProtocol::Grpc => Self::Grpc,
            OtlpProtocol::HttpProtobuf => Self::HttpProtobuf,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `ADDR` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminListen {
    Off,
    On(SocketAddr),
}

fn parse_admin_listen(value: &str) -> Result<AdminListen, String> {
    if value.eq_ignore_ascii_case("off") {
        return Ok(AdminListen::Off);
    }
    value
        .parse()
        .map(AdminListen::On)
        .map_err(|e| format!("`{value}` is neither `off` nor an address: {e}"))
}

impl ServeArgs {
    /// The service port's certificate files, when TLS is asked for.
    pub fn tls_files(&self) -> Option<crate::tls::TlsFiles> {
        Some(crate::tls::TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Directory of policy files (read recursively).
    #[arg(long, env = "MCP_AUTHZ_POLICY_DIR")]
    pub policy_dir: PathBuf,
    /// gRPC listen address (Check and health).
    #[arg(long, env = "MCP_AUTHZ_LISTEN", default_value = "0.0.0.0:9191")]
    pub listen: SocketAddr,
    /// `monitor` lets every denial through as a would-deny.
    #[arg(long, env = "MCP_AUTHZ_MODE", value_enum, default_value = "enforce")]
    pub mode: ServiceMode,
    /// OTLP endpoint for audit spans (else OTEL_EXPORTER_OTLP_ENDPOINT).
    #[arg(long, env = "MCP_AUTHZ_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// OTLP protocol (else OTEL_EXPORTER_OTLP_PROTOCOL, else grpc).
    #[arg(long, env = "MCP_AUTHZ_OTLP_PROTOCOL", value_enum)]
    pub otlp_protocol: Option<OtlpProtocol>,
    /// Largest request body inspected, in bytes; a larger one is denied.
    #[arg(long, env = "MCP_AUTHZ_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Log lines (and, without an OTLP endpoint, the audit trail) as text or JSON lines.
    #[arg(long, env = "MCP_AUTHZ_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Serve the gRPC port over TLS with this certificate chain (PEM); re-read when it changes.
    #[arg(
        long,
        env = "MCP_AUTHZ_TLS_CERT",
        requires = "tls_key",
        value_name = "FILE"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM).
    #[arg(
        long,
        env = "MCP_AUTHZ_TLS_KEY",
        requires = "tls_cert",
        value_name = "FILE"
    )]
    pub tls_key: Option<PathBuf>,
    /// Require a client certificate signed by this CA (PEM): mutual TLS from Envoy.
    #[arg(
        long,
        env = "MCP_AUTHZ_TLS_CLIENT_CA",
        requires = "tls_cert",
        value_name = "FILE"
    )]
    pub tls_client_ca: Option<PathBuf>,
    /// Plain-HTTP address for /metrics, /healthz and /ready, or `off`.
    #[arg(long, env = "MCP_AUTHZ_ADMIN_LISTEN", default_value = "0.0.0.0:9464", value_parser = parse_admin_listen)]
    pub admin_listen: AdminListen,
    /// The fraction (0 to 1) of allowed decisions kept in the audit trail, chosen by trace id;
    /// denials and would-denies are always kept.
    #[arg(long, env = "MCP_AUTHZ_AUDIT_ALLOWED", value_name = "RATIO", default_value_t = 1.0, value_parser = parse_ratio)]
    pub audit_allowed: f64,
}

/// A number from 0 to 1.
fn parse_ratio(value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err(format!("`{value}` is not a number from 0 to 1")),
    }
}
