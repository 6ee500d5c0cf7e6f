//! JSON-RPC inspection (SPEC §2 "Which MCP call"): HTTP method, content type, body limits, and
//! a strict RFC 8259 reader that extracts only what the decision needs.
//!
//! The reader validates the whole body (UTF-8, escapes, surrogates, numbers, depth) but keeps
//! just each top-level object's `method`, `id`, `result`/`error` presence, `params.name`,
//! `params.uri` and two keys of `params._meta` (`traceparent`, the protocol version), borrowing
//! from the body where no escape forces a copy.

use std::borrow::Cow;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::decision::{CallInfo, Reason, Target};
use crate::policy::{Governs, Primitive};
use crate::request::Headers;

const JSON: &[u8] = b"application/json";

/// `params._meta` key of the MCP protocol version a message is sent under.
const PROTOCOL_VERSION_KEY: &str = "io.modelcontextprotocol/protocolVersion";

/// Standard base64 as SPEC §2 step 7a reads `=?base64?B?=` routing headers: RFC 4648 alphabet,
/// padding required, pad bits zero, so each value has one encoding. (The crate's `STANDARD` is
/// configured so today; spelled out, a change of its defaults cannot loosen the comparison.)
const ROUTING_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(false),
);

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

/// Why inspection denies the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal<'a> {
    pub reason: Reason,
    /// The request that routing headers misdescribe, when the body is that one request: the
    /// denial can then answer it in JSON-RPC form (SPEC §3). Boxed: only this rare denial has
    /// one, and every other result stays small.
    pub call: Option<Box<CallInfo<'a>>>,
}

impl From<Reason> for Refusal<'_> {
    fn from(reason: Reason) -> Self {
        Refusal { reason, call: None }
    }
}

/// Inspects the HTTP request and its body, for a server that decides the calls of `governs`.
pub fn inspect<'a>(
    method: &str,
    headers: &Headers<'a>,
    body: &'a [u8],
    max_body_bytes: usize,
    governs: Governs,
) -> Result<Inspection<'a>, Refusal<'a>> {
    if !method.eq_ignore_ascii_case("POST") {
        return Ok(Inspection::NotACall);
    }
    if let Some(content_type) = headers.get("content-type")
        && !content_type
            .as_bytes()
            .windows(JSON.len())
            .any(|w| w.eq_ignore_ascii_case(JSON))
    {
        return Err(Reason::RpcInspectionFailed.into());
    }
    let partial = headers
        .get("x-envoy-auth-partial-body")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let content_length = headers.get("content-length").and_then(|v| parse_length(&v));
    let body_len = body.len() as u64;
    if partial || (!body.is_empty() && content_length.is_some_and(|cl| body_len < cl)) {
        return Err(Reason::RpcBodyTruncated.into());
    }
    if body.is_empty() && content_length.is_some_and(|cl| cl > 0) {
        return Err(Reason::RpcBodyMissing.into());
    }
    if body.len() > max_body_bytes {
        return Err(Reason::RpcInspectionFailed.into());
    }
    let messages = parse_messages(body)?;
    // Step 7: a governed resource URI without a canonical form means different things to
    // different servers, so no decision on it could be trusted.
    if governs.resources
        && messages.iter().any(|m| {
            matches!(m, Message::Request(CallInfo { target: Some(t), .. })
                if t.primitive == Primitive::Resource && crate::uri::canonical(&t.name).is_none())
        })
    {
        return Err(Reason::RpcAmbiguous.into());
    }
    // The body parsed, so it is an object or an array and its first byte tells which.
    let batch = body.trim_ascii_start().starts_with(b"[");
    routed(headers, batch, messages).map(Inspection::Messages)
}

/// Step 7a: when the request carries MCP routing headers (`mcp-method`, `mcp-name`), they
/// must describe the body's one message, since what the gateway routed, logged or matched on
/// has to be the call that is authorized.
fn routed<'a>(
    headers: &Headers<'a>,
    batch: bool,
    mut messages: Vec<Message<'a>>,
) -> Result<Vec<Message<'a>>, Refusal<'a>> {
    let method = headers.get("mcp-method");
    let name = headers.get("mcp-name");
    if method.is_none() && name.is_none() {
        return Ok(messages);
    }
    let (method, name) = (method.as_deref(), name.as_deref());
    let described = !batch
        && match messages.as_slice() {
            [Message::Request(call)] => describes(method, name, call),
            // A response has no method for `mcp-method` to equal, and no target for `mcp-name`.
            _ => method.is_none(),
        };
    if described {
        return Ok(messages);
    }
    let call = match messages.pop() {
        Some(Message::Request(call)) if !batch => Some(Box::new(call)),
        _ => None,
    };
    Err(Refusal {
        reason: Reason::RpcHeaderMismatch,
        call,
    })
}

/// The routing headers present describe `call`: `mcp-method` its method; `mcp-name` the
/// target as sent, required with `mcp-method` for a primitive's method, else not compared.
fn describes(method: Option<&str>, name: Option<&str>, call: &CallInfo) -> bool {
    method.is_none_or(|m| header_equals(m, &call.method))
        && call
            .target
            .as_ref()
            // One of the two is present: without `mcp-name`, `mcp-method` is.
            .is_none_or(|t| name.is_some_and(|n| header_equals(n, &t.name)))
}

/// A routing header's value equals `expected` as it is or, in the form `=?base64?B?=`, once B
/// is decoded to UTF-8 text; a value that does not decode equals nothing.
fn header_equals(value: &str, expected: &str) -> bool {
    match value
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
    {
        // Equal bytes of a `str` are UTF-8, so no separate UTF-8 check is needed.
        Some(encoded) => ROUTING_BASE64
            .decode(encoded)
            .is_ok_and(|decoded| decoded == expected.as_bytes()),
        None => value == expected,
    }
}

/// Plain decimal digits that fit in 64 bits, else absent.
fn parse_length(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// The body as JSON-RPC messages, each call with its target (steps 4–6).
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
        .document(|top, in_batch| {
            ambiguous |= top.is_ambiguous();
            match top.into_message(in_batch) {
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

/// Counts of keys that fold to `method`, `params`, `name`, `uri` and `id` in one object.
#[derive(Debug, Default, Clone, Copy)]
struct FoldCounts([u8; 5]);

impl FoldCounts {
    const WORDS: [&'static str; 5] = ["method", "params", "name", "uri", "id"];

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
    id_json: Option<&'a str>,
    has_result_or_error: bool,
    name: Option<Cow<'a, str>>,
    uri: Option<Cow<'a, str>>,
    traceparent: Option<Cow<'a, str>>,
    protocol_version: Option<Cow<'a, str>>,
}

impl<'a> TopObject<'a> {
    fn is_ambiguous(&self) -> bool {
        self.counts.repeated() || self.params_counts.repeated()
    }

    fn into_message(self, in_batch: bool) -> Result<Message<'a>, Reason> {
        if self.has_id && self.has_result_or_error && !self.has_method_key {
            return Ok(Message::Response);
        }
        let method = self
            .method
            .filter(|m| !m.trim_matches([' ', '\t', '\r', '\n']).is_empty())
            .ok_or(Reason::RpcInspectionFailed)?;
        let target = primitive_of(&method).map(|primitive| Target {
            primitive,
            name: match primitive {
                Primitive::Tool | Primitive::Prompt => self.name,
                Primitive::Resource => self.uri,
            }
            .unwrap_or(Cow::Borrowed("")),
        });
        Ok(Message::Request(CallInfo {
            method,
            target,
            id: self.id,
            id_json: self.id_json.map(Cow::Borrowed),
            in_batch,
            traceparent: self.traceparent,
            protocol_version: self.protocol_version,
        }))
    }
}

/// The primitive whose call `method` is (SPEC §2 step 7), governed or not.
fn primitive_of(method: &str) -> Option<Primitive> {
    match method {
        "tools/call" | "call_tool" => Some(Primitive::Tool),
        "prompts/get" => Some(Primitive::Prompt),
        "resources/read" | "resources/subscribe" => Some(Primitive::Resource),
        _ => None,
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
    /// object goes to `each` as it is read, with whether it is an element of an array.
    fn document(&mut self, mut each: impl FnMut(TopObject<'a>, bool)) -> Option<()> {
        self.skip_ws();
        match self.peek()? {
            b'{' => each(self.top_object()?, false),
            b'[' => {
                let count = self.array(|r| {
                    if r.peek()? != b'{' {
                        return None;
                    }
                    each(r.top_object()?, true);
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
                    let (json, text) = reader.value_id()?;
                    top.id_json = Some(json);
                    top.id = text;
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

    /// The JSON-RPC id: its JSON text exactly as sent, and as text (a string's value, else its
    /// JSON text; none for `null`).
    fn value_id(&mut self) -> Option<(&'a str, Option<Cow<'a, str>>)> {
        let start = self.pos;
        let value = match self.peek() {
            Some(b'"') => Some(self.string(true)?),
            _ => {
                self.skip_value()?;
                None
            }
        };
        let json = &self.text[start..self.pos];
        Some((
            json,
            value.or_else(|| (json != "null").then_some(Cow::Borrowed(json))),
        ))
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
                    "name" => top.name = r.value_string()?,
                    "uri" => top.uri = r.value_string()?,
                    "_meta" => r.value(Keep::Meta, top)?,
                    _ => r.skip_value()?,
                }
                Some(())
            }),
            Keep::Meta => self.object(|r, key| {
                match key.as_ref() {
                    "traceparent" => top.traceparent = r.value_string()?,
                    PROTOCOL_VERSION_KEY => top.protocol_version = r.value_string()?,
                    _ => r.skip_value()?,
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

    const ALL: Governs = Governs {
        prompts: true,
        resources: true,
    };

    fn call(body: &str) -> CallInfo<'_> {
        match messages(body).unwrap().remove(0) {
            Message::Request(call) => call,
            Message::Response => panic!("{body} is a response"),
        }
    }

    fn post<'a>(
        headers: &[(&'a str, &'a str)],
        body: &'a str,
        governs: Governs,
    ) -> Result<Inspection<'a>, Refusal<'a>> {
        let headers = Headers::new(headers.to_vec());
        inspect("POST", &headers, body.as_bytes(), 1 << 20, governs)
    }

    /// What step 7a makes of `body` under `headers`: passed, or the reason and the id (as sent)
    /// of the request the refusal answers.
    fn verdict(
        headers: &[(&'static str, &'static str)],
        body: &'static str,
    ) -> Result<(), (Reason, Option<String>)> {
        post(headers, body, Governs::TOOLS_ONLY)
            .map(drop)
            .map_err(|r| {
                (
                    r.reason,
                    r.call.and_then(|c| c.id_json).map(Cow::into_owned),
                )
            })
    }

    #[test]
    fn every_primitive_names_its_target() {
        let target = |body| {
            call(body)
                .target
                .map(|t| (t.primitive, t.name.into_owned()))
        };
        let named = |p, n: &str| Some((p, n.to_string()));
        for (body, want) in [
            (
                r#"{"method":"tools/call","params":{"name":"echo","uri":"x"}}"#,
                named(Primitive::Tool, "echo"),
            ),
            (
                r#"{"method":"call_tool","params":{"name":"echo"}}"#,
                named(Primitive::Tool, "echo"),
            ),
            (
                r#"{"method":"prompts/get","params":{"name":"sum\u006darize","arguments":{"name":"x"}}}"#,
                named(Primitive::Prompt, "summarize"),
            ),
            (
                r#"{"method":"prompts/get","params":{"name":["a"]}}"#,
                named(Primitive::Prompt, ""),
            ),
            (
                r#"{"method":"resources/read","params":{"uri":"kb://a/./b","name":"n"}}"#,
                named(Primitive::Resource, "kb://a/./b"),
            ),
            (
                r#"{"method":"resources/subscribe","params":{"uri":"kb:\/\/x"}}"#,
                named(Primitive::Resource, "kb://x"),
            ),
            (
                r#"{"method":"resources/read","params":{"name":"kb://x","uri":null}}"#,
                named(Primitive::Resource, ""),
            ),
            (
                r#"{"method":"resources/read"}"#,
                named(Primitive::Resource, ""),
            ),
            (
                r#"{"method":"resources/unsubscribe","params":{"uri":"kb://x"}}"#,
                None,
            ),
            (r#"{"method":"prompts/list","params":{}}"#, None),
            (r#"{"method":"Prompts/get","params":{"name":"p"}}"#, None),
        ] {
            assert_eq!(target(body), want, "{body}");
        }
    }

    #[test]
    fn ids_exactly_as_sent() {
        for (body, json, text) in [
            (
                r#"{"id":"a\"b\u0041/","method":"ping"}"#,
                Some(r#""a\"b\u0041/""#),
                Some("a\"bA/"),
            ),
            (
                r#"{"id":123456789012345678901234567890,"method":"ping"}"#,
                Some("123456789012345678901234567890"),
                Some("123456789012345678901234567890"),
            ),
            (
                r#"{"id":-1.50e+3,"method":"ping"}"#,
                Some("-1.50e+3"),
                Some("-1.50e+3"),
            ),
            (r#"{"id":null,"method":"ping"}"#, Some("null"), None),
            (r#"{"method":"ping"}"#, None, None),
        ] {
            let call = call(body);
            assert_eq!(call.id_json.as_deref(), json, "{body}");
            assert_eq!(call.id.as_deref(), text, "{body}");
        }
        let batch = messages(r#"[{"id":"x","method":"a"}, {"id": 2 ,"method":"b"}]"#).unwrap();
        let ids: Vec<_> = batch
            .iter()
            .map(|m| match m {
                Message::Request(c) => c.id_json.as_deref(),
                Message::Response => None,
            })
            .collect();
        assert_eq!(ids, [Some(r#""x""#), Some("2")]);
    }

    #[test]
    fn batch_elements_are_marked() {
        let flags = |body| -> Vec<Option<bool>> {
            messages(body)
                .unwrap()
                .iter()
                .map(|m| match m {
                    Message::Request(c) => Some(c.in_batch),
                    Message::Response => None,
                })
                .collect()
        };
        assert_eq!(flags(r#"{"method":"a"}"#), [Some(false)]);
        assert_eq!(flags(r#" [{"method":"a"}]"#), [Some(true)]);
        assert_eq!(
            flags(r#"[{"method":"a"},{"id":1,"result":{}},{"method":"b"}]"#),
            [Some(true), None, Some(true)]
        );
    }

    #[test]
    fn protocol_version_only_from_params_meta() {
        let version = |body| call(body).protocol_version.map(Cow::into_owned);
        assert_eq!(
            version(
                r#"{"method":"tools/call","params":{"_meta":{"traceparent":"00-x","io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#
            )
            .as_deref(),
            Some("2026-07-28")
        );
        for body in [
            r#"{"method":"a","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":20260728}}}"#,
            r#"{"method":"a","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}"#,
            r#"{"method":"a","params":{"arguments":{"_meta":{"io.modelcontextprotocol/protocolVersion":"1"}}}}"#,
            r#"{"method":"a","params":{"_meta":{"x":{"io.modelcontextprotocol/protocolVersion":"1"}}}}"#,
            r#"{"method":"a","params":{"_meta":{"io.modelcontextprotocol/protocolversion":"1"}}}"#,
        ] {
            assert_eq!(version(body), None, "{body}");
        }
    }

    #[test]
    fn uri_and_id_keys_are_ambiguous_too() {
        for body in [
            r#"{"method":"resources/read","params":{"uri":"kb://a","URI":"kb://b"}}"#,
            r#"{"method":"resources/read","params":{"uri":"kb://a","ur\u0069":"kb://b"}}"#,
            r#"{"id":1,"Id":2,"method":"tools/call"}"#,
            r#"{"id":1,"iD":2,"result":{}}"#,
            r#"{"method":"a","uri":1,"Uri":2}"#,
            r#"{"method":"a","params":{"id":1,"ID":2}}"#,
        ] {
            assert_eq!(messages(body), Err(Reason::RpcAmbiguous), "{body}");
        }
    }

    #[test]
    fn governed_resource_uris_need_a_canonical_form() {
        fn reason(body: &str, governs: Governs) -> Result<(), Reason> {
            post(&[], body, governs).map(drop).map_err(|r| r.reason)
        }
        for uri in [
            "kb://a%00b",
            "file:///a%5Cb",
            r"file:///a\\b",
            "kb://%FF",
            "kb://%C3",
        ] {
            for method in ["resources/read", "resources/subscribe"] {
                let body = format!(r#"{{"id":1,"method":"{method}","params":{{"uri":"{uri}"}}}}"#);
                assert_eq!(reason(&body, ALL), Err(Reason::RpcAmbiguous), "{body}");
                // Not governed: protocol traffic, whatever the URI.
                assert_eq!(reason(&body, Governs::TOOLS_ONLY), Ok(()), "{body}");
            }
        }
        // For the whole batch, whatever comes before.
        let batch = r#"[{"method":"tools/call","params":{"name":"a"}},{"method":"resources/read","params":{"uri":"kb://%00"}}]"#;
        assert_eq!(reason(batch, ALL), Err(Reason::RpcAmbiguous));
        for body in [
            r#"{"method":"resources/read","params":{"uri":"kb://a/%2E%2E/b%20c"}}"#,
            r#"{"method":"resources/read","params":{"uri":7}}"#,
            r#"{"method":"resources/unsubscribe","params":{"uri":"kb://%00"}}"#,
            r#"{"method":"prompts/get","params":{"name":"kb://%00"}}"#,
            r#"{"method":"tools/call","params":{"name":"a%00","uri":"kb://%00"}}"#,
        ] {
            assert_eq!(reason(body, ALL), Ok(()), "{body}");
        }
        // Step 7 comes before the routing headers.
        assert_eq!(
            post(
                &[("mcp-method", "tools/list")],
                r#"{"method":"resources/read","params":{"uri":"kb://%00"}}"#,
                ALL
            )
            .map_err(|r| r.reason),
            Err(Reason::RpcAmbiguous)
        );
    }

    #[test]
    fn routing_headers_describe_the_call() {
        let mismatch = |id: &str| Err((Reason::RpcHeaderMismatch, Some(id.to_string())));
        let search = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}"#;
        assert_eq!(
            verdict(
                &[("mcp-method", "tools/call"), ("mcp-name", "search")],
                search
            ),
            Ok(())
        );
        assert_eq!(verdict(&[("mcp-name", "search")], search), Ok(()));
        assert_eq!(
            verdict(&[("mcp-method", "tools/call")], search),
            mismatch("1")
        );
        assert_eq!(
            verdict(
                &[("mcp-method", "tools/call"), ("mcp-name", "other")],
                search
            ),
            mismatch("1")
        );
        assert_eq!(verdict(&[("mcp-name", "Search")], search), mismatch("1"));
        assert_eq!(
            verdict(
                &[("mcp-method", "tools/list"), ("mcp-name", "search")],
                search
            ),
            mismatch("1")
        );
        // Names compare case-insensitively, values trimmed; an empty value is absent.
        assert_eq!(
            verdict(
                &[("MCP-Method", " tools/call\t"), ("Mcp-Name", "search ")],
                search
            ),
            Ok(())
        );
        assert_eq!(
            verdict(&[("mcp-method", "tools/call"), ("mcp-name", " ")], search),
            mismatch("1")
        );
        // Sent twice, a header arrives joined with `,` and matches nothing.
        assert_eq!(
            verdict(&[("mcp-name", "search"), ("mcp-name", "search")], search),
            mismatch("1")
        );
        // Every primitive's method, governed or not, and its target as sent (not canonical).
        let read = r#"{"id":"r-1","method":"resources/read","params":{"uri":"kb://a/./b"}}"#;
        assert_eq!(
            verdict(
                &[("mcp-method", "resources/read"), ("mcp-name", "kb://a/./b")],
                read
            ),
            Ok(())
        );
        assert_eq!(
            verdict(
                &[("mcp-method", "resources/read"), ("mcp-name", "kb://a/b")],
                read
            ),
            mismatch(r#""r-1""#)
        );
        let prompt = r#"{"id":3,"method":"prompts/get","params":{"name":"greet"}}"#;
        assert_eq!(
            verdict(&[("mcp-method", "prompts/get")], prompt),
            mismatch("3")
        );
        assert_eq!(verdict(&[("mcp-name", "greet")], prompt), Ok(()));
        // Other methods: `mcp-name` is not compared, `mcp-method` is.
        let list = r#"{"id":4,"method":"prompts/list","params":{"name":"x"}}"#;
        assert_eq!(verdict(&[("mcp-method", "prompts/list")], list), Ok(()));
        assert_eq!(verdict(&[("mcp-name", "anything")], list), Ok(()));
        assert_eq!(
            verdict(&[("mcp-method", "prompts/get")], list),
            mismatch("4")
        );
        // A notification: the refusal has no id to answer.
        assert_eq!(
            verdict(
                &[("mcp-method", "tools/call")],
                r#"{"method":"notifications/initialized"}"#
            ),
            Err((Reason::RpcHeaderMismatch, None))
        );
        // No routing header, no comparison.
        assert_eq!(verdict(&[("mcp-session-id", "s")], search), Ok(()));
    }

    #[test]
    fn routing_headers_need_one_object() {
        let mismatch = Err((Reason::RpcHeaderMismatch, None));
        let batch = r#"[{"id":1,"method":"tools/call","params":{"name":"search"}}]"#;
        assert_eq!(verdict(&[], batch), Ok(()));
        assert_eq!(
            verdict(
                &[("mcp-method", "tools/call"), ("mcp-name", "search")],
                batch
            ),
            mismatch
        );
        assert_eq!(
            verdict(
                &[("mcp-name", "x")],
                r#"[{"method":"ping"},{"id":1,"result":{}}]"#
            ),
            mismatch
        );
        // A response has no method: `mcp-method` cannot equal it; `mcp-name` is not compared.
        let response = r#"{"jsonrpc":"2.0","id":9,"result":{}}"#;
        assert_eq!(verdict(&[("mcp-method", "tools/call")], response), mismatch);
        assert_eq!(verdict(&[("mcp-name", "search")], response), Ok(()));
        assert_eq!(
            verdict(&[("mcp-name", "x")], r#"[{"id":9,"result":{}}]"#),
            mismatch
        );
        // Steps 4–6 come first.
        for (body, reason) in [
            (r#"{"method":"tools/call""#, Reason::RpcInspectionFailed),
            (r#"[{"method":"a"},{"id":1}]"#, Reason::RpcInspectionFailed),
            (r#"{"method":"a","Method":"b"}"#, Reason::RpcAmbiguous),
        ] {
            assert_eq!(
                verdict(&[("mcp-method", "x")], body),
                Err((reason, None)),
                "{body}"
            );
        }
        // Not a POST, not a call: nothing to compare.
        let headers = Headers::new(vec![("mcp-method", "tools/call")]);
        assert_eq!(
            inspect("GET", &headers, b"", 1 << 20, ALL),
            Ok(Inspection::NotACall)
        );
    }

    #[test]
    fn routing_headers_in_base64() {
        let read = r#"{"id":1,"method":"resources/read","params":{"uri":"kb://handbook"}}"#;
        let cafe = r#"{"id":1,"method":"prompts/get","params":{"name":"café"}}"#;
        let mismatch = || Err((Reason::RpcHeaderMismatch, Some("1".to_string())));
        let name = |value| [("mcp-method", "resources/read"), ("mcp-name", value)];
        assert_eq!(
            verdict(&name("=?base64?a2I6Ly9oYW5kYm9vaw==?="), read),
            Ok(())
        );
        assert_eq!(
            verdict(
                &[
                    ("mcp-method", "=?base64?cmVzb3VyY2VzL3JlYWQ=?="),
                    ("mcp-name", "kb://handbook")
                ],
                read
            ),
            Ok(())
        );
        assert_eq!(
            verdict(&[("mcp-name", "=?base64?Y2Fmw6k=?=")], cafe),
            Ok(())
        );
        for value in [
            // Padding left out, or added where none is due.
            "=?base64?a2I6Ly9oYW5kYm9vaw?=",
            "=?base64?a2I6Ly9oYW5kYm9vaw=?=",
            "=?base64?a2I6Ly9oYW5kYm9vaw===?=",
            // Pad bits not zero: decodes to the same bytes under a lax decoder.
            "=?base64?a2I6Ly9oYW5kYm9vax==?=",
            // White space, text that is not base64.
            "=?base64?a2I6Ly9oYW5kYm9vaw==\n?=",
            "=?base64?kb://handbook?=",
            // The marker is lower case exactly; anything else is a plain value.
            "=?BASE64?a2I6Ly9oYW5kYm9vaw==?=",
            "=?base64?a2I6Ly9oYW5kYm9vaw==",
            "a2I6Ly9oYW5kYm9vaw==",
            // Decodes, but to other text, or to bytes that are not UTF-8.
            "=?base64?a2I6Ly9oYW5kYm9vaw1=?=",
            "=?base64?/w==?=",
        ] {
            assert_eq!(verdict(&name(value), read), mismatch(), "{value}");
        }
        assert_eq!(
            verdict(&[("mcp-name", "=?base64?Y2Fmw6l=?=")], cafe),
            mismatch()
        );
        // Only the standard alphabet: `-_` are URL-safe base64.
        assert_eq!(
            verdict(&[("mcp-name", "=?base64?-_8=?=")], cafe),
            mismatch()
        );
        // The empty encoding names the target "" of a call without a string name.
        assert_eq!(
            verdict(
                &[("mcp-method", "tools/call"), ("mcp-name", "=?base64??=")],
                r#"{"id":1,"method":"tools/call","params":{}}"#
            ),
            Ok(())
        );
    }

    #[test]
    fn http_level_rules() {
        let h = |pairs: Vec<(&'static str, &'static str)>| Headers::new(pairs);
        let inspect = |method, headers: &Headers<'static>, body: &'static [u8], max| {
            inspect(method, headers, body, max, Governs::TOOLS_ONLY).map_err(|r| r.reason)
        };
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
