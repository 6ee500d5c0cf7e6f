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

/// The denied body of each reason, built once; only bodies that list the server's identity
/// headers are built per request.
static BODIES: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
    Reason::ALL
        .iter()
        .map(|r| serde_json::json!({"error": r.as_str(), "message": r.message()}).to_string())
        .collect()
});

fn denied_body(decision: &Decision) -> String {
    let reason = decision.reason;
    let header_auth = decision
        .server
        .map(|s| &s.server.auth)
        .filter(|auth| auth.mode == AuthMode::Header);
    match header_auth {
        Some(auth) if matches!(reason, Reason::MissingIdentity | Reason::MissingSession) => {
            serde_json::json!({
                "error": reason.as_str(),
                "message": reason.message(),
                "required_headers": [
                    auth.human_header,
                    auth.agent_header,
                    auth.team_header,
                    auth.session_header
                ],
            })
            .to_string()
        }
        _ => BODIES[reason as usize].clone(),
    }
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
        string(decision.revision.map_or("", |r| r)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precomputed_bodies_follow_the_reason_order() {
        for (i, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i);
            let body: serde_json::Value = serde_json::from_str(&BODIES[i]).unwrap();
            assert_eq!(body["error"], reason.as_str());
        }
    }
}
