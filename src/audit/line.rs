//! The audit trail as log lines, for a service with no OTLP endpoint: one line per Check,
//! carrying what the span would (SPEC §4), in the format of the other log lines (text or JSON).
//!
//! Lines are written by hand into the audit worker's buffer rather than through `tracing`,
//! which costs several times more per line on a busy service. Every value is escaped, so a
//! header value can never start a line of its own.

use std::io::Write;

use prometheus_client::metrics::counter::Counter;

use super::{
    Audit, AuditError, AuditRecord, AuditWorker, FilterRecord, Recorded, RequestText, Sink,
    Undelivered, line_key as key,
};
use crate::logging::{AUDIT_TARGET, Output};
use crate::policy::Timestamp;

/// How lines look: text (optionally coloured for a terminal) or one JSON object each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineFormat {
    pub json: bool,
    pub ansi: bool,
}

/// Appends `record`'s line (ending in a newline) to `out`.
pub fn write(record: &AuditRecord, format: LineFormat, out: &mut Vec<u8>) {
    let mut line = Line { out, format };
    line.start(Timestamp::from_system(record.ended), DECISION_MESSAGE);
    line.clean(key::DECISION, record.decision.as_str());
    line.clean(key::REASON, record.reason.as_str());
    line.raw(
        key::WOULD_DENY,
        if record.would_deny { "true" } else { "false" },
    );
    line.clean(key::MODE, record.mode.as_str());
    line.number(key::STATUS_CODE, u64::from(record.status_code));
    if let Some(server) = &record.server {
        line.string(key::SERVER, &server.full);
    }
    line.optional(key::GRANT, record.grant.as_deref());
    line.optional(key::SESSION, record.session.as_deref());
    for which in RequestText::ALL {
        line.optional(which.line_key(), record.text(which));
    }
    if let Some(required) = record.required_trust() {
        line.clean(key::REQUIRED_TRUST, required.as_str());
    }
    if let Some(trust) = record.trust {
        line.clean(key::ADMIN_TRUST, trust.admin.as_str());
        line.clean(key::CONSENTED_TRUST, trust.consented.as_str());
        line.clean(key::EFFECTIVE_TRUST, trust.effective.as_str());
    }
    if let Some(tool) = record.tool {
        line.clean(
            key::REQUIRED_SIDE_EFFECT,
            tool.side_effect.map_or("", |e| e.as_str()),
        );
        if let Some(risk) = tool.risk_level {
            line.clean(key::RISK_LEVEL, risk.as_str());
        }
    }
    line.optional(key::POLICY_VERSION, record.policy_version.as_deref());
    // `sha256:` and hex digits, written by the loader.
    line.clean(
        key::POLICY_REVISION,
        record.revision.as_deref().unwrap_or(""),
    );
    line.name(key::SAMPLE_RATE);
    if record.sample_rate == 1.0 {
        line.out.push(b'1');
    } else {
        let _ = write!(line.out, "{}", record.sample_rate);
    }
    line.trace_id(&record.ids.trace_id);
    line.name(key::START_TIME);
    line.out.push(b'"');
    write_micros(Timestamp::from_system(record.started), line.out);
    line.out.push(b'"');
    line.end();
}

/// The message of a Check's line (what replay looks for) and of a filtered list's.
pub const DECISION_MESSAGE: &str = "decision";
pub const FILTER_MESSAGE: &str = "list filtered";

/// Appends the line of a filtered list (SPEC §7) to `out`: what its span carries.
pub fn write_filter(record: &FilterRecord, format: LineFormat, out: &mut Vec<u8>) {
    let mut line = Line { out, format };
    line.start(Timestamp::from_system(record.ended), FILTER_MESSAGE);
    line.string(key::METHOD, record.method);
    line.string(key::SERVER, &record.server.full);
    for (_, name, value) in record.caller() {
        line.optional(name, value);
    }
    line.clean(key::POLICY_REVISION, &record.revision);
    line.clean(key::MODE, record.mode.as_str());
    for (name, count) in [
        (key::LISTED, record.listed),
        (key::HIDDEN, record.hidden),
        (key::WOULD_HIDE, record.would_hide),
    ] {
        line.number(name, count as u64);
    }
    line.name(key::HIDDEN_NAMES);
    line.out.push(b'[');
    for (i, name) in record.hidden_names.iter().enumerate() {
        if i > 0 {
            line.out.push(b',');
        }
        line.out.push(b'"');
        escape(name, format.json, line.out);
        line.out.push(b'"');
    }
    line.out.push(b']');
    line.trace_id(&record.ids.trace_id);
    line.end();
}

/// Appends `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC, microseconds: the form tracing's own lines
/// carry) digit by digit, without `fmt`: every audit line starts with one.
fn write_micros(time: Timestamp, out: &mut Vec<u8>) {
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    for (value, (at, width)) in time.utc_fields().into_iter().zip([
        (0, 4),
        (5, 2),
        (8, 2),
        (11, 2),
        (14, 2),
        (17, 2),
        (20, 6),
    ]) {
        let mut value = value;
        for digit in text[at..at + width].iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    out.extend_from_slice(&text);
}

struct Line<'a> {
    out: &'a mut Vec<u8>,
    format: LineFormat,
}

// Writes into a Vec<u8> cannot fail.
impl Line<'_> {
    fn start(&mut self, time: Timestamp, message: &str) {
        let out = &mut *self.out;
        match (self.format.json, self.format.ansi) {
            (true, _) => {
                out.extend_from_slice(br#"{"timestamp":""#);
                write_micros(time, out);
                out.extend_from_slice(br#"","level":"INFO","message":""#);
                out.extend_from_slice(message.as_bytes());
                out.push(b'"');
            }
            (false, false) => {
                write_micros(time, out);
                out.extend_from_slice(b"  INFO ");
                out.extend_from_slice(AUDIT_TARGET.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(message.as_bytes());
            }
            (false, true) => {
                out.extend_from_slice(b"\x1b[2m");
                write_micros(time, out);
                out.extend_from_slice(b"\x1b[0m \x1b[32m INFO\x1b[0m \x1b[2m");
                out.extend_from_slice(AUDIT_TARGET.as_bytes());
                out.extend_from_slice(b"\x1b[0m\x1b[2m:\x1b[0m ");
                out.extend_from_slice(message.as_bytes());
            }
        }
    }

    fn name(&mut self, name: &str) {
        let out = &mut *self.out;
        match (self.format.json, self.format.ansi) {
            (true, _) => {
                out.extend_from_slice(b",\"");
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b"\":");
            }
            (false, false) => {
                out.push(b' ');
                out.extend_from_slice(name.as_bytes());
                out.push(b'=');
            }
            (false, true) => {
                out.extend_from_slice(b" \x1b[3m");
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b"\x1b[0m\x1b[2m=\x1b[0m");
            }
        }
    }

    /// A value written as is (a number or a bool).
    fn raw(&mut self, name: &str, value: &str) {
        self.name(name);
        self.out.extend_from_slice(value.as_bytes());
    }

    fn string(&mut self, name: &str, value: &str) {
        self.name(name);
        let out = &mut *self.out;
        out.push(b'"');
        escape(value, self.format.json, out);
        out.push(b'"');
    }

    /// A string value that needs no escape (the names of verdicts, reasons, modes and
    /// levels, all plain ASCII words; the revision), copied as it is.
    fn clean(&mut self, name: &str, value: &str) {
        debug_assert!(!value.bytes().any(|b| ESCAPED[b as usize]), "{value:?}");
        self.name(name);
        let out = &mut *self.out;
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    }

    /// A number, its digits written without `fmt`.
    fn number(&mut self, name: &str, mut value: u64) {
        self.name(name);
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        self.out.extend_from_slice(&digits[at..]);
    }

    /// The trace id as 32 lower-case hex digits, in quotes.
    fn trace_id(&mut self, id: &[u8; 16]) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        self.name(key::TRACE_ID);
        let mut text = [b'"'; 34];
        for (i, b) in id.iter().enumerate() {
            text[1 + 2 * i] = HEX[usize::from(b >> 4)];
            text[2 + 2 * i] = HEX[usize::from(b & 0xf)];
        }
        self.out.extend_from_slice(&text);
    }

    fn optional(&mut self, name: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.string(name, value);
        }
    }

    fn end(self) {
        if self.format.json {
            self.out.extend_from_slice(br#","target":""#);
            self.out.extend_from_slice(AUDIT_TARGET.as_bytes());
            self.out.extend_from_slice(br#""}"#);
        }
        self.out.push(b'\n');
    }
}

/// Escapes quotes, backslashes and control characters: JSON's way, or Rust's (as `tracing`
/// writes string fields) for text. Runs of bytes that need no escape are copied whole.
fn escape(text: &str, json: bool, out: &mut Vec<u8>) {
    let bytes = text.as_bytes();
    let mut clean = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !ESCAPED[b as usize] {
            continue;
        }
        out.extend_from_slice(&bytes[clean..i]);
        clean = i + 1;
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => {
                let _ = if json {
                    write!(out, "\\u{b:04x}")
                } else {
                    write!(out, "\\u{{{b:x}}}")
                };
            }
        }
    }
    out.extend_from_slice(&bytes[clean..]);
}

/// The bytes [`escape`] rewrites: quotes, backslashes and control characters.
const ESCAPED: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table[0x7f] = true;
    table
};

/// Logs each decision on a background thread, one `format` line each, written to `output`
/// batch by batch; drops are counted in `dropped`.
pub fn start(
    dropped: Counter,
    output: Output,
    format: LineFormat,
) -> Result<(Audit, AuditWorker), AuditError> {
    AuditWorker::start("audit-log", dropped, move || {
        Ok(LineSink {
            output,
            format,
            text: Vec::with_capacity(64 * 1024),
        })
    })
}

/// Logs each decision as a text line; the worker ends with the last `Audit`.
pub fn log_only() -> Result<Audit, AuditError> {
    let (audit, worker) = start(Counter::default(), Output::default(), LineFormat::default())?;
    // Detached: the worker thread ends when the last sender is gone.
    drop(worker);
    Ok(audit)
}

/// Writes each batch's lines to the output at once.
struct LineSink {
    output: Output,
    format: LineFormat,
    text: Vec<u8>,
}

impl Sink for LineSink {
    const WHAT: &'static str = "audit lines";

    fn deliver(&mut self, batch: &mut Vec<Recorded>) -> Result<(), Undelivered> {
        // Audit lines are info events of their own target, so RUST_LOG=warn silences them.
        if tracing::enabled!(target: AUDIT_TARGET, tracing::Level::INFO) {
            for record in batch.iter() {
                match record {
                    Recorded::Check(record) => write(record, self.format, &mut self.text),
                    Recorded::Filter(record) => write_filter(record, self.format, &mut self.text),
                }
            }
            if !self.text.is_empty() {
                self.output.write_all(&self.text);
                self.text.clear();
            }
        }
        batch.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{Options, authorize};
    use crate::policy::{Snapshot, load_paths};
    use crate::request::{CheckInput, Headers};
    use std::time::{Duration, SystemTime};

    #[test]
    fn line_times_written_by_hand_match_the_time_crate() {
        let reference = time::format_description::parse_borrowed::<1>(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z",
        )
        .unwrap();
        for nanos in [
            0u64,
            1,
            999,
            1_000,
            999_999_999,
            1_764_161_745_827_225_900,
            1_709_251_199_000_001_000,
            u64::MAX,
        ] {
            let at = SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos);
            let mut out = Vec::new();
            write_micros(Timestamp::from_system(at), &mut out);
            let expected = time::UtcDateTime::from(at).format(&reference).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), expected, "{nanos}");
        }
    }

    /// The line of a `tools/call` of `upper` on the conformance policies' demo server.
    fn line(agent: &str, format: LineFormat) -> String {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/policies");
        let snapshot = Snapshot::compile(load_paths(&[dir]).unwrap());
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"upper"}}"#;
        let input = CheckInput {
            method: "POST",
            path: "/demo/mcp",
            headers: Headers::new(vec![("x-mcp-agent-id", agent)]),
            body: body.as_bytes(),
            ..CheckInput::default()
        };
        let now = Timestamp::parse_rfc3339("2026-11-26T12:55:45.827225Z").unwrap();
        let decision = authorize(Some(&snapshot), &input, &Options::default(), now);
        let at = SystemTime::UNIX_EPOCH + Duration::from_nanos(now.unix_nanos() as u64);
        let record = AuditRecord::new([at; 2], None, &input, &decision);
        let mut out = Vec::new();
        write(&record, format, &mut out);
        String::from_utf8(out).unwrap()
    }

    const TEXT: LineFormat = LineFormat {
        json: false,
        ansi: false,
    };

    #[test]
    fn text_lines_look_like_the_other_log_lines() {
        let text = line("a-new", TEXT);
        assert!(
            text.starts_with(
                "2026-11-26T12:55:45.827225Z  INFO mcp_authz::audit: decision decision=\"allow\" \
                 reason=\"trust_too_low\" would_deny=true mode=\"monitor\" status_code=200 \
                 server=\"mcp-servers/demo\" grant=\"mcp-servers/rollout-low-trust\" \
                 agent=\"a-new\" method=\"tools/call\" tool=\"upper\" request_id=\"1\" \
                 http_method=\"POST\" path=\"/demo/mcp\" required_trust=\"medium\" \
                 admin_trust=\"low\" consented_trust=\"low\" effective_trust=\"low\" \
                 required_side_effect=\"read\" policy_version=\"v1\" policy_revision=\"sha256:"
            ),
            "{text}"
        );
        assert!(
            text.ends_with("\"\n") && text.lines().count() == 1,
            "{text}"
        );
        let coloured = line(
            "a-new",
            LineFormat {
                json: false,
                ansi: true,
            },
        );
        assert!(coloured.contains("\x1b[32m INFO\x1b[0m"), "{coloured}");
        assert!(
            coloured.contains("would_deny\x1b[0m\x1b[2m=\x1b[0mtrue"),
            "{coloured}"
        );
    }

    #[test]
    fn values_cannot_break_a_line() {
        let agent = "a \"quoted\"\nINFO forged\u{1}\\";
        let text = line(agent, TEXT);
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains(r#" agent="a \"quoted\"\nINFO forged\u{1}\\" "#),
            "{text}"
        );
        let json = line(
            agent,
            LineFormat {
                json: true,
                ansi: true,
            },
        );
        assert_eq!(json.lines().count(), 1, "{json}");
        let json: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(json["agent"], agent);
    }

    #[test]
    fn json_lines_carry_the_same_fields() {
        let json: serde_json::Value = serde_json::from_str(&line(
            "a-new",
            LineFormat {
                json: true,
                ansi: false,
            },
        ))
        .unwrap();
        assert_eq!(json["timestamp"], "2026-11-26T12:55:45.827225Z");
        assert_eq!(json["level"], "INFO");
        assert_eq!(json["target"], AUDIT_TARGET);
        assert_eq!(json["message"], "decision");
        assert_eq!(json["would_deny"], true);
        assert_eq!(json["status_code"], 200);
        assert_eq!(json["grant"], "mcp-servers/rollout-low-trust");
        assert_eq!(json["sample_rate"], 1.0);
        assert_eq!(json["start_time"], "2026-11-26T12:55:45.827225Z");
        let trace = json["trace_id"].as_str().unwrap();
        assert!(
            trace.len() == 32
                && trace
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
            "{trace}"
        );
        let text = line("a-new", TEXT);
        let names: Vec<&str> = text
            .split(' ')
            .filter_map(|field| Some(field.split_once('=')?.0))
            .collect();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.retain(|k| !["timestamp", "level", "message", "target"].contains(k));
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn numbers_and_trace_ids_written_by_hand_match_fmt() {
        let mut out = Vec::new();
        let mut line = Line {
            out: &mut out,
            format: LineFormat {
                json: true,
                ansi: false,
            },
        };
        for n in [0, 7, 10, 200, 503, 12_345, u64::MAX] {
            line.number("n", n);
        }
        let id = [
            0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
            0x47, 0x00,
        ];
        line.trace_id(&id);
        let expected = format!(
            r#","n":0,"n":7,"n":10,"n":200,"n":503,"n":12345,"n":{},"trace_id":"{:032x}""#,
            u64::MAX,
            u128::from_be_bytes(id)
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }
}
