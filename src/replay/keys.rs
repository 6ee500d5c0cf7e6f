//! Where replay finds each field of a recorded decision: its span attribute (SPEC §4) and its
//! field in the service's JSON audit line. Every key name replay reads is here, taken from the
//! audit code wherever it defines one.

use crate::logging::AUDIT_TARGET;
use crate::telemetry::{SPAN_NAME, attr};

/// The span name of a Check.
pub const CHECK_SPAN: &str = SPAN_NAME;

/// Attributes of SPEC §4 that the audit code does not record yet: replay reads them when
/// present and does without them otherwise.
pub mod spec {
    /// The MCPAgentSession id as sent; in the first edition it was `mcp.session.id`.
    pub const AUTHZ_SESSION_ID: &str = "mcp.authz.session_id";
    pub const SAMPLE_RATE: &str = "mcp.authz.sample_rate";
    pub const PROMPT_NAME: &str = "gen_ai.prompt.name";
    pub const RESOURCE_URI: &str = "mcp.resource.uri";
}

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
        spec::AUTHZ_SESSION_ID => Field::AgentSession,
        attr::METHOD_NAME => Field::Method,
        attr::TOOL_NAME => Field::Tool,
        spec::PROMPT_NAME => Field::Prompt,
        spec::RESOURCE_URI => Field::Resource,
        attr::REQUEST_ID => Field::RequestId,
        attr::HTTP_METHOD => Field::HttpMethod,
        attr::URL_PATH => Field::Path,
        spec::SAMPLE_RATE => Field::SampleRate,
        _ => return None,
    })
}

/// An audit line: `"message":"decision"` of the audit target.
pub const LINE_MESSAGE: (&str, &str) = ("message", "decision");
pub const LINE_TARGET: (&str, &str) = ("target", AUDIT_TARGET);
/// The line's time: when the Check ended, in microseconds.
pub const LINE_TIME: &str = "timestamp";

/// The field of an audit line's key (the names `audit_line::write` gives them).
pub fn line_field(key: &str) -> Option<Field> {
    Some(match key {
        "decision" => Field::Decision,
        "reason" => Field::Reason,
        "would_deny" => Field::WouldDeny,
        "grant" => Field::Grant,
        "session" => Field::Session,
        "server" => Field::Server,
        "human" => Field::Human,
        "agent" => Field::Agent,
        "team" => Field::Team,
        // Lines never carried the transport session: this is the MCPAgentSession id.
        "session_id" => Field::AgentSession,
        "method" => Field::Method,
        "tool" => Field::Tool,
        "prompt" => Field::Prompt,
        "resource" => Field::Resource,
        "request_id" => Field::RequestId,
        "http_method" => Field::HttpMethod,
        "path" => Field::Path,
        "trace_id" => Field::TraceId,
        "sample_rate" => Field::SampleRate,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key the audit code writes today and replay needs is read under its own field.
    #[test]
    fn the_audit_keys_map_to_fields() {
        for (key, field) in [
            (attr::DECISION, Field::Decision),
            (attr::SESSION_ID, Field::TransportSession),
            (attr::TOOL_NAME, Field::Tool),
            (spec::AUTHZ_SESSION_ID, Field::AgentSession),
        ] {
            assert_eq!(span_field(key), Some(field), "{key}");
        }
        assert_eq!(span_field("http.response.status_code"), None);
        assert_eq!(line_field("session_id"), Some(Field::AgentSession));
        assert_eq!(line_field("status_code"), None);
    }
}
