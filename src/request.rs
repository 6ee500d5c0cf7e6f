//! A CheckRequest as plain borrowed data: the only place that reads the ext_authz message.
//!
//! Everything after this works on [`CheckInput`], so the core never sees protobuf types and
//! both header encodings (`headers` and `header_map`) look the same.

use std::borrow::Cow;

use prost_types::value::Kind as ValueKind;

use crate::proto::auth::CheckRequest;
use crate::proto::core::HeaderValue;

pub const JWT_AUTHN_FILTER: &str = "envoy.filters.http.jwt_authn";

/// The request headers, compared case-insensitively.
#[derive(Debug, Clone, Default)]
pub struct Headers<'a> {
    entries: Vec<(&'a str, &'a str)>,
}

impl<'a> Headers<'a> {
    pub fn new(entries: Vec<(&'a str, &'a str)>) -> Self {
        Headers { entries }
    }

    /// Envoy's `HeaderMap` (ext_authz with `encode_raw_headers`, and ext_proc): `raw_value` when
    /// set, else `value`; a value that is not UTF-8 counts as absent.
    pub fn from_header_map(headers: &'a [HeaderValue]) -> Self {
        Headers::new(
            headers
                .iter()
                .filter_map(|h| {
                    let value = if h.raw_value.is_empty() {
                        h.value.as_str()
                    } else {
                        std::str::from_utf8(&h.raw_value).ok()?
                    };
                    Some((h.key.as_str(), value))
                })
                .collect(),
        )
    }

    /// The value of `name`: repeated headers joined with `,` as Envoy joins them, trimmed of
    /// spaces and tabs; empty counts as absent.
    pub fn get(&self, name: &str) -> Option<Cow<'a, str>> {
        let mut values = self
            .entries
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v);
        let first = values.next()?;
        let value = match values.next() {
            None => Cow::Borrowed(trim(first)),
            Some(second) => {
                let mut joined = format!("{first},{second}");
                for v in values {
                    joined.push(',');
                    joined.push_str(v);
                }
                Cow::Owned(trim(&joined).to_string())
            }
        };
        (!value.is_empty()).then_some(value)
    }
}

fn trim(value: &str) -> &str {
    value.trim_matches([' ', '\t'])
}

/// Claims that identify a caller in jwt mode, from one jwt_authn payload.
#[derive(Debug, Clone, Copy, Default)]
pub struct Claims<'a> {
    pub sub: Option<&'a str>,
    pub azp: Option<&'a str>,
    pub client_id: Option<&'a str>,
    pub team_id: Option<&'a str>,
    pub tenant_id: Option<&'a str>,
    pub tid: Option<&'a str>,
}

/// What mcp-authz reads of a CheckRequest.
#[derive(Debug, Clone, Default)]
pub struct CheckInput<'a> {
    pub method: &'a str,
    /// `attributes.request.http.path` as sent (query string included).
    pub path: &'a str,
    pub headers: Headers<'a>,
    pub body: &'a [u8],
    /// `context_extensions["mcp_server"]` when the key is present.
    pub mcp_server: Option<&'a str>,
    /// `attributes.source.principal`.
    pub principal: &'a str,
    /// jwt_authn payloads by their metadata key.
    pub jwt_payloads: Vec<(&'a str, Claims<'a>)>,
}

impl<'a> CheckInput<'a> {
    pub fn from_proto(request: &'a CheckRequest) -> Self {
        let Some(attributes) = &request.attributes else {
            return CheckInput::default();
        };
        let http = attributes.request.as_ref().and_then(|r| r.http.as_ref());
        let mut input = CheckInput {
            mcp_server: attributes
                .context_extensions
                .get("mcp_server")
                .map(String::as_str),
            principal: attributes
                .source
                .as_ref()
                .map_or("", |p| p.principal.as_str()),
            jwt_payloads: jwt_payloads(attributes.metadata_context.as_ref()),
            ..CheckInput::default()
        };
        if let Some(http) = http {
            input.method = &http.method;
            input.path = &http.path;
            input.body = if http.raw_body.is_empty() {
                http.body.as_bytes()
            } else {
                &http.raw_body
            };
            let raw = http.header_map.as_ref().map_or(&[][..], |m| &m.headers[..]);
            input.headers = if raw.is_empty() {
                Headers::new(
                    http.headers
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect(),
                )
            } else {
                Headers::from_header_map(raw)
            };
        }
        input
    }

    /// The path without its query string.
    pub fn path_only(&self) -> &'a str {
        self.path.split_once('?').map_or(self.path, |(p, _)| p)
    }
}

/// The jwt_authn payloads in Envoy's dynamic metadata, by their metadata key.
pub fn jwt_payloads(metadata: Option<&crate::proto::core::Metadata>) -> Vec<(&str, Claims<'_>)> {
    let Some(fields) = metadata
        .and_then(|m| m.filter_metadata.get(JWT_AUTHN_FILTER))
        .map(|s| &s.fields)
    else {
        return Vec::new();
    };
    fields
        .iter()
        .filter_map(|(key, value)| match &value.kind {
            Some(ValueKind::StructValue(payload)) => {
                let claim =
                    |name: &str| match payload.fields.get(name).and_then(|v| v.kind.as_ref()) {
                        Some(ValueKind::StringValue(s)) if !s.is_empty() => Some(s.as_str()),
                        _ => None,
                    };
                Some((
                    key.as_str(),
                    Claims {
                        sub: claim("sub"),
                        azp: claim("azp"),
                        client_id: claim("client_id"),
                        team_id: claim("team_id"),
                        tenant_id: claim("tenant_id"),
                        tid: claim("tid"),
                    },
                ))
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_join_trim_and_ignore_case() {
        let headers = Headers::new(vec![
            ("X-MCP-Human-ID", " alice\t"),
            ("x-a", "1"),
            ("X-A", "2 "),
            ("x-empty", "  "),
        ]);
        assert_eq!(headers.get("x-mcp-human-id").as_deref(), Some("alice"));
        assert_eq!(headers.get("x-a").as_deref(), Some("1,2"));
        assert_eq!(headers.get("x-empty"), None);
        assert_eq!(headers.get("x-missing"), None);
    }
}
