//! Recorded decisions (SPEC §8) from the service's JSON audit lines, OTLP JSON (the Collector's
//! file exporter, Jaeger v2's `/api/v3/traces`) and Jaeger's `/api/traces` JSON, as [`Record`]s.
//!
//! A file is read line by line, each line on its own, so a corrupt or cut line costs only
//! itself; the shape of each line's JSON says what it is. A file whose first line is not a
//! whole JSON value is one pretty-printed document, read as a stream. Either way a trace or an
//! OTLP span list is never held whole: spans are turned into records as they are parsed.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, BufRead, Read};
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::keys::{self, Field};
use crate::policy::Primitive;
use crate::policy::Timestamp;

/// Where a record was read, so that examples come in input order whoever parsed them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// The input's index among the FILE arguments.
    pub file: u32,
    /// 1-based.
    pub line: u64,
    /// The span's index within its line.
    pub item: u32,
}

/// One recorded decision as read: its time and the fields of [`Field`], text in one buffer.
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub position: Position,
    /// When the Check ran: a span's start, a line's timestamp.
    pub time: Option<Timestamp>,
    pub would_deny: Option<bool>,
    /// `mcp.authz.sample_rate` as recorded (NaN when it is not a number).
    pub sample_rate: Option<f64>,
    text: String,
    ranges: [Option<(u32, u32)>; Field::COUNT],
}

impl Record {
    /// A field's text as recorded ("" included).
    pub fn text(&self, field: Field) -> Option<&str> {
        let (start, end) = self.ranges[field as usize]?;
        Some(&self.text[start as usize..end as usize])
    }

    pub fn set_text(&mut self, field: Field, value: &str) {
        let start = self.text.len() as u32;
        self.text.push_str(value);
        self.ranges[field as usize] = Some((start, self.text.len() as u32));
    }

    fn set(&mut self, field: Field, value: &Scalar) {
        match field {
            Field::WouldDeny => {
                self.would_deny = match value {
                    Scalar::Bool(b) => Some(*b),
                    Scalar::Str(s) => s.parse().ok(),
                    _ => None,
                }
            }
            Field::SampleRate => self.sample_rate = Some(value.number().unwrap_or(f64::NAN)),
            _ => {
                if let Some(text) = value.text() {
                    self.set_text(field, &text);
                }
            }
        }
    }

    /// `namespace/name` of the server the decision was about.
    pub fn server(&self) -> Option<Cow<'_, str>> {
        if let Some(full) = self.text(Field::Server) {
            return Some(Cow::Borrowed(full));
        }
        let name = self.text(Field::ServerName)?;
        let namespace = self.text(Field::ServerNamespace).unwrap_or("default");
        Some(Cow::Owned(format!("{namespace}/{name}")))
    }

    /// The first edition recorded no sample rate; its `mcp.session.id` held the MCPAgentSession
    /// id (SPEC §8).
    pub fn first_edition(&self) -> bool {
        self.sample_rate.is_none()
    }

    /// The MCPAgentSession id as sent.
    pub fn agent_session(&self) -> Option<&str> {
        self.text(Field::AgentSession).or_else(|| {
            self.first_edition()
                .then(|| self.text(Field::TransportSession))
                .flatten()
        })
    }

    /// The called tool, prompt or resource, under the key of its primitive.
    pub fn target(&self, primitive: Primitive) -> Option<&str> {
        self.text(match primitive {
            Primitive::Tool => Field::Tool,
            Primitive::Prompt => Field::Prompt,
            Primitive::Resource => Field::Resource,
        })
    }
}

/// What a top-level JSON value turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    AuditLine,
    /// `{"resourceSpans":…}`, bare or in `{"result":…}`.
    Otlp,
    /// `{"data":[…]}`.
    Jaeger,
    /// Valid JSON that holds no decision: another log line.
    Other,
}

/// What was read of one input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileStats {
    pub lines: u64,
    pub records: u64,
    pub audit_lines: u64,
    /// Lines (or documents) of OTLP JSON.
    pub otlp: u64,
    /// Lines (or documents) of Jaeger JSON.
    pub jaeger: u64,
    /// Valid JSON holding no decision: the service's other log lines.
    pub other_lines: u64,
    /// Spans of other names.
    pub other_spans: u64,
    pub corrupt: u64,
    pub truncated: u64,
}

impl FileStats {
    pub fn count(&mut self, kind: LineKind) {
        match kind {
            LineKind::Blank => {}
            LineKind::Read(Shape::AuditLine) => self.audit_lines += 1,
            LineKind::Read(Shape::Otlp) => self.otlp += 1,
            LineKind::Read(Shape::Jaeger) => self.jaeger += 1,
            LineKind::Read(Shape::Other) => self.other_lines += 1,
            LineKind::Corrupt => self.corrupt += 1,
            LineKind::Truncated => self.truncated += 1,
        }
    }

    pub fn merge(&mut self, other: &FileStats) {
        self.lines += other.lines;
        self.records += other.records;
        self.audit_lines += other.audit_lines;
        self.otlp += other.otlp;
        self.jaeger += other.jaeger;
        self.other_lines += other.other_lines;
        self.other_spans += other.other_spans;
        self.corrupt += other.corrupt;
        self.truncated += other.truncated;
    }
}

/// What reading one line gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    Blank,
    Read(Shape),
    /// Not JSON.
    Corrupt,
    /// JSON cut short.
    Truncated,
}

/// Records are pushed here as they are parsed; `flush`, when set, takes them in batches.
pub struct Sink<'f> {
    pub records: Vec<Record>,
    /// The position of the line being read; `item` counts its records.
    pub position: Position,
    /// Spans of other names, skipped.
    pub other_spans: u64,
    flush: Option<Flush<'f>>,
}

/// Takes a batch of records (and leaves the vector empty).
pub type Flush<'f> = &'f mut dyn FnMut(&mut Vec<Record>);

/// Records a streaming document hands on at a time.
const FLUSH_AT: usize = 4096;

impl<'f> Sink<'f> {
    pub fn new(position: Position) -> Self {
        Sink {
            records: Vec::new(),
            position,
            other_spans: 0,
            flush: None,
        }
    }

    /// A sink that hands records to `flush` in batches (call it once more at the end).
    pub fn flushing(position: Position, flush: Flush<'f>) -> Self {
        Sink {
            flush: Some(flush),
            ..Sink::new(position)
        }
    }

    fn push(&mut self, mut record: Record) {
        record.position = self.position;
        self.position.item += 1;
        self.records.push(record);
        if self.records.len() >= FLUSH_AT
            && let Some(flush) = &mut self.flush
        {
            flush(&mut self.records);
        }
    }

    fn otlp_span(&mut self, span: OtlpSpan) {
        if span.name.as_ref().map(|n| &*n.0) != Some(keys::CHECK_SPAN) {
            self.other_spans += 1;
            return;
        }
        let mut record = Record {
            time: span
                .start_time_unix_nano
                .and_then(|t| t.integer())
                .map(at_nanos),
            ..Record::default()
        };
        if let Some(id) = span.trace_id.and_then(|id| trace_id(&id.0)) {
            record.set_text(Field::TraceId, &id);
        }
        for attribute in span.attributes {
            if let (Some(field), Some(value)) =
                (keys::span_field(&attribute.key.0), attribute.value)
            {
                record.set(field, &value.0);
            }
        }
        self.push(record);
    }

    /// A span of a Jaeger trace, which names the trace id once for all its spans.
    fn jaeger_span(&mut self, span: JaegerSpan, trace: Option<&str>) {
        if span.operation_name.as_ref().map(|n| &*n.0) != Some(keys::CHECK_SPAN) {
            self.other_spans += 1;
            return;
        }
        let mut record = Record {
            time: span
                .start_time
                .and_then(|t| t.integer())
                .and_then(|micros| micros.checked_mul(1000))
                .map(at_nanos),
            ..Record::default()
        };
        let id = span.trace_id.as_ref().map(|id| &*id.0).or(trace);
        if let Some(id) = id.and_then(trace_id) {
            record.set_text(Field::TraceId, &id);
        }
        for tag in span.tags {
            if let (Some(field), Some(value)) = (keys::span_field(&tag.key.0), tag.value) {
                record.set(field, &value);
            }
        }
        self.push(record);
    }
}

fn at_nanos(nanos: u64) -> Timestamp {
    Timestamp::from_system(UNIX_EPOCH + Duration::from_nanos(nanos))
}

/// A trace id as lower-case hex: OTLP JSON writes hex, protobuf's JSON mapping base64.
fn trace_id(id: &str) -> Option<String> {
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(id.to_ascii_lowercase());
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(id).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Reads one line (without its newline); its records are added to `sink` only if the whole
/// line parses.
pub fn read_line(line: &[u8], sink: &mut Sink) -> LineKind {
    if line.iter().all(u8::is_ascii_whitespace) {
        return LineKind::Blank;
    }
    let before = sink.records.len();
    let mut de = serde_json::Deserializer::from_slice(line);
    let shape = Top(sink)
        .deserialize(&mut de)
        .and_then(|shape| de.end().map(|()| shape));
    match shape {
        Ok(shape) => LineKind::Read(shape),
        Err(e) => {
            sink.records.truncate(before);
            broken(&e)
        }
    }
}

/// Reads one JSON document from `reader` as a stream. What was read before an error is kept;
/// only a failing reader is an error.
pub fn read_document(reader: impl Read, sink: &mut Sink) -> io::Result<LineKind> {
    let mut de = serde_json::Deserializer::from_reader(reader);
    match Top(sink)
        .deserialize(&mut de)
        .and_then(|shape| de.end().map(|()| shape))
    {
        Ok(shape) => Ok(LineKind::Read(shape)),
        Err(e) if e.is_io() => Err(e.into()),
        Err(e) => Ok(broken(&e)),
    }
}

fn broken(error: &serde_json::Error) -> LineKind {
    if error.is_eof() {
        LineKind::Truncated
    } else {
        LineKind::Corrupt
    }
}

/// How a file is read, from its first non-blank line (which `read_first` leaves in `line`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Lines,
    /// The first line does not hold a whole JSON value: one document over many lines.
    Document,
}

/// Reads lines into `line` up to and including the first non-blank one, and says how the
/// file is laid out.
pub fn read_first(reader: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<(Layout, u64)> {
    let mut lines = 0;
    loop {
        let start = line.len();
        if reader.read_until(b'\n', line)? == 0 {
            return Ok((Layout::Lines, lines));
        }
        lines += 1;
        let text = &line[start..];
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let whole = serde_json::from_slice::<IgnoredAny>(text);
        let layout = match whole {
            Err(e) if e.is_eof() => Layout::Document,
            _ => Layout::Lines,
        };
        return Ok((layout, lines));
    }
}

/// A gzip stream starts with these two bytes.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// `reader`, decompressed when it is gzip (several members, as rotated logs are, included).
pub fn decompressed<'r>(mut reader: impl BufRead + 'r) -> io::Result<Box<dyn BufRead + 'r>> {
    let gzip = reader.fill_buf()?.starts_with(&GZIP_MAGIC);
    Ok(if gzip {
        Box::new(io::BufReader::with_capacity(
            256 * 1024,
            flate2::bufread::MultiGzDecoder::new(reader),
        ))
    } else {
        Box::new(reader)
    })
}

/// A string, borrowed from the input when it has no escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v))
            }
        }
        deserializer.deserialize_str(StrVisitor).map(Str)
    }
}

/// A JSON value as far as a record field cares: a scalar, or something else (skipped).
#[derive(Debug, Clone, PartialEq)]
enum Scalar<'a> {
    Str(Cow<'a, str>),
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Other,
}

impl Scalar<'_> {
    /// The value as text: a number as its JSON text.
    fn text(&self) -> Option<Cow<'_, str>> {
        Some(match self {
            Scalar::Str(s) => Cow::Borrowed(&**s),
            Scalar::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Scalar::Int(i) => Cow::Owned(i.to_string()),
            Scalar::Uint(u) => Cow::Owned(u.to_string()),
            Scalar::Float(f) => Cow::Owned(f.to_string()),
            Scalar::Other => return None,
        })
    }

    fn number(&self) -> Option<f64> {
        match self {
            Scalar::Int(i) => Some(*i as f64),
            Scalar::Uint(u) => Some(*u as f64),
            Scalar::Float(f) => Some(*f),
            Scalar::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// A non-negative integer, also as a string (OTLP JSON writes 64-bit integers as strings).
    fn integer(&self) -> Option<u64> {
        match self {
            Scalar::Uint(u) => Some(*u),
            Scalar::Int(i) => u64::try_from(*i).ok(),
            Scalar::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl<'de> Visitor<'de> for ScalarVisitor {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Scalar::Uint(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Scalar::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// An OTLP `AnyValue`: `{"stringValue":…}`, `{"intValue":…}`, …; other kinds are skipped.
struct AnyValue<'a>(Scalar<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for AnyValue<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AnyValueVisitor;
        impl<'de> Visitor<'de> for AnyValueVisitor {
            type Value = AnyValue<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an OTLP AnyValue")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut value = Scalar::Other;
                while let Some(Str(key)) = map.next_key()? {
                    match &*key {
                        "stringValue" | "boolValue" | "intValue" | "doubleValue" => {
                            value = map.next_value()?;
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(AnyValue(value))
            }
        }
        deserializer.deserialize_map(AnyValueVisitor)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OtlpSpan<'a> {
    #[serde(borrow, default)]
    trace_id: Option<Str<'a>>,
    #[serde(borrow, default)]
    name: Option<Str<'a>>,
    #[serde(borrow, default)]
    start_time_unix_nano: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    attributes: Vec<OtlpAttribute<'a>>,
}

#[derive(Deserialize)]
struct OtlpAttribute<'a> {
    #[serde(borrow)]
    key: Str<'a>,
    #[serde(borrow, default)]
    value: Option<AnyValue<'a>>,
}

#[derive(Deserialize)]
struct JaegerTrace<'a> {
    #[serde(borrow, default, rename = "traceID")]
    trace_id: Option<Str<'a>>,
    #[serde(borrow, default)]
    spans: Vec<JaegerSpan<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JaegerSpan<'a> {
    #[serde(borrow, default, rename = "traceID")]
    trace_id: Option<Str<'a>>,
    #[serde(borrow, default)]
    operation_name: Option<Str<'a>>,
    /// Microseconds since the epoch.
    #[serde(borrow, default)]
    start_time: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    tags: Vec<JaegerTag<'a>>,
}

/// `{"key":…,"type":…,"value":…}`: the value's JSON type says enough.
#[derive(Deserialize)]
struct JaegerTag<'a> {
    #[serde(borrow)]
    key: Str<'a>,
    #[serde(borrow, default)]
    value: Option<Scalar<'a>>,
}

/// A top-level value: an audit line, an OTLP or Jaeger document, or anything else.
struct Top<'s, 'f>(&'s mut Sink<'f>);

impl<'de> DeserializeSeed<'de> for Top<'_, '_> {
    type Value = Shape;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Shape, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Top<'_, '_> {
    type Value = Shape;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        let mut shape = Shape::Other;
        let mut line = Record::default();
        let (mut message, mut target) = (false, true);
        let mut started = None;
        while let Some(Str(key)) = map.next_key()? {
            match &*key {
                "resourceSpans" => {
                    map.next_value_seed(List(self.0, Level::Resources))?;
                    shape = Shape::Otlp;
                }
                "data" => {
                    map.next_value_seed(List(self.0, Level::Traces))?;
                    shape = Shape::Jaeger;
                }
                "result" => {
                    let inner = map.next_value_seed(Top(self.0))?;
                    if inner != Shape::Other {
                        shape = inner;
                    }
                }
                keys::LINE_TIME => {
                    let time: Scalar = map.next_value()?;
                    line.time = time.text().and_then(|t| Timestamp::parse_rfc3339(&t).ok());
                }
                keys::LINE_START_TIME => {
                    let time: Scalar = map.next_value()?;
                    started = time.text().and_then(|t| Timestamp::parse_rfc3339(&t).ok());
                }
                key if key == keys::LINE_MESSAGE.0 => {
                    let value: Scalar = map.next_value()?;
                    message = value.text().as_deref() == Some(keys::LINE_MESSAGE.1);
                }
                key if key == keys::LINE_TARGET.0 => {
                    let value: Scalar = map.next_value()?;
                    target = value.text().as_deref() == Some(keys::LINE_TARGET.1);
                }
                key => match keys::line_field(key) {
                    Some(field) => line.set(field, &map.next_value()?),
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                },
            }
        }
        if shape == Shape::Other && message && target {
            // A Check is decided at its start; first-edition lines carry only the end.
            line.time = started.or(line.time);
            self.0.push(line);
            shape = Shape::AuditLine;
        }
        Ok(shape)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Shape::Other)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
}

/// The arrays on the way down to the spans.
#[derive(Debug, Clone, Copy)]
enum Level {
    /// `resourceSpans`: objects holding `scopeSpans`.
    Resources,
    /// `scopeSpans` (`instrumentationLibrarySpans` before OTLP 0.15): objects holding `spans`.
    Scopes,
    Spans,
    /// Jaeger's `data`: traces holding `spans`.
    Traces,
}

/// An array of one [`Level`], read element by element.
struct List<'s, 'f>(&'s mut Sink<'f>, Level);

impl<'de> DeserializeSeed<'de> for List<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for List<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an array of {:?}", self.1)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let List(sink, level) = self;
        loop {
            let more = match level {
                Level::Resources | Level::Scopes => {
                    seq.next_element_seed(Holder(&mut *sink, level))?.is_some()
                }
                Level::Spans => match seq.next_element::<OtlpSpan>()? {
                    Some(span) => {
                        sink.otlp_span(span);
                        true
                    }
                    None => false,
                },
                Level::Traces => match seq.next_element::<JaegerTrace>()? {
                    Some(trace) => {
                        let id = trace.trace_id.as_ref().map(|id| &*id.0);
                        for span in trace.spans {
                            sink.jaeger_span(span, id);
                        }
                        true
                    }
                    None => false,
                },
            };
            if !more {
                return Ok(());
            }
        }
    }
}

/// An element of `resourceSpans` or `scopeSpans`: only the array one level down is read.
struct Holder<'s, 'f>(&'s mut Sink<'f>, Level);

impl<'de> DeserializeSeed<'de> for Holder<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Holder<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an element of {:?}", self.1)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Holder(sink, level) = self;
        while let Some(Str(key)) = map.next_key()? {
            let below = match (level, &*key) {
                (Level::Resources, "scopeSpans" | "instrumentationLibrarySpans") => {
                    Some(Level::Scopes)
                }
                (Level::Scopes, "spans") => Some(Level::Spans),
                _ => None,
            };
            match below {
                Some(below) => map.next_value_seed(List(&mut *sink, below))?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(line: &str) -> (LineKind, Vec<Record>, u64) {
        let mut sink = Sink::new(Position::default());
        let kind = read_line(line.as_bytes(), &mut sink);
        (kind, sink.records, sink.other_spans)
    }

    #[test]
    fn lines_are_told_apart_by_shape() {
        assert_eq!(read("  ").0, LineKind::Blank);
        assert_eq!(read("not json").0, LineKind::Corrupt);
        assert_eq!(read(r#"{"timestamp":"2026-"#).0, LineKind::Truncated);
        assert_eq!(read(r#"{"a":1} {"b":2}"#).0, LineKind::Corrupt);
        let (kind, records, _) = read(
            r#"{"timestamp":"2026-01-01T00:00:00Z","level":"INFO","message":"policy loaded"}"#,
        );
        assert_eq!((kind, records.len()), (LineKind::Read(Shape::Other), 0));
        // Another target's "decision" message is not an audit line.
        let (kind, _, _) = read(r#"{"message":"decision","target":"elsewhere","reason":"x"}"#);
        assert_eq!(kind, LineKind::Read(Shape::Other));
    }

    #[test]
    fn a_line_cut_inside_a_span_list_adds_no_record() {
        let span = r#"{"name":"mcp.authz.check","attributes":[]}"#;
        let (kind, records, _) = read(&format!(
            r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{span},{span}"#
        ));
        assert_eq!((kind, records.len()), (LineKind::Truncated, 0));
    }

    #[test]
    fn otlp_values_of_every_kind_and_other_spans() {
        let line = r#"{"result":{"resourceSpans":[{"resource":{"attributes":[]},"scopeSpans":[{"scope":{"name":"x"},"spans":[
            {"traceId":"4BF92F3577B34DA6A3CE929D0E0E4736","name":"mcp.authz.check","startTimeUnixNano":"1767225600000000000",
             "attributes":[{"key":"mcp.authz.would_deny","value":{"boolValue":true}},
                           {"key":"jsonrpc.request.id","value":{"intValue":"7"}},
                           {"key":"mcp.authz.sample_rate","value":{"doubleValue":0.25}},
                           {"key":"mcp.server.name","value":{"stringValue":"demo"}},
                           {"key":"mcp.server.namespace","value":{"stringValue":"mcp"}},
                           {"key":"mcp.session.id","value":{"stringValue":"transport"}},
                           {"key":"gen_ai.tool.name","value":{"arrayValue":{"values":[]}}}]},
            {"traceId":"S/kvNXezTaajzpKdDg5HNg==","name":"other","attributes":[]}]}]}]}}"#
            .replace('\n', "");
        let (kind, records, other) = read(&line);
        assert_eq!(kind, LineKind::Read(Shape::Otlp));
        assert_eq!((records.len(), other), (1, 1));
        let r = &records[0];
        assert_eq!(
            r.time,
            Some(Timestamp::parse_rfc3339("2026-01-01T00:00:00Z").unwrap())
        );
        assert_eq!(
            r.text(Field::TraceId),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(r.would_deny, Some(true));
        assert_eq!(r.sample_rate, Some(0.25));
        assert_eq!(r.text(Field::RequestId), Some("7"));
        assert_eq!(r.server().as_deref(), Some("mcp/demo"));
        // A second-edition span: mcp.session.id is the transport session.
        assert_eq!(r.agent_session(), None);
        assert_eq!(r.target(Primitive::Tool), None);
        assert_eq!(
            trace_id("S/kvNXezTaajzpKdDg5HNg==").as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }

    #[test]
    fn a_pretty_document_is_streamed() {
        let document = "{\n \"data\": [\n  {\"traceID\": \"abc\", \"spans\": [\n   {\"operationName\": \"mcp.authz.check\", \"startTime\": 1767225600000001, \"tags\": [{\"key\": \"mcp.session.id\", \"type\": \"string\", \"value\": \"s-1\"}]}\n  ]}\n ]\n}\n";
        let mut reader = document.as_bytes();
        let mut first = Vec::new();
        let (layout, lines) = read_first(&mut reader, &mut first).unwrap();
        assert_eq!((layout, lines), (Layout::Document, 1));
        let mut batches = 0;
        let mut flush = |records: &mut Vec<Record>| {
            batches += records.len();
            records.clear();
        };
        let mut sink = Sink::flushing(Position::default(), &mut flush);
        let kind = read_document(first.as_slice().chain(reader), &mut sink).unwrap();
        assert_eq!(kind, LineKind::Read(Shape::Jaeger));
        let records = std::mem::take(&mut sink.records);
        drop(sink);
        assert_eq!((records.len(), batches), (1, 0));
        assert_eq!(records[0].text(Field::TraceId), Some("abc"));
        assert_eq!(
            records[0].time,
            Some(Timestamp::parse_rfc3339("2026-01-01T00:00:00.000001Z").unwrap())
        );
        // A first-edition span: mcp.session.id held the MCPAgentSession id.
        assert_eq!(records[0].agent_session(), Some("s-1"));
    }
}
