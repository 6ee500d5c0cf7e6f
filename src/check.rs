//! The whole Check as one pure function: server selection, JSON-RPC inspection, identity, the
//! per-call decision, batches, and monitor mode at the service and server level.

use std::borrow::Cow;

use crate::decide::{self, CallOutcome, NoRecord, Recorder, SessionInput};
use crate::decision::{CallInfo, Decision, Reason, Target, Verdict};
use crate::identity::{self, Caller};
use crate::policy::Timestamp;
use crate::policy::snapshot::CompiledServer;
use crate::policy::{Mode, Primitive, Snapshot};
use crate::request::CheckInput;
use crate::rpc::{self, Inspection, Message};
use crate::uri;

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
            record_caller(&mut decision, identity::resolve(server, input, now));
            return finish(decision, monitor);
        }
    };

    // Identity is resolved once, and only if some element is a decided call. The deciding
    // element is the first enforced denial, else the first would-deny, else the first decided
    // call, else the first element: only those three candidates are kept.
    let mut caller: Option<Result<Caller<'a>, identity::IdentityDenial<'a>>> = None;
    let [mut first_enforced, mut first_would_deny, mut first_call] = [None; 3];
    for (index, message) in messages.iter().enumerate() {
        let Some(target) = (match message {
            Message::Request(call) => call.target.as_ref(),
            Message::Response => None,
        })
        .filter(|t| server.server.govern.contains(t.primitive)) else {
            continue;
        };
        let resolved = caller.get_or_insert_with(|| identity::resolve(server, input, now));
        let outcome = match resolved {
            Ok(c) => call_outcome(server, c, target, now, &mut NoRecord),
            Err(denial) => CallOutcome {
                session: denial.session,
                ..CallOutcome::deny(denial.reason)
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

    // The caller is recorded whether or not the call needed one (SPEC §4), so that replay can
    // decide it under a policy that governs more.
    record_caller(
        &mut decision,
        caller.unwrap_or_else(|| identity::resolve(server, input, now)),
    );
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

/// The caller as resolved, in the decision's evidence; a caller who could not be identified
/// leaves none.
fn record_caller<'a>(
    decision: &mut Decision<'a>,
    caller: Result<Caller<'a>, identity::IdentityDenial<'a>>,
) {
    if let Ok(c) = caller {
        decision.caller = c.identity;
        decision.session_id = c.session_id;
    }
}

/// One call of `target` by an already identified caller, decided as if the server governed
/// its primitive: what the `check` command explains, with what the steps found in `recorder`.
pub fn decide_call<'a, R: Recorder<'a>>(
    snapshot: &'a Snapshot,
    server: &'a CompiledServer,
    caller: Caller<'a>,
    target: Target<'a>,
    options: &Options,
    now: Timestamp,
    recorder: &mut R,
) -> Decision<'a> {
    let monitor = options.mode == Mode::Monitor || server.server.mode == Mode::Monitor;
    let outcome = monitored(
        call_outcome(server, &caller, &target, now, recorder),
        monitor,
    );
    let method = match target.primitive {
        Primitive::Tool => "tools/call",
        Primitive::Prompt => "prompts/get",
        Primitive::Resource => "resources/read",
    };
    let mut decision = Decision {
        revision: Some(&snapshot.revision),
        server: Some(server),
        call: Some(CallInfo {
            method: method.into(),
            target: Some(target),
            ..CallInfo::default()
        }),
        caller: caller.identity,
        session_id: caller.session_id,
        ..Decision::bare(outcome.verdict, outcome.reason)
    };
    apply(&mut decision, server, outcome);
    finish(decision, monitor)
}

fn call_outcome<'a, R: Recorder<'a>>(
    server: &'a CompiledServer,
    caller: &Caller<'a>,
    target: &Target<'_>,
    now: Timestamp,
    recorder: &mut R,
) -> CallOutcome<'a> {
    let session = match (caller.session, &caller.session_id) {
        (Some(s), _) => SessionInput::Resolved(s),
        (None, Some(id)) => SessionInput::Id(id),
        (None, None) => SessionInput::None,
    };
    // Resources are matched in canonical form; inspection refuses a governed URI without one,
    // so only `check --resource` reaches the refusal here, and it answers as inspection would.
    let name = match target.primitive {
        Primitive::Resource => match uri::canonical(&target.name) {
            Some(name) => name,
            None => return CallOutcome::deny(Reason::RpcAmbiguous),
        },
        Primitive::Tool | Primitive::Prompt => Cow::Borrowed(&*target.name),
    };
    decide::decide_call(
        server,
        &caller.identity,
        session,
        target.primitive,
        &name,
        now,
        recorder,
    )
}

/// Monitor rules 1 and 2: under service or server monitor mode a denial is let through.
fn monitored(mut outcome: CallOutcome<'_>, monitor: bool) -> CallOutcome<'_> {
    if outcome.verdict == Verdict::Deny && monitor {
        outcome.would_deny = true;
    }
    outcome
}

fn apply<'a>(decision: &mut Decision<'a>, server: &'a CompiledServer, outcome: CallOutcome<'a>) {
    decision.verdict = outcome.verdict;
    decision.reason = outcome.reason;
    decision.would_deny = outcome.would_deny;
    decision.grant = outcome.grant;
    decision.session = outcome.session;
    decision.tool = outcome.facts;
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
