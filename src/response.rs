//! Decision → CheckResponse (SPEC §3): status, headers, denied body, dynamic metadata.

use prost_types::value::Kind;
use prost_types::{Struct, Value};

use crate::decision::{Decision, Reason, Verdict};
use crate::policy::AuthMode;
use crate::proto::auth::{CheckResponse, DeniedHttpResponse, OkHttpResponse, check_response};
use crate::proto::core::header_value_option::HeaderAppendAction;
use crate::proto::core::{HeaderValue, HeaderValueOption};
use crate::proto::http::HttpStatus;
use crate::proto::rpc::Status;

pub const WOULD_DENY_HEADER: &str = "x-would-deny";
pub const WOULD_DENY_REASON_HEADER: &str = "x-would-deny-reason";

/// gRPC status codes used in `CheckResponse.status`.
const OK: i32 = 0;
const PERMISSION_DENIED: i32 = 7;
const UNAVAILABLE: i32 = 14;
const UNAUTHENTICATED: i32 = 16;

pub fn check_response(decision: &Decision) -> CheckResponse {
    let (code, http_response) = match decision.applied() {
        Verdict::Allow => (OK, check_response::HttpResponse::OkResponse(ok(decision))),
        Verdict::Deny => {
            let status = decision.reason.denial_status();
            let code = match status {
                401 => UNAUTHENTICATED,
                503 => UNAVAILABLE,
                _ => PERMISSION_DENIED,
            };
            (
                code,
                check_response::HttpResponse::DeniedResponse(DeniedHttpResponse {
                    status: Some(HttpStatus {
                        code: i32::from(status),
                    }),
                    headers: vec![header("content-type", "application/json")],
                    body: denied_body(decision),
                }),
            )
        }
    };
    CheckResponse {
        status: Some(Status {
            code,
            message: String::new(),
            details: Vec::new(),
        }),
        http_response: Some(http_response),
        dynamic_metadata: Some(dynamic_metadata(decision)),
    }
}

#[allow(deprecated)] // `append` is left unset, as Envoy wants when `append_action` is used.
fn header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_string(),
            value: value.to_string(),
            raw_value: Vec::new(),
        }),
        append: None,
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        keep_empty_value: false,
    }
}

/// An allow strips client-sent would-deny headers; a would-deny sets them (and must not list
/// them for removal, since Envoy removes after it adds).
fn ok(decision: &Decision) -> OkHttpResponse {
    let mut response = OkHttpResponse::default();
    if decision.would_deny {
        response.headers = vec![
            header(WOULD_DENY_HEADER, "true"),
            header(WOULD_DENY_REASON_HEADER, decision.reason.as_str()),
        ];
    } else {
        response.headers_to_remove = vec![
            WOULD_DENY_HEADER.to_string(),
            WOULD_DENY_REASON_HEADER.to_string(),
        ];
    }
    response
}

fn denied_body(decision: &Decision) -> String {
    let mut body = serde_json::json!({
        "error": decision.reason.as_str(),
        "message": decision.reason.message(),
    });
    if matches!(
        decision.reason,
        Reason::MissingIdentity | Reason::MissingSession
    ) && let Some(server) = decision.server
        && server.server.auth.mode == AuthMode::Header
    {
        let auth = &server.server.auth;
        body["required_headers"] = serde_json::json!([
            auth.human_header,
            auth.agent_header,
            auth.team_header,
            auth.session_header
        ]);
    }
    body.to_string()
}

fn string(value: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(value.to_string())),
    }
}

fn dynamic_metadata(decision: &Decision) -> Struct {
    let mut fields = std::collections::BTreeMap::new();
    fields.insert("decision".into(), string(decision.applied().as_str()));
    fields.insert("reason".into(), string(decision.reason.as_str()));
    fields.insert(
        "would_deny".into(),
        Value {
            kind: Some(Kind::BoolValue(decision.would_deny)),
        },
    );
    fields.insert(
        "policy_revision".into(),
        string(decision.revision.unwrap_or_default()),
    );
    let optional = [
        ("matched_grant", decision.grant_key()),
        ("matched_session", decision.session_key()),
        ("mcp_server", decision.server_key()),
        (
            "tool",
            decision.call.as_ref().and_then(|c| c.tool.as_deref()),
        ),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            fields.insert(key.into(), string(value));
        }
    }
    Struct { fields }
}
