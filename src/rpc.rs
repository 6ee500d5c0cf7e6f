//! JSON-RPC inspection (SPEC §2 "Which MCP call"): HTTP method, content type, body limits, and
//! a strict RFC 8259 reader that extracts only what the decision needs.
//!
//! The reader validates the whole body (UTF-8, escapes, surrogates, numbers, depth) but keeps
//! just each top-level object's `method`, `id`, `result`/`error` presence and `params.name` /
//! `params._meta.traceparent`, borrowing from the body where no escape forces a copy.

use std::borrow::Cow;

use crate::decision::{CallInfo, Reason, Target};
use crate::policy::Primitive;
use crate::request::Headers;

const JSON: &[u8] = b"application/json";

/// Deepest nesting accepted; the outermost `[` or `{` is level 1.
pub const MAX_DEPTH: usize = 64;

/// What the body says is being done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inspection<'a> {
    /// Not a JSON-RPC POST (an SSE `GET`, a session `DELETE`, …).
    NotACall,
    /// One message, or every element of a batch, in order.
    Messages(Vec<Message<'a>>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    /// A client's answer to a server request (sampling, elicitation): not a call.
    Response,
    Request(CallInfo<'a>),
}

/// Inspects the HTTP request and its body.
pub fn inspect<'a>(
    method: &str,
    headers: &Headers<'a>,
    body: &'a [u8],
    max_body_bytes: usize,
) -> Result<Inspection<'a>, Reason> {
    if !method.eq_ignore_ascii_case("POST") {
        return Ok(Inspection::NotACall);
    }
    if let Some(content_type) = headers.get("content-type")
        && !content_type
            .as_bytes()
            .windows(JSON.len())
            .any(|w| w.eq_ignore_ascii_case(JSON))
    {
        return Err(Reason::RpcInspectionFailed);
    }
    let partial = headers
        .get("x-envoy-auth-partial-body")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let content_length = headers.get("content-length").and_then(|v| parse_length(&v));
    let body_len = body.len() as u64;
    if partial || (!body.is_empty() && content_length.is_some_and(|cl| body_len < cl)) {
        return Err(Reason::RpcBodyTruncated);
    }
    if body.is_empty() && content_length.is_some_and(|cl| cl > 0) {
        return Err(Reason::RpcBodyMissing);
    }
    if body.len() > max_body_bytes {
        return Err(Reason::RpcInspectionFailed);
    }
    parse_messages(body).map(Inspection::Messages)
}

/// Plain decimal digits that fit in 64 bits, else absent.
fn parse_length(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// The body as JSON-RPC messages (steps 4–7).
pub fn parse_messages(body: &[u8]) -> Result<Vec<Message<'_>>, Reason> {
    let text = std::str::from_utf8(body).map_err(|_| Reason::RpcInspectionFailed)?;
    let mut reader = Reader {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        depth: 0,
    };
    let mut messages = Vec::new();
    let mut ambiguous = false;
    // The first element that is not a JSON-RPC message.
    let mut invalid = None;
    reader
        .document(|top| {
            ambiguous |= top.is_ambiguous();
            match top.into_message() {
                Ok(message) => messages.push(message),
                Err(reason) => {
                    invalid.get_or_insert(reason);
                }
            }
        })
        .ok_or(Reason::RpcInspectionFailed)?;
    if ambiguous {
        return Err(Reason::RpcAmbiguous);
    }
    invalid.map_or(Ok(messages), Err)
}

/// Counts of keys that fold to `method`, `params` and `name` in one object.
#[derive(Debug, Default, Clone, Copy)]
struct FoldCounts([u8; 3]);

impl FoldCounts {
    const WORDS: [&'static str; 3] = ["method", "params", "name"];

    fn add(&mut self, key: &str) {
        for (i, word) in Self::WORDS.iter().enumerate() {
            if folds_to(key, word) {
                self.0[i] = self.0[i].saturating_add(1);
            }
        }
    }

    fn repeated(&self) -> bool {
        self.0.iter().any(|&n| n > 1)
    }
}

/// `key` equals `word` (ASCII lower case) under Unicode simple case folding, as Go's
/// encoding/json compares keys: ASCII letters ignore case, `ſ` is `s`, `K` (Kelvin) is `k`.
fn folds_to(key: &str, word: &str) -> bool {
    if key.is_ascii() {
        return key.eq_ignore_ascii_case(word);
    }
    let mut chars = key.chars();
    for w in word.chars() {
        let folded = match chars.next() {
            Some('\u{17F}') => 's',
            Some('\u{212A}') => 'k',
            Some(c) => c.to_ascii_lowercase(),
            None => return false,
        };
        if folded != w {
            return false;
        }
    }
    chars.next().is_none()
}

#[derive(Debug, Default)]
struct TopObject<'a> {
    counts: FoldCounts,
    params_counts: FoldCounts,
    has_method_key: bool,
    method: Option<Cow<'a, str>>,
    has_id: bool,
    id: Option<Cow<'a, str>>,
    has_result_or_error: bool,
    tool_name: Option<Cow<'a, str>>,
    traceparent: Option<Cow<'a, str>>,
}

impl<'a> TopObject<'a> {
    fn is_ambiguous(&self) -> bool {
        self.counts.repeated() || self.params_counts.repeated()
    }

    fn into_message(self) -> Result<Message<'a>, Reason> {
        if self.has_id && self.has_result_or_error && !self.has_method_key {
            return Ok(Message::Response);
        }
        let method = self
            .method
            .filter(|m| !m.trim_matches([' ', '\t', '\r', '\n']).is_empty())
            .ok_or(Reason::RpcInspectionFailed)?;
        let target = matches!(method.as_ref(), "tools/call" | "call_tool").then(|| Target {
            primitive: Primitive::Tool,
            name: self.tool_name.unwrap_or(Cow::Borrowed("")),
        });
        Ok(Message::Request(CallInfo {
            method,
            target,
            id: self.id,
            traceparent: self.traceparent,
            ..CallInfo::default()
        }))
    }
}

struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
}

/// Which object is being read for what it holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// The top-level object's `params`.
    Params,
    /// `params._meta`.
    Meta,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn open(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    /// The whole body: one object or a non-empty array of objects, then only white space. Each
    /// object goes to `each` as it is read.
    fn document(&mut self, mut each: impl FnMut(TopObject<'a>)) -> Option<()> {
        self.skip_ws();
        match self.peek()? {
            b'{' => each(self.top_object()?),
            b'[' => {
                let count = self.array(|r| {
                    if r.peek()? != b'{' {
                        return None;
                    }
                    each(r.top_object()?);
                    Some(())
                })?;
                if count == 0 {
                    return None;
                }
            }
            _ => return None,
        }
        self.skip_ws();
        (self.pos == self.bytes.len()).then_some(())
    }

    fn top_object(&mut self) -> Option<TopObject<'a>> {
        let mut top = TopObject::default();
        self.object(|reader, key| {
            top.counts.add(&key);
            match key.as_ref() {
                "method" => {
                    top.has_method_key = true;
                    top.method = reader.value_string()?;
                }
                "id" => {
                    top.has_id = true;
                    top.id = reader.value_id()?;
                }
                "result" | "error" => {
                    top.has_result_or_error = true;
                    reader.skip_value()?;
                }
                "params" => reader.value(Keep::Params, &mut top)?,
                _ => reader.skip_value()?,
            }
            Some(())
        })?;
        Some(top)
    }

    /// Reads `{ "key": value, … }`, calling `member` after each key with the reader positioned
    /// at the value, which `member` must consume.
    fn object(
        &mut self,
        mut member: impl FnMut(&mut Self, Cow<'a, str>) -> Option<()>,
    ) -> Option<()> {
        self.sequence(b'{', b'}', |r| {
            let key = r.string(true)?;
            r.skip_ws();
            if !r.eat(b':') {
                return None;
            }
            r.skip_ws();
            member(r, key)
        })
        .map(drop)
    }

    /// Reads `[ value, … ]`, calling `element` at each value, which it must consume; returns
    /// how many there were.
    fn array(&mut self, element: impl FnMut(&mut Self) -> Option<()>) -> Option<usize> {
        self.sequence(b'[', b']', element)
    }

    /// Reads `open`, comma-separated items (each read by `item`), then `close`: one more level
    /// of nesting. Returns how many items there were.
    fn sequence(
        &mut self,
        open: u8,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<usize> {
        if !self.eat(open) {
            return None;
        }
        self.open()?;
        self.skip_ws();
        let mut count = 0;
        if !self.eat(close) {
            loop {
                self.skip_ws();
                item(self)?;
                count += 1;
                self.skip_ws();
                if self.eat(close) {
                    break;
                }
                if !self.eat(b',') {
                    return None;
                }
            }
        }
        self.depth -= 1;
        Some(count)
    }

    /// A value kept only when it is a string.
    fn value_string(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.peek() == Some(b'"') {
            return self.string(true).map(Some);
        }
        self.skip_value()?;
        Some(None)
    }

    /// The JSON-RPC id as text: a string's value, else the value's JSON text (`null` → none).
    fn value_id(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.peek() == Some(b'"') {
            return self.string(true).map(Some);
        }
        let start = self.pos;
        self.skip_value()?;
        let raw = &self.text[start..self.pos];
        Some((raw != "null").then_some(Cow::Borrowed(raw)))
    }

    /// A value kept only for the `params` or `_meta` object it may be.
    fn value(&mut self, keep: Keep, top: &mut TopObject<'a>) -> Option<()> {
        if self.peek()? != b'{' {
            return self.skip_value();
        }
        match keep {
            Keep::Params => self.object(|r, key| {
                top.params_counts.add(&key);
                match key.as_ref() {
                    "name" => top.tool_name = r.value_string()?,
                    "_meta" => r.value(Keep::Meta, top)?,
                    _ => r.skip_value()?,
                }
                Some(())
            }),
            Keep::Meta => self.object(|r, key| {
                if key == "traceparent" {
                    top.traceparent = r.value_string()?;
                } else {
                    r.skip_value()?;
                }
                Some(())
            }),
        }
    }

    /// A value read for validity only.
    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'{' => self.object(|r, _| r.skip_value()),
            b'[' => self.array(|r| r.skip_value()).map(drop),
            b'"' => self.string(false).map(drop),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.bytes[self.pos..].starts_with(word) {
            self.pos += word.len();
            Some(())
        } else {
            None
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Option<()> {
        self.eat(b'-');
        if self.eat(b'0') {
            if self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return None;
            }
        } else if self.digits() == 0 {
            return None;
        }
        if self.eat(b'.') && self.digits() == 0 {
            return None;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(())
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.text.get(self.pos..self.pos + 4)?;
        let value = u32::from_str_radix(digits, 16).ok()?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.pos += 4;
        Some(value)
    }

    /// A string; with `decode`, its value (borrowed unless it has escapes).
    fn string(&mut self, decode: bool) -> Option<Cow<'a, str>> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.pos;
        let mut owned: Option<String> = None;
        let mut run = start;
        loop {
            let b = self.peek()?;
            match b {
                b'"' => {
                    let tail = &self.text[run..self.pos];
                    self.pos += 1;
                    return Some(match owned {
                        _ if !decode => Cow::Borrowed(""),
                        Some(mut s) => {
                            s.push_str(tail);
                            Cow::Owned(s)
                        }
                        None => Cow::Borrowed(&self.text[start..self.pos - 1]),
                    });
                }
                b'\\' => {
                    let buffer = owned.get_or_insert_with(String::new);
                    if decode {
                        buffer.push_str(&self.text[run..self.pos]);
                    }
                    self.pos += 1;
                    let escaped = self.peek()?;
                    self.pos += 1;
                    let c = match escaped {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let unit = self.hex4()?;
                            match unit {
                                0xD800..=0xDBFF => {
                                    if !(self.eat(b'\\') && self.eat(b'u')) {
                                        return None;
                                    }
                                    let low = self.hex4()?;
                                    if !(0xDC00..=0xDFFF).contains(&low) {
                                        return None;
                                    }
                                    char::from_u32(
                                        0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00),
                                    )?
                                }
                                0xDC00..=0xDFFF => return None,
                                _ => char::from_u32(unit)?,
                            }
                        }
                        _ => return None,
                    };
                    if decode {
                        buffer.push(c);
                    }
                    run = self.pos;
                }
                0x00..=0x1F => return None,
                _ => self.pos += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(body: &str) -> Result<Vec<Message<'_>>, Reason> {
        parse_messages(body.as_bytes())
    }

    fn tool(body: &str) -> Option<String> {
        match &messages(body).unwrap()[0] {
            Message::Request(call) => call.target_of(Primitive::Tool).map(str::to_string),
            Message::Response => None,
        }
    }

    #[test]
    fn reads_a_tool_call() {
        let body = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","_meta":{"traceparent":"00-abc"},"arguments":{"x":[1,2,{"y":null}]}}}"#;
        let parsed = messages(body).unwrap();
        let Message::Request(call) = &parsed[0] else {
            panic!()
        };
        assert_eq!(call.method, "tools/call");
        assert_eq!(call.target_of(Primitive::Tool), Some("echo"));
        assert_eq!(call.id.as_deref(), Some("7"));
        assert_eq!(call.traceparent.as_deref(), Some("00-abc"));
    }

    #[test]
    fn escapes_are_decoded_before_comparing() {
        assert_eq!(
            tool(r#"{"method":"tools\/call","params":{"n\u0061me":"e\u0063ho"}}"#).as_deref(),
            Some("echo")
        );
        assert_eq!(
            tool(r#"{"method":"call_tool","params":{"name":5}}"#).as_deref(),
            Some("")
        );
        assert_eq!(tool(r#"{"method":"tools/call"}"#).as_deref(), Some(""));
        assert_eq!(tool(r#"{"method":" tools/call "}"#), None);
    }

    #[test]
    fn ambiguous_keys() {
        for body in [
            r#"{"method":"a","method":"b"}"#,
            r#"{"method":"a","Method":"tools/call"}"#,
            r#"{"method":"tools/call","params":{},"paramſ":{}}"#,
            r#"{"method":"tools/call","params":{"name":"a","NAME":"b"}}"#,
            r#"{"method":"tools/call","params":{"method":"a","meth\u006fd":"b"}}"#,
            r#"{"method":"tools/call","name":"a","Name":"b"}"#,
            r#"[{"method":"ping"},{"method":"a","METHOD":"b"}]"#,
        ] {
            assert_eq!(messages(body), Err(Reason::RpcAmbiguous), "{body}");
        }
        // Deeper keys are the tool's business.
        assert!(
            messages(r#"{"method":"tools/call","params":{"arguments":{"name":1,"Name":2}}}"#)
                .is_ok()
        );
    }

    #[test]
    fn responses_and_blank_methods() {
        assert_eq!(
            messages(r#"{"id":null,"error":{}}"#).unwrap(),
            vec![Message::Response]
        );
        assert_eq!(
            messages(r#"{"id":1,"result":{},"method":" "}"#),
            Err(Reason::RpcInspectionFailed)
        );
        assert_eq!(messages(r#"{"id":1}"#), Err(Reason::RpcInspectionFailed));
        assert_eq!(
            messages(r#"{"method":"\t\r\n "}"#),
            Err(Reason::RpcInspectionFailed)
        );
        assert_eq!(
            messages(r#"{"method":7}"#),
            Err(Reason::RpcInspectionFailed)
        );
    }

    #[test]
    fn rejects_what_rfc_8259_rejects() {
        for body in [
            "",
            " ",
            "[]",
            "[1]",
            "\"x\"",
            "\u{feff}{\"method\":\"a\"}",
            r#"{"method":"a"} x"#,
            r#"{"method":"a"}{"method":"b"}"#,
            r#"{"method":"a","n":NaN}"#,
            r#"{"method":"a","n":Infinity}"#,
            r#"{"method":"a","n":01}"#,
            r#"{"method":"a","n":1.}"#,
            r#"{"method":"a","n":-}"#,
            r#"{"method":"a","s":"\ud800"}"#,
            r#"{"method":"a","s":"\udc00"}"#,
            r#"{"method":"a","s":"\x"}"#,
            "{\"method\":\"a\",\"s\":\"\u{1}\"}",
            r#"{"method":"a",}"#,
            r#"{'method':'a'}"#,
            r#"{"method":"a","t":tru}"#,
        ] {
            assert_eq!(messages(body), Err(Reason::RpcInspectionFailed), "{body:?}");
        }
        assert!(parse_messages(b"{\"method\":\"a\",\"s\":\"\xff\"}").is_err());
        assert!(messages(r#" {"method":"a","s":"\ud83d\ude00","n":-0.5e+3} "#).is_ok());
    }

    #[test]
    fn depth_limit_is_64_levels() {
        let nest = |levels: usize| {
            format!(
                r#"{{"method":"a","p":{}{}}}"#,
                "[".repeat(levels - 1),
                "]".repeat(levels - 1)
            )
        };
        assert!(messages(&nest(64)).is_ok());
        assert_eq!(messages(&nest(65)), Err(Reason::RpcInspectionFailed));
        assert_eq!(
            messages(&"[".repeat(100_000)),
            Err(Reason::RpcInspectionFailed)
        );
    }

    #[test]
    fn http_level_rules() {
        let h = |pairs: Vec<(&'static str, &'static str)>| Headers::new(pairs);
        let body = br#"{"method":"ping"}"#;
        assert_eq!(
            inspect("GET", &h(vec![]), b"", 10),
            Ok(Inspection::NotACall)
        );
        assert_eq!(
            inspect("POST", &h(vec![("content-type", "text/plain")]), body, 100),
            Err(Reason::RpcInspectionFailed)
        );
        assert!(
            inspect(
                "POST",
                &h(vec![("Content-Type", "Application/JSON; charset=utf-8")]),
                body,
                100
            )
            .is_ok()
        );
        assert_eq!(
            inspect(
                "POST",
                &h(vec![("x-envoy-auth-partial-body", "TRUE")]),
                body,
                100
            ),
            Err(Reason::RpcBodyTruncated)
        );
        assert_eq!(
            inspect("POST", &h(vec![("content-length", "400")]), body, 1000),
            Err(Reason::RpcBodyTruncated)
        );
        assert_eq!(
            inspect("POST", &h(vec![("content-length", "12")]), b"", 1000),
            Err(Reason::RpcBodyMissing)
        );
        // Not plain digits, or over 64 bits: absent.
        for cl in ["+400", "4e2", "99999999999999999999", " "] {
            assert!(
                inspect("POST", &h(vec![("content-length", cl)]), body, 1000).is_ok(),
                "{cl}"
            );
        }
        assert_eq!(
            inspect("POST", &h(vec![]), body, 5),
            Err(Reason::RpcInspectionFailed)
        );
    }
}
