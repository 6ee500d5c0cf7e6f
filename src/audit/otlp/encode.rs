//! The OTLP export request written straight from the audit records: the protobuf bytes of
//! `opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest` (one `ResourceSpans`,
//! one `ScopeSpans`, then the spans), with the fields the OpenTelemetry SDK's exporter wrote.
//!
//! Two passes over a batch: the first sums each span's length (kept in a reused `Vec`), the
//! second writes; neither allocates per span or per attribute. The resource and the scope are
//! encoded once, at start-up. Field numbers are those of opentelemetry-proto 1.x
//! (`trace/v1/trace.proto`, `common/v1/common.proto`, `resource/v1/resource.proto`).

use std::time::SystemTime;

use bytes::BufMut;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use super::super::{FILTER_SPAN_NAME, Recorded, SPAN_NAME, SpanIds};
use super::AttrValue;

/// `ExportTraceServiceRequest.resource_spans`.
const REQUEST_RESOURCE_SPANS: u32 = 1;
/// `ResourceSpans.resource`, `.scope_spans`, `.schema_url`.
const RESOURCE_SPANS_RESOURCE: u32 = 1;
const RESOURCE_SPANS_SCOPE_SPANS: u32 = 2;
const RESOURCE_SPANS_SCHEMA_URL: u32 = 3;
/// `Resource.attributes`.
const RESOURCE_ATTRIBUTES: u32 = 1;
/// `ScopeSpans.scope`, `.spans`.
const SCOPE_SPANS_SCOPE: u32 = 1;
const SCOPE_SPANS_SPANS: u32 = 2;
/// `InstrumentationScope.name`, `.version`.
const SCOPE_NAME: u32 = 1;
const SCOPE_VERSION: u32 = 2;
/// `Span` fields.
const SPAN_TRACE_ID: u32 = 1;
const SPAN_SPAN_ID: u32 = 2;
const SPAN_PARENT_SPAN_ID: u32 = 4;
const SPAN_NAME_FIELD: u32 = 5;
const SPAN_KIND: u32 = 6;
const SPAN_START: u32 = 7;
const SPAN_END: u32 = 8;
const SPAN_ATTRIBUTES: u32 = 9;
const SPAN_STATUS: u32 = 15;
const SPAN_FLAGS: u32 = 16;
/// `KeyValue.key`, `.value`.
const KEY_VALUE_KEY: u32 = 1;
const KEY_VALUE_VALUE: u32 = 2;
/// `AnyValue` oneof: `string_value`, `bool_value`, `int_value`, `double_value`, `array_value`.
const ANY_STRING: u32 = 1;
const ANY_BOOL: u32 = 2;
const ANY_INT: u32 = 3;
const ANY_DOUBLE: u32 = 4;
const ANY_ARRAY: u32 = 5;
/// `ArrayValue.values`.
const ARRAY_VALUES: u32 = 1;

/// `SPAN_KIND_SERVER`.
const KIND_SERVER: u64 = 2;
/// W3C trace flags: sampled (audit spans are exported whatever the parent's flag says).
const TRACE_FLAGS_SAMPLED: u32 = 0x01;
/// `SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK` and `SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK`: the SDK
/// always says whether the parent is remote; ours is when there is one (it came with the call).
const FLAGS_HAS_IS_REMOTE: u32 = 0x100;
const FLAGS_IS_REMOTE: u32 = 0x200;

/// The instrumentation scope of every span.
pub const SCOPE: &str = "mcp-authz";
pub const SCOPE_VERSION_TEXT: &str = env!("CARGO_PKG_VERSION");

/// A resource attribute's value, owned (the resource is read once).
#[derive(Debug, Clone)]
pub enum OwnedValue {
    Str(String),
    Bool(bool),
    Int(i64),
    Double(f64),
    Strs(Vec<String>),
}

impl OwnedValue {
    fn borrow(&self) -> AttrValue<'_> {
        match self {
            OwnedValue::Str(s) => AttrValue::Str(s),
            OwnedValue::Bool(b) => AttrValue::Bool(*b),
            OwnedValue::Int(n) => AttrValue::Int(*n),
            OwnedValue::Double(f) => AttrValue::Double(*f),
            OwnedValue::Strs(v) => AttrValue::Strs(v),
        }
    }
}

/// Writes export requests; the resource and scope are encoded when it is made.
#[derive(Debug)]
pub struct RequestEncoder {
    /// `ResourceSpans.resource` (key, length and message) and `.schema_url` when there is one.
    resource: Vec<u8>,
    /// `ScopeSpans.scope`: key, length and message.
    scope: Vec<u8>,
    /// The length of each span of the batch being encoded.
    lengths: Vec<usize>,
}

impl RequestEncoder {
    /// `resource`: its attributes, and its schema URL if it has one.
    pub fn new(resource: &[(String, OwnedValue)], schema_url: Option<&str>) -> Self {
        let mut out = Vec::new();
        let attributes: usize = resource
            .iter()
            .map(|(k, v)| repeated_len(key_value_len(k, v.borrow())))
            .sum();
        encode_key(RESOURCE_SPANS_RESOURCE, WireType::LengthDelimited, &mut out);
        encode_varint(attributes as u64, &mut out);
        for (key, value) in resource {
            encode_key(RESOURCE_ATTRIBUTES, WireType::LengthDelimited, &mut out);
            write_key_value(key, value.borrow(), &mut out);
        }
        if let Some(url) = schema_url.filter(|u| !u.is_empty()) {
            write_str(RESOURCE_SPANS_SCHEMA_URL, url, &mut out);
        }
        let mut scope = Vec::new();
        let scope_len = str_len(SCOPE_NAME, SCOPE) + str_len(SCOPE_VERSION, SCOPE_VERSION_TEXT);
        encode_key(SCOPE_SPANS_SCOPE, WireType::LengthDelimited, &mut scope);
        encode_varint(scope_len as u64, &mut scope);
        write_str(SCOPE_NAME, SCOPE, &mut scope);
        write_str(SCOPE_VERSION, SCOPE_VERSION_TEXT, &mut scope);
        RequestEncoder {
            resource: out,
            scope,
            lengths: Vec::new(),
        }
    }

    /// Appends the request carrying `records` to `buf`.
    pub fn encode(&mut self, records: &[Recorded], buf: &mut impl BufMut) {
        self.lengths.clear();
        self.lengths.extend(records.iter().map(span_len));
        let spans: usize = self.lengths.iter().map(|&n| repeated_len(n)).sum();
        let scope_spans = self.scope.len() + spans;
        let resource_spans = self.resource.len() + repeated_len(scope_spans);
        encode_key(REQUEST_RESOURCE_SPANS, WireType::LengthDelimited, buf);
        encode_varint(resource_spans as u64, buf);
        buf.put_slice(&self.resource);
        encode_key(RESOURCE_SPANS_SCOPE_SPANS, WireType::LengthDelimited, buf);
        encode_varint(scope_spans as u64, buf);
        buf.put_slice(&self.scope);
        for (record, &len) in records.iter().zip(&self.lengths) {
            encode_key(SCOPE_SPANS_SPANS, WireType::LengthDelimited, buf);
            encode_varint(len as u64, buf);
            write_span(record, buf);
        }
    }
}

/// What a span carries outside its attributes.
struct Head {
    ids: SpanIds,
    parent: Option<SpanIds>,
    name: &'static str,
    started: u64,
    ended: u64,
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn head(record: &Recorded) -> Head {
    match record {
        Recorded::Check(r) => Head {
            ids: r.ids,
            parent: r.parent,
            name: SPAN_NAME,
            started: nanos(r.started),
            ended: nanos(r.ended),
        },
        Recorded::Filter(r) => Head {
            ids: r.ids,
            parent: r.parent,
            name: FILTER_SPAN_NAME,
            started: nanos(r.started),
            ended: nanos(r.ended),
        },
    }
}

fn flags(head: &Head) -> u32 {
    let remote = if head.parent.is_some() {
        FLAGS_IS_REMOTE
    } else {
        0
    };
    TRACE_FLAGS_SAMPLED | FLAGS_HAS_IS_REMOTE | remote
}

/// The span's length, its key and length prefix excluded.
fn span_len(record: &Recorded) -> usize {
    let head = head(record);
    let mut len = bytes_len(SPAN_TRACE_ID, 16) + bytes_len(SPAN_SPAN_ID, 8);
    if head.parent.is_some() {
        len += bytes_len(SPAN_PARENT_SPAN_ID, 8);
    }
    len += key_len(SPAN_FLAGS) + 4;
    len += str_len(SPAN_NAME_FIELD, head.name);
    len += key_len(SPAN_KIND) + encoded_len_varint(KIND_SERVER);
    len += fixed64_len(SPAN_START, head.started) + fixed64_len(SPAN_END, head.ended);
    record.for_each_attribute(|key, value| {
        len += repeated_len(key_value_len(key, value));
    });
    // An unset status: an empty `Status` message.
    len + key_len(SPAN_STATUS) + 1
}

fn write_span(record: &Recorded, buf: &mut impl BufMut) {
    let head = head(record);
    write_bytes(SPAN_TRACE_ID, &head.ids.trace_id, buf);
    write_bytes(SPAN_SPAN_ID, &head.ids.span_id, buf);
    if let Some(parent) = head.parent {
        write_bytes(SPAN_PARENT_SPAN_ID, &parent.span_id, buf);
    }
    encode_key(SPAN_FLAGS, WireType::ThirtyTwoBit, buf);
    buf.put_u32_le(flags(&head));
    write_str(SPAN_NAME_FIELD, head.name, buf);
    encode_key(SPAN_KIND, WireType::Varint, buf);
    encode_varint(KIND_SERVER, buf);
    write_fixed64(SPAN_START, head.started, buf);
    write_fixed64(SPAN_END, head.ended, buf);
    record.for_each_attribute(|key, value| {
        encode_key(SPAN_ATTRIBUTES, WireType::LengthDelimited, buf);
        write_key_value(key, value, buf);
    });
    encode_key(SPAN_STATUS, WireType::LengthDelimited, buf);
    encode_varint(0, buf);
}

/// A length-delimited field's length prefix and body, its key taken as one byte (every
/// repeated field here has a number below 16).
fn repeated_len(body: usize) -> usize {
    1 + encoded_len_varint(body as u64) + body
}

fn bytes_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn str_len(tag: u32, s: &str) -> usize {
    bytes_len(tag, s.len())
}

/// prost leaves a zero scalar out.
fn fixed64_len(tag: u32, value: u64) -> usize {
    if value == 0 { 0 } else { key_len(tag) + 8 }
}

fn write_bytes(tag: u32, bytes: &[u8], buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.put_slice(bytes);
}

fn write_str(tag: u32, s: &str, buf: &mut impl BufMut) {
    write_bytes(tag, s.as_bytes(), buf);
}

fn write_fixed64(tag: u32, value: u64, buf: &mut impl BufMut) {
    if value != 0 {
        encode_key(tag, WireType::SixtyFourBit, buf);
        buf.put_u64_le(value);
    }
}

/// `AnyValue`'s length. A oneof member is written even when it holds its type's default.
fn any_value_len(value: AttrValue<'_>) -> usize {
    match value {
        AttrValue::Str(s) => str_len(ANY_STRING, s),
        AttrValue::Bool(_) => key_len(ANY_BOOL) + 1,
        AttrValue::Int(n) => key_len(ANY_INT) + encoded_len_varint(n as u64),
        AttrValue::Double(_) => key_len(ANY_DOUBLE) + 8,
        AttrValue::Strs(items) => {
            let values: usize = items
                .iter()
                .map(|s| repeated_len(str_len(ANY_STRING, s)))
                .sum();
            bytes_len(ANY_ARRAY, values)
        }
    }
}

/// `KeyValue`'s length (prost leaves an empty key out; the value is always there).
fn key_value_len(key: &str, value: AttrValue<'_>) -> usize {
    let key = if key.is_empty() {
        0
    } else {
        str_len(KEY_VALUE_KEY, key)
    };
    key + bytes_len(KEY_VALUE_VALUE, any_value_len(value))
}

/// A `KeyValue`'s length prefix and body (its field key written by the caller).
fn write_key_value(key: &str, value: AttrValue<'_>, buf: &mut impl BufMut) {
    encode_varint(key_value_len(key, value) as u64, buf);
    if !key.is_empty() {
        write_str(KEY_VALUE_KEY, key, buf);
    }
    encode_key(KEY_VALUE_VALUE, WireType::LengthDelimited, buf);
    encode_varint(any_value_len(value) as u64, buf);
    match value {
        AttrValue::Str(s) => write_str(ANY_STRING, s, buf),
        AttrValue::Bool(b) => {
            encode_key(ANY_BOOL, WireType::Varint, buf);
            encode_varint(u64::from(b), buf);
        }
        AttrValue::Int(n) => {
            encode_key(ANY_INT, WireType::Varint, buf);
            encode_varint(n as u64, buf);
        }
        AttrValue::Double(f) => {
            encode_key(ANY_DOUBLE, WireType::SixtyFourBit, buf);
            buf.put_f64_le(f);
        }
        AttrValue::Strs(items) => {
            let values: usize = items
                .iter()
                .map(|s| repeated_len(str_len(ANY_STRING, s)))
                .sum();
            encode_key(ANY_ARRAY, WireType::LengthDelimited, buf);
            encode_varint(values as u64, buf);
            for item in items {
                encode_key(ARRAY_VALUES, WireType::LengthDelimited, buf);
                encode_varint(str_len(ANY_STRING, item) as u64, buf);
                write_str(ANY_STRING, item, buf);
            }
        }
    }
}
