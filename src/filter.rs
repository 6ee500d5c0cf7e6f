//! List filtering (SPEC §7): the answer to `tools/list` (`prompts/list`, `resources/list`,
//! `resources/templates/list`) rewritten so that it lists only what the caller may call.
//!
//! Pure: the answer's bytes and a decision per entry in; the new bytes with what was hidden,
//! or why the answer is passed on as it is. Only the list array and the result's `cacheScope`
//! change: every other member, and every entry that stays, is copied as it was sent (serde_json's
//! `RawValue`), so numbers, escapes, formatting and key order survive — which re-serialising a
//! `serde_json::Value` would not guarantee, with or without `preserve_order`.
//!
//! Depth: the readers below look three objects deep (response, result, entry); everything
//! inside is skipped by serde_json's `RawValue`, which does not recurse, so no nesting can
//! exhaust the stack, and the body is capped at [`MAX_ANSWER_BYTES`].

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::policy::Primitive;

/// Largest answer read; a larger one is passed on as it is (`too_large`).
pub const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// Hidden names kept for the span (`mcp.authz.hidden_names`).
pub const MAX_HIDDEN_NAMES: usize = 50;

/// A list method whose answer is filtered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListMethod {
    Tools,
    Prompts,
    Resources,
    ResourceTemplates,
}

impl ListMethod {
    pub fn parse(method: &str) -> Option<ListMethod> {
        match method {
            "tools/list" => Some(ListMethod::Tools),
            "prompts/list" => Some(ListMethod::Prompts),
            "resources/list" => Some(ListMethod::Resources),
            "resources/templates/list" => Some(ListMethod::ResourceTemplates),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ListMethod::Tools => "tools/list",
            ListMethod::Prompts => "prompts/list",
            ListMethod::Resources => "resources/list",
            ListMethod::ResourceTemplates => "resources/templates/list",
        }
    }

    /// The primitive whose calls decide the entries.
    pub fn primitive(self) -> Primitive {
        match self {
            ListMethod::Tools => Primitive::Tool,
            ListMethod::Prompts => Primitive::Prompt,
            ListMethod::Resources | ListMethod::ResourceTemplates => Primitive::Resource,
        }
    }

    /// The result's member holding the list, and the entry's member that a call names it by.
    /// A resource template is decided as a read of its template text, so a `uriPrefix` that
    /// covers the template's fixed start covers the template.
    fn members(self) -> (&'static str, &'static str) {
        match self {
            ListMethod::Tools => ("tools", "name"),
            ListMethod::Prompts => ("prompts", "name"),
            ListMethod::Resources => ("resources", "uri"),
            ListMethod::ResourceTemplates => ("resourceTemplates", "uriTemplate"),
        }
    }
}

/// What a call of an entry, decided now, would do; ordered from the most to the least access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Visibility {
    Allowed,
    /// Denied but let through by monitor mode: listed, and counted in `x-would-hide`.
    WouldDeny,
    Denied,
}

/// Why the answer to a list request is passed on unchanged (the `reason` label of
/// `mcp_authz_filter_passthrough_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Passthrough {
    /// Neither `application/json` nor `text/event-stream`.
    ContentType,
    /// Compressed (`content-encoding` other than `identity`).
    ContentEncoding,
    TooLarge,
    /// Not UTF-8 JSON (or, for an event stream, not UTF-8).
    NotJson,
    /// JSON, but not a JSON-RPC result that holds the list.
    NotAList,
    /// The JSON-RPC error answer to the list request: nothing is listed.
    JsonrpcError,
    /// The request was a JSON-RPC batch: its answers are not matched to their requests.
    Batch,
    /// The server the request went to is not known to the loaded policy.
    UnknownServer,
}

impl Passthrough {
    pub const ALL: [Passthrough; 8] = [
        Passthrough::ContentType,
        Passthrough::ContentEncoding,
        Passthrough::TooLarge,
        Passthrough::NotJson,
        Passthrough::NotAList,
        Passthrough::JsonrpcError,
        Passthrough::Batch,
        Passthrough::UnknownServer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Passthrough::ContentType => "content_type",
            Passthrough::ContentEncoding => "content_encoding",
            Passthrough::TooLarge => "too_large",
            Passthrough::NotJson => "not_json",
            Passthrough::NotAList => "not_a_list",
            Passthrough::JsonrpcError => "jsonrpc_error",
            Passthrough::Batch => "batch",
            Passthrough::UnknownServer => "unknown_server",
        }
    }
}

/// How the answer carries its JSON-RPC response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    /// Server-sent events whose `message` events carry JSON-RPC messages.
    EventStream,
}

/// The format of an answer from its `content-type` and `content-encoding`, known from the
/// response headers alone, so that an unreadable answer is never buffered.
pub fn format(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
) -> Result<Format, Passthrough> {
    if content_encoding.is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity")) {
        return Err(Passthrough::ContentEncoding);
    }
    let media_type = content_type
        .and_then(|t| t.split(';').next())
        .map(str::trim)
        .unwrap_or_default();
    if media_type.eq_ignore_ascii_case("application/json") {
        Ok(Format::Json)
    } else if media_type.eq_ignore_ascii_case("text/event-stream") {
        Ok(Format::EventStream)
    } else {
        Err(Passthrough::ContentType)
    }
}

/// A rewritten answer and what it no longer lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filtered {
    pub body: String,
    /// Entries left in the list (allowed or would-deny).
    pub listed: usize,
    pub hidden: usize,
    /// Listed entries that monitor mode alone keeps.
    pub would_hide: usize,
    /// The first [`MAX_HIDDEN_NAMES`] hidden entries' targets.
    pub hidden_names: Vec<String>,
}

/// Rewrites `body` to list only the entries whose call `visibility` does not deny.
pub fn filter(
    method: ListMethod,
    format: Format,
    body: &[u8],
    mut visibility: impl FnMut(Primitive, &str) -> Visibility,
) -> Result<Filtered, Passthrough> {
    if body.len() > MAX_ANSWER_BYTES {
        return Err(Passthrough::TooLarge);
    }
    let text = std::str::from_utf8(body).map_err(|_| Passthrough::NotJson)?;
    let mut filtered = Filtered {
        body: String::with_capacity(text.len()),
        listed: 0,
        hidden: 0,
        would_hide: 0,
        hidden_names: Vec::new(),
    };
    let mut lister = Lister {
        method,
        visibility: &mut visibility,
        tally: &mut filtered,
    };
    let body = match format {
        Format::Json => match lister.message(text)? {
            Some(body) => body,
            None => return Err(Passthrough::NotAList),
        },
        Format::EventStream => lister.event_stream(text)?,
    };
    filtered.body = body;
    Ok(filtered)
}

struct Lister<'f, V> {
    method: ListMethod,
    visibility: &'f mut V,
    tally: &'f mut Filtered,
}

impl<V: FnMut(Primitive, &str) -> Visibility> Lister<'_, V> {
    /// One JSON-RPC message rewritten, or `None` when it is not a response (not an object, or
    /// a request or notification the server sent before its answer).
    fn message(&mut self, text: &str) -> Result<Option<String>, Passthrough> {
        let top: Members = match serde_json::from_str(text) {
            Ok(top) => top,
            Err(e) if e.classify() == serde_json::error::Category::Data => return Ok(None),
            Err(_) => return Err(Passthrough::NotJson),
        };
        let has = |key: &str| top.0.iter().any(|(k, _)| k == key);
        if has("method") || !(has("result") || has("error")) {
            return Ok(None);
        }
        if has("error") {
            return Err(Passthrough::JsonrpcError);
        }
        let result = only(&top, "result").ok_or(Passthrough::NotAList)?;
        let result: Members =
            serde_json::from_str(result.get()).map_err(|_| Passthrough::NotAList)?;
        let (list_key, _) = self.method.members();
        let list = only(&result, list_key).ok_or(Passthrough::NotAList)?;
        let entries: Vec<&RawValue> =
            serde_json::from_str(list.get()).map_err(|_| Passthrough::NotAList)?;

        let mut out = String::with_capacity(text.len());
        out.push('{');
        for (i, (key, value)) in top.0.iter().enumerate() {
            member(&mut out, i, key);
            if key == "result" {
                self.result(&mut out, &result, list_key, &entries)?;
            } else {
                out.push_str(value.get());
            }
        }
        out.push('}');
        Ok(Some(out))
    }

    /// The result with the list narrowed and `cacheScope: "private"` (the list depends on
    /// who asks, so no shared cache may keep it).
    fn result(
        &mut self,
        out: &mut String,
        result: &Members,
        list_key: &str,
        entries: &[&RawValue],
    ) -> Result<(), Passthrough> {
        const CACHE_SCOPE: &str = "cacheScope";
        const PRIVATE: &str = "\"private\"";
        out.push('{');
        let mut scoped = false;
        for (i, (key, value)) in result.0.iter().enumerate() {
            member(out, i, key);
            if key == list_key {
                self.entries(out, entries)?;
            } else if key == CACHE_SCOPE {
                out.push_str(PRIVATE);
                scoped = true;
            } else {
                out.push_str(value.get());
            }
        }
        if !scoped {
            member(out, result.0.len(), CACHE_SCOPE);
            out.push_str(PRIVATE);
        }
        out.push('}');
        Ok(())
    }

    fn entries(&mut self, out: &mut String, entries: &[&RawValue]) -> Result<(), Passthrough> {
        let primitive = self.method.primitive();
        let (_, target_key) = self.method.members();
        out.push('[');
        let mut first = true;
        for entry in entries {
            let targets = if entry.get().starts_with('{') {
                let mut de = serde_json::Deserializer::from_str(entry.get());
                Targets(target_key)
                    .deserialize(&mut de)
                    .map_err(|_| Passthrough::NotAList)?
            } else {
                Vec::new()
            };
            // An entry without its name is decided as a call naming "" would be; one that
            // names itself twice is as visible as the least visible of its names, whichever
            // a client reads.
            let (visibility, name) = if targets.is_empty() {
                ((self.visibility)(primitive, ""), String::new())
            } else {
                let mut worst = (Visibility::Allowed, String::new());
                for target in targets {
                    let v = (self.visibility)(primitive, &target);
                    if v >= worst.0 {
                        worst = (v, target);
                    }
                }
                worst
            };
            if visibility == Visibility::Denied {
                self.tally.hidden += 1;
                if self.tally.hidden_names.len() < MAX_HIDDEN_NAMES {
                    self.tally.hidden_names.push(name);
                }
                continue;
            }
            self.tally.listed += 1;
            if visibility == Visibility::WouldDeny {
                self.tally.would_hide += 1;
            }
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(entry.get());
        }
        out.push(']');
        Ok(())
    }

    /// Every event copied as sent, but for the `message` events (or events without `event:`)
    /// whose data is the JSON-RPC response, rewritten. A stream without such a response is not
    /// a list answer.
    fn event_stream(&mut self, text: &str) -> Result<String, Passthrough> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        // A leading byte-order mark is not part of the first field name (HTML's SSE parser).
        if let Some(after) = rest.strip_prefix('\u{feff}') {
            out.push('\u{feff}');
            rest = after;
        }
        let mut responses = 0;
        let mut event: Vec<Line> = Vec::new();
        while !rest.is_empty() {
            let (line, after) = Line::split(rest);
            rest = after;
            if !line.content.is_empty() {
                event.push(line);
                continue;
            }
            responses += self.event(&mut out, &event)?;
            event.clear();
            out.push_str(line.end);
        }
        // An event cut off by the end of the stream is dropped by clients: left as it is.
        for line in &event {
            out.push_str(line.content);
            out.push_str(line.end);
        }
        if responses == 0 {
            return Err(Passthrough::NotAList);
        }
        Ok(out)
    }

    /// One complete event written to `out`; 1 when it was the rewritten response.
    fn event(&mut self, out: &mut String, lines: &[Line]) -> Result<usize, Passthrough> {
        let mut kind = "";
        let mut data: Option<String> = None;
        for line in lines {
            match line.field() {
                ("event", value) => kind = value,
                ("data", value) => match &mut data {
                    Some(joined) => {
                        joined.push('\n');
                        joined.push_str(value);
                    }
                    None => data = Some(value.to_string()),
                },
                _ => {}
            }
        }
        let rewritten = match data {
            Some(data) if kind.is_empty() || kind == "message" => match self.message(&data) {
                // Data that is not JSON is the server's business.
                Err(Passthrough::NotJson) => None,
                other => other?,
            },
            _ => None,
        };
        let Some(message) = rewritten else {
            for line in lines {
                out.push_str(line.content);
                out.push_str(line.end);
            }
            return Ok(0);
        };
        // The new data takes the place of the first `data` line, one line per line of JSON.
        let mut written = false;
        for line in lines {
            if line.field().0 != "data" {
                out.push_str(line.content);
                out.push_str(line.end);
            } else if !written {
                written = true;
                for json_line in message.split('\n') {
                    out.push_str("data: ");
                    out.push_str(json_line);
                    out.push_str(line.end);
                }
            }
        }
        Ok(1)
    }
}

/// One line of an event stream and the terminator it ended with (`\r\n`, `\n`, `\r`, or ""
/// at the end of the stream).
struct Line<'a> {
    content: &'a str,
    end: &'a str,
}

impl<'a> Line<'a> {
    fn split(text: &'a str) -> (Line<'a>, &'a str) {
        // A byte search: both are ASCII, so `at` is a char boundary (and `str::find` with a
        // char set is some thirty times slower where the list is one long `data` line).
        let Some(at) = text.bytes().position(|b| b == b'\r' || b == b'\n') else {
            return (
                Line {
                    content: text,
                    end: "",
                },
                "",
            );
        };
        let width = if text[at..].starts_with("\r\n") { 2 } else { 1 };
        let (content, rest) = text.split_at(at);
        let (end, rest) = rest.split_at(width);
        (Line { content, end }, rest)
    }

    /// The field name and value: `name: value` loses one space after the colon; a line
    /// without a colon is a field with an empty value; a comment (`:…`) has the name "".
    fn field(&self) -> (&'a str, &'a str) {
        match self.content.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (self.content, ""),
        }
    }
}

/// The value of the only member named `key`; `None` if there is none or more than one, since
/// then clients may read different ones.
fn only<'a>(members: &Members<'a>, key: &str) -> Option<&'a RawValue> {
    let mut found = members.0.iter().filter(|(k, _)| k == key);
    match (found.next(), found.next()) {
        (Some((_, value)), None) => Some(value),
        _ => None,
    }
}

/// Writes the separator and `"key":` of the `index`th member.
fn member(out: &mut String, index: usize, key: &str) {
    if index > 0 {
        out.push(',');
    }
    out.push_str(&serde_json::Value::from(key).to_string());
    out.push(':');
}

/// A JSON object's members in order, each value left as its text.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::new();
                while let Some((key, value)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    members.push((key.0, value));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

/// An object key, borrowed from the text unless an escape forced a copy.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// The string values of an object's members named `.0`; any other value counts as "".
struct Targets<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for Targets<'_> {
    type Value = Vec<String>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<String>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Targets<'_> {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
        let mut found = Vec::new();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            if key.0 == self.0 {
                let value: &RawValue = map.next_value()?;
                found.push(serde_json::from_str::<String>(value.get()).unwrap_or_default());
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn by_name(entries: &[(&str, Visibility)]) -> impl FnMut(Primitive, &str) -> Visibility {
        let entries: Vec<(String, Visibility)> =
            entries.iter().map(|(n, v)| (n.to_string(), *v)).collect();
        move |_, name| {
            entries
                .iter()
                .find(|(n, _)| n == name)
                .map_or(Visibility::Denied, |(_, v)| *v)
        }
    }

    fn names(body: &str, key: &str, target: &str) -> Vec<String> {
        let v: Value = serde_json::from_str(body).unwrap();
        v["result"][key]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e[target].as_str().unwrap_or_default().to_string())
            .collect()
    }

    const TOOLS: &str = r#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"search","inputSchema":{"type":"object","properties":{"n":{"type":"number","maximum":1.50e3}}}},{"name":"delete","description":"gone \u00e9"},{"name":"create"}],"nextCursor":"c2"}}"#;

    #[test]
    fn json_lists_only_what_is_not_denied() {
        let filtered = filter(
            ListMethod::Tools,
            Format::Json,
            TOOLS.as_bytes(),
            by_name(&[
                ("search", Visibility::Allowed),
                ("create", Visibility::WouldDeny),
            ]),
        )
        .unwrap();
        assert_eq!(
            names(&filtered.body, "tools", "name"),
            ["search", "create"],
            "{}",
            filtered.body
        );
        assert_eq!(
            (filtered.listed, filtered.hidden, filtered.would_hide),
            (2, 1, 1)
        );
        assert_eq!(filtered.hidden_names, ["delete"]);
        // Everything else is kept byte for byte, in order, and the result is private.
        assert_eq!(
            filtered.body,
            r#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"search","inputSchema":{"type":"object","properties":{"n":{"type":"number","maximum":1.50e3}}}},{"name":"create"}],"nextCursor":"c2","cacheScope":"private"}}"#
        );
    }

    #[test]
    fn an_existing_cache_scope_becomes_private_in_place() {
        let body = r#"{"id":1,"result":{"cacheScope":"public","prompts":[{"name":"a"}]}}"#;
        let filtered = filter(
            ListMethod::Prompts,
            Format::Json,
            body.as_bytes(),
            |p, _| {
                assert_eq!(p, Primitive::Prompt);
                Visibility::Allowed
            },
        )
        .unwrap();
        assert_eq!(
            filtered.body,
            r#"{"id":1,"result":{"cacheScope":"private","prompts":[{"name":"a"}]}}"#
        );
    }

    #[test]
    fn resources_and_templates_are_decided_by_their_uri() {
        let body = r#"{"id":1,"result":{"resources":[{"uri":"docs://a","name":"A"},{"uri":"secret://b","name":"B"}]}}"#;
        let seen = std::cell::RefCell::new(Vec::new());
        let decide = |p: Primitive, uri: &str| {
            seen.borrow_mut().push((p, uri.to_string()));
            if uri.starts_with("docs://") {
                Visibility::Allowed
            } else {
                Visibility::Denied
            }
        };
        let filtered =
            filter(ListMethod::Resources, Format::Json, body.as_bytes(), decide).unwrap();
        assert_eq!(names(&filtered.body, "resources", "uri"), ["docs://a"]);
        assert_eq!(filtered.hidden_names, ["secret://b"]);
        let templates =
            r#"{"id":2,"result":{"resourceTemplates":[{"uriTemplate":"docs://{id}","name":"T"}]}}"#;
        let filtered = filter(
            ListMethod::ResourceTemplates,
            Format::Json,
            templates.as_bytes(),
            decide,
        )
        .unwrap();
        assert_eq!(
            names(&filtered.body, "resourceTemplates", "uriTemplate"),
            ["docs://{id}"]
        );
        assert!(seen.borrow().iter().all(|(p, _)| *p == Primitive::Resource));
    }

    #[test]
    fn entries_without_a_name_or_with_two_names_are_decided_carefully() {
        let body = r#"{"id":1,"result":{"tools":[{"description":"x"},7,{"name":"ok","name":"bad"},{"name":1}]}}"#;
        let mut asked = Vec::new();
        let filtered = filter(ListMethod::Tools, Format::Json, body.as_bytes(), |_, n| {
            asked.push(n.to_string());
            if n == "ok" {
                Visibility::Allowed
            } else {
                Visibility::Denied
            }
        })
        .unwrap();
        assert_eq!(asked, ["", "", "ok", "bad", ""]);
        assert_eq!(
            filtered.body,
            r#"{"id":1,"result":{"tools":[],"cacheScope":"private"}}"#
        );
        assert_eq!(filtered.hidden, 4);
        assert_eq!(filtered.hidden_names, ["", "", "bad", ""]);
    }

    #[test]
    fn escaped_keys_and_targets_are_read_as_a_client_reads_them() {
        let body =
            r#"{"id":1,"re\u0073ult":{"tools":[{"n\u0061me":"dele\u0074e"},{"name":"keep"}]}}"#;
        let filtered = filter(
            ListMethod::Tools,
            Format::Json,
            body.as_bytes(),
            by_name(&[("keep", Visibility::Allowed)]),
        )
        .unwrap();
        assert_eq!(filtered.hidden_names, ["delete"]);
        assert_eq!(
            filtered.body,
            r#"{"id":1,"result":{"tools":[{"name":"keep"}],"cacheScope":"private"}}"#
        );
    }

    #[test]
    fn answers_that_cannot_be_read_are_passed_on_with_a_reason() {
        let all = |_: Primitive, _: &str| Visibility::Denied;
        let cases: [(&[u8], Passthrough); 10] = [
            (b"not json", Passthrough::NotJson),
            (b"\xff\xfe", Passthrough::NotJson),
            (br#"{"id":1,"result":{"tools":[]}} x"#, Passthrough::NotJson),
            (b"[1,2]", Passthrough::NotAList),
            (
                br#"{"id":1,"result":{"prompts":[]}}"#,
                Passthrough::NotAList,
            ),
            (br#"{"id":1,"result":{"tools":{}}}"#, Passthrough::NotAList),
            (br#"{"id":1,"result":[]}"#, Passthrough::NotAList),
            (
                br#"{"id":1,"result":{"tools":[]},"result":{"tools":[]}}"#,
                Passthrough::NotAList,
            ),
            (
                br#"{"jsonrpc":"2.0","method":"notifications/x"}"#,
                Passthrough::NotAList,
            ),
            (
                br#"{"id":1,"error":{"code":-32601,"message":"no"}}"#,
                Passthrough::JsonrpcError,
            ),
        ];
        for (body, reason) in cases {
            assert_eq!(
                filter(ListMethod::Tools, Format::Json, body, all),
                Err(reason),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let big = vec![b' '; MAX_ANSWER_BYTES + 1];
        assert_eq!(
            filter(ListMethod::Tools, Format::Json, &big, all),
            Err(Passthrough::TooLarge)
        );
    }

    #[test]
    fn deep_nesting_inside_an_entry_is_copied_not_recursed() {
        let depth = 100_000;
        let schema = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let body = format!(r#"{{"id":1,"result":{{"tools":[{{"name":"a","s":{schema}}}]}}}}"#);
        let filtered = filter(ListMethod::Tools, Format::Json, body.as_bytes(), |_, _| {
            Visibility::Allowed
        })
        .unwrap();
        assert!(filtered.body.contains(&schema));
    }

    #[test]
    fn formats_come_from_the_headers() {
        assert_eq!(format(Some("application/json"), None), Ok(Format::Json));
        assert_eq!(
            format(Some("Application/JSON; charset=utf-8"), Some("identity")),
            Ok(Format::Json)
        );
        assert_eq!(
            format(Some("text/event-stream"), None),
            Ok(Format::EventStream)
        );
        assert_eq!(
            format(Some("application/json"), Some("gzip")),
            Err(Passthrough::ContentEncoding)
        );
        assert_eq!(
            format(Some("text/html"), None),
            Err(Passthrough::ContentType)
        );
        assert_eq!(format(None, None), Err(Passthrough::ContentType));
        assert_eq!(
            format(Some("application/json-seq"), None),
            Err(Passthrough::ContentType)
        );
    }

    #[test]
    fn event_streams_rewrite_only_the_response_event() {
        let response = r#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"a"},{"name":"b"}]}}"#;
        let stream = format!(
            ": keep-alive\r\n\r\nevent: message\r\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}}\r\n\r\nevent: message\r\nid: 9\r\ndata: {response}\r\n\r\n"
        );
        let filtered = filter(
            ListMethod::Tools,
            Format::EventStream,
            stream.as_bytes(),
            by_name(&[("a", Visibility::Allowed)]),
        )
        .unwrap();
        assert_eq!(
            filtered.body,
            ": keep-alive\r\n\r\nevent: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\r\n\r\nevent: message\r\nid: 9\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"tools\":[{\"name\":\"a\"}],\"cacheScope\":\"private\"}}\r\n\r\n"
        );
        assert_eq!((filtered.listed, filtered.hidden), (1, 1));
    }

    #[test]
    fn event_data_split_over_lines_is_joined_and_written_back_per_line() {
        let stream = "data: {\"id\":1,\n\ndata:{\"id\":1,\ndata: \"result\":{\"tools\":[{\"name\":\"a\",\ndata:   \"x\":1},{\"name\":\"b\"}]}}\n\n";
        let filtered = filter(
            ListMethod::Tools,
            Format::EventStream,
            stream.as_bytes(),
            by_name(&[("a", Visibility::Allowed)]),
        )
        .unwrap();
        // The first event's data is not JSON: kept. The second is the response.
        assert_eq!(
            filtered.body,
            "data: {\"id\":1,\n\ndata: {\"id\":1,\"result\":{\"tools\":[{\"name\":\"a\",\ndata:   \"x\":1}],\"cacheScope\":\"private\"}}\n\n"
        );
        let parsed: Value = serde_json::from_str(
            &filtered
                .body
                .split("\n\n")
                .nth(1)
                .unwrap()
                .lines()
                .map(|l| l.strip_prefix("data: ").unwrap())
                .collect::<Vec<_>>()
                .join("\n"),
        )
        .unwrap();
        assert_eq!(parsed["result"]["tools"][0]["x"], 1);
    }

    #[test]
    fn event_streams_that_hold_no_list_are_passed_on() {
        let all = |_: Primitive, _: &str| Visibility::Allowed;
        let cases: [(&str, Passthrough); 5] = [
            ("", Passthrough::NotAList),
            (": ping\n\n", Passthrough::NotAList),
            (
                "event: other\ndata: {\"id\":1,\"result\":{\"tools\":[]}}\n\n",
                Passthrough::NotAList,
            ),
            // Cut off before its blank line: clients drop it, so nothing is listed.
            (
                "data: {\"id\":1,\"result\":{\"tools\":[]}}\n",
                Passthrough::NotAList,
            ),
            (
                "data: {\"id\":1,\"error\":{\"code\":1,\"message\":\"x\"}}\n\n",
                Passthrough::JsonrpcError,
            ),
        ];
        for (stream, reason) in cases {
            assert_eq!(
                filter(
                    ListMethod::Tools,
                    Format::EventStream,
                    stream.as_bytes(),
                    all
                ),
                Err(reason),
                "{stream:?}"
            );
        }
        assert_eq!(
            filter(
                ListMethod::Tools,
                Format::EventStream,
                b"data: {\"id\":1,\"result\":{}}\n\n",
                all
            ),
            Err(Passthrough::NotAList)
        );
    }

    #[test]
    fn lone_carriage_returns_end_lines_too() {
        let stream = "\u{feff}data: {\"id\":1,\"result\":{\"tools\":[{\"name\":\"a\"}]}}\r\r";
        let filtered = filter(
            ListMethod::Tools,
            Format::EventStream,
            stream.as_bytes(),
            |_, _| Visibility::Denied,
        )
        .unwrap();
        assert_eq!(
            filtered.body,
            "\u{feff}data: {\"id\":1,\"result\":{\"tools\":[],\"cacheScope\":\"private\"}}\r\r"
        );
    }

    #[test]
    fn hidden_names_are_capped() {
        let tools: Vec<Value> = (0..80).map(|i| json!({"name": format!("t{i}")})).collect();
        let body = json!({"id":1,"result":{"tools":tools}}).to_string();
        let filtered = filter(ListMethod::Tools, Format::Json, body.as_bytes(), |_, _| {
            Visibility::Denied
        })
        .unwrap();
        assert_eq!(filtered.hidden, 80);
        assert_eq!(filtered.hidden_names.len(), MAX_HIDDEN_NAMES);
        assert_eq!(filtered.hidden_names[49], "t49");
    }

    fn visibility() -> impl Strategy<Value = Visibility> {
        prop_oneof![
            Just(Visibility::Allowed),
            Just(Visibility::WouldDeny),
            Just(Visibility::Denied),
        ]
    }

    proptest! {
        /// Whatever the entries and decisions, the answer lists exactly the entries whose
        /// call is not denied, in their order, and keeps every other member.
        #[test]
        fn the_listed_entries_are_exactly_the_callable_ones(
            decisions in prop::collection::vec(visibility(), 1..6),
            entries in prop::collection::vec((0usize..6, any::<bool>()), 0..20),
            cursor in prop::option::of("[a-z0-9]{0,8}"),
            event_stream in any::<bool>(),
            crlf in any::<bool>(),
        ) {
            let name = |i: usize| format!("tool-{}", i % decisions.len());
            let tools: Vec<Value> = entries
                .iter()
                .map(|&(i, schema)| {
                    let mut entry = json!({"name": name(i), "description": "d"});
                    if schema {
                        entry["inputSchema"] = json!({"type": "object", "n": [1.5, -2, "x"]});
                    }
                    entry
                })
                .collect();
            let mut result = json!({"tools": tools});
            if let Some(cursor) = &cursor {
                result["nextCursor"] = json!(cursor);
            }
            let response = json!({"jsonrpc": "2.0", "id": 11, "result": result});
            let end = if crlf { "\r\n" } else { "\n" };
            let (format, body) = if event_stream {
                (Format::EventStream, format!("event: message{end}data: {response}{end}{end}"))
            } else {
                (Format::Json, response.to_string())
            };
            let decide = |_: Primitive, n: &str| {
                let i: usize = n.trim_start_matches("tool-").parse().unwrap();
                decisions[i]
            };
            let filtered = filter(ListMethod::Tools, format, body.as_bytes(), decide).unwrap();

            let json_text = if event_stream {
                filtered
                    .body
                    .split(end)
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect::<Vec<_>>()
                    .join("\n")
            } else {
                filtered.body.clone()
            };
            let got: Value = serde_json::from_str(&json_text).unwrap();
            let callable: Vec<&Value> = tools
                .iter()
                .filter(|t| decide(Primitive::Tool, t["name"].as_str().unwrap()) != Visibility::Denied)
                .collect();
            let listed: Vec<&Value> = got["result"]["tools"].as_array().unwrap().iter().collect();
            prop_assert_eq!(&listed, &callable);
            prop_assert_eq!(filtered.listed, callable.len());
            prop_assert_eq!(filtered.hidden, tools.len() - callable.len());
            let would = callable
                .iter()
                .filter(|t| decide(Primitive::Tool, t["name"].as_str().unwrap()) == Visibility::WouldDeny)
                .count();
            prop_assert_eq!(filtered.would_hide, would);
            prop_assert_eq!(&got["result"]["cacheScope"], "private");
            prop_assert_eq!(&got["result"]["nextCursor"], &response["result"]["nextCursor"]);
            prop_assert_eq!(&got["id"], 11);
            prop_assert_eq!(&got["jsonrpc"], "2.0");
        }
    }

    #[test]
    fn list_methods_round_trip() {
        for method in [
            ListMethod::Tools,
            ListMethod::Prompts,
            ListMethod::Resources,
            ListMethod::ResourceTemplates,
        ] {
            assert_eq!(ListMethod::parse(method.as_str()), Some(method));
        }
        assert_eq!(ListMethod::parse("tools/call"), None);
        assert_eq!(ListMethod::parse("Tools/list"), None);
    }
}
