//! Pure-core test support: policies from text, requests from a builder, decisions in a row.
#![allow(dead_code)]

use mcp_authz::check::{Options, authorize};
use mcp_authz::decision::Decision;
use mcp_authz::policy::Timestamp;
use mcp_authz::policy::{Mode, Snapshot, load_files};
use mcp_authz::request::{CheckInput, Claims, Headers};

pub fn snapshot(yaml: &str) -> Snapshot {
    match load_files(&[("policy.yaml", yaml.as_bytes())]) {
        Ok(set) => Snapshot::compile(set),
        Err(e) => panic!(
            "invalid test policy:\n{}",
            e.problems()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

pub fn at(time: &str) -> Timestamp {
    Timestamp::parse_rfc3339(time).unwrap()
}

/// A request under construction.
#[derive(Clone, Default)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub mcp_server: Option<String>,
    pub principal: String,
    pub jwt: Vec<(String, Vec<(String, String)>)>,
}

impl Req {
    pub fn post(path: &str, body: &str) -> Req {
        Req {
            method: "POST".into(),
            path: path.into(),
            body: body.into(),
            ..Req::default()
        }
    }

    /// A `tools/call` of `tool`.
    pub fn tool(path: &str, tool: &str) -> Req {
        Req::post(
            path,
            &format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}"}}}}"#
            ),
        )
    }

    /// A `prompts/get` of `prompt`.
    pub fn prompt(path: &str, prompt: &str) -> Req {
        Req::post(
            path,
            &format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{{"name":"{prompt}"}}}}"#
            ),
        )
    }

    /// A `resources/read` of `uri`.
    pub fn resource(path: &str, uri: &str) -> Req {
        Req::post(
            path,
            &format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{{"uri":"{uri}"}}}}"#
            ),
        )
    }

    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn human(self, id: &str) -> Req {
        self.header("x-mcp-human-id", id)
    }

    pub fn agent(self, id: &str) -> Req {
        self.header("x-mcp-agent-id", id)
    }

    pub fn team(self, id: &str) -> Req {
        self.header("x-mcp-team-id", id)
    }

    pub fn session(self, id: &str) -> Req {
        self.header("x-mcp-agent-session", id)
    }

    pub fn server(mut self, name: &str) -> Req {
        self.mcp_server = Some(name.into());
        self
    }

    pub fn principal(mut self, principal: &str) -> Req {
        self.principal = principal.into();
        self
    }

    pub fn claims(mut self, key: &str, claims: &[(&str, &str)]) -> Req {
        self.jwt.push((
            key.into(),
            claims
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ));
        self
    }

    pub fn input(&self) -> CheckInput<'_> {
        fn claim<'c>(claims: &'c [(String, String)], name: &str) -> Option<&'c str> {
            claims
                .iter()
                .find(|(k, v)| k == name && !v.is_empty())
                .map(|(_, v)| v.as_str())
        }
        CheckInput {
            method: &self.method,
            path: &self.path,
            headers: Headers::new(
                self.headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect(),
            ),
            body: self.body.as_bytes(),
            mcp_server: self.mcp_server.as_deref(),
            principal: &self.principal,
            jwt_payloads: self
                .jwt
                .iter()
                .map(|(key, c)| {
                    (
                        key.as_str(),
                        Claims {
                            sub: claim(c, "sub"),
                            azp: claim(c, "azp"),
                            client_id: claim(c, "client_id"),
                            team_id: claim(c, "team_id"),
                            tenant_id: claim(c, "tenant_id"),
                            tid: claim(c, "tid"),
                        },
                    )
                })
                .collect(),
        }
    }
}

/// What a test compares: applied verdict, reason, would-deny, grant, session.
#[derive(Debug, PartialEq, Eq)]
pub struct Seen {
    pub decision: &'static str,
    pub reason: &'static str,
    pub would_deny: bool,
    pub grant: Option<String>,
    pub session: Option<String>,
}

pub fn seen(d: &Decision) -> Seen {
    Seen {
        decision: d.applied().as_str(),
        reason: d.reason.as_str(),
        would_deny: d.would_deny,
        grant: d.grant_key().map(str::to_string),
        session: d.session_key().map(str::to_string),
    }
}

pub fn decide_at<'a>(
    snapshot: &'a Snapshot,
    input: &CheckInput<'a>,
    mode: Mode,
    now: Timestamp,
) -> Decision<'a> {
    let options = Options {
        mode,
        ..Options::default()
    };
    authorize(Some(snapshot), input, &options, now)
}
