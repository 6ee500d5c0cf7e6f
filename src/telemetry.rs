//! The audit trail: one OpenTelemetry span per Check (SPEC §4), built in one place from the
//! Decision, exported over OTLP off the request path; or, with no endpoint, one log line.
//!
//! A Check only builds the span's data and `try_send`s it into a bounded queue; a background
//! task batches and exports. When the queue is full (a slow or dead collector) the span is
//! dropped and counted, so the collector can never slow a Check down.

use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, SpanData, SpanEvents, SpanExporter, SpanLinks,
};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, watch};

use crate::decision::Decision;
use crate::logging::{AUDIT_TARGET, Output};
use crate::request::CheckInput;
use crate::settings::OtlpProtocol;

pub const SPAN_NAME: &str = "mcp.authz.check";
/// Spans waiting for export; beyond this they are dropped and counted.
pub const QUEUE_CAPACITY: usize = 8192;
const MAX_BATCH: usize = 512;
const BATCH_WAIT: Duration = Duration::from_millis(200);
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
const REPORT_EVERY: Duration = Duration::from_secs(10);
const LOG_POLL: Duration = Duration::from_millis(20);

/// Attribute keys (SPEC §4).
pub mod attr {
    pub const DECISION: &str = "mcp.authz.decision";
    pub const REASON: &str = "mcp.authz.reason";
    pub const WOULD_DENY: &str = "mcp.authz.would_deny";
    pub const WOULD_DENY_REASON: &str = "mcp.authz.would_deny_reason";
    pub const MODE: &str = "mcp.authz.mode";
    pub const STATUS_CODE: &str = "mcp.authz.status_code";
    pub const POLICY_REVISION: &str = "mcp.authz.policy_revision";
    pub const POLICY_VERSION: &str = "mcp.authz.policy_version";
    pub const MATCHED_GRANT: &str = "mcp.authz.matched_grant";
    pub const MATCHED_SESSION: &str = "mcp.authz.matched_session";
    pub const REQUIRED_TRUST: &str = "mcp.authz.required_trust";
    pub const ADMIN_TRUST: &str = "mcp.authz.admin_trust";
    pub const CONSENTED_TRUST: &str = "mcp.authz.consented_trust";
    pub const EFFECTIVE_TRUST: &str = "mcp.authz.effective_trust";
    pub const REQUIRED_SIDE_EFFECT: &str = "mcp.authz.required_side_effect";
    pub const RISK_LEVEL: &str = "mcp.authz.risk_level";
    pub const SERVER_NAME: &str = "mcp.server.name";
    pub const SERVER_NAMESPACE: &str = "mcp.server.namespace";
    pub const ENDUSER_ID: &str = "enduser.id";
    pub const AGENT_ID: &str = "mcp.subject.agent_id";
    pub const TEAM_ID: &str = "mcp.subject.team_id";
    pub const SESSION_ID: &str = "mcp.session.id";
    pub const METHOD_NAME: &str = "mcp.method.name";
    pub const TOOL_NAME: &str = "gen_ai.tool.name";
    pub const REQUEST_ID: &str = "jsonrpc.request.id";
    pub const HTTP_METHOD: &str = "http.request.method";
    pub const URL_PATH: &str = "url.path";
}

/// A W3C `traceparent`: `version-traceid-spanid-flags`. Invalid → `None`.
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let value = value.trim();
    let mut parts = value.splitn(5, '-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let span_id = parts.next()?;
    let flags = parts.next()?;
    let rest = parts.next();
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    if !hex(version, 2) || version == "ff" || !hex(trace_id, 32) || !hex(span_id, 16) {
        return None;
    }
    // Version 00 has exactly four fields; later versions may append more.
    if !hex(flags, 2) || (version == "00" && rest.is_some()) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace_id).ok()?;
    let span_id = SpanId::from_hex(span_id).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    ))
}

/// The parent: the Check call's own `traceparent`, then the checked request's, then
/// `params._meta.traceparent` of the deciding message; the first valid one wins.
pub fn parent_context(
    grpc_traceparent: Option<&str>,
    input: &CheckInput,
    decision: &Decision,
) -> Option<SpanContext> {
    grpc_traceparent
        .and_then(parse_traceparent)
        .or_else(|| {
            input
                .headers
                .get("traceparent")
                .as_deref()
                .and_then(parse_traceparent)
        })
        .or_else(|| {
            decision
                .call
                .as_ref()
                .and_then(|c| c.traceparent.as_deref())
                .and_then(parse_traceparent)
        })
}

/// The span's attributes, every one read from the decision (SPEC §4).
pub fn attributes(decision: &Decision, input: &CheckInput) -> Vec<KeyValue> {
    let mut out = Vec::with_capacity(28);
    let s = |v: &str| Value::String(v.to_string().into());
    out.push(KeyValue::new(attr::DECISION, decision.applied().as_str()));
    out.push(KeyValue::new(attr::REASON, decision.reason.as_str()));
    out.push(KeyValue::new(attr::WOULD_DENY, decision.would_deny));
    if decision.would_deny {
        out.push(KeyValue::new(
            attr::WOULD_DENY_REASON,
            decision.reason.as_str(),
        ));
    }
    out.push(KeyValue::new(attr::MODE, decision.mode.as_str()));
    out.push(KeyValue::new(
        attr::STATUS_CODE,
        i64::from(decision.http_status()),
    ));
    out.push(KeyValue::new(
        attr::POLICY_REVISION,
        s(decision.revision.unwrap_or_default()),
    ));
    let mut optional = |key: &'static str, value: Option<&str>| {
        if let Some(value) = value {
            out.push(KeyValue::new(key, s(value)));
        }
    };
    optional(attr::POLICY_VERSION, decision.policy_version);
    optional(attr::MATCHED_GRANT, decision.grant_key());
    optional(attr::MATCHED_SESSION, decision.session_key());
    if let Some(trust) = decision.trust {
        optional(attr::ADMIN_TRUST, Some(trust.admin.as_str()));
        optional(attr::CONSENTED_TRUST, Some(trust.consented.as_str()));
        optional(attr::EFFECTIVE_TRUST, Some(trust.effective.as_str()));
    }
    if let Some(tool) = decision.tool {
        let required = decision.trust.map_or(tool.required_trust, |t| t.required);
        optional(attr::REQUIRED_TRUST, Some(required.as_str()));
        optional(
            attr::REQUIRED_SIDE_EFFECT,
            Some(tool.side_effect.map_or("", |e| e.as_str())),
        );
        optional(attr::RISK_LEVEL, tool.risk_level.map(|r| r.as_str()));
    }
    if let Some(server) = decision.server {
        optional(attr::SERVER_NAME, Some(&server.server.key.name));
        optional(attr::SERVER_NAMESPACE, Some(&server.server.key.namespace));
    }
    optional(attr::ENDUSER_ID, decision.caller.human.as_deref());
    optional(attr::AGENT_ID, decision.caller.agent.as_deref());
    optional(attr::TEAM_ID, decision.caller.team.as_deref());
    optional(attr::SESSION_ID, decision.session_id.as_deref());
    if let Some(call) = &decision.call {
        optional(attr::METHOD_NAME, Some(&call.method));
        optional(attr::TOOL_NAME, call.tool.as_deref());
        optional(attr::REQUEST_ID, call.id.as_deref());
    }
    optional(attr::HTTP_METHOD, Some(input.method));
    optional(attr::URL_PATH, Some(input.path_only()));
    out
}

/// One Check as recorded: the span's times, parent and attributes. Built on the request path
/// (no formatting, no I/O); rendered as a span or a log line by a background worker.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub started: SystemTime,
    pub ended: SystemTime,
    pub parent: Option<SpanContext>,
    pub attributes: Vec<KeyValue>,
}

impl AuditRecord {
    pub fn new(
        started: SystemTime,
        grpc_traceparent: Option<&str>,
        input: &CheckInput,
        decision: &Decision,
    ) -> Self {
        AuditRecord {
            started,
            ended: SystemTime::now(),
            parent: parent_context(grpc_traceparent, input, decision),
            attributes: attributes(decision, input),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    /// The span: a child of the parent when there is one, else the root of a new trace.
    pub fn into_span(self, ids: &RandomIdGenerator) -> SpanData {
        let trace_id = self
            .parent
            .as_ref()
            .map_or_else(|| ids.new_trace_id(), |p| p.trace_id());
        SpanData {
            // Audit spans are exported whatever the parent's sampled flag says.
            span_context: SpanContext::new(
                trace_id,
                ids.new_span_id(),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: self
                .parent
                .as_ref()
                .map_or(SpanId::INVALID, |p| p.span_id()),
            parent_span_is_remote: self.parent.is_some(),
            span_kind: SpanKind::Server,
            name: SPAN_NAME.into(),
            start_time: self.started,
            end_time: self.ended,
            attributes: self.attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: SCOPE.clone(),
        }
    }

    /// The record as one structured log line.
    pub fn log(&self) {
        let text = |key| self.get(key).map(Value::as_str);
        let server = match (text(attr::SERVER_NAMESPACE), text(attr::SERVER_NAME)) {
            (Some(ns), Some(name)) => Some(format!("{ns}/{name}")),
            _ => None,
        };
        let would_deny = matches!(self.get(attr::WOULD_DENY), Some(Value::Bool(true)));
        tracing::info!(
            target: AUDIT_TARGET,
            decision = text(attr::DECISION).as_deref(),
            reason = text(attr::REASON).as_deref(),
            would_deny,
            mode = text(attr::MODE).as_deref(),
            status_code = text(attr::STATUS_CODE).as_deref(),
            server = server.as_deref(),
            grant = text(attr::MATCHED_GRANT).as_deref(),
            session = text(attr::MATCHED_SESSION).as_deref(),
            human = text(attr::ENDUSER_ID).as_deref(),
            agent = text(attr::AGENT_ID).as_deref(),
            team = text(attr::TEAM_ID).as_deref(),
            session_id = text(attr::SESSION_ID).as_deref(),
            method = text(attr::METHOD_NAME).as_deref(),
            tool = text(attr::TOOL_NAME).as_deref(),
            request_id = text(attr::REQUEST_ID).as_deref(),
            http_method = text(attr::HTTP_METHOD).as_deref(),
            path = text(attr::URL_PATH).as_deref(),
            policy_revision = text(attr::POLICY_REVISION).as_deref(),
            "decision"
        );
    }
}

/// Where audit records go: a bounded queue in front of a background worker.
#[derive(Clone)]
pub struct Audit {
    sink: Sink,
    /// Records dropped because the queue was full (`mcp_authz_spans_dropped_total`).
    dropped: Counter,
}

#[derive(Clone)]
enum Sink {
    /// No endpoint: a thread writes one structured log line per decision.
    Log(std::sync::mpsc::SyncSender<Option<AuditRecord>>),
    Export(mpsc::Sender<AuditRecord>),
}

impl Audit {
    /// Logs each decision instead of exporting it; the worker ends with the last `Audit`.
    pub fn log_only() -> Self {
        let (audit, exporter) = Self::start_log(Counter::default(), Output::default());
        // Detached: the worker thread ends when the last sender is gone.
        drop(exporter.stop);
        audit
    }

    /// Logs each decision on a background thread, flushing `output` after each batch; drops
    /// are counted in `dropped`.
    pub fn start_log(dropped: Counter, output: Output) -> (Audit, AuditWorker) {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Option<AuditRecord>>(QUEUE_CAPACITY);
        let thread = std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || log_worker(&rx, &output))
            .ok();
        let audit = Audit {
            sink: Sink::Log(tx.clone()),
            dropped,
        };
        (
            audit,
            AuditWorker {
                stop: Stop::Thread { tx, thread },
            },
        )
    }

    /// Records one Check. Never blocks and never formats: the worker does.
    pub fn record(
        &self,
        started: SystemTime,
        grpc_traceparent: Option<&str>,
        input: &CheckInput,
        decision: &Decision,
    ) {
        let record = AuditRecord::new(started, grpc_traceparent, input, decision);
        let sent = match &self.sink {
            Sink::Log(queue) => queue.try_send(Some(record)).is_ok(),
            Sink::Export(queue) => queue.try_send(record).is_ok(),
        };
        if !sent {
            self.dropped.inc();
        }
    }
}

/// Writes queued records in batches, waking every [`LOG_POLL`] rather than once per record:
/// on a busy two-core machine a wake-up per Check costs more than the line itself.
fn log_worker(queue: &std::sync::mpsc::Receiver<Option<AuditRecord>>, output: &Output) {
    use std::sync::mpsc::TryRecvError;
    loop {
        loop {
            match queue.try_recv() {
                Ok(Some(record)) => record.log(),
                Ok(None) | Err(TryRecvError::Disconnected) => {
                    output.flush();
                    return;
                }
                Err(TryRecvError::Empty) => break,
            }
        }
        output.flush();
        std::thread::sleep(LOG_POLL);
    }
}

static SCOPE: std::sync::LazyLock<InstrumentationScope> = std::sync::LazyLock::new(|| {
    InstrumentationScope::builder("mcp-authz")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
});

/// Where and how to export.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    pub service_name: String,
}

impl ExportConfig {
    /// From the flags, else the OpenTelemetry environment variables; `None` without an endpoint.
    pub fn resolve(
        endpoint: Option<&str>,
        protocol: Option<OtlpProtocol>,
    ) -> Result<Option<Self>, String> {
        let env = |name| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let Some(endpoint) = endpoint
            .map(str::to_string)
            .filter(|e| !e.trim().is_empty())
            .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"))
        else {
            return Ok(None);
        };
        let protocol = match protocol {
            Some(p) => p,
            None => match env("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
                None | Some("grpc") => OtlpProtocol::Grpc,
                Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
                Some(other) => {
                    return Err(format!(
                        "OTEL_EXPORTER_OTLP_PROTOCOL `{other}` is not `grpc` or `http/protobuf`"
                    ));
                }
            },
        };
        Ok(Some(ExportConfig {
            endpoint,
            protocol,
            service_name: env("OTEL_SERVICE_NAME").unwrap_or_else(|| "mcp-authz".into()),
        }))
    }

    /// The URL the exporter posts to: for http/protobuf, `/v1/traces` is appended to a base URL.
    pub fn url(&self) -> String {
        let base = self.endpoint.trim();
        match self.protocol {
            OtlpProtocol::Grpc => base.to_string(),
            OtlpProtocol::HttpProtobuf if base.ends_with("/v1/traces") => base.to_string(),
            OtlpProtocol::HttpProtobuf => format!("{}/v1/traces", base.trim_end_matches('/')),
        }
    }
}

/// The audit worker; `shutdown` writes or exports what is queued and waits for it.
pub struct AuditWorker {
    stop: Stop,
}

enum Stop {
    Task {
        stop: watch::Sender<bool>,
        thread: Option<std::thread::JoinHandle<()>>,
    },
    Thread {
        tx: std::sync::mpsc::SyncSender<Option<AuditRecord>>,
        thread: Option<std::thread::JoinHandle<()>>,
    },
}

impl AuditWorker {
    /// Starts exporting on a thread of its own (its own single-threaded runtime), so encoding
    /// and sending batches never occupies a thread that answers Checks. Drops are counted in
    /// `dropped`.
    pub fn start(config: &ExportConfig, dropped: Counter) -> Result<(Audit, AuditWorker), String> {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let (stop, stopped) = watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (config, counter) = (config.clone(), dropped.clone());
        let thread = std::thread::Builder::new()
            .name("audit-export".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("cannot start the export runtime: {e}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match build_exporter(&config) {
                        Ok(exporter) => {
                            let _ = ready_tx.send(Ok(()));
                            export_loop(rx, exporter, stopped, counter).await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            })
            .map_err(|e| format!("cannot start the export thread: {e}"))?;
        ready_rx
            .recv()
            .map_err(|_| "the export thread ended before it started".to_string())??;
        let audit = Audit {
            sink: Sink::Export(tx),
            dropped,
        };
        Ok((
            audit,
            AuditWorker {
                stop: Stop::Task {
                    stop,
                    thread: Some(thread),
                },
            },
        ))
    }

    /// Exports or writes what is queued, then stops.
    pub async fn shutdown(self, timeout: Duration) {
        let finished = match self.stop {
            Stop::Task { stop, thread } => {
                let _ = stop.send(true);
                let join =
                    tokio::task::spawn_blocking(move || thread.map(std::thread::JoinHandle::join));
                tokio::time::timeout(timeout, join).await.is_ok()
            }
            Stop::Thread { tx, thread } => {
                let join = tokio::task::spawn_blocking(move || {
                    let _ = tx.send(None);
                    thread.map(std::thread::JoinHandle::join)
                });
                tokio::time::timeout(timeout, join).await.is_ok()
            }
        };
        if !finished {
            tracing::warn!("audit records not flushed within {timeout:?}");
        }
    }
}

fn build_exporter(config: &ExportConfig) -> Result<opentelemetry_otlp::SpanExporter, String> {
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let mut exporter = match config.protocol {
        OtlpProtocol::Grpc => builder
            .with_tonic()
            .with_endpoint(config.url())
            .with_timeout(EXPORT_TIMEOUT)
            .build(),
        OtlpProtocol::HttpProtobuf => builder
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(config.url())
            .with_timeout(EXPORT_TIMEOUT)
            .build(),
    }
    .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
    exporter.set_resource(
        &Resource::builder_empty()
            .with_service_name(config.service_name.clone())
            .build(),
    );
    Ok(exporter)
}

async fn export_loop(
    mut queue: mpsc::Receiver<AuditRecord>,
    exporter: opentelemetry_otlp::SpanExporter,
    mut stop: watch::Receiver<bool>,
    dropped: Counter,
) {
    let ids = RandomIdGenerator::default();
    let mut reported_drops = 0;
    let mut last_report = tokio::time::Instant::now();
    let mut failures = 0u64;
    loop {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let stopping = tokio::select! {
            span = queue.recv() => match span {
                Some(span) => { batch.push(span); false }
                None => true,
            },
            _ = stop.changed() => true,
        };
        if stopping {
            while let Ok(span) = queue.try_recv() {
                batch.push(span);
            }
        } else {
            let deadline = tokio::time::Instant::now() + BATCH_WAIT;
            while batch.len() < MAX_BATCH {
                tokio::select! {
                    span = queue.recv() => match span {
                        Some(span) => batch.push(span),
                        None => break,
                    },
                    () = tokio::time::sleep_until(deadline) => break,
                }
            }
        }
        while !batch.is_empty() {
            let rest = batch.split_off(batch.len().min(MAX_BATCH));
            let spans: Vec<SpanData> = batch.into_iter().map(|r| r.into_span(&ids)).collect();
            let count = spans.len() as u64;
            let outcome = tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(spans)).await;
            if !matches!(outcome, Ok(Ok(()))) {
                failures += count;
            }
            batch = rest;
        }
        let drops = dropped.get();
        if stopping || last_report.elapsed() >= REPORT_EVERY {
            if drops > reported_drops {
                tracing::warn!(
                    dropped = drops - reported_drops,
                    total = drops,
                    "audit spans dropped: the export queue was full"
                );
                reported_drops = drops;
            }
            if failures > 0 {
                tracing::warn!(spans = failures, "audit spans could not be exported");
                failures = 0;
            }
            last_report = tokio::time::Instant::now();
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents() {
        let ok =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(
            ok.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(ok.span_id().to_string(), "00f067aa0ba902b7");
        assert!(ok.is_sampled());
        let unsampled =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!unsampled.is_sampled());
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra")
                .is_some()
        );
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (tx, _rx) = mpsc::channel(2);
        let audit = Audit {
            sink: Sink::Export(tx),
            dropped: Counter::default(),
        };
        let decision = Decision::bare(
            crate::decision::Verdict::Deny,
            crate::decision::Reason::UnknownServer,
        );
        let input = CheckInput::default();
        for _ in 0..5 {
            audit.record(SystemTime::now(), None, &input, &decision);
        }
        assert_eq!(audit.dropped.get(), 3);
    }

    #[test]
    fn export_urls() {
        let config = |endpoint: &str, protocol| ExportConfig {
            endpoint: endpoint.into(),
            protocol,
            service_name: "mcp-authz".into(),
        };
        assert_eq!(
            config("http://j:4317", OtlpProtocol::Grpc).url(),
            "http://j:4317"
        );
        assert_eq!(
            config("http://j:4318/", OtlpProtocol::HttpProtobuf).url(),
            "http://j:4318/v1/traces"
        );
        assert_eq!(
            config("http://j:4318/v1/traces", OtlpProtocol::HttpProtobuf).url(),
            "http://j:4318/v1/traces"
        );
    }
}
