//! Decision → CheckResponse (SPEC §3): status, headers, denied body, dynamic metadata.
//!
//! The answer is written straight to protobuf wire bytes: building prost's `CheckResponse`
//! takes some twenty allocations (its `Struct` keys and values are owned `String`s in a
//! `BTreeMap`), and an answer is written on every Check. Keys and varints are
//! `prost::encoding`'s; what is ours is the one pass that sets a byte aside for each message's
//! length (callgrind: 2,199 instructions per allow answer, 10,731 per denial with its body,
//! against ~2,060 and ~10,580 with a private varint writer). The field numbers are those of
//! `proto/`; [`EncodedResponse::to_message`] decodes an answer with the generated types, and the
//! tests check that every answer decodes and re-encodes to the same bytes.

use bytes::Bytes;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

use crate::decision::{Decision, DenialForm, Reason, Verdict};
use crate::policy::{AuthMode, Primitive};
use crate::proto::auth::CheckResponse;
use crate::proto::core::header_value_option::HeaderAppendAction;

pub const WOULD_DENY_HEADER: &str = "x-would-deny";
pub const WOULD_DENY_REASON_HEADER: &str = "x-would-deny-reason";

/// gRPC status codes used in `CheckResponse.status`.
const OK: u64 = 0;
const INVALID_ARGUMENT: u64 = 3;
const PERMISSION_DENIED: u64 = 7;
const UNAVAILABLE: u64 = 14;
const UNAUTHENTICATED: u64 = 16;

/// A CheckResponse as protobuf wire bytes, ready for the gRPC frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedResponse(pub Bytes);

impl EncodedResponse {
    /// The answer as the generated type, for tests and tools.
    #[allow(clippy::expect_used)] // what `encode` wrote decodes; the tests check every answer
    pub fn to_message(&self) -> CheckResponse {
        CheckResponse::decode(self.0.clone()).expect("an encoded CheckResponse decodes")
    }

    /// Encodes a message built with the generated types (the floor's fixed answer).
    pub fn from_message(message: &CheckResponse) -> Self {
        EncodedResponse(message.encode_to_vec().into())
    }
}

/// The answer to a Check.
pub fn encode(decision: &Decision) -> EncodedResponse {
    let mut w = Writer(Vec::with_capacity(512));
    let applied = decision.applied();
    let (code, http_response) = match applied {
        Verdict::Allow => (OK, check_response::OK_RESPONSE),
        Verdict::Deny => (
            match decision.reason.denial_status() {
                401 => UNAUTHENTICATED,
                503 => UNAVAILABLE,
                400 => INVALID_ARGUMENT,
                _ => PERMISSION_DENIED,
            },
            check_response::DENIED_RESPONSE,
        ),
    };
    w.message(check_response::STATUS, |w| w.uint(status::CODE, code));
    w.message(http_response, |w| match applied {
        Verdict::Allow => ok(w, decision),
        Verdict::Deny => denied(w, decision),
    });
    w.message(check_response::DYNAMIC_METADATA, |w| {
        dynamic_metadata(w, decision)
    });
    EncodedResponse(w.0.into())
}

/// Field numbers, from `proto/` (see the module doc for how they are checked).
mod check_response {
    pub const STATUS: u32 = 1;
    pub const DENIED_RESPONSE: u32 = 2;
    pub const OK_RESPONSE: u32 = 3;
    pub const DYNAMIC_METADATA: u32 = 4;
}
mod status {
    pub const CODE: u32 = 1;
}
mod denied_http_response {
    pub const STATUS: u32 = 1;
    pub const HEADERS: u32 = 2;
    pub const BODY: u32 = 3;
}
mod http_status {
    pub const CODE: u32 = 1;
}
mod ok_http_response {
    pub const HEADERS: u32 = 2;
    pub const HEADERS_TO_REMOVE: u32 = 5;
}
mod header_value_option {
    pub const HEADER: u32 = 1;
    pub const APPEND_ACTION: u32 = 3;
}
mod header_value {
    pub const KEY: u32 = 1;
    pub const VALUE: u32 = 2;
}
/// `google.protobuf.Struct`, its map entries and `Value`.
mod structs {
    pub const FIELDS: u32 = 1;
    pub const KEY: u32 = 1;
    pub const VALUE: u32 = 2;
    pub const STRING_VALUE: u32 = 3;
    pub const BOOL_VALUE: u32 = 4;
}

/// Protobuf wire writing for the shapes an answer has, on `prost::encoding`'s primitives.
struct Writer(Vec<u8>);

impl Writer {
    /// A varint field; zero is the default and is left out.
    fn uint(&mut self, field: u32, value: u64) {
        if value != 0 {
            encode_key(field, WireType::Varint, &mut self.0);
            encode_varint(value, &mut self.0);
        }
    }

    /// A string field (written even when empty: every caller means it to be present).
    fn string(&mut self, field: u32, value: &str) {
        encode_key(field, WireType::LengthDelimited, &mut self.0);
        encode_varint(value.len() as u64, &mut self.0);
        self.0.extend_from_slice(value.as_bytes());
    }

    /// A message field whose content `body` writes. The length goes before the content, so one
    /// byte is set aside for it and the content moved up in the rare case it needs more.
    fn message(&mut self, field: u32, body: impl FnOnce(&mut Self)) {
        encode_key(field, WireType::LengthDelimited, &mut self.0);
        let at = self.0.len();
        self.0.push(0);
        body(self);
        let len = (self.0.len() - at - 1) as u64;
        if encoded_len_varint(len) == 1 {
            self.0[at] = len as u8;
        } else {
            let mut prefix = Vec::with_capacity(encoded_len_varint(len));
            encode_varint(len, &mut prefix);
            self.0.splice(at..=at, prefix);
        }
    }

    /// A `HeaderValueOption` that overwrites `key` with `value`.
    fn header(&mut self, field: u32, key: &str, value: &str) {
        self.message(field, |w| {
            w.message(header_value_option::HEADER, |w| {
                w.string(header_value::KEY, key);
                w.string(header_value::VALUE, value);
            });
            w.uint(
                header_value_option::APPEND_ACTION,
                HeaderAppendAction::OverwriteIfExistsOrAdd as u64,
            );
        });
    }

    /// One entry of a `Struct`'s map.
    fn entry(&mut self, key: &str, value: impl FnOnce(&mut Self)) {
        self.message(structs::FIELDS, |w| {
            w.string(structs::KEY, key);
            w.message(structs::VALUE, value);
        });
    }
}

/// An allow strips client-sent would-deny headers; a would-deny sets them (and must not list
/// them for removal, since Envoy removes after it adds).
fn ok(w: &mut Writer, decision: &Decision) {
    if decision.would_deny {
        w.header(ok_http_response::HEADERS, WOULD_DENY_HEADER, "true");
        w.header(
            ok_http_response::HEADERS,
            WOULD_DENY_REASON_HEADER,
            decision.reason.as_str(),
        );
    } else {
        w.string(ok_http_response::HEADERS_TO_REMOVE, WOULD_DENY_HEADER);
        w.string(
            ok_http_response::HEADERS_TO_REMOVE,
            WOULD_DENY_REASON_HEADER,
        );
    }
}

fn denied(w: &mut Writer, decision: &Decision) {
    let code = decision.http_status();
    w.message(denied_http_response::STATUS, |w| {
        w.uint(http_status::CODE, code.into())
    });
    w.header(
        denied_http_response::HEADERS,
        "content-type",
        "application/json",
    );
    w.string(denied_http_response::BODY, &denied_body(decision));
}

/// The plain denied body of each reason, built once; only bodies that list the server's
/// identity headers, and the JSON-RPC forms, are built per request.
static BODIES: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
    Reason::ALL
        .iter()
        .map(|r| serde_json::json!({"error": r.as_str(), "message": r.message()}).to_string())
        .collect()
});

fn denied_body(decision: &Decision) -> std::borrow::Cow<'static, str> {
    use serde_json::json;
    let reason = decision.reason;
    let required_headers = required_headers(decision);
    // The id is spliced in as sent: its JSON text, a string or a number (`Decision::answer_id`).
    let id = decision.answer_id().unwrap_or("null");
    match decision.denial_form() {
        DenialForm::Plain => match required_headers {
            Some(headers) => json!({
                "error": reason.as_str(),
                "message": reason.message(),
                "required_headers": headers,
            })
            .to_string()
            .into(),
            None => BODIES[reason as usize].as_str().into(),
        },
        DenialForm::JsonRpc => {
            let mut data = json!({"reason": reason.as_str()});
            if let Some(headers) = required_headers {
                data["required_headers"] = json!(headers);
            }
            let error =
                json!({"code": reason.jsonrpc_code(), "message": reason.message(), "data": data});
            format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{error}}}"#).into()
        }
        DenialForm::ToolError => {
            let result = json!({
                "resultType": "complete",
                "content": [{"type": "text", "text": format!("{} ({})", reason.message(), reason.as_str())}],
                "isError": true,
                "_meta": {"mcp-authz/reason": reason.as_str()},
            });
            format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#).into()
        }
    }
}

/// In header mode, a denial for a missing identity or session lists the four header names the
/// server reads (human, agent, team, session).
fn required_headers<'a>(decision: &Decision<'a>) -> Option<[&'a str; 4]> {
    let auth = &decision.server?.server.auth;
    (auth.mode == AuthMode::Header
        && matches!(
            decision.reason,
            Reason::MissingIdentity | Reason::MissingSession
        ))
    .then(|| {
        [
            &*auth.human_header,
            &*auth.agent_header,
            &*auth.team_header,
            &*auth.session_header,
        ]
    })
}

/// The metadata Envoy passes to later filters and the access log, keys in byte order (as a
/// `Struct`'s map is written by prost).
fn dynamic_metadata(w: &mut Writer, decision: &Decision) {
    let target = |primitive| decision.call.as_ref().and_then(|c| c.target_of(primitive));
    for (key, value) in [
        ("decision", Some(decision.applied().as_str())),
        ("matched_grant", decision.grant_key()),
        ("matched_session", decision.session_key()),
        ("mcp_server", decision.server_key()),
        ("policy_revision", Some(decision.revision.map_or("", |r| r))),
        ("prompt", target(Primitive::Prompt)),
        ("reason", Some(decision.reason.as_str())),
        ("resource", target(Primitive::Resource)),
        ("tool", target(Primitive::Tool)),
    ] {
        if let Some(value) = value {
            w.entry(key, |w| w.string(structs::STRING_VALUE, value));
        }
    }
    // A oneof member is written even when it holds its default.
    w.entry("would_deny", |w| {
        encode_key(structs::BOOL_VALUE, WireType::Varint, &mut w.0);
        encode_varint(u64::from(decision.would_deny), &mut w.0);
    });
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

    #[test]
    fn long_messages_get_a_longer_length_prefix() {
        for len in [0, 1, 127, 128, 300, 16_383, 16_384, 70_000] {
            let text = "x".repeat(len);
            let mut w = Writer(Vec::new());
            // HeaderValueOption.header (1) holding HeaderValue.value (2).
            w.message(1, |w| w.string(2, &text));
            let option =
                crate::proto::core::HeaderValueOption::decode(w.0.as_slice()).expect("decodes");
            assert_eq!(option.header.unwrap().value, text, "{len}");
        }
    }
}
