//! The audit trail as OpenTelemetry spans (SPEC §4, §7): the records written as an OTLP export
//! request ([`encode`]) and sent to the collector ([`send`]), the [`Sink`] the worker delivers
//! to when an endpoint is set.

mod encode;
mod send;
#[cfg(test)]
mod tests;

use std::time::Duration;

use bytes::BytesMut;
use prometheus_client::metrics::counter::Counter;

use super::{
    Audit, AuditError, AuditRecord, AuditWorker, FilterRecord, Recorded, RequestText, Sink,
    Undelivered, attr,
};
use crate::otlp_config::ExportConfig;
pub use encode::{OwnedValue, RequestEncoder};
use send::Transport;

const MAX_BATCH: usize = 512;

/// A span attribute's value, borrowed from its record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttrValue<'a> {
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    /// An array of strings.
    Strs(&'a [String]),
}

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
        let transport = {
            let _entered = runtime.enter();
            Transport::new(&config).map_err(|e| AuditError::Export(e.to_string()))?
        };
        let (resource, schema_url) = crate::otlp_config::resource_attributes();
        Ok(OtlpSink {
            runtime,
            transport,
            encoder: RequestEncoder::new(&resource, schema_url.as_deref()),
            buf: BytesMut::new(),
            timeout: config.timeout + EXPORT_GRACE,
        })
    })
}

/// Exports spans over OTLP, on its own runtime.
struct OtlpSink {
    runtime: tokio::runtime::Runtime,
    transport: Transport,
    encoder: RequestEncoder,
    /// The request being sent; its allocation is reused once the last one is gone.
    buf: BytesMut,
    /// How long one export may take: the transport's own timeout (`OTEL_EXPORTER_OTLP_TIMEOUT`)
    /// and a little more, so that the transport reports its own failure first.
    timeout: Duration,
}

/// What [`OtlpSink::timeout`] adds to the transport's timeout.
const EXPORT_GRACE: Duration = Duration::from_secs(1);

impl Sink for OtlpSink {
    const WHAT: &'static str = "audit spans";

    fn deliver(&mut self, batch: &mut Vec<Recorded>) -> Result<(), Undelivered> {
        let OtlpSink {
            runtime,
            transport,
            encoder,
            buf,
            timeout,
        } = self;
        runtime.block_on(export(transport, encoder, buf, *timeout, batch))
    }
}

impl AuditRecord {
    /// The span's attributes (SPEC §4), in order, each once.
    pub fn for_each_attribute<'a>(&'a self, mut add: impl FnMut(&'static str, AttrValue<'a>)) {
        use AttrValue::{Bool, Double, Int, Str};
        add(attr::DECISION, Str(self.decision.as_str()));
        add(attr::REASON, Str(self.reason.as_str()));
        add(attr::WOULD_DENY, Bool(self.would_deny));
        if self.would_deny {
            add(attr::WOULD_DENY_REASON, Str(self.reason.as_str()));
        }
        add(attr::MODE, Str(self.mode.as_str()));
        add(attr::STATUS_CODE, Int(i64::from(self.status_code)));
        add(
            attr::POLICY_REVISION,
            Str(self.revision.as_deref().unwrap_or("")),
        );
        for (key, text) in [
            (attr::POLICY_VERSION, &self.policy_version),
            (attr::MATCHED_GRANT, &self.grant),
            (attr::MATCHED_SESSION, &self.session),
        ] {
            if let Some(text) = text {
                add(key, Str(text));
            }
        }
        if let Some(trust) = self.trust {
            add(attr::ADMIN_TRUST, Str(trust.admin.as_str()));
            add(attr::CONSENTED_TRUST, Str(trust.consented.as_str()));
            add(attr::EFFECTIVE_TRUST, Str(trust.effective.as_str()));
        }
        if let (Some(tool), Some(required)) = (self.tool, self.required_trust()) {
            add(attr::REQUIRED_TRUST, Str(required.as_str()));
            add(
                attr::REQUIRED_SIDE_EFFECT,
                Str(tool.side_effect.map_or("", |e| e.as_str())),
            );
            if let Some(risk) = tool.risk_level {
                add(attr::RISK_LEVEL, Str(risk.as_str()));
            }
        }
        if let Some(server) = &self.server {
            add(attr::SERVER_NAME, Str(&server.name));
            add(attr::SERVER_NAMESPACE, Str(&server.namespace));
        }
        for which in RequestText::ALL {
            if let (Some(key), Some(text)) = (which.attribute(), self.text(which)) {
                add(key, Str(text));
            }
        }
        add(attr::SAMPLE_RATE, Double(self.sample_rate));
    }
}

impl FilterRecord {
    /// The span's attributes (SPEC §7), in order, each once.
    pub fn for_each_attribute<'a>(&'a self, mut add: impl FnMut(&'static str, AttrValue<'a>)) {
        use AttrValue::{Int, Str, Strs};
        let count = |n: usize| Int(i64::try_from(n).unwrap_or(i64::MAX));
        add(attr::METHOD_NAME, Str(self.method));
        add(attr::SERVER_NAME, Str(&self.server.name));
        add(attr::SERVER_NAMESPACE, Str(&self.server.namespace));
        for (key, _, value) in self.caller() {
            if let Some(value) = value {
                add(key, Str(value));
            }
        }
        add(attr::POLICY_REVISION, Str(&self.revision));
        add(attr::MODE, Str(self.mode.as_str()));
        add(attr::LISTED, count(self.listed));
        add(attr::HIDDEN, count(self.hidden));
        add(attr::WOULD_HIDE, count(self.would_hide));
        add(attr::HIDDEN_NAMES, Strs(&self.hidden_names));
    }
}

impl Recorded {
    /// The span's attributes: [`AuditRecord::for_each_attribute`] or
    /// [`FilterRecord::for_each_attribute`].
    pub fn for_each_attribute<'a>(&'a self, add: impl FnMut(&'static str, AttrValue<'a>)) {
        match self {
            Recorded::Check(record) => record.for_each_attribute(add),
            Recorded::Filter(record) => record.for_each_attribute(add),
        }
    }
}

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
    transport: &mut Transport,
    encoder: &mut RequestEncoder,
    buf: &mut BytesMut,
    timeout: Duration,
    batch: &mut Vec<Recorded>,
) -> Result<(), Undelivered> {
    let mut sent = 0;
    while sent < batch.len() {
        let records = &batch[sent..batch.len().min(sent + MAX_BATCH)];
        buf.clear();
        encoder.encode(records, buf);
        let body = buf.split().freeze();
        let count = records.len();
        let failure = match tokio::time::timeout(timeout, transport.send(body)).await {
            Ok(Ok(())) => {
                sent += count;
                continue;
            }
            Ok(Err(e)) => ExportError::Failed(e),
            Err(_) => ExportError::Timeout(timeout),
        };
        let records = (batch.len() - sent) as u64;
        batch.clear();
        return Err(Undelivered {
            records,
            error: failure.to_string(),
        });
    }
    batch.clear();
    Ok(())
}
