//! mcp-authz: an Envoy ext_authz service for MCP (Model Context Protocol) traffic.
//!
//! Data flows one way: CheckRequest → ([`request`]) plain input → ([`check`]) server,
//! JSON-RPC calls ([`rpc`]) and caller ([`identity`]) → ([`decide`]) a [`decision::Decision`]
//! → ([`response`]) CheckResponse wire bytes. Everything up to the response is plain functions over
//! plain data; tonic, notify, arc-swap and OTLP export live only in the shell ([`service`],
//! [`ext_proc`], [`reload`], [`admin`], `audit::otlp`). List filtering reuses the same stages: a list
//! request's caller and server as a Check finds them, each entry decided as its call would be.
//!
//! Layout, one concept per module:
//! - [`policy`]: the policy model; `load` (files → YAML documents, revision), `yaml` (documents
//!   with lines), `validate` (every problem, `FILE:LINE`), `snapshot` (compiled, indexed),
//!   `timestamp` (RFC 3339 instants, read by the `time` crate).
//! - [`request`]: the CheckRequest as plain borrowed data (headers, body, claims, principal).
//! - [`rpc`]: JSON-RPC inspection: body limits, strict JSON, batches, ambiguity.
//! - [`uri`]: the canonical form resource URIs are matched in.
//! - [`identity`]: header | jwt | mtls → the caller and their session.
//! - [`decide`]: the decision for one call of a tool, prompt or resource (steps 1–9,
//!   monitor-mode grants), with what the grant steps found handed to a recorder.
//! - [`check`]: the whole Check: server selection, batches, service/server monitor mode.
//! - [`decision`]: the outcome and its evidence; reason codes.
//! - [`explain`]: the `check` command's report: the decision and its recorded evidence.
//! - [`replay`]: recorded decisions (audit lines, OTLP JSON, Jaeger JSON) re-decided against a
//!   candidate policy set: `read` (inputs), `keys` (record fields), `compare`, `report`.
//! - [`filter`]: list answers narrowed to what the caller may call (SPEC §7).
//! - [`ext_proc`]: the tonic ExternalProcessor service that filters list answers in Envoy.
//! - [`response`]: Decision → CheckResponse (headers, denied body, dynamic metadata), written
//!   straight to protobuf wire bytes.
//! - [`proto`], [`codec`]: generated ext_authz types and server, and the gRPC codecs.
//! - [`service`]: the tonic Authorization service, health, serving until shutdown, and the
//!   accepted connections (write buffering).
//! - [`tls`]: TLS on the service port (mutual TLS, certificate files re-read on change).
//! - [`reload`]: the policy store (arc-swap), swapped whole on every load; the file watcher.
//! - [`audit`]: the audit trail: the record of a Check or a filtered list (what was decided, on
//!   what input, in which trace), its attribute and line keys, `--audit-allowed` sampling, the
//!   bounded queue and the one worker; `line` writes the records as log lines, `otlp` builds
//!   spans and exports them over OTLP, both off the request path.
//! - [`otlp_config`]: the flags and the OpenTelemetry SDK environment resolved into typed
//!   export settings (pure), and the OTLP exporter built from them (TLS over rustls).
//! - [`metrics`], [`admin`]: Prometheus metrics and the `/metrics`, `/healthz`, `/ready` endpoint.
//! - [`logging`]: stderr output, with the audit trail's lines written in batches.
//! - [`settings`]: the command line and its `MCP_AUTHZ_*` variables.

#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod check;
pub mod codec;
pub mod decide;
pub mod decision;
pub mod explain;
pub mod ext_proc;
pub mod filter;
pub mod identity;
pub mod logging;
pub mod metrics;
pub mod otlp_config;
pub mod policy;
pub mod proto;
pub mod reload;
pub mod replay;
pub mod request;
pub mod response;
pub mod rpc;
pub mod service;
pub mod settings;
pub mod tls;
pub mod uri;
