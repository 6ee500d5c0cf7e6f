//! Where replay finds each field of a recorded decision: its span attribute (SPEC §4) and its
//! field in the service's JSON audit line. Every key name replay reads is here, taken from the
//! audit code wherever it defines one.

use crate::audit::{SPAN_NAME, attr, line_key};
use crate::logging::AUDIT_TARGET;

/// The span name of a Check.
pub const CHECK_SPAN: &str = SPAN_NAME;

/// What replay reads of a record, besides its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The verdict applied: `allow` or `deny`.
    Decision,
    Reason,
    Grant,
    Session,
    /// `namespace/name` (log lines).
    Server,
    /// The server's two halves (spans).
    ServerName,
    ServerNamespace,
    Human,
    Agent,
    Team,
    /// The MCPAgentSession id as sent.
    AgentSession,
    /// `mcp.session.id`: the MCP transport session, except in first-edition spans.
    TransportSession,
    Method,
    Tool,
    Prompt,
    Resource,
    RequestId,
    HttpMethod,
    Path,
    TraceId,
    /// A bool: the denial was let through.
    WouldDeny,
    /// The SPIFFE principal of an mtls server's caller (audit lines).
    Principal,
    /// A number: the fraction of such decisions recorded (SPEC §4b).
    SampleRate,
}

impl Field {
    pub const COUNT: usize = Field::SampleRate as usize + 1;
}

/// The field a span attribute carries.
pub fn span_field(key: &str) -> Option<Field> {
    Some(match key {
        attr::DECISION => Field::Decision,
        attr::REASON => Field::Reason,
        attr::WOULD_DENY => Field::WouldDeny,
        attr::MATCHED_GRANT => Field::Grant,
        attr::MATCHED_SESSION => Field::Session,
        attr::SERVER_NAME => Field::ServerName,
        attr::SERVER_NAMESPACE => Field::ServerNamespace,
        attr::ENDUSER_ID => Field::Human,
        attr::AGENT_ID => Field::Agent,
        attr::TEAM_ID => Field::Team,
        attr::SESSION_ID => Field::TransportSession,
        attr::AUTHZ_SESSION_ID => Field::AgentSession,
        attr::METHOD_NAME => Field::Method,
        attr::TOOL_NAME => Field::Tool,
        attr::PROMPT_NAME => Field::Prompt,
        attr::RESOURCE_URI => Field::Resource,
        attr::REQUEST_ID => Field::RequestId,
        attr::HTTP_METHOD => Field::HttpMethod,
        attr::URL_PATH => Field::Path,
        attr::SAMPLE_RATE => Field::SampleRate,
        _ => return None,
    })
}

/// An audit line: `"message":"decision"` of the audit target.
pub const LINE_MESSAGE: (&str, &str) = ("message", crate::audit::line::DECISION_MESSAGE);
pub const LINE_TARGET: (&str, &str) = ("target", AUDIT_TARGET);
/// The line's time: when the Check ended, in microseconds.
pub const LINE_TIME: &str = "timestamp";
/// When the Check started, which replay decides at when a line carries it.
pub const LINE_START_TIME: &str = line_key::START_TIME;

/// The field of an audit line's key (the names `line::write` gives them).
pub fn line_field(key: &str) -> Option<Field> {
    Some(match key {
        line_key::DECISION => Field::Decision,
        line_key::REASON => Field::Reason,
        line_key::WOULD_DENY => Field::WouldDeny,
        line_key::GRANT => Field::Grant,
        line_key::SESSION => Field::Session,
        line_key::SERVER => Field::Server,
        line_key::HUMAN => Field::Human,
        line_key::AGENT => Field::Agent,
        line_key::TEAM => Field::Team,
        line_key::AGENT_SESSION => Field::AgentSession,
        line_key::TRANSPORT_SESSION => Field::TransportSession,
        line_key::METHOD => Field::Method,
        line_key::TOOL => Field::Tool,
        line_key::PROMPT => Field::Prompt,
        line_key::RESOURCE => Field::Resource,
        line_key::REQUEST_ID => Field::RequestId,
        line_key::HTTP_METHOD => Field::HttpMethod,
        line_key::PATH => Field::Path,
        line_key::PRINCIPAL => Field::Principal,
        line_key::TRACE_ID => Field::TraceId,
        line_key::SAMPLE_RATE => Field::SampleRate,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::fixture::{check_record, check_time};
    use crate::audit::line::{self, LineFormat};
    use crate::audit::otlp::AttrValue;
    use crate::policy::Primitive;
    use crate::replay::read::{LineKind, Position, Record, Shape, Sink, read_line};

    fn read_back(line: &str, shape: Shape) -> Record {
        let mut sink = Sink::new(Position::default());
        assert_eq!(read_line(line.as_bytes(), &mut sink), LineKind::Read(shape));
        assert_eq!(sink.records.len(), 1, "{line}");
        sink.records.remove(0)
    }

    /// The audit code's own line and span of a Check are read back field by field.
    #[test]
    fn what_the_audit_code_writes_is_read_back() {
        let now = check_time();
        let record = check_record();

        let mut line = Vec::new();
        let format = LineFormat {
            json: true,
            ansi: false,
        };
        line::write(&record, format, &mut line);
        let from_line = read_back(
            std::str::from_utf8(&line).unwrap().trim_end(),
            Shape::AuditLine,
        );

        let mut attributes: Vec<serde_json::Value> = Vec::new();
        record.for_each_attribute(|key, value| {
            let value = match value {
                AttrValue::Bool(b) => serde_json::json!({"boolValue": b}),
                AttrValue::Int(n) => serde_json::json!({"intValue": n.to_string()}),
                AttrValue::Double(n) => serde_json::json!({"doubleValue": n}),
                AttrValue::Str(s) => serde_json::json!({"stringValue": s}),
                AttrValue::Strs(items) => serde_json::json!({"arrayValue": {"values": items
                    .iter()
                    .map(|s| serde_json::json!({"stringValue": s}))
                    .collect::<Vec<_>>()}}),
            };
            attributes.push(serde_json::json!({"key": key, "value": value}));
        });
        let span = serde_json::json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
            "name": CHECK_SPAN,
            "startTimeUnixNano": now.unix_nanos().to_string(),
            "attributes": attributes,
        }]}]}]});
        let from_span = read_back(&span.to_string(), Shape::Otlp);

        assert_eq!(
            from_line.text(Field::TraceId),
            Some(record.ids.trace_hex().as_str())
        );
        for read in [&from_line, &from_span] {
            assert_eq!(read.time, Some(now));
            assert_eq!(read.sample_rate, Some(1.0));
            assert_eq!(read.would_deny, Some(false));
            assert_eq!(read.server().as_deref(), Some("mcp/vault"));
            assert_eq!(read.agent_session(), Some("s-7"));
            assert_eq!(read.target(Primitive::Tool), Some("read_secret"));
            for (field, value) in [
                (Field::Decision, "allow"),
                (Field::Reason, "allowed"),
                (Field::Grant, "mcp/vault-readers"),
                (Field::Session, "mcp/s-7"),
                (Field::Human, "h"),
                (Field::Agent, "a1"),
                (Field::Team, "t"),
                (Field::Method, "tools/call"),
                (Field::RequestId, "r-1"),
                (Field::HttpMethod, "POST"),
                (Field::Path, "/vault/mcp"),
            ] {
                assert_eq!(read.text(field), Some(value), "{field:?}");
            }
        }
    }
}
