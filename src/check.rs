//! The whole Check as one pure function: server selection, JSON-RPC inspection, identity, the
//! per-call decision, batches, and monitor mode at the service and server level.

use crate::decide::{SessionInput, ToolOutcome, decide_tool_call};
use crate::decision::{CallInfo, Decision, Reason, Target, Verdict};
use crate::identity::{self, Caller};
use crate::policy::snapshot::CompiledServer;
use crate::policy::{Mode, Primitive, Snapshot};
use crate::request::CheckInput;
use crate::rpc::{self, Inspection, Message};
use crate::time::Timestamp;

/// Service-wide settings that take part in every decision.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// `--mode monitor`: the service never blocks.
    pub mode: Mode,
    pub max_body_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: Mode::Enforce,
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// Decides a Check. Total: every input, however malformed, gets a decision.
pub fn authorize<'a>(
    snapshot: Option<&'a Snapshot>,
    input: &CheckInput<'a>,
    options: &Options,
    now: Timestamp,
) -> Decision<'a> {
    let service_monitor = options.mode == Mode::Monitor;
    let Some(snapshot) = snapshot else {
        return finish(
            Decision::bare(Verdict::Deny, Reason::PolicyUnavailable),
            service_monitor,
        );
    };
    let mut decision = Decision {
        revision: Some(&snapshot.revision),
        ..Decision::bare(Verdict::Deny, Reason::UnknownServer)
    };
    let server = match input.mcp_server {
        Some(name) => snapshot.server_named(name),
        None => snapshot.server_for_path(input.path_only()),
    };
    let Some(server) = server else {
        return finish(decision, service_monitor);
    };
    decision.server = Some(server);
    decision.policy_version = Some(&server.server.policy_version);
    let monitor = service_monitor || server.server.mode == Mode::Monitor;

    let messages = match rpc::inspect(
        input.method,
        &input.headers,
        input.body,
        options.max_body_bytes,
        server.server.govern,
    ) {
        Ok(Inspection::NotACall) => Vec::new(),
        Ok(Inspection::Messages(messages)) => messages,
        Err(refusal) => {
            decision.reason = refusal.reason;
            decision.call = refusal.call.map(|call| *call);
            return finish(decision, monitor);
        }
    };

    // Identity is resolved once, and only if some element is a tool call. The deciding element
    // is the first enforced denial, else the first would-deny, else the first tool call, else
    // the first element: only those three candidates are kept.
    let mut caller: Option<Result<Caller<'a>, identity::IdentityDenial<'a>>> = None;
    let [mut first_enforced, mut first_would_deny, mut first_call] = [None; 3];
    for (index, message) in messages.iter().enumerate() {
        let Some(tool) = (match message {
            Message::Request(call) => call.target_of(Primitive::Tool),
            Message::Response => None,
        }) else {
            continue;
        };
        let resolved = caller.get_or_insert_with(|| identity::resolve(server, input, now));
        let outcome = match resolved {
            Ok(c) => tool_outcome(server, c, tool, now),
            Err(denial) => ToolOutcome {
                session: denial.session,
                ..ToolOutcome::deny(denial.reason)
            },
        };
        // Monitor rules 1 and 2 apply to the denial rule 3 leaves, element by element.
        let outcome = monitored(outcome, monitor);
        let candidate = if outcome.would_deny {
            &mut first_would_deny
        } else if outcome.verdict == Verdict::Deny {
            &mut first_enforced
        } else {
            &mut first_call
        };
        candidate.get_or_insert((index, outcome));
        if first_enforced.is_some() {
            break;
        }
    }

    if let Some(Ok(c)) = caller {
        decision.caller = c.identity;
        decision.session_id = c.session_id;
    }
    let deciding = first_enforced
        .or(first_would_deny)
        .or(first_call)
        .map(|(index, outcome)| (index, Some(outcome)))
        .or((!messages.is_empty()).then_some((0, None)));
    let Some((index, outcome)) = deciding else {
        decision.verdict = Verdict::Allow;
        decision.reason = Reason::Allowed;
        return finish(decision, monitor);
    };
    if let Some(Message::Request(call)) = messages.into_iter().nth(index) {
        decision.call = Some(call);
    }
    match outcome {
        Some(outcome) => apply(&mut decision, server, outcome),
        None => {
            decision.verdict = Verdict::Allow;
            decision.reason = Reason::Allowed;
        }
    }
    finish(decision, monitor)
}

/// One tool call by an already identified caller: what the `check` command explains.
pub fn decide_call<'a>(
    snapshot: &'a Snapshot,
    server: &'a CompiledServer,
    caller: Caller<'a>,
    tool: &'a str,
    options: &Options,
    now: Timestamp,
) -> Decision<'a> {
    let monitor = options.mode == Mode::Monitor || server.server.mode == Mode::Monitor;
    let outcome = monitored(tool_outcome(server, &caller, tool, now), monitor);
    let mut decision = Decision {
        revision: Some(&snapshot.revision),
        server: Some(server),
        call: Some(CallInfo {
            method: "tools/call".into(),
            target: Some(Target {
                primitive: Primitive::Tool,
                name: tool.into(),
            }),
            ..CallInfo::default()
        }),
        caller: caller.identity,
        session_id: caller.session_id,
        ..Decision::bare(Verdict::Deny, Reason::Allowed)
    };
    apply(&mut decision, server, outcome);
    finish(decision, monitor)
}

fn tool_outcome<'a>(
    server: &'a CompiledServer,
    caller: &Caller<'a>,
    tool: &str,
    now: Timestamp,
) -> ToolOutcome<'a> {
    let session = match (caller.session, &caller.session_id) {
        (Some(s), _) => SessionInput::Resolved(s),
        (None, Some(id)) => SessionInput::Id(id),
        (None, None) => SessionInput::None,
    };
    decide_tool_call(server, &caller.identity, session, tool, now)
}

/// Monitor rules 1 and 2: under service or server monitor mode a denial is let through.
fn monitored(mut outcome: ToolOutcome<'_>, monitor: bool) -> ToolOutcome<'_> {
    if outcome.verdict == Verdict::Deny && monitor {
        outcome.would_deny = true;
    }
    outcome
}

fn apply<'a>(decision: &mut Decision<'a>, server: &'a CompiledServer, outcome: ToolOutcome<'a>) {
    decision.verdict = outcome.verdict;
    decision.reason = outcome.reason;
    decision.would_deny = outcome.would_deny;
    decision.grant = outcome.grant;
    decision.session = outcome.session;
    decision.tool = outcome.tool;
    decision.trust = outcome.trust;
    let session_version = matches!(
        outcome.reason,
        Reason::SessionRevoked | Reason::SessionExpired
    )
    .then(|| {
        outcome
            .session
            .and_then(|s| s.session.policy_version.as_ref())
    })
    .flatten();
    decision.policy_version = outcome
        .grant
        .and_then(|g| g.grant.policy_version.as_ref())
        .or(session_version)
        .or(Some(&server.server.policy_version));
}

/// Lets a denial through when monitor mode covers it, and settles the decision's mode.
fn finish(mut decision: Decision<'_>, monitor: bool) -> Decision<'_> {
    if decision.verdict == Verdict::Deny && monitor {
        decision.would_deny = true;
    }
    let monitor_grant = decision
        .grant
        .is_some_and(|g| g.grant.mode == Mode::Monitor);
    decision.mode = if decision.would_deny || monitor || monitor_grant {
        Mode::Monitor
    } else {
        Mode::Enforce
    };
    decision
}
