//! The audit trail: one OpenTelemetry span per Check (SPEC §4), recorded in one place from the
//! Decision, exported over OTLP off the request path; or, with no endpoint, one log line.
//!
//! A Check only takes its [`AuditRecord`] and `try_send`s it into a bounded queue; a background
//! worker builds the spans, batches and exports them (or writes the lines). When the queue is
//! full (a slow or dead collector) the record is dropped and counted, so the collector can never
//! slow a Check down.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, SpanData, SpanEvents, SpanExporter, SpanLinks,
};
use prometheus_client::metrics::counter::Counter;

use crate::audit_line::{self, LineFormat};
use crate::decision::{Decision, Reason, ToolFacts, TrustFigures, Verdict};
use crate::logging::{AUDIT_TARGET, Output};
use crate::otlp_config::ExportConfig;
use crate::policy::{Mode, ObjectKey, Text, Trust};
use crate::request::CheckInput;

pub const SPAN_NAME: &str = "mcp.authz.check";
/// Spans waiting for export; beyond this they are dropped and counted.
pub const QUEUE_CAPACITY: usize = 8192;
const MAX_BATCH: usize = 512;
/// Records that probe a collector after a failed export.
const PROBE: usize = 64;
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(8);
pub(crate) const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
const REPORT_EVERY: Duration = Duration::from_secs(10);
/// How often the workers look at the queue.
const POLL: Duration = Duration::from_millis(20);

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

/// The request's strings an audit record reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestText {
    /// The caller's identity as resolved (the team may be the server's default).
    Human,
    Agent,
    Team,
    /// The session id as sent (mtls: the session's name).
    SessionId,
    /// The deciding JSON-RPC element's method, tool name and id.
    Method,
    Tool,
    RequestId,
    HttpMethod,
    Path,
}

impl RequestText {
    const COUNT: usize = 9;
}

/// [`RequestText`]s in one buffer: one allocation per Check whatever the request carries.
#[derive(Debug, Clone)]
struct RequestTexts {
    text: String,
    ranges: [Option<(u32, u32)>; RequestText::COUNT],
}

impl RequestTexts {
    /// `values` in the order of [`RequestText`].
    fn new(values: [Option<&str>; RequestText::COUNT]) -> Self {
        let mut texts = RequestTexts {
            text: String::with_capacity(values.iter().flatten().map(|v| v.len()).sum()),
            ranges: [None; RequestText::COUNT],
        };
        for (range, value) in texts.ranges.iter_mut().zip(values) {
            if let Some(value) = value {
                let start = texts.text.len() as u32;
                texts.text.push_str(value);
                *range = Some((start, texts.text.len() as u32));
            }
        }
        texts
    }

    fn get(&self, which: RequestText) -> Option<&str> {
        let (start, end) = self.ranges[which as usize]?;
        Some(&self.text[start as usize..end as usize])
    }
}

/// One Check as recorded: the evidence its span reports (SPEC §4), read from the Decision in
/// this one place. Kept compact, policy text shared and the request's text in one buffer, so
/// that recording costs a Check one allocation; the worker builds the span's attributes or the
/// log line from it, off the request path.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub started: SystemTime,
    pub ended: SystemTime,
    pub parent: Option<SpanContext>,
    /// The verdict applied.
    pub decision: Verdict,
    pub reason: Reason,
    pub would_deny: bool,
    pub mode: Mode,
    pub status_code: u16,
    pub revision: Option<Text>,
    pub policy_version: Option<Text>,
    pub grant: Option<Text>,
    pub session: Option<Text>,
    pub server: Option<ObjectKey>,
    pub tool: Option<ToolFacts>,
    pub trust: Option<TrustFigures>,
    texts: RequestTexts,
}

impl AuditRecord {
    /// The record of `decision` on `input`, with the times the Check started and ended.
    pub fn new(
        [started, ended]: [SystemTime; 2],
        grpc_traceparent: Option<&str>,
        input: &CheckInput,
        decision: &Decision,
    ) -> Self {
        let call = decision.call.as_ref();
        let caller = &decision.caller;
        AuditRecord {
            started,
            ended,
            parent: parent_context(grpc_traceparent, input, decision),
            decision: decision.applied(),
            reason: decision.reason,
            would_deny: decision.would_deny,
            mode: decision.mode,
            status_code: decision.http_status(),
            revision: decision.revision.cloned(),
            policy_version: decision.policy_version.cloned(),
            grant: decision.grant.map(|g| Text::clone(&g.grant.key.full)),
            session: decision.session.map(|s| Text::clone(&s.session.key.full)),
            server: decision.server.map(|s| s.server.key.clone()),
            tool: decision.tool,
            trust: decision.trust,
            texts: RequestTexts::new([
                caller.human.as_deref(),
                caller.agent.as_deref(),
                caller.team.as_deref(),
                decision.session_id.as_deref(),
                call.map(|c| c.method.as_ref()),
                call.and_then(|c| c.target_of(crate::policy::Primitive::Tool)),
                call.and_then(|c| c.id.as_deref()),
                Some(input.method),
                Some(input.path_only()),
            ]),
        }
    }

    pub fn text(&self, which: RequestText) -> Option<&str> {
        self.texts.get(which)
    }

    /// The tool's required trust: step 8's figure once it ran, else the inventory's.
    pub fn required_trust(&self) -> Option<Trust> {
        let tool = self.tool?;
        Some(self.trust.map_or(tool.required_trust, |t| t.required))
    }

    /// The span's attributes (SPEC §4).
    pub fn attributes(&self) -> Vec<KeyValue> {
        let mut out = Vec::with_capacity(28);
        let mut add = |key: &'static str, value: Value| out.push(KeyValue::new(key, value));
        let shared = |text: &Text| Value::from(Text::clone(text));
        add(attr::DECISION, self.decision.as_str().into());
        add(attr::REASON, self.reason.as_str().into());
        add(attr::WOULD_DENY, self.would_deny.into());
        if self.would_deny {
            add(attr::WOULD_DENY_REASON, self.reason.as_str().into());
        }
        add(attr::MODE, self.mode.as_str().into());
        add(attr::STATUS_CODE, i64::from(self.status_code).into());
        add(
            attr::POLICY_REVISION,
            self.revision.as_ref().map_or("".into(), shared),
        );
        for (key, text) in [
            (attr::POLICY_VERSION, &self.policy_version),
            (attr::MATCHED_GRANT, &self.grant),
            (attr::MATCHED_SESSION, &self.session),
        ] {
            if let Some(text) = text {
                add(key, shared(text));
            }
        }
        if let Some(trust) = self.trust {
            add(attr::ADMIN_TRUST, trust.admin.as_str().into());
            add(attr::CONSENTED_TRUST, trust.consented.as_str().into());
            add(attr::EFFECTIVE_TRUST, trust.effective.as_str().into());
        }
        if let (Some(tool), Some(required)) = (self.tool, self.required_trust()) {
            add(attr::REQUIRED_TRUST, required.as_str().into());
            add(
                attr::REQUIRED_SIDE_EFFECT,
                tool.side_effect.map_or("", |e| e.as_str()).into(),
            );
            if let Some(risk) = tool.risk_level {
                add(attr::RISK_LEVEL, risk.as_str().into());
            }
        }
        if let Some(server) = &self.server {
            add(attr::SERVER_NAME, shared(&server.name));
            add(attr::SERVER_NAMESPACE, shared(&server.namespace));
        }
        for (key, which) in [
            (attr::ENDUSER_ID, RequestText::Human),
            (attr::AGENT_ID, RequestText::Agent),
            (attr::TEAM_ID, RequestText::Team),
            (attr::SESSION_ID, RequestText::SessionId),
            (attr::METHOD_NAME, RequestText::Method),
            (attr::TOOL_NAME, RequestText::Tool),
            (attr::REQUEST_ID, RequestText::RequestId),
            (attr::HTTP_METHOD, RequestText::HttpMethod),
            (attr::URL_PATH, RequestText::Path),
        ] {
            if let Some(text) = self.text(which) {
                add(key, text.to_string().into());
            }
        }
        out
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
            attributes: self.attributes(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: SCOPE.clone(),
        }
    }
}

/// Where audit records go: a bounded queue in front of a background worker.
#[derive(Clone)]
pub struct Audit {
    queue: SyncSender<AuditRecord>,
    /// Records dropped because the queue was full (`mcp_authz_spans_dropped_total`).
    dropped: Counter,
}

impl Audit {
    /// Logs each decision as a text line instead of exporting it; the worker ends with the
    /// last `Audit`.
    pub fn log_only() -> std::io::Result<Self> {
        let (audit, worker) =
            Self::start_log(Counter::default(), Output::default(), LineFormat::default())?;
        // Detached: the worker thread ends when the last sender is gone.
        drop(worker);
        Ok(audit)
    }

    /// Logs each decision on a background thread, one `format` line each, written to `output`
    /// batch by batch; drops are counted in `dropped`.
    pub fn start_log(
        dropped: Counter,
        output: Output,
        format: LineFormat,
    ) -> std::io::Result<(Audit, AuditWorker)> {
        let (queue, records) = std::sync::mpsc::sync_channel(QUEUE_CAPACITY);
        let stop = Arc::new(AtomicBool::new(false));
        let (reporter, stopping) = (Reporter::new(dropped.clone()), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || log_worker(&records, &stopping, &output, format, reporter))?;
        let worker = AuditWorker {
            stop,
            thread: Some(thread),
        };
        Ok((Audit { queue, dropped }, worker))
    }

    /// Records one Check. Never blocks, never formats and never wakes the worker: the worker
    /// polls the queue.
    pub fn record(
        &self,
        times: [SystemTime; 2],
        grpc_traceparent: Option<&str>,
        input: &CheckInput,
        decision: &Decision,
    ) {
        let record = AuditRecord::new(times, grpc_traceparent, input, decision);
        if self.queue.try_send(record).is_err() {
            self.dropped.inc();
        }
    }
}

/// Moves up to `limit` queued records into `batch`; true once every `Audit` is gone.
fn drain(queue: &Receiver<AuditRecord>, batch: &mut Vec<AuditRecord>, limit: usize) -> bool {
    while batch.len() < limit {
        match queue.try_recv() {
            Ok(record) => batch.push(record),
            Err(TryRecvError::Empty) => return false,
            Err(TryRecvError::Disconnected) => return true,
        }
    }
    false
}

/// Writes queued records in batches, waking every [`POLL`] rather than once per record: on a
/// busy two-core machine a wake-up per Check costs more than the line itself.
fn log_worker(
    queue: &Receiver<AuditRecord>,
    stop: &AtomicBool,
    output: &Output,
    format: LineFormat,
    mut reporter: Reporter,
) {
    let (mut batch, mut text) = (Vec::new(), Vec::with_capacity(64 * 1024));
    loop {
        // Read before draining: every record sent before the stop is in the queue.
        let stopping = stop.load(Ordering::Acquire);
        let closed = drain(queue, &mut batch, usize::MAX);
        // Audit lines are info events of their own target, so RUST_LOG=warn silences them.
        if tracing::enabled!(target: AUDIT_TARGET, tracing::Level::INFO) {
            for record in &batch {
                audit_line::write(record, format, &mut text);
            }
            if !text.is_empty() {
                output.write_all(&text);
                text.clear();
            }
        }
        batch.clear();
        reporter.report(stopping || closed);
        if stopping || closed {
            return;
        }
        std::thread::sleep(POLL);
    }
}

/// Says in the log, at most every [`REPORT_EVERY`], how many records were dropped or could not
/// be exported since it last said so.
struct Reporter {
    dropped: Counter,
    reported_drops: u64,
    failures: u64,
    last: Instant,
}

impl Reporter {
    fn new(dropped: Counter) -> Self {
        Reporter {
            dropped,
            reported_drops: 0,
            failures: 0,
            last: Instant::now(),
        }
    }

    fn report(&mut self, now: bool) {
        if !now && self.last.elapsed() < REPORT_EVERY {
            return;
        }
        let drops = self.dropped.get();
        if drops > self.reported_drops {
            tracing::warn!(
                dropped = drops - self.reported_drops,
                total = drops,
                "audit records dropped: the queue was full"
            );
            self.reported_drops = drops;
        }
        if self.failures > 0 {
            tracing::warn!(spans = self.failures, "audit spans could not be exported");
            self.failures = 0;
        }
        self.last = Instant::now();
    }
}

static SCOPE: std::sync::LazyLock<InstrumentationScope> = std::sync::LazyLock::new(|| {
    InstrumentationScope::builder("mcp-authz")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
});

/// The audit worker; `shutdown` writes or exports what is queued and waits for it.
pub struct AuditWorker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AuditWorker {
    /// Starts exporting on a thread of its own (its own single-threaded runtime), so encoding
    /// and sending batches never occupies a thread that answers Checks. Drops are counted in
    /// `dropped`.
    pub fn start(config: &ExportConfig, dropped: Counter) -> Result<(Audit, AuditWorker), String> {
        let (queue, records) = std::sync::mpsc::sync_channel(QUEUE_CAPACITY);
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (config, reporter) = (config.clone(), Reporter::new(dropped.clone()));
        let stopping = Arc::clone(&stop);
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
                    match crate::otlp_config::build_exporter(&config).map_err(|e| e.to_string()) {
                        Ok(exporter) => {
                            let _ = ready_tx.send(Ok(()));
                            export_loop(&records, &stopping, &exporter, reporter).await;
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
        let worker = AuditWorker {
            stop,
            thread: Some(thread),
        };
        Ok((Audit { queue, dropped }, worker))
    }

    /// Exports or writes what is queued (call it once no Check is left), then stops.
    pub async fn shutdown(self, timeout: Duration) {
        self.stop.store(true, Ordering::Release);
        let thread = self.thread;
        let join = tokio::task::spawn_blocking(move || thread.map(std::thread::JoinHandle::join));
        if tokio::time::timeout(timeout, join).await.is_err() {
            tracing::warn!("audit records not flushed within {timeout:?}");
        }
    }
}

/// Exports what is queued every [`POLL`], in batches of up to [`MAX_BATCH`].
///
/// After a failed export the queue is left alone: records wait there (what does not fit is
/// dropped and counted) while one small batch probes the collector after a pause that doubles
/// from [`RETRY_MIN`] to [`RETRY_MAX`]. A dead collector thus costs no CPU beyond the probes.
async fn export_loop(
    queue: &Receiver<AuditRecord>,
    stop: &AtomicBool,
    exporter: &opentelemetry_otlp::SpanExporter,
    mut reporter: Reporter,
) {
    let ids = RandomIdGenerator::default();
    let mut batch = Vec::new();
    // After a failure: when to probe again, and the pause taken.
    let mut retry: Option<(Instant, Duration)> = None;
    loop {
        let stopping = stop.load(Ordering::Acquire);
        if stopping || retry.is_none_or(|(at, _)| Instant::now() >= at) {
            let probing = retry.is_some() && !stopping;
            let closed = drain(queue, &mut batch, if probing { PROBE } else { usize::MAX });
            if !batch.is_empty() {
                match export(exporter, &ids, &mut batch, &mut reporter).await {
                    Ok(()) => {
                        if retry.take().is_some() {
                            tracing::info!("exporting audit spans again");
                        }
                    }
                    Err(e) => {
                        let pause = retry.map_or(RETRY_MIN, |(_, p)| (p * 2).min(RETRY_MAX));
                        if retry.is_none() {
                            tracing::warn!(
                                error = %e,
                                "cannot export audit spans: records wait in the queue, and what does not fit is dropped, until the collector answers"
                            );
                        }
                        retry = Some((Instant::now() + pause, pause));
                    }
                }
            }
            if stopping || closed {
                reporter.report(true);
                return;
            }
        }
        reporter.report(false);
        tokio::time::sleep(POLL).await;
    }
}

/// Exports `batch` as spans, [`MAX_BATCH`] at a time; after a failure the rest is not tried.
/// Spans not exported are counted in `reporter`.
async fn export(
    exporter: &opentelemetry_otlp::SpanExporter,
    ids: &RandomIdGenerator,
    batch: &mut Vec<AuditRecord>,
    reporter: &mut Reporter,
) -> Result<(), String> {
    while !batch.is_empty() {
        let rest = batch.split_off(batch.len().min(MAX_BATCH));
        let records = std::mem::replace(batch, rest);
        let spans: Vec<SpanData> = records.into_iter().map(|r| r.into_span(ids)).collect();
        let count = spans.len() as u64;
        let failure = match tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(spans)).await {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {EXPORT_TIMEOUT:?}"),
        };
        reporter.failures += count + batch.len() as u64;
        batch.clear();
        return Err(failure);
    }
    Ok(())
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
        let (queue, _records) = std::sync::mpsc::sync_channel(2);
        let audit = Audit {
            queue,
            dropped: Counter::default(),
        };
        let decision = Decision::bare(
            crate::decision::Verdict::Deny,
            crate::decision::Reason::UnknownServer,
        );
        let input = CheckInput::default();
        for _ in 0..5 {
            audit.record([SystemTime::now(); 2], None, &input, &decision);
        }
        assert_eq!(audit.dropped.get(), 3);
    }
}
