//! The outcome of a Check and its evidence. The response, the dynamic metadata, the log line,
//! the metrics and the span all read from a [`Decision`]; none of them recomputes anything.

use std::borrow::Cow;

use crate::policy::snapshot::{
    CompiledGrant, CompiledServer, CompiledSession, Identity, SessionDenial,
};
use crate::policy::{DenyAs, Mode, Primitive, RiskLevel, SideEffect, Text, Trust};

/// Why a request was allowed or denied (SPEC §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Allowed,
    UnknownServer,
    RpcInspectionFailed,
    RpcBodyTruncated,
    RpcBodyMissing,
    RpcAmbiguous,
    RpcHeaderMismatch,
    PolicyUnavailable,
    MissingIdentity,
    MissingSession,
    SessionNotFound,
    SessionRevoked,
    SessionExpired,
    InvalidSpiffeIdentity,
    NoMatchingGrant,
    GrantExpired,
    ToolNotGranted,
    ToolDenied,
    ToolSideEffectUnknown,
    PromptNotGranted,
    PromptDenied,
    PromptUnknown,
    ResourceNotGranted,
    ResourceDenied,
    ResourceUnknown,
    SideEffectNotAllowed,
    TrustTooLow,
}

impl From<SessionDenial> for Reason {
    fn from(denial: SessionDenial) -> Self {
        match denial {
            SessionDenial::Revoked => Reason::SessionRevoked,
            SessionDenial::Expired => Reason::SessionExpired,
        }
    }
}

impl Reason {
    pub const ALL: [Reason; 27] = [
        Reason::Allowed,
        Reason::UnknownServer,
        Reason::RpcInspectionFailed,
        Reason::RpcBodyTruncated,
        Reason::RpcBodyMissing,
        Reason::RpcAmbiguous,
        Reason::RpcHeaderMismatch,
        Reason::PolicyUnavailable,
        Reason::MissingIdentity,
        Reason::MissingSession,
        Reason::SessionNotFound,
        Reason::SessionRevoked,
        Reason::SessionExpired,
        Reason::InvalidSpiffeIdentity,
        Reason::NoMatchingGrant,
        Reason::GrantExpired,
        Reason::ToolNotGranted,
        Reason::ToolDenied,
        Reason::ToolSideEffectUnknown,
        Reason::PromptNotGranted,
        Reason::PromptDenied,
        Reason::PromptUnknown,
        Reason::ResourceNotGranted,
        Reason::ResourceDenied,
        Reason::ResourceUnknown,
        Reason::SideEffectNotAllowed,
        Reason::TrustTooLow,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Allowed => "allowed",
            Reason::UnknownServer => "unknown_server",
            Reason::RpcInspectionFailed => "rpc_inspection_failed",
            Reason::RpcBodyTruncated => "rpc_body_truncated",
            Reason::RpcBodyMissing => "rpc_body_missing",
            Reason::RpcAmbiguous => "rpc_ambiguous",
            Reason::RpcHeaderMismatch => "rpc_header_mismatch",
            Reason::PolicyUnavailable => "policy_unavailable",
            Reason::MissingIdentity => "missing_identity",
            Reason::MissingSession => "missing_session",
            Reason::SessionNotFound => "session_not_found",
            Reason::SessionRevoked => "session_revoked",
            Reason::SessionExpired => "session_expired",
            Reason::InvalidSpiffeIdentity => "invalid_spiffe_identity",
            Reason::NoMatchingGrant => "no_matching_grant",
            Reason::GrantExpired => "grant_expired",
            Reason::ToolNotGranted => "tool_not_granted",
            Reason::ToolDenied => "tool_denied",
            Reason::ToolSideEffectUnknown => "tool_side_effect_unknown",
            Reason::PromptNotGranted => "prompt_not_granted",
            Reason::PromptDenied => "prompt_denied",
            Reason::PromptUnknown => "prompt_unknown",
            Reason::ResourceNotGranted => "resource_not_granted",
            Reason::ResourceDenied => "resource_denied",
            Reason::ResourceUnknown => "resource_unknown",
            Reason::SideEffectNotAllowed => "side_effect_not_allowed",
            Reason::TrustTooLow => "trust_too_low",
        }
    }

    /// The HTTP status the gateway returns when this reason is enforced.
    pub fn denial_status(self) -> u16 {
        match self {
            Reason::MissingIdentity
            | Reason::MissingSession
            | Reason::SessionNotFound
            | Reason::SessionRevoked
            | Reason::SessionExpired
            | Reason::InvalidSpiffeIdentity => 401,
            Reason::PolicyUnavailable => 503,
            Reason::RpcHeaderMismatch => 400,
            _ => 403,
        }
    }

    /// One sentence for the denied response body.
    pub fn message(self) -> &'static str {
        match self {
            Reason::Allowed => "The request is allowed.",
            Reason::UnknownServer => "No MCP server is configured for this route.",
            Reason::RpcInspectionFailed => {
                "The request body is not a JSON-RPC message that can be authorized."
            }
            Reason::RpcBodyTruncated => {
                "The request body was cut short before authorization, so it cannot be authorized."
            }
            Reason::RpcBodyMissing => "The request body was not sent for authorization.",
            Reason::RpcAmbiguous => {
                "The JSON-RPC message repeats a key that decides what is called, so it is ambiguous."
            }
            Reason::RpcHeaderMismatch => {
                "The MCP routing headers do not match the JSON-RPC message they describe."
            }
            Reason::PolicyUnavailable => "No access policy is loaded yet.",
            Reason::MissingIdentity => "The request does not say who is calling.",
            Reason::MissingSession => "This MCP server requires an agent session.",
            Reason::SessionNotFound => {
                "The agent session does not exist for this caller and server."
            }
            Reason::SessionRevoked => "The agent session has been revoked.",
            Reason::SessionExpired => "The agent session has expired.",
            Reason::InvalidSpiffeIdentity => {
                "The client certificate does not carry a valid SPIFFE session identity."
            }
            Reason::NoMatchingGrant => "No access grant matches the caller on this MCP server.",
            Reason::GrantExpired => {
                "Every access grant of the caller on this MCP server has expired."
            }
            Reason::ToolNotGranted => "No access grant of the caller covers this tool.",
            Reason::ToolDenied => "An access grant denies this tool to the caller.",
            Reason::ToolSideEffectUnknown => {
                "The tool's side effect is not declared, so it cannot be granted."
            }
            Reason::PromptNotGranted => "No access grant of the caller covers this prompt.",
            Reason::PromptDenied => "An access grant denies this prompt to the caller.",
            Reason::PromptUnknown => {
                "The prompt is not declared by this MCP server, so it cannot be granted."
            }
            Reason::ResourceNotGranted => "No access grant of the caller covers this resource.",
            Reason::ResourceDenied => "An access grant denies this resource to the caller.",
            Reason::ResourceUnknown => {
                "The resource is not declared by this MCP server, so it cannot be granted."
            }
            Reason::SideEffectNotAllowed => {
                "The caller's grants do not allow this tool's side effect."
            }
            Reason::TrustTooLow => "The caller's effective trust is below what this tool requires.",
        }
    }

    /// Reasons from the grant steps (5–9), the ones monitor-mode grants can be blamed for.
    pub fn from_grant_steps(self) -> bool {
        matches!(
            self,
            Reason::NoMatchingGrant
                | Reason::GrantExpired
                | Reason::ToolNotGranted
                | Reason::ToolDenied
                | Reason::ToolSideEffectUnknown
                | Reason::PromptNotGranted
                | Reason::PromptDenied
                | Reason::PromptUnknown
                | Reason::ResourceNotGranted
                | Reason::ResourceDenied
                | Reason::ResourceUnknown
                | Reason::SideEffectNotAllowed
                | Reason::TrustTooLow
        )
    }

    /// Reasons a client may read as a JSON-RPC error for its request (SPEC §3): the decision
    /// steps, identity, sessions and `rpc_header_mismatch`.
    pub fn answers_in_jsonrpc(self) -> bool {
        self.from_grant_steps() || self.denial_status() == 401 || self == Reason::RpcHeaderMismatch
    }

    /// The JSON-RPC error code of a denial in the JSON-RPC form: -32020 is the code MCP servers
    /// use for routing headers that disagree with the body.
    pub fn jsonrpc_code(self) -> i32 {
        match self {
            Reason::RpcHeaderMismatch => -32020,
            _ => -32003,
        }
    }

    /// The step-6 and step-7 reasons of a primitive: not granted, denied by a rule, not
    /// declared (SPEC §2 "The decision").
    pub fn for_primitive(primitive: Primitive) -> [Reason; 3] {
        match primitive {
            Primitive::Tool => [
                Reason::ToolNotGranted,
                Reason::ToolDenied,
                Reason::ToolSideEffectUnknown,
            ],
            Primitive::Prompt => [
                Reason::PromptNotGranted,
                Reason::PromptDenied,
                Reason::PromptUnknown,
            ],
            Primitive::Resource => [
                Reason::ResourceNotGranted,
                Reason::ResourceDenied,
                Reason::ResourceUnknown,
            ],
        }
    }
}

/// The body a denial is answered with (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenialForm {
    /// `{"error": <reason>, "message": …}`.
    Plain,
    /// A JSON-RPC error response for the deciding request.
    JsonRpc,
    /// A `CallToolResult` with `isError: true` for the deciding `tools/call` (`denyAs: tool-error`).
    ToolError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        }
    }
}

/// The trust arithmetic of step 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustFigures {
    pub required: Trust,
    pub admin: Trust,
    pub consented: Trust,
    pub effective: Trust,
}

/// What the server's inventory says about the called tool, prompt or resource (step 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolFacts {
    pub required_trust: Trust,
    pub side_effect: Option<SideEffect>,
    pub risk_level: Option<RiskLevel>,
}

/// What a call of a primitive's method names: the tool, prompt or resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    pub primitive: Primitive,
    /// `params.name` (`params.uri` for resources) as sent, or "" when it is not a string.
    pub name: Cow<'a, str>,
}

/// The JSON-RPC message a decision is about (the deciding element of a batch).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallInfo<'a> {
    pub method: Cow<'a, str>,
    /// `Some` when the method is one of a primitive's (SPEC §2 step 7), governed or not.
    pub target: Option<Target<'a>>,
    /// The JSON-RPC id as text (a string's value, a number's JSON text).
    pub id: Option<Cow<'a, str>>,
    /// The id exactly as sent (its JSON text), to answer with (`null` included).
    pub id_json: Option<Cow<'a, str>>,
    /// The message is an element of a batch.
    pub in_batch: bool,
    pub traceparent: Option<Cow<'a, str>>,
    /// `params._meta["io.modelcontextprotocol/protocolVersion"]`.
    pub protocol_version: Option<Cow<'a, str>>,
}

impl CallInfo<'_> {
    /// The target's name when the call is of `primitive`.
    pub fn target_of(&self, primitive: Primitive) -> Option<&str> {
        self.target
            .as_ref()
            .filter(|t| t.primitive == primitive)
            .map(|t| &*t.name)
    }
}

/// The outcome of one Check, with everything that explains it.
#[derive(Debug, Clone)]
pub struct Decision<'a> {
    /// What the policy says, before monitor mode lets a denial through.
    pub verdict: Verdict,
    pub reason: Reason,
    /// A denial that monitor mode let through.
    pub would_deny: bool,
    pub mode: Mode,
    pub revision: Option<&'a Text>,
    pub policy_version: Option<&'a Text>,
    pub server: Option<&'a CompiledServer>,
    pub call: Option<CallInfo<'a>>,
    pub caller: Identity<'a>,
    /// The session id as sent (mtls: the session's name).
    pub session_id: Option<Cow<'a, str>>,
    pub grant: Option<&'a CompiledGrant>,
    pub session: Option<&'a CompiledSession>,
    pub tool: Option<ToolFacts>,
    pub trust: Option<TrustFigures>,
}

impl<'a> Decision<'a> {
    /// A decision reached before any server- or call-specific evidence.
    pub fn bare(verdict: Verdict, reason: Reason) -> Self {
        Decision {
            verdict,
            reason,
            would_deny: false,
            mode: Mode::Enforce,
            revision: None,
            policy_version: None,
            server: None,
            call: None,
            caller: Identity::default(),
            session_id: None,
            grant: None,
            session: None,
            tool: None,
            trust: None,
        }
    }

    /// The verdict actually applied: a would-deny is let through.
    pub fn applied(&self) -> Verdict {
        if self.verdict == Verdict::Deny && !self.would_deny {
            Verdict::Deny
        } else {
            Verdict::Allow
        }
    }

    /// The HTTP status the gateway answers with: 200 when the request is let through, and when
    /// the server's `denyAs` answers a denial in a JSON-RPC form.
    pub fn http_status(&self) -> u16 {
        match (self.applied(), self.denial_form(), self.deny_as()) {
            (Verdict::Allow, ..) => 200,
            (Verdict::Deny, DenialForm::Plain, _) | (Verdict::Deny, _, DenyAs::HttpStatus) => {
                self.reason.denial_status()
            }
            (Verdict::Deny, ..) => 200,
        }
    }

    fn deny_as(&self) -> DenyAs {
        self.server.map_or(DenyAs::HttpStatus, |s| s.server.deny_as)
    }

    /// The id of the deciding request when a denial can be answered for it in JSON-RPC: a single
    /// request (not in a batch) whose id is a string or a number, as sent.
    pub fn answer_id(&self) -> Option<&str> {
        let call = self.call.as_ref().filter(|c| !c.in_batch)?;
        let id = call.id_json.as_deref()?;
        matches!(id.as_bytes().first(), Some(b'"' | b'-' | b'0'..=b'9')).then_some(id)
    }

    /// The body form a denial of this decision is answered with.
    pub fn denial_form(&self) -> DenialForm {
        if !self.reason.answers_in_jsonrpc() || self.answer_id().is_none() {
            return DenialForm::Plain;
        }
        let tool_call = self
            .call
            .as_ref()
            .and_then(|c| c.target.as_ref())
            .is_some_and(|t| t.primitive == Primitive::Tool);
        if self.deny_as() == DenyAs::ToolError
            && tool_call
            && self.reason != Reason::RpcHeaderMismatch
        {
            DenialForm::ToolError
        } else {
            DenialForm::JsonRpc
        }
    }

    pub fn server_key(&self) -> Option<&'a str> {
        self.server.map(|s| &*s.server.key.full)
    }

    pub fn grant_key(&self) -> Option<&'a str> {
        self.grant.map(|g| &*g.grant.key.full)
    }

    pub fn session_key(&self) -> Option<&'a str> {
        self.session.map(|s| &*s.session.key.full)
    }
}
