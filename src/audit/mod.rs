//! The audit trail (SPEC §4, §4b, §7): what was decided and on what input, recorded once.
//!
//! A Check (or a filtered list) only builds its compact record and `try_send`s it into a
//! bounded queue; one background worker drains the queue into a [`Sink`]: [`line`] writes log
//! lines, [`otlp`] builds spans and exports them. When the queue is full (a slow or dead
//! collector) the record is dropped and counted, so the audit trail can never slow a Check.
//! The record is also what `replay` reads back, under the keys defined here.

pub mod line;
pub mod otlp;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use prometheus_client::metrics::counter::Counter;

use crate::decision::{CallInfo, Decision, Reason, ToolFacts, TrustFigures, Verdict};
use crate::policy::{AuthMode, Mode, ObjectKey, Primitive, Text, Trust};
use crate::request::CheckInput;

pub const SPAN_NAME: &str = "mcp.authz.check";
/// The span of a filtered list (SPEC §7).
pub const FILTER_SPAN_NAME: &str = "mcp.authz.filter";
/// Records waiting for the worker; beyond this they are dropped and counted.
pub const QUEUE_CAPACITY: usize = 8192;
/// Records that probe a failed sink again.
const PROBE: usize = 64;
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(8);
const REPORT_EVERY: Duration = Duration::from_secs(10);
/// How often the worker looks at the queue.
const POLL: Duration = Duration::from_millis(20);

/// Why the audit trail could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot start the audit thread: {0}")]
    Thread(std::io::Error),
    #[error("cannot start the export runtime: {0}")]
    Runtime(std::io::Error),
    #[error("the audit thread ended before it started")]
    Ended,
    /// The export configuration or the exporter (OTLP).
    #[error("{0}")]
    Export(String),
}

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
    /// The MCPAgentSession id as sent (mtls: the session's name).
    pub const AUTHZ_SESSION_ID: &str = "mcp.authz.session_id";
    /// The MCP transport session: the `mcp-session-id` header (never an MCPAgentSession).
    pub const SESSION_ID: &str = "mcp.session.id";
    pub const METHOD_NAME: &str = "mcp.method.name";
    pub const TOOL_NAME: &str = "gen_ai.tool.name";
    pub const PROMPT_NAME: &str = "gen_ai.prompt.name";
    pub const RESOURCE_URI: &str = "mcp.resource.uri";
    pub const REQUEST_ID: &str = "jsonrpc.request.id";
    pub const PROTOCOL_VERSION: &str = "mcp.protocol.version";
    pub const SAMPLE_RATE: &str = "mcp.authz.sample_rate";
    pub const HTTP_METHOD: &str = "http.request.method";
    pub const URL_PATH: &str = "url.path";
    /// A filtered list's counts and the first hidden entries (SPEC §7).
    pub const LISTED: &str = "mcp.authz.listed";
    pub const HIDDEN: &str = "mcp.authz.hidden";
    pub const WOULD_HIDE: &str = "mcp.authz.would_hide";
    pub const HIDDEN_NAMES: &str = "mcp.authz.hidden_names";
}

/// A span's place in a trace as plain ids: the trace and the span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanIds {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

impl SpanIds {
    /// Fresh random ids (a new trace), as OpenTelemetry's SDK makes them.
    pub fn random() -> Self {
        let ids = RandomIdGenerator::default();
        SpanIds {
            trace_id: ids.new_trace_id().to_bytes(),
            span_id: ids.new_span_id().to_bytes(),
        }
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_hex(&self) -> String {
        format!("{:032x}", u128::from_be_bytes(self.trace_id))
    }
}

/// A W3C `traceparent`: `version-traceid-spanid-flags`. Invalid → `None`.
pub fn parse_traceparent(value: &str) -> Option<SpanIds> {
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
    let trace_id = u128::from_str_radix(trace_id, 16).ok()?;
    let span_id = u64::from_str_radix(span_id, 16).ok()?;
    if trace_id == 0 || span_id == 0 {
        return None;
    }
    // The sampled flag is read and ignored: audit spans are recorded whatever it says.
    Some(SpanIds {
        trace_id: trace_id.to_be_bytes(),
        span_id: span_id.to_be_bytes(),
    })
}

/// The parent: the Check call's own `traceparent`, then the checked request's, then
/// `params._meta.traceparent` of the deciding message; the first valid one wins.
pub fn parent_ids(
    grpc_traceparent: Option<&str>,
    input: &CheckInput,
    call: Option<&CallInfo>,
) -> Option<SpanIds> {
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
            call.and_then(|c| c.traceparent.as_deref())
                .and_then(parse_traceparent)
        })
}

/// Whether an allowed decision is kept at `ratio` (SPEC §4b): the trace id's last 7 bytes,
/// read as a big-endian 56-bit number, are below `ratio` × 2^56. So every Check of a trace is
/// kept or dropped alike, on every replica.
pub fn keeps_allowed(ratio: f64, trace_id: &[u8; 16]) -> bool {
    let mut low = [0u8; 8];
    low[1..].copy_from_slice(&trace_id[9..]);
    let value = u64::from_be_bytes(low);
    // ratio × 2^56 is exact in f64 for every ratio; `as` saturates (1 → 2^56, keeps all).
    let threshold = (ratio.clamp(0.0, 1.0) * (1u64 << 56) as f64) as u64;
    value < threshold
}

/// The sample rate a decision is recorded at, or `None` when `ratio` drops it: allowed
/// decisions (not would-denies) are kept at `ratio`, denials and would-denies always (rate 1).
pub fn sample_rate(ratio: f64, trace_id: &[u8; 16], decision: &Decision) -> Option<f64> {
    let allowed = decision.applied() == Verdict::Allow && !decision.would_deny;
    if !allowed || ratio >= 1.0 {
        Some(1.0)
    } else if keeps_allowed(ratio, trace_id) {
        Some(ratio)
    } else {
        None
    }
}

/// The request's strings an audit record reports, with their span attribute (SPEC §4) and their
/// key in an audit line. [`RequestText::ALL`] lists each once, in the order they are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestText {
    /// The caller's identity as resolved (the team may be the server's default).
    Human,
    Agent,
    Team,
    /// The MCPAgentSession id as sent (mtls: the session's name).
    AgentSession,
    /// The `mcp-session-id` header: MCP's transport session.
    TransportSession,
    /// The deciding JSON-RPC element's method, its target under its primitive, and its id.
    Method,
    Tool,
    Prompt,
    Resource,
    RequestId,
    /// The `mcp-protocol-version` header, else the deciding element's `_meta` one.
    ProtocolVersion,
    HttpMethod,
    Path,
    /// The SPIFFE principal of an mtls server's caller (audit lines only).
    Principal,
}

impl RequestText {
    /// Every request text once; the array's length is the count.
    pub const ALL: [RequestText; 14] = [
        RequestText::Human,
        RequestText::Agent,
        RequestText::Team,
        RequestText::AgentSession,
        RequestText::TransportSession,
        RequestText::Method,
        RequestText::Tool,
        RequestText::Prompt,
        RequestText::Resource,
        RequestText::RequestId,
        RequestText::ProtocolVersion,
        RequestText::HttpMethod,
        RequestText::Path,
        RequestText::Principal,
    ];
    const COUNT: usize = RequestText::ALL.len();

    /// The span attribute that carries it; `None` for what only lines carry.
    pub fn attribute(self) -> Option<&'static str> {
        Some(match self {
            RequestText::Human => attr::ENDUSER_ID,
            RequestText::Agent => attr::AGENT_ID,
            RequestText::Team => attr::TEAM_ID,
            RequestText::AgentSession => attr::AUTHZ_SESSION_ID,
            RequestText::TransportSession => attr::SESSION_ID,
            RequestText::Method => attr::METHOD_NAME,
            RequestText::Tool => attr::TOOL_NAME,
            RequestText::Prompt => attr::PROMPT_NAME,
            RequestText::Resource => attr::RESOURCE_URI,
            RequestText::RequestId => attr::REQUEST_ID,
            RequestText::ProtocolVersion => attr::PROTOCOL_VERSION,
            RequestText::HttpMethod => attr::HTTP_METHOD,
            RequestText::Path => attr::URL_PATH,
            RequestText::Principal => return None,
        })
    }

    /// Its key in an audit line.
    pub fn line_key(self) -> &'static str {
        match self {
            RequestText::Human => line_key::HUMAN,
            RequestText::Agent => line_key::AGENT,
            RequestText::Team => line_key::TEAM,
            RequestText::AgentSession => line_key::AGENT_SESSION,
            RequestText::TransportSession => line_key::TRANSPORT_SESSION,
            RequestText::Method => line_key::METHOD,
            RequestText::Tool => line_key::TOOL,
            RequestText::Prompt => line_key::PROMPT,
            RequestText::Resource => line_key::RESOURCE,
            RequestText::RequestId => line_key::REQUEST_ID,
            RequestText::ProtocolVersion => line_key::PROTOCOL_VERSION,
            RequestText::HttpMethod => line_key::HTTP_METHOD,
            RequestText::Path => line_key::PATH,
            RequestText::Principal => line_key::PRINCIPAL,
        }
    }
}

/// The keys of an audit line: short names of the span's attributes, plus the trace id and the
/// start time a span carries outside its attributes.
pub mod line_key {
    pub const DECISION: &str = "decision";
    pub const REASON: &str = "reason";
    pub const WOULD_DENY: &str = "would_deny";
    pub const MODE: &str = "mode";
    pub const STATUS_CODE: &str = "status_code";
    pub const SERVER: &str = "server";
    pub const GRANT: &str = "grant";
    pub const SESSION: &str = "session";
    pub const HUMAN: &str = "human";
    pub const AGENT: &str = "agent";
    pub const TEAM: &str = "team";
    /// `mcp.authz.session_id`: the MCPAgentSession id as sent.
    pub const AGENT_SESSION: &str = "session_id";
    /// `mcp.session.id`: the transport session.
    pub const TRANSPORT_SESSION: &str = "mcp_session_id";
    pub const METHOD: &str = "method";
    pub const TOOL: &str = "tool";
    pub const PROMPT: &str = "prompt";
    pub const RESOURCE: &str = "resource";
    pub const REQUEST_ID: &str = "request_id";
    pub const PROTOCOL_VERSION: &str = "protocol_version";
    pub const HTTP_METHOD: &str = "http_method";
    pub const PATH: &str = "path";
    pub const PRINCIPAL: &str = "principal";
    pub const REQUIRED_TRUST: &str = "required_trust";
    pub const ADMIN_TRUST: &str = "admin_trust";
    pub const CONSENTED_TRUST: &str = "consented_trust";
    pub const EFFECTIVE_TRUST: &str = "effective_trust";
    pub const REQUIRED_SIDE_EFFECT: &str = "required_side_effect";
    pub const RISK_LEVEL: &str = "risk_level";
    pub const POLICY_VERSION: &str = "policy_version";
    pub const POLICY_REVISION: &str = "policy_revision";
    pub const SAMPLE_RATE: &str = "sample_rate";
    /// The trace the record's span belongs to (32 hex digits).
    pub const TRACE_ID: &str = "trace_id";
    /// When the Check started (the line's `timestamp` is when it ended).
    pub const START_TIME: &str = "start_time";
    pub const LISTED: &str = "listed";
    pub const HIDDEN: &str = "hidden";
    pub const WOULD_HIDE: &str = "would_hide";
    pub const HIDDEN_NAMES: &str = "hidden_names";
}

/// [`RequestText`]s in one buffer: one allocation per Check whatever the request carries.
#[derive(Debug, Clone)]
struct RequestTexts {
    text: String,
    ranges: [Option<(u32, u32)>; RequestText::COUNT],
}

impl RequestTexts {
    /// `values` in the order of [`RequestText::ALL`].
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
    /// The record's own span, chosen when it was recorded: a child of `parent` when there is
    /// one (same trace), else the root of a new trace.
    pub ids: SpanIds,
    pub parent: Option<SpanIds>,
    /// The fraction of such decisions kept (SPEC §4b).
    pub sample_rate: f64,
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
    /// The record of `decision` on `input`, with the times the Check started and ended, kept
    /// at sample rate 1.
    pub fn new(
        times: [SystemTime; 2],
        grpc_traceparent: Option<&str>,
        input: &CheckInput,
        decision: &Decision,
    ) -> Self {
        let parent = parent_ids(grpc_traceparent, input, decision.call.as_ref());
        Self::in_trace(times, parent, SpanIds::random(), 1.0, input, decision)
    }

    /// The record in its trace: its own `ids` (the parent's trace id when there is a parent).
    fn in_trace(
        [started, ended]: [SystemTime; 2],
        parent: Option<SpanIds>,
        ids: SpanIds,
        sample_rate: f64,
        input: &CheckInput,
        decision: &Decision,
    ) -> Self {
        let ids = SpanIds {
            trace_id: parent.map_or(ids.trace_id, |p| p.trace_id),
            span_id: ids.span_id,
        };
        let call = decision.call.as_ref();
        let caller = &decision.caller;
        let server = decision.server;
        let transport_session = input.headers.get("mcp-session-id");
        let protocol_version = input.headers.get("mcp-protocol-version");
        let principal = server
            .filter(|s| s.server.auth.mode == AuthMode::Mtls)
            .map(|_| input.principal);
        let texts = RequestTexts::new(RequestText::ALL.map(|which| {
            match which {
                RequestText::Human => caller.human.as_deref(),
                RequestText::Agent => caller.agent.as_deref(),
                RequestText::Team => caller.team.as_deref(),
                RequestText::AgentSession => decision.session_id.as_deref(),
                RequestText::TransportSession => transport_session.as_deref(),
                RequestText::Method => call.map(|c| c.method.as_ref()),
                RequestText::Tool => call.and_then(|c| c.target_of(Primitive::Tool)),
                RequestText::Prompt => call.and_then(|c| c.target_of(Primitive::Prompt)),
                RequestText::Resource => call.and_then(|c| c.target_of(Primitive::Resource)),
                RequestText::RequestId => call.and_then(|c| c.id.as_deref()),
                RequestText::ProtocolVersion => protocol_version
                    .as_deref()
                    .or_else(|| call.and_then(|c| c.protocol_version.as_deref())),
                RequestText::HttpMethod => Some(input.method),
                RequestText::Path => Some(input.path_only()),
                RequestText::Principal => principal,
            }
        }));
        AuditRecord {
            started,
            ended,
            ids,
            parent,
            sample_rate,
            decision: decision.applied(),
            reason: decision.reason,
            would_deny: decision.would_deny,
            mode: decision.mode,
            status_code: decision.http_status(),
            revision: decision.revision.cloned(),
            policy_version: decision.policy_version.cloned(),
            grant: decision.grant.map(|g| Text::clone(&g.grant.key.full)),
            session: decision.session.map(|s| Text::clone(&s.session.key.full)),
            server: server.map(|s| s.server.key.clone()),
            tool: decision.tool,
            trust: decision.trust,
            texts,
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
}

/// One filtered list as recorded (SPEC §7): what its `mcp.authz.filter` span reports.
#[derive(Debug, Clone)]
pub struct FilterRecord {
    pub started: SystemTime,
    pub ended: SystemTime,
    pub ids: SpanIds,
    pub parent: Option<SpanIds>,
    /// `tools/list`, `prompts/list` or `resources/list`.
    pub method: &'static str,
    pub server: ObjectKey,
    /// The caller as resolved: human, agent, team, MCPAgentSession id.
    pub human: Option<String>,
    pub agent: Option<String>,
    pub team: Option<String>,
    pub session_id: Option<String>,
    pub revision: Text,
    pub mode: Mode,
    pub listed: usize,
    pub hidden: usize,
    pub would_hide: usize,
    /// The first hidden entries' names (at most [`crate::filter::MAX_HIDDEN_NAMES`]).
    pub hidden_names: Vec<String>,
}

impl FilterRecord {
    /// The caller's texts with their span attribute and line key.
    pub fn caller(&self) -> [(&'static str, &'static str, Option<&str>); 4] {
        [
            (attr::ENDUSER_ID, line_key::HUMAN, self.human.as_deref()),
            (attr::AGENT_ID, line_key::AGENT, self.agent.as_deref()),
            (attr::TEAM_ID, line_key::TEAM, self.team.as_deref()),
            (
                attr::AUTHZ_SESSION_ID,
                line_key::AGENT_SESSION,
                self.session_id.as_deref(),
            ),
        ]
    }
}

/// What the audit queue carries: a Check's record or a filtered list's. The Check's record is
/// kept inline (a box would cost every Check an allocation); the rare filter record is boxed.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Recorded {
    Check(AuditRecord),
    Filter(Box<FilterRecord>),
}

/// Where audit records go: a bounded queue in front of a background worker.
#[derive(Clone)]
pub struct Audit {
    queue: SyncSender<Recorded>,
    /// Records dropped because the queue was full (`mcp_authz_spans_dropped_total`).
    dropped: Counter,
    /// `--audit-allowed`: the fraction of allowed decisions kept (SPEC §4b).
    allowed_ratio: f64,
}

impl Audit {
    /// Keeps nothing: every record is counted as dropped (for tests and tools).
    pub fn discarding() -> Self {
        let (queue, _) = std::sync::mpsc::sync_channel(0);
        Audit {
            queue,
            dropped: Counter::default(),
            allowed_ratio: 1.0,
        }
    }

    /// Keeps `ratio` (0 to 1) of the allowed decisions, every denial and would-deny.
    pub fn keeping_allowed(self, ratio: f64) -> Self {
        Audit {
            allowed_ratio: ratio.clamp(0.0, 1.0),
            ..self
        }
    }

    /// Records one Check, unless `--audit-allowed` leaves it out. Never blocks, never formats
    /// and never wakes the worker: the worker polls the queue.
    pub fn record(
        &self,
        times: [SystemTime; 2],
        grpc_traceparent: Option<&str>,
        input: &CheckInput,
        decision: &Decision,
    ) {
        // The trace is settled first: whether the record is kept depends on its id.
        let parent = parent_ids(grpc_traceparent, input, decision.call.as_ref());
        let ids = SpanIds::random();
        let trace_id = parent.map_or(ids.trace_id, |p| p.trace_id);
        let Some(rate) = sample_rate(self.allowed_ratio, &trace_id, decision) else {
            return;
        };
        let record = AuditRecord::in_trace(times, parent, ids, rate, input, decision);
        self.send(Recorded::Check(record));
    }

    /// Records one filtered list (SPEC §7); every one is kept.
    pub fn record_filter(&self, record: FilterRecord) {
        self.send(Recorded::Filter(Box::new(record)));
    }

    fn send(&self, record: Recorded) {
        if self.queue.try_send(record).is_err() {
            self.dropped.inc();
        }
    }
}

/// Moves up to `limit` queued records into `batch`; true once every `Audit` is gone.
fn drain(queue: &Receiver<Recorded>, batch: &mut Vec<Recorded>, limit: usize) -> bool {
    while batch.len() < limit {
        match queue.try_recv() {
            Ok(record) => batch.push(record),
            Err(TryRecvError::Empty) => return false,
            Err(TryRecvError::Disconnected) => return true,
        }
    }
    false
}

/// Where the worker delivers records.
pub trait Sink {
    /// What the log calls the delivered records ("audit spans").
    const WHAT: &'static str;

    /// Delivers `batch`, leaving it empty. On failure, says how many records were lost.
    fn deliver(&mut self, batch: &mut Vec<Recorded>) -> Result<(), Undelivered>;
}

/// A delivery that failed: how many records were lost, and why.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Undelivered {
    pub records: u64,
    pub error: String,
}

/// The audit worker; `shutdown` delivers what is queued and waits for it.
pub struct AuditWorker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AuditWorker {
    /// Starts the worker on a thread of its own, named `name`, delivering to the sink
    /// `make_sink` builds there (so a sink's runtime never occupies a thread that answers
    /// Checks). Drops are counted in `dropped`.
    pub fn start<S: Sink>(
        name: &str,
        dropped: Counter,
        make_sink: impl FnOnce() -> Result<S, AuditError> + Send + 'static,
    ) -> Result<(Audit, AuditWorker), AuditError> {
        let (queue, records) = std::sync::mpsc::sync_channel(QUEUE_CAPACITY);
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stopping, reporter) = (Arc::clone(&stop), Reporter::new(dropped.clone()));
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || match make_sink() {
                Ok(sink) => {
                    let _ = ready_tx.send(Ok(()));
                    run(&records, &stopping, sink, reporter);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(AuditError::Thread)?;
        ready_rx.recv().map_err(|_| AuditError::Ended)??;
        let worker = AuditWorker {
            stop,
            thread: Some(thread),
        };
        let audit = Audit {
            queue,
            dropped,
            allowed_ratio: 1.0,
        };
        Ok((audit, worker))
    }

    /// Delivers what is queued (call it once no Check is left), then stops.
    pub async fn shutdown(self, timeout: Duration) {
        self.stop.store(true, Ordering::Release);
        let thread = self.thread;
        let join = tokio::task::spawn_blocking(move || thread.map(std::thread::JoinHandle::join));
        if tokio::time::timeout(timeout, join).await.is_err() {
            tracing::warn!("audit records not flushed within {timeout:?}");
        }
    }
}

/// Delivers what is queued every [`POLL`] rather than once per record: on a busy two-core
/// machine a wake-up per Check costs more than the record itself.
///
/// After a failed delivery the queue is left alone: records wait there (what does not fit is
/// dropped and counted) while a small batch of [`PROBE`] records tries the sink again after a
/// pause that doubles from [`RETRY_MIN`] to [`RETRY_MAX`]. A dead collector thus costs no CPU
/// beyond the probes.
fn run<S: Sink>(
    queue: &Receiver<Recorded>,
    stop: &AtomicBool,
    mut sink: S,
    mut reporter: Reporter,
) {
    let mut batch = Vec::new();
    // After a failure: when to probe again, and the pause taken.
    let mut retry: Option<(Instant, Duration)> = None;
    loop {
        // Read before draining: every record sent before the stop is in the queue.
        let stopping = stop.load(Ordering::Acquire);
        if stopping || retry.is_none_or(|(at, _)| Instant::now() >= at) {
            let probing = retry.is_some() && !stopping;
            let closed = drain(queue, &mut batch, if probing { PROBE } else { usize::MAX });
            if !batch.is_empty() {
                match sink.deliver(&mut batch) {
                    Ok(()) => {
                        if retry.take().is_some() {
                            tracing::info!("exporting {} again", S::WHAT);
                        }
                    }
                    Err(e) => {
                        reporter.failures += e.records;
                        let pause = retry.map_or(RETRY_MIN, |(_, p)| (p * 2).min(RETRY_MAX));
                        if retry.is_none() {
                            tracing::warn!(
                                error = %e,
                                "cannot export {}: records wait in the queue, and what does not fit is dropped, until the collector answers",
                                S::WHAT
                            );
                        }
                        retry = Some((Instant::now() + pause, pause));
                    }
                }
                batch.clear();
            }
            if stopping || closed {
                reporter.report(true, S::WHAT);
                return;
            }
        }
        reporter.report(false, S::WHAT);
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

    fn report(&mut self, now: bool, what: &str) {
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
            tracing::warn!(records = self.failures, "{what} could not be exported");
            self.failures = 0;
        }
        self.last = Instant::now();
    }
}

/// A record of an allowed `tools/call`, for the tests of the code that writes records (spans,
/// lines) and of the code that reads them back (replay).
#[cfg(test)]
pub(crate) mod fixture {
    use std::time::{Duration, SystemTime};

    use super::AuditRecord;
    use crate::check::{Options, authorize};
    use crate::policy::{Snapshot, Timestamp, load_paths};
    use crate::request::{CheckInput, Headers};

    /// The trace the record belongs to.
    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

    pub fn at(nanos: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos)
    }

    /// When the Check was decided and started.
    pub fn check_time() -> Timestamp {
        Timestamp::parse_rfc3339("2026-11-20T10:00:00.000001Z").unwrap()
    }

    /// An allowed `tools/call` on the replay test policies' vault, in the trace of [`PARENT`],
    /// started at [`check_time`] and ended 1.5 µs later.
    pub fn check_record() -> AuditRecord {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/replay/current");
        let snapshot = Snapshot::compile(load_paths(&[dir]).unwrap());
        let body =
            r#"{"jsonrpc":"2.0","id":"r-1","method":"tools/call","params":{"name":"read_secret"}}"#;
        let input = CheckInput {
            method: "POST",
            path: "/vault/mcp?x=1",
            headers: Headers::new(vec![
                ("x-mcp-human-id", "h"),
                ("x-mcp-agent-id", "a1"),
                ("x-mcp-team-id", "t"),
                ("x-mcp-agent-session", "s-7"),
                ("mcp-session-id", "transport-1"),
                ("mcp-protocol-version", "2025-06-18"),
            ]),
            body: body.as_bytes(),
            ..CheckInput::default()
        };
        let now = check_time();
        let decision = authorize(Some(&snapshot), &input, &Options::default(), now);
        let started = now.unix_nanos() as u64;
        AuditRecord::new(
            [at(started), at(started + 1500)],
            Some(PARENT),
            &input,
            &decision,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents() {
        let ok =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(ok.trace_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(u64::from_be_bytes(ok.span_id), 0x00f0_67aa_0ba9_02b7);
        let unsampled =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert_eq!(unsampled, ok);
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

    /// A trace id whose last 7 bytes are `low` (big-endian).
    fn trace(low: u64) -> [u8; 16] {
        let mut id = [0xab; 16];
        id[9..].copy_from_slice(&low.to_be_bytes()[1..]);
        id
    }

    #[test]
    fn allowed_decisions_are_kept_by_trace_id() {
        let top = (1u64 << 56) - 1;
        for low in [0, 1, 1 << 55, top] {
            assert!(keeps_allowed(1.0, &trace(low)), "{low}");
            assert!(!keeps_allowed(0.0, &trace(low)), "{low}");
        }
        assert!(keeps_allowed(0.5, &trace(0)));
        assert!(keeps_allowed(0.5, &trace((1 << 55) - 1)));
        assert!(!keeps_allowed(0.5, &trace(1 << 55)));
        assert!(!keeps_allowed(0.5, &trace(top)));
        // Only the last 7 bytes count: the first 9 are ignored.
        let mut high = trace(1);
        high[..9].copy_from_slice(&[0xff; 9]);
        assert!(keeps_allowed(0.5, &high));
    }

    #[test]
    fn denials_and_would_denies_are_always_kept() {
        use crate::decision::{Reason, Verdict};
        let dropped = trace((1u64 << 56) - 1);
        let allowed = Decision::bare(Verdict::Allow, Reason::Allowed);
        assert_eq!(sample_rate(1.0, &dropped, &allowed), Some(1.0));
        assert_eq!(sample_rate(0.5, &dropped, &allowed), None);
        assert_eq!(sample_rate(0.5, &trace(0), &allowed), Some(0.5));
        assert_eq!(sample_rate(0.0, &trace(0), &allowed), None);
        let denied = Decision::bare(Verdict::Deny, Reason::ToolDenied);
        assert_eq!(sample_rate(0.0, &dropped, &denied), Some(1.0));
        let would_deny = Decision {
            would_deny: true,
            ..Decision::bare(Verdict::Deny, Reason::ToolDenied)
        };
        assert_eq!(sample_rate(0.0, &dropped, &would_deny), Some(1.0));
    }

    #[test]
    fn request_texts_are_listed_in_their_order() {
        for (index, which) in RequestText::ALL.into_iter().enumerate() {
            assert_eq!(which as usize, index, "{which:?}");
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (queue, _records) = std::sync::mpsc::sync_channel(2);
        let audit = Audit {
            queue,
            dropped: Counter::default(),
            allowed_ratio: 1.0,
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
