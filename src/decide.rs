//! The decision for one tool call (SPEC §2 "The decision", steps 1–9, and monitor rule 3).
//!
//! Pure and total: every input yields an outcome with its evidence, nothing here fails.

use crate::decision::{Reason, ToolFacts, TrustFigures, Verdict};
use crate::policy::snapshot::{CompiledGrant, CompiledServer, CompiledSession, Identity};
use crate::policy::{DefaultDecision, Grant, Mode, Primitive, Rule, RuleDecision, Trust};
use crate::time::Timestamp;

/// The session a tool call runs under, as far as the identity stage resolved it.
#[derive(Debug, Clone, Copy)]
pub enum SessionInput<'s, 'r> {
    /// No session id was sent.
    None,
    /// A session id was sent (header or jwt mode); step 3 looks it up.
    Id(&'r str),
    /// mtls mode: the principal named this live session.
    Resolved(&'s CompiledSession),
}

/// The outcome for one tool call, before service- and server-level monitor mode.
#[derive(Debug, Clone, Copy)]
pub struct ToolOutcome<'s> {
    pub verdict: Verdict,
    pub reason: Reason,
    /// Monitor rule 3: the denial is blamed on monitor-mode grants and let through.
    pub would_deny: bool,
    pub grant: Option<&'s CompiledGrant>,
    pub session: Option<&'s CompiledSession>,
    pub tool: Option<ToolFacts>,
    pub trust: Option<TrustFigures>,
}

impl<'s> ToolOutcome<'s> {
    pub fn deny(reason: Reason) -> Self {
        ToolOutcome {
            verdict: Verdict::Deny,
            reason,
            would_deny: false,
            grant: None,
            session: None,
            tool: None,
            trust: None,
        }
    }
}

/// Past `expiresAt` (strictly: equal is still valid).
pub fn expired(expires_at: Option<Timestamp>, now: Timestamp) -> bool {
    expires_at.is_some_and(|t| t < now)
}

/// The grant's rule for `tool`, if it has one.
pub fn rule_for<'g>(grant: &'g Grant, tool: &str) -> Option<&'g Rule> {
    grant.rule_for(Primitive::Tool, tool)
}

/// A grant without rules, or with an allow rule for the tool, covers it (step 6).
pub fn covers(grant: &Grant, tool: &str) -> bool {
    grant.tool_rules.is_empty()
        || rule_for(grant, tool).is_some_and(|r| r.decision == RuleDecision::Allow)
}

/// The trust a grant's rule for the tool requires (low without a rule).
pub fn rule_trust(grant: &Grant, tool: &str) -> Trust {
    rule_for(grant, tool).map_or(Trust::Low, |r| r.required_trust)
}

/// Steps 1–9 and monitor rule 3 for a call of `tool` on `server`.
pub fn decide_tool_call<'s>(
    server: &'s CompiledServer,
    caller: &Identity,
    session: SessionInput<'s, '_>,
    tool: &str,
    now: Timestamp,
) -> ToolOutcome<'s> {
    // 1–3: identity and session.
    if caller.is_empty() {
        return ToolOutcome::deny(Reason::MissingIdentity);
    }
    let live_session = match session {
        SessionInput::None if server.server.session_required => {
            return ToolOutcome::deny(Reason::MissingSession);
        }
        SessionInput::None => None,
        SessionInput::Resolved(s) => Some(s),
        SessionInput::Id(id) => {
            let Some(found) = server
                .sessions_named(id)
                .find(|s| s.subject.matches(caller))
            else {
                return ToolOutcome::deny(Reason::SessionNotFound);
            };
            if let Some(reason) = session_denial(found, now) {
                return ToolOutcome {
                    session: Some(found),
                    ..ToolOutcome::deny(reason)
                };
            }
            Some(found)
        }
    };

    // 4: what the inventory says about the tool.
    let facts = match server.entry(Primitive::Tool, tool) {
        Some(t) => ToolFacts {
            required_trust: t.required_trust,
            side_effect: t.side_effect,
            risk_level: t.risk_level,
        },
        None => ToolFacts {
            required_trust: Trust::Low,
            side_effect: None,
            risk_level: None,
        },
    };
    let consented = live_session.map(|s| s.session.consented_trust);

    // 5–9 with every matching grant, then monitor rule 3.
    let matching = server.matching_grants(caller);
    let mut outcome = grant_steps(server, &matching, tool, facts, consented, now);
    if outcome.verdict == Verdict::Deny && outcome.reason.from_grant_steps() {
        let live = |g: &&&CompiledGrant| !g.grant.disabled && !expired(g.grant.expires_at, now);
        let has_monitor = matching
            .iter()
            .filter(live)
            .any(|g| g.grant.mode == Mode::Monitor);
        let has_enforce = matching
            .iter()
            .filter(live)
            .any(|g| g.grant.mode == Mode::Enforce);
        if has_monitor && !has_enforce {
            outcome.would_deny = true;
        } else if has_monitor {
            let enforce_only: Vec<&CompiledGrant> = matching
                .iter()
                .copied()
                .filter(|g| g.grant.mode == Mode::Enforce)
                .collect();
            let rerun = grant_steps(server, &enforce_only, tool, facts, consented, now);
            if rerun.verdict == Verdict::Allow {
                outcome.would_deny = true;
            } else {
                outcome = rerun;
            }
        }
    }
    outcome.session = live_session;
    outcome
}

/// Revoked or expired: the session exists but cannot be used.
pub fn session_denial(session: &CompiledSession, now: Timestamp) -> Option<Reason> {
    if session.session.revoked {
        Some(Reason::SessionRevoked)
    } else if expired(session.session.expires_at, now) {
        Some(Reason::SessionExpired)
    } else {
        None
    }
}

/// Steps 5–9 over `matching` (grants matching the caller, in `namespace/name` order).
fn grant_steps<'s>(
    server: &CompiledServer,
    matching: &[&'s CompiledGrant],
    tool: &str,
    facts: ToolFacts,
    consented: Option<Trust>,
    now: Timestamp,
) -> ToolOutcome<'s> {
    let outcome = |verdict, reason, grant, trust| ToolOutcome {
        verdict,
        reason,
        would_deny: false,
        grant,
        session: None,
        tool: Some(facts),
        trust,
    };
    // Step 9 applies only to the three "nothing grants it" reasons.
    let by_default = |reason| {
        let verdict = match server.server.default_decision {
            DefaultDecision::Allow => Verdict::Allow,
            DefaultDecision::Deny => Verdict::Deny,
        };
        outcome(verdict, reason, None, None)
    };

    // 5: matching, then live grants.
    if matching.is_empty() {
        return by_default(Reason::NoMatchingGrant);
    }
    let live = || {
        matching
            .iter()
            .copied()
            .filter(move |g| !g.grant.disabled && !expired(g.grant.expires_at, now))
    };
    if live().next().is_none() && matching.iter().any(|g| !g.grant.disabled) {
        return by_default(Reason::GrantExpired);
    }

    // 6: a deny rule anywhere wins at once; otherwise the covering grants go on.
    if let Some(g) =
        live().find(|g| rule_for(&g.grant, tool).is_some_and(|r| r.decision == RuleDecision::Deny))
    {
        return outcome(Verdict::Deny, Reason::ToolDenied, Some(g), None);
    }
    let covering = || live().filter(|g| covers(&g.grant, tool));
    let Some(first_covering) = covering().next() else {
        return by_default(Reason::ToolNotGranted);
    };

    // 7: the side effect must be declared and allowed.
    let Some(side_effect) = facts.side_effect else {
        return outcome(
            Verdict::Deny,
            Reason::ToolSideEffectUnknown,
            Some(first_covering),
            None,
        );
    };

    // 8: trust arithmetic over the contributing grants, in one pass: the highest trust an
    // administrator gave and the first grant that gives it, the highest trust a rule requires
    // and the first grant whose rule requires it.
    let mut most_admin: Option<(Trust, &CompiledGrant)> = None;
    let mut most_required: Option<(Trust, &CompiledGrant)> = None;
    for g in covering().filter(|g| g.grant.allowed_side_effects.contains(&side_effect)) {
        if most_admin.is_none_or(|(t, _)| g.grant.max_trust > t) {
            most_admin = Some((g.grant.max_trust, g));
        }
        let rule = rule_trust(&g.grant, tool);
        if most_required.is_none_or(|(t, _)| rule > t) {
            most_required = Some((rule, g));
        }
    }
    let Some((admin, with_admin_trust)) = most_admin else {
        return outcome(
            Verdict::Deny,
            Reason::SideEffectNotAllowed,
            Some(first_covering),
            None,
        );
    };
    let required = most_required.map_or(facts.required_trust, |(t, _)| t.max(facts.required_trust));
    let consented = consented.unwrap_or(admin);
    let trust = TrustFigures {
        required,
        admin,
        consented,
        effective: admin.min(consented),
    };
    if trust.effective < required {
        let grant = if required > facts.required_trust {
            most_required.map(|(_, g)| g)
        } else {
            Some(with_admin_trust)
        };
        return outcome(Verdict::Deny, Reason::TrustTooLow, grant, Some(trust));
    }
    outcome(
        Verdict::Allow,
        Reason::Allowed,
        Some(with_admin_trust),
        Some(trust),
    )
}
