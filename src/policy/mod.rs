//! The policy model: MCPServer, MCPAccessGrant and MCPAgentSession as plain, validated data.
//!
//! `load` reads files into YAML documents, `validate` turns documents into these types while
//! collecting every problem, `snapshot` compiles a valid set into the indexed form a Check uses.

pub mod load;
pub mod snapshot;
pub mod validate;
pub mod yaml;

use std::fmt;
use std::sync::Arc;

use crate::time::Timestamp;

pub use load::{LoadError, PolicySet, load_files, load_paths};
pub use snapshot::Snapshot;
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

#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub required_trust: Trust,
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
    pub tools: Vec<Tool>,
    pub auth: Auth,
    pub mode: Mode,
    pub default_decision: DefaultDecision,
    pub policy_version: Text,
    pub session_required: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolRule {
    pub name: String,
    pub decision: RuleDecision,
    pub required_trust: Trust,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub key: ObjectKey,
    pub server_ref: ObjectKey,
    pub subject: Subject,
    pub max_trust: Trust,
    pub allowed_side_effects: Vec<SideEffect>,
    pub tool_rules: Vec<ToolRule>,
    pub disabled: bool,
    pub expires_at: Option<Timestamp>,
    pub policy_version: Option<Text>,
    pub mode: Mode,
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
