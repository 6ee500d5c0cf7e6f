//! The JSON-RPC inspector checked against serde_json as a reference reader, for any body.
//!
//! - Every body `rpc::inspect` accepts, serde_json accepts too (except numbers beyond `f64`,
//!   which RFC 8259 §6 lets a reader refuse: serde_json does, the inspector carries them as
//!   text), and the inspector read the same messages from it: `method`, `params.name`,
//!   `params.uri`, `id`, requests and responses, in order.
//! - Every body serde_json accepts that is within the inspector's limits (depth ≤ 64, no two
//!   keys of an object folding to the same one of `method`, `params`, `name`, `uri`, `id`), the
//!   inspector accepts exactly when it is JSON-RPC (one object or a non-empty array of objects,
//!   each a response or with a non-blank string `method`), with the same messages.
//!
//! Shared by `tests/properties.rs` (generated JSON) and the `rpc_inspect` fuzz target.
#![allow(dead_code)]

use std::fmt;

use mcp_authz::policy::{Governs, Primitive};
use mcp_authz::request::Headers;
use mcp_authz::rpc::{self, Inspection, MAX_DEPTH, Message};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// A JSON value as serde_json reads it, with every object member kept in order (duplicates
/// too), so the reference sees what the inspector sees.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct JsonVisitor;
        impl<'de> Visitor<'de> for JsonVisitor {
            type Value = Json;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
                Ok(Json::Bool(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
                Ok(Json::Number(v.into()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
                Ok(Json::Number(v.into()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Json, E> {
                serde_json::Number::from_f64(v)
                    .map(Json::Number)
                    .ok_or_else(|| E::custom("not a finite number"))
            }
            fn visit_str<E>(self, v: &str) -> Result<Json, E> {
                Ok(Json::String(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Json, E> {
                Ok(Json::String(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Json::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
                let mut members = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, Json>()? {
                    members.push((key, value));
                }
                Ok(Json::Object(members))
            }
        }
        deserializer.deserialize_any(JsonVisitor)
    }
}

impl Json {
    /// Nesting depth; the outermost `[` or `{` is level 1, a scalar 0.
    fn depth(&self) -> usize {
        match self {
            Json::Array(items) => 1 + items.iter().map(Json::depth).max().unwrap_or(0),
            Json::Object(members) => 1 + members.iter().map(|(_, v)| v.depth()).max().unwrap_or(0),
            _ => 0,
        }
    }

    /// The last member named exactly `key` (as serde_json's `Value` keeps it).
    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(members) => members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    fn to_value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => Value::Number(n.clone()),
            Json::String(s) => Value::String(s.clone()),
            Json::Array(items) => Value::Array(items.iter().map(Json::to_value).collect()),
            Json::Object(members) => Value::Object(
                members
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_value()))
                    .collect(),
            ),
        }
    }
}

const FOLDED: [&str; 5] = ["method", "params", "name", "uri", "id"];

/// `key` under Unicode simple case folding is `word` (ASCII lower case), as Go's encoding/json
/// matches keys: ASCII letters ignore case, `ſ` (U+017F) is `s`, `K` (U+212A, Kelvin) is `k`.
fn folds_to(key: &str, word: &str) -> bool {
    let folded = key.chars().map(|c| match c {
        '\u{17F}' => 's',
        '\u{212A}' => 'k',
        c => c.to_ascii_lowercase(),
    });
    folded.eq(word.chars())
}

/// Two keys of the object fold to the same one of [`FOLDED`].
fn ambiguous_keys(object: &Json) -> bool {
    let Json::Object(members) = object else {
        return false;
    };
    FOLDED
        .iter()
        .any(|word| members.iter().filter(|(k, _)| folds_to(k, word)).count() > 1)
}

/// A message as the reference reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Expected {
    Response,
    Request {
        method: String,
        /// `params.name` (tools, prompts) or `params.uri` (resources) when the method is a
        /// primitive's call; "" when it is not a string.
        target: Option<(Primitive, String)>,
        /// The id's value: `None` when there is no `id` member.
        id: Option<Value>,
    },
}

/// What the reference says about a body serde_json reads as `json`: `None` when it is beyond
/// the inspector's limits, else whether it is JSON-RPC and its messages.
fn expected(json: &Json) -> Option<Result<Vec<Expected>, ()>> {
    if json.depth() > MAX_DEPTH {
        return None;
    }
    let objects: Vec<&Json> = match json {
        Json::Object(_) => vec![json],
        Json::Array(items) if !items.is_empty() => {
            if !items.iter().all(|i| matches!(i, Json::Object(_))) {
                return Some(Err(()));
            }
            items.iter().collect()
        }
        _ => return Some(Err(())),
    };
    for object in &objects {
        let params = object
            .get("params")
            .filter(|p| matches!(p, Json::Object(_)));
        if ambiguous_keys(object) || params.is_some_and(ambiguous_keys) {
            return None;
        }
    }
    let mut messages = Vec::new();
    for object in objects {
        let id = object.get("id");
        let has = |key| object.get(key).is_some();
        if id.is_some() && (has("result") || has("error")) && !has("method") {
            messages.push(Expected::Response);
            continue;
        }
        let Some(method) = object
            .get("method")
            .and_then(Json::as_str)
            .filter(|m| !m.trim_matches([' ', '\t', '\r', '\n']).is_empty())
        else {
            return Some(Err(()));
        };
        let param = |key| {
            object
                .get("params")
                .and_then(|p| p.get(key))
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_string()
        };
        let target = rpc::primitive_of(method).map(|primitive| {
            let key = match primitive {
                Primitive::Tool | Primitive::Prompt => "name",
                Primitive::Resource => "uri",
            };
            (primitive, param(key))
        });
        messages.push(Expected::Request {
            method: method.to_string(),
            target,
            id: id.map(Json::to_value),
        });
    }
    Some(Ok(messages))
}

/// What the inspector read, in the reference's terms.
fn inspected(messages: &[Message]) -> Vec<Expected> {
    messages
        .iter()
        .map(|m| match m {
            Message::Response => Expected::Response,
            Message::Request(call) => {
                // The id as text is the string's value, or the JSON text as sent; none for null.
                let id = call.id_json.as_deref().map(|json| {
                    let value: Value = serde_json::from_str(json).expect("an id serde_json reads");
                    let text = match &value {
                        Value::String(s) => Some(s.as_str()),
                        Value::Null => None,
                        _ => Some(json),
                    };
                    assert_eq!(call.id.as_deref(), text, "id text of `{json}`");
                    value
                });
                Expected::Request {
                    method: call.method.to_string(),
                    target: call
                        .target
                        .as_ref()
                        .map(|t| (t.primitive, t.name.to_string())),
                    id,
                }
            }
        })
        .collect()
}

/// Inspects `body` as a POST of JSON to a server deciding tools only (resource URIs are then
/// taken as sent) and checks the result against serde_json's reading of it.
pub fn check(body: &[u8]) {
    let headers = Headers::new(vec![("content-type", "application/json")]);
    let ours = rpc::inspect("POST", &headers, body, usize::MAX, Governs::TOOLS_ONLY);
    let reference = serde_json::from_slice::<Json>(body);
    let shown = String::from_utf8_lossy(body);
    match (&ours, &reference) {
        (Ok(Inspection::NotACall), _) => panic!("a POST is a call: {shown}"),
        (Ok(Inspection::Messages(messages)), Ok(json)) => {
            let expected = expected(json)
                .unwrap_or_else(|| panic!("accepted beyond the limits: {shown}"))
                .unwrap_or_else(|()| panic!("accepted what is not JSON-RPC: {shown}"));
            assert_eq!(inspected(messages), expected, "{shown}");
        }
        (Ok(_), Err(e)) => assert!(
            e.to_string().starts_with("number out of range"),
            "accepted what serde_json refuses ({e}): {shown}"
        ),
        (Err(refusal), Ok(json)) => {
            if let Some(expected) = expected(json) {
                assert!(
                    expected.is_err(),
                    "refused ({:?}) JSON-RPC that serde_json reads: {shown}",
                    refusal.reason
                );
            }
        }
        (Err(_), Err(_)) => {}
    }
}
