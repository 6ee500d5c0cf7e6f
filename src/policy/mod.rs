//! The policy model: MCPServer, MCPAccessGrant and MCPAgentSession as plain, validated data.
//!
//! `load` reads files into YAML documents, `validate` turns documents into these types while
//! collecting every problem, `snapshot` compiles a valid set into the indexed form a Check uses.

pub mod load;
pub mod snapshot;
pub mod timestamp;
pub mod validate;
pub mod yaml;

use std::fmt;
use std::sync::Arc;

pub use load::{LoadError, PolicySet, load_files, load_paths};
pub use snapshot::Snapshot;
pub use timestamp::{Timestamp, TimestampError};
pub use validate::{Problem, Severity};

pub const API_VERSION: &str = "mcpruntime.org/v1alpha1";

/// Policy text that every Check's audit record reports (names, versions, the revision):
/// shared, so a record takes it by reference count rather than by copy.
pub type Text = Arc<str>;

/// `namespace/name` of a policy object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: Text,
    pub name: Text,
    /// `namespace/name`, kept whole because decisions, metadata and spans report it as is.
    pub full: Text,
}

impl ObjectKey {
    pub fn new(namespace: &str, name: &str) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
            full: format!("{namespace}/{name}").into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

macro_rules! keyword_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal $(| $alias:literal)*),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every accepted spelling, for "expected one of" messages (ends with `, `).
            const CHOICE_LIST: &'static str = concat!($("`", $text, "`, ", $("`", $alias, "`, ",)*)+);

            /// Every accepted spelling: "`a`, `b`, `c`".
            pub fn choices() -> &'static str {
                Self::CHOICE_LIST.trim_end_matches(", ")
            }

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Case-insensitive, aliases included.
            pub fn parse(text: &str) -> Option<Self> {
                $(
                    if text.eq_ignore_ascii_case($text) $(|| text.eq_ignore_ascii_case($alias))* {
                        return Some($name::$variant);
                    }
                )+
                None
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

keyword_enum!(
    /// Trust levels, ordered low < medium < high.
    Trust { Low => "low", Medium => "medium", High => "high" }
);
keyword_enum!(SideEffect { Read => "read", Write => "write", Destructive => "destructive" });
keyword_enum!(RiskLevel { Low => "low", Medium => "medium", High => "high" });
keyword_enum!(
    /// Enforce or monitor, for a grant or the service.
    Mode { Enforce => "enforce", Monitor => "monitor" | "observe" }
);
keyword_enum!(
    /// A server's `policy.mode`: `allow-list` enforces, `monitor` lets denials through.
    ServerMode { AllowList => "allow-list" | "enforce", Monitor => "monitor" | "observe" }
);

impl ServerMode {
    pub fn mode(self) -> Mode {
        match self {
            ServerMode::AllowList => Mode::Enforce,
            ServerMode::Monitor => Mode::Monitor,
        }
    }
}
keyword_enum!(DefaultDecision { Allow => "allow", Deny => "deny" });
keyword_enum!(RuleDecision { Allow => "allow", Deny => "deny" });
keyword_enum!(AuthMode { Header => "header", Jwt => "jwt", Mtls => "mtls" });
keyword_enum!(
    /// The MCP primitives a server can govern (`policy.govern`; SPEC §2 "Which MCP call").
    Primitive { Tool => "tools", Prompt => "prompts", Resource => "resources" }
);
keyword_enum!(
    /// How a denial reaches the MCP client (`policy.denyAs`; SPEC §3).
    DenyAs { HttpStatus => "http-status", JsonrpcError => "jsonrpc-error", ToolError => "tool-error" }
);

impl Primitive {
    pub const ALL: [Primitive; 3] = [Primitive::Tool, Primitive::Prompt, Primitive::Resource];

    /// The singular name: the dynamic-metadata key of the target and the word in messages.
    pub fn key(self) -> &'static str {
        match self {
            Primitive::Tool => "tool",
            Primitive::Prompt => "prompt",
            Primitive::Resource => "resource",
        }
    }
}

/// The primitives a server decides; tools always.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Governs {
    pub prompts: bool,
    pub resources: bool,
}

impl Governs {
    pub const TOOLS_ONLY: Governs = Governs {
        prompts: false,
        resources: false,
    };

    pub fn contains(self, primitive: Primitive) -> bool {
        match primitive {
            Primitive::Tool => true,
            Primitive::Prompt => self.prompts,
            Primitive::Resource => self.resources,
        }
    }
}

/// The identity fields of a grant or session subject, or of a caller. Empty means absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    pub human: Option<String>,
    pub agent: Option<String>,
    pub team: Option<String>,
}

impl Subject {
    pub fn is_empty(&self) -> bool {
        self.human.is_none() && self.agent.is_none() && self.team.is_none()
    }
}

/// One entry of a server's inventory: a tool, a prompt or a resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The tool or prompt name; for a resource its `uri` or `uriPrefix` in canonical form.
    pub name: String,
    /// A resource's `uriPrefix`: every URI starting with `name`.
    pub prefix: bool,
    pub required_trust: Trust,
    /// `None` when not declared; prompts and resources are `read`.
    pub side_effect: Option<SideEffect>,
    pub risk_level: Option<RiskLevel>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Auth {
    pub mode: AuthMode,
    pub human_header: String,
    pub agent_header: String,
    pub team_header: String,
    pub session_header: String,
    pub jwt_payload_key: String,
    pub trust_domain: Option<String>,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            mode: AuthMode::Header,
            human_header: "X-MCP-Human-ID".into(),
            agent_header: "X-MCP-Agent-ID".into(),
            team_header: "X-MCP-Team-ID".into(),
            session_header: "X-MCP-Agent-Session".into(),
            jwt_payload_key: "jwt_payload".into(),
            trust_domain: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub key: ObjectKey,
    pub ingress_path: String,
    pub team_id: Option<String>,
    pub tools: Vec<Entry>,
    pub prompts: Vec<Entry>,
    pub resources: Vec<Entry>,
    pub auth: Auth,
    pub mode: Mode,
    pub default_decision: DefaultDecision,
    pub policy_version: Text,
    pub govern: Governs,
    pub deny_as: DenyAs,
    pub session_required: bool,
}

impl Server {
    /// The inventory of one primitive.
    pub fn entries(&self, primitive: Primitive) -> &[Entry] {
        match primitive {
            Primitive::Tool => &self.tools,
            Primitive::Prompt => &self.prompts,
            Primitive::Resource => &self.resources,
        }
    }
}

/// A grant's rule for a tool, a prompt or a resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// The tool or prompt name; for a resource its `uri` or `uriPrefix` in canonical form.
    pub name: String,
    /// A resource rule's `uriPrefix`.
    pub prefix: bool,
    pub decision: RuleDecision,
    pub required_trust: Trust,
}

/// The entry for `target` among `entries`: the one named exactly so, else the longest prefix
/// entry that `target` starts with (only resources have prefix entries). Rules and inventories
/// are looked up alike.
pub fn lookup<'e, T>(
    entries: &'e [T],
    target: &str,
    key: impl Fn(&T) -> (&str, bool),
) -> Option<&'e T> {
    entries
        .iter()
        .find(|e| key(e) == (target, false))
        .or_else(|| {
            entries
                .iter()
                .filter(|e| {
                    let (name, prefix) = key(e);
                    prefix && target.starts_with(name)
                })
                .max_by_key(|e| key(e).0.len())
        })
}

#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub key: ObjectKey,
    pub server_ref: ObjectKey,
    pub subject: Subject,
    pub max_trust: Trust,
    pub allowed_side_effects: Vec<SideEffect>,
    pub tool_rules: Vec<Rule>,
    pub prompt_rules: Vec<Rule>,
    pub resource_rules: Vec<Rule>,
    pub disabled: bool,
    pub expires_at: Option<Timestamp>,
    pub policy_version: Option<Text>,
    pub mode: Mode,
}

impl Grant {
    /// The rules for one primitive; empty covers every target of it.
    pub fn rules(&self, primitive: Primitive) -> &[Rule] {
        match primitive {
            Primitive::Tool => &self.tool_rules,
            Primitive::Prompt => &self.prompt_rules,
            Primitive::Resource => &self.resource_rules,
        }
    }

    /// The grant's rule for `target` (resources: in canonical form), if it has one.
    pub fn rule_for(&self, primitive: Primitive, target: &str) -> Option<&Rule> {
        lookup(self.rules(primitive), target, |r| (&r.name, r.prefix))
    }

    /// What the grant's rules say about `target` (SPEC §2 step 6), from one rule lookup.
    pub fn ruling(&self, primitive: Primitive, target: &str) -> Ruling<'_> {
        match self.rule_for(primitive, target) {
            Some(rule) if rule.decision == RuleDecision::Deny => Ruling::Denied(rule),
            Some(rule) => Ruling::Covered(Some(rule)),
            None if self.rules(primitive).is_empty() => Ruling::Covered(None),
            None => Ruling::Uncovered,
        }
    }
}

/// A grant's step 6 for one target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ruling<'g> {
    /// A deny rule: the call is denied at once, attributed to this grant.
    Denied(&'g Rule),
    /// An allow rule, or (`None`) no rules for the primitive at all: the grant covers it.
    Covered(Option<&'g Rule>),
    /// Rules for the primitive, none for this target.
    Uncovered,
}

impl<'g> Ruling<'g> {
    /// The rule that applies, whatever its decision.
    pub fn rule(self) -> Option<&'g Rule> {
        match self {
            Ruling::Denied(rule) => Some(rule),
            Ruling::Covered(rule) => rule,
            Ruling::Uncovered => None,
        }
    }

    /// The trust the rule requires; low without one.
    pub fn required_trust(self) -> Trust {
        self.rule().map_or(Trust::Low, |r| r.required_trust)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub key: ObjectKey,
    pub server_ref: ObjectKey,
    pub subject: Subject,
    pub consented_trust: Trust,
    pub expires_at: Option<Timestamp>,
    pub revoked: bool,
    pub policy_version: Option<Text>,
}

/// Object kinds, for counts and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Server,
    Grant,
    Session,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Server => "MCPServer",
            Kind::Grant => "MCPAccessGrant",
            Kind::Session => "MCPAgentSession",
        }
    }
}
