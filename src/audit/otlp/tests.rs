//! The encoded export request, decoded with opentelemetry-proto's prost types and checked field
//! by field.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind};
use prost::Message;

use super::*;
use crate::audit::fixture::{at, check_record};
use crate::audit::{FILTER_SPAN_NAME, SPAN_NAME, SpanIds};
use crate::policy::Timestamp;
use crate::policy::{Mode, ObjectKey};

fn filter_record() -> FilterRecord {
    FilterRecord {
        started: at(1_700_000_000_000_000_000),
        ended: at(1_700_000_000_000_000_777),
        ids: SpanIds {
            trace_id: [7; 16],
            span_id: [9; 8],
        },
        parent: None,
        method: "tools/list",
        server: ObjectKey {
            namespace: "mcp".into(),
            name: "demo".into(),
            full: "mcp/demo".into(),
        },
        human: Some("h".into()),
        agent: Some("a2".into()),
        team: None,
        session_id: None,
        revision: "rev-1".into(),
        mode: Mode::Monitor,
        listed: 3,
        hidden: 0,
        would_hide: 1,
        hidden_names: vec!["delete_row".into(), "x\u{e9}".into()],
    }
}

fn decode(records: &[Recorded], resource: &[(String, OwnedValue)]) -> ExportTraceServiceRequest {
    let mut encoder = RequestEncoder::new(resource, Some("https://schema/1"));
    let mut buf = BytesMut::new();
    encoder.encode(records, &mut buf);
    // The buffers are reused: a second request is the same bytes.
    let first = buf.split().freeze();
    encoder.encode(records, &mut buf);
    assert_eq!(first, buf.split().freeze());
    ExportTraceServiceRequest::decode(first).unwrap()
}

fn s(v: &str) -> Option<Value> {
    Some(Value::StringValue(v.into()))
}

fn attributes(span: &Span) -> Vec<(&str, Option<Value>)> {
    span.attributes
        .iter()
        .map(|KeyValue { key, value, .. }| {
            let value = value.as_ref().map(|AnyValue { value }| value.clone());
            (key.as_str(), value.flatten())
        })
        .collect()
}

#[test]
fn check_and_filter_spans_carry_every_field() {
    let check = check_record();
    let check_ids = check.ids;
    let resource = vec![
        (
            "service.name".to_string(),
            OwnedValue::Str("authz-a".into()),
        ),
        ("k.bool".to_string(), OwnedValue::Bool(false)),
        ("k.int".to_string(), OwnedValue::Int(-3)),
        ("k.double".to_string(), OwnedValue::Double(0.25)),
        (
            "k.list".to_string(),
            OwnedValue::Strs(vec!["a".into(), String::new()]),
        ),
    ];
    let records = [
        Recorded::Check(check),
        Recorded::Filter(Box::new(filter_record())),
    ];
    let request = decode(&records, &resource);

    assert_eq!(request.resource_spans.len(), 1);
    let resource_spans = &request.resource_spans[0];
    assert_eq!(resource_spans.schema_url, "https://schema/1");
    let resource = resource_spans.resource.as_ref().unwrap();
    assert_eq!(resource.dropped_attributes_count, 0);
    let list = |items: &[&str]| {
        Some(Value::ArrayValue(
            opentelemetry_proto::tonic::common::v1::ArrayValue {
                values: items.iter().map(|v| AnyValue { value: s(v) }).collect(),
            },
        ))
    };
    let got: Vec<_> = resource
        .attributes
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.clone().and_then(|v| v.value)))
        .collect();
    assert_eq!(
        got,
        [
            ("service.name", s("authz-a")),
            ("k.bool", Some(Value::BoolValue(false))),
            ("k.int", Some(Value::IntValue(-3))),
            ("k.double", Some(Value::DoubleValue(0.25))),
            ("k.list", list(&["a", ""])),
        ]
    );
    assert_eq!(resource_spans.scope_spans.len(), 1);
    let scope_spans = &resource_spans.scope_spans[0];
    let scope = scope_spans.scope.as_ref().unwrap();
    assert_eq!(scope.name, "mcp-authz");
    assert_eq!(scope.version, env!("CARGO_PKG_VERSION"));
    assert!(scope.attributes.is_empty());
    assert_eq!(scope_spans.spans.len(), 2);

    let span = &scope_spans.spans[0];
    assert_eq!(span.trace_id, check_ids.trace_id);
    assert_eq!(
        hex(&span.trace_id),
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "the parent's trace"
    );
    assert_eq!(span.span_id, check_ids.span_id);
    assert_eq!(hex(&span.parent_span_id), "00f067aa0ba902b7");
    // Sampled, and the parent is remote (it came with the call), as the SDK wrote it.
    assert_eq!(span.flags, 0x301);
    assert_eq!(span.trace_state, "");
    assert_eq!(span.name, SPAN_NAME);
    assert_eq!(span.kind, SpanKind::Server as i32);
    let started = Timestamp::parse_rfc3339("2026-11-20T10:00:00.000001Z")
        .unwrap()
        .unix_nanos() as u64;
    assert_eq!(span.start_time_unix_nano, started);
    assert_eq!(span.end_time_unix_nano, started + 1500);
    let status = span.status.as_ref().unwrap();
    assert_eq!((status.code, status.message.as_str()), (0, ""));
    assert!(span.events.is_empty() && span.links.is_empty());
    let revision = match &records[0] {
        Recorded::Check(r) => r.revision.as_deref().unwrap().to_string(),
        Recorded::Filter(_) => unreachable!(),
    };
    let expected = vec![
        ("mcp.authz.decision", s("allow")),
        ("mcp.authz.reason", s("allowed")),
        ("mcp.authz.would_deny", Some(Value::BoolValue(false))),
        ("mcp.authz.mode", s("enforce")),
        ("mcp.authz.status_code", Some(Value::IntValue(200))),
        ("mcp.authz.policy_revision", s(&revision)),
        ("mcp.authz.policy_version", s("v1")),
        ("mcp.authz.matched_grant", s("mcp/vault-readers")),
        ("mcp.authz.matched_session", s("mcp/s-7")),
        ("mcp.authz.admin_trust", s("low")),
        ("mcp.authz.consented_trust", s("low")),
        ("mcp.authz.effective_trust", s("low")),
        ("mcp.authz.required_trust", s("low")),
        ("mcp.authz.required_side_effect", s("read")),
        ("mcp.server.name", s("vault")),
        ("mcp.server.namespace", s("mcp")),
        ("enduser.id", s("h")),
        ("mcp.subject.agent_id", s("a1")),
        ("mcp.subject.team_id", s("t")),
        ("mcp.authz.session_id", s("s-7")),
        ("mcp.session.id", s("transport-1")),
        ("mcp.method.name", s("tools/call")),
        ("gen_ai.tool.name", s("read_secret")),
        ("jsonrpc.request.id", s("r-1")),
        ("mcp.protocol.version", s("2025-06-18")),
        ("http.request.method", s("POST")),
        ("url.path", s("/vault/mcp")),
        ("mcp.authz.sample_rate", Some(Value::DoubleValue(1.0))),
    ];
    assert_eq!(attributes(span), expected);

    let span = &scope_spans.spans[1];
    assert_eq!(span.trace_id, [7; 16]);
    assert_eq!(span.span_id, [9; 8]);
    assert!(span.parent_span_id.is_empty());
    // Sampled, and no remote parent.
    assert_eq!(span.flags, 0x101);
    assert_eq!(span.name, FILTER_SPAN_NAME);
    assert_eq!(span.kind, SpanKind::Server as i32);
    assert_eq!(span.start_time_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(span.end_time_unix_nano, 1_700_000_000_000_000_777);
    assert!(span.status.is_some());
    assert_eq!(
        attributes(span),
        vec![
            ("mcp.method.name", s("tools/list")),
            ("mcp.server.name", s("demo")),
            ("mcp.server.namespace", s("mcp")),
            ("enduser.id", s("h")),
            ("mcp.subject.agent_id", s("a2")),
            ("mcp.authz.policy_revision", s("rev-1")),
            ("mcp.authz.mode", s("monitor")),
            ("mcp.authz.listed", Some(Value::IntValue(3))),
            ("mcp.authz.hidden", Some(Value::IntValue(0))),
            ("mcp.authz.would_hide", Some(Value::IntValue(1))),
            ("mcp.authz.hidden_names", list(&["delete_row", "x\u{e9}"])),
        ]
    );
}

/// A would-deny in monitor mode names its reason; a tool's risk level follows its side effect;
/// a sample rate below 1 is a double.
#[test]
fn would_deny_risk_level_and_sample_rate() {
    let mut check = check_record();
    check.would_deny = true;
    check.mode = Mode::Monitor;
    check.sample_rate = 0.01;
    if let Some(tool) = check.tool.as_mut() {
        tool.risk_level = Some(crate::policy::RiskLevel::High);
    }
    let request = decode(&[Recorded::Check(check)], &[]);
    let resource_spans = &request.resource_spans[0];
    assert!(
        resource_spans
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .is_empty()
    );
    let span = &resource_spans.scope_spans[0].spans[0];
    let got = attributes(span);
    let keys: Vec<&str> = got.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        keys[..4],
        [
            "mcp.authz.decision",
            "mcp.authz.reason",
            "mcp.authz.would_deny",
            "mcp.authz.would_deny_reason"
        ]
    );
    let value = |key: &str| got.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone());
    assert_eq!(
        value("mcp.authz.would_deny"),
        Some(Some(Value::BoolValue(true)))
    );
    assert_eq!(value("mcp.authz.would_deny_reason"), Some(s("allowed")));
    assert_eq!(value("mcp.authz.mode"), Some(s("monitor")));
    assert_eq!(value("mcp.authz.risk_level"), Some(s("high")));
    assert_eq!(
        keys.iter().position(|k| *k == "mcp.authz.risk_level"),
        keys.iter()
            .position(|k| *k == "mcp.authz.required_side_effect")
            .map(|i| i + 1)
    );
    assert_eq!(
        value("mcp.authz.sample_rate"),
        Some(Some(Value::DoubleValue(0.01)))
    );
    // A batch of many spans (multi-byte lengths) decodes whole.
    let many: Vec<Recorded> = (0..600).map(|_| Recorded::Check(check_record())).collect();
    let request = decode(&many, &[]);
    assert_eq!(request.resource_spans[0].scope_spans[0].spans.len(), 600);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
