//! The audit trail as OpenTelemetry spans (SPEC §4, §7): span building and OTLP export, the
//! [`Sink`] the worker delivers to when an endpoint is set.

use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use prometheus_client::metrics::counter::Counter;

use super::{
    Audit, AuditError, AuditRecord, AuditWorker, FILTER_SPAN_NAME, FilterRecord, Recorded,
    RequestText, SPAN_NAME, Sink, SpanIds, Undelivered, attr,
};
use crate::otlp_config::{ExportConfig, build_exporter};
use crate::policy::Text;

const MAX_BATCH: usize = 512;

/// Starts exporting spans to `config`'s collector on a thread of its own (with its own
/// single-threaded runtime), so encoding and sending batches never occupies a thread that
/// answers Checks. Drops are counted in `dropped`.
pub fn start(config: &ExportConfig, dropped: Counter) -> Result<(Audit, AuditWorker), AuditError> {
    let config = config.clone();
    AuditWorker::start("audit-export", dropped, move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(AuditError::Runtime)?;
        let exporter = {
            let _entered = runtime.enter();
            build_exporter(&config).map_err(|e| AuditError::Export(e.to_string()))?
        };
        Ok(OtlpSink {
            runtime,
            exporter,
            timeout: config.timeout + EXPORT_GRACE,
        })
    })
}

/// Exports spans over OTLP, on its own runtime.
struct OtlpSink {
    runtime: tokio::runtime::Runtime,
    exporter: opentelemetry_otlp::SpanExporter,
    /// How long one export may take: the exporter's own timeout (`OTEL_EXPORTER_OTLP_TIMEOUT`)
    /// and a little more, so that the exporter reports its own failure first.
    timeout: Duration,
}

/// What [`OtlpSink::timeout`] adds to the exporter's timeout.
const EXPORT_GRACE: Duration = Duration::from_secs(1);

impl Sink for OtlpSink {
    const WHAT: &'static str = "audit spans";

    fn deliver(&mut self, batch: &mut Vec<Recorded>) -> Result<(), Undelivered> {
        self.runtime
            .block_on(export(&self.exporter, self.timeout, batch))
    }
}

impl AuditRecord {
    /// The span's attributes (SPEC §4).
    pub fn attributes(&self) -> Vec<KeyValue> {
        let mut out = Vec::with_capacity(32);
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
        for which in RequestText::ALL {
            if let (Some(key), Some(text)) = (which.attribute(), self.text(which)) {
                add(key, text.to_string().into());
            }
        }
        add(attr::SAMPLE_RATE, self.sample_rate.into());
        out
    }

    /// The span: a child of the parent when there is one, else the root of a new trace.
    pub fn into_span(self) -> SpanData {
        let attributes = self.attributes();
        span_data(
            self.ids,
            self.parent,
            SPAN_NAME,
            [self.started, self.ended],
            attributes,
        )
    }
}

impl FilterRecord {
    /// The span's attributes (SPEC §7).
    pub fn attributes(&self) -> Vec<KeyValue> {
        let count = |n: usize| Value::I64(i64::try_from(n).unwrap_or(i64::MAX));
        let mut out = vec![
            KeyValue::new(attr::METHOD_NAME, self.method),
            KeyValue::new(attr::SERVER_NAME, Text::clone(&self.server.name)),
            KeyValue::new(attr::SERVER_NAMESPACE, Text::clone(&self.server.namespace)),
        ];
        for (key, _, value) in self.caller() {
            if let Some(value) = value {
                out.push(KeyValue::new(key, value.to_string()));
            }
        }
        out.extend([
            KeyValue::new(attr::POLICY_REVISION, Text::clone(&self.revision)),
            KeyValue::new(attr::MODE, self.mode.as_str()),
            KeyValue::new(attr::LISTED, count(self.listed)),
            KeyValue::new(attr::HIDDEN, count(self.hidden)),
            KeyValue::new(attr::WOULD_HIDE, count(self.would_hide)),
            KeyValue::new(
                attr::HIDDEN_NAMES,
                Value::Array(opentelemetry::Array::String(
                    self.hidden_names.iter().cloned().map(Into::into).collect(),
                )),
            ),
        ]);
        out
    }

    pub fn into_span(self) -> SpanData {
        span_data(
            self.ids,
            self.parent,
            FILTER_SPAN_NAME,
            [self.started, self.ended],
            self.attributes(),
        )
    }
}

impl Recorded {
    pub fn into_span(self) -> SpanData {
        match self {
            Recorded::Check(record) => record.into_span(),
            Recorded::Filter(record) => record.into_span(),
        }
    }
}

/// A SERVER span in its trace: a child of `parent` when there is one.
fn span_data(
    ids: SpanIds,
    parent: Option<SpanIds>,
    name: &'static str,
    [started, ended]: [SystemTime; 2],
    attributes: Vec<KeyValue>,
) -> SpanData {
    SpanData {
        // Audit spans are exported whatever the parent's sampled flag says.
        span_context: SpanContext::new(
            TraceId::from_bytes(ids.trace_id),
            SpanId::from_bytes(ids.span_id),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: parent.map_or(SpanId::INVALID, |p| SpanId::from_bytes(p.span_id)),
        parent_span_is_remote: parent.is_some(),
        span_kind: SpanKind::Server,
        name: name.into(),
        start_time: started,
        end_time: ended,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: SCOPE.clone(),
    }
}

static SCOPE: std::sync::LazyLock<InstrumentationScope> = std::sync::LazyLock::new(|| {
    InstrumentationScope::builder("mcp-authz")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
});

/// Why a batch was not exported.
#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error("{0}")]
    Failed(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Exports `batch` as spans, [`MAX_BATCH`] at a time; after a failure the rest is not tried,
/// and every span not exported is counted as lost.
async fn export(
    exporter: &opentelemetry_otlp::SpanExporter,
    timeout: Duration,
    batch: &mut Vec<Recorded>,
) -> Result<(), Undelivered> {
    while !batch.is_empty() {
        let rest = batch.split_off(batch.len().min(MAX_BATCH));
        let records = std::mem::replace(batch, rest);
        let spans: Vec<SpanData> = records.into_iter().map(Recorded::into_span).collect();
        let count = spans.len() as u64;
        let failure = match tokio::time::timeout(timeout, exporter.export(spans)).await {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => ExportError::Failed(e.to_string()),
            Err(_) => ExportError::Timeout(timeout),
        };
        let records = count + batch.len() as u64;
        batch.clear();
        return Err(Undelivered {
            records,
            error: failure.to_string(),
        });
    }
    Ok(())
}
