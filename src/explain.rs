//! `mcp-authz check`: a decision with its trust arithmetic and what every grant of the server
//! did, as JSON. The verdict is the one `serve` gives ([`crate::check::decide_call`]); the
//! per-grant story uses the same predicates as the decision ([`crate::decide`]).

use serde_json::{Value, json};

use crate::decide::{covers, expired, rule_for, rule_trust};
use crate::decision::Decision;
use crate::policy::snapshot::{CompiledGrant, Identity};
use crate::policy::{Mode, RuleDecision, SideEffect};
use crate::time::Timestamp;

/// Exit status of `check` for a decision: 0 allowed, 1 denied, 3 would-deny.
pub fn exit_code(decision: &Decision) -> u8 {
    match (decision.would_deny, decision.applied()) {
        (true, _) => 3,
        (false, crate::decision::Verdict::Allow) => 0,
        (false, crate::decision::Verdict::Deny) => 1,
    }
}

/// The whole report.
pub fn report(decision: &Decision, tool: &str, now: Timestamp) -> Value {
    let trust = decision.trust.map(|t| {
        json!({
            "required": t.required.as_str(),
            "admin": t.admin.as_str(),
            "consented": t.consented.as_str(),
            "effective": t.effective.as_str(),
        })
    });
    let facts = decision.tool;
    let side_effect = facts.and_then(|f| f.side_effect);
    let grants: Vec<Value> = decision
        .server
        .map(|server| {
            server
                .grants
                .iter()
                .map(|g| grant_report(g, &decision.caller, tool, side_effect, now, decision))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "server": decision.server_key(),
        "tool": tool,
        "now": now.to_string(),
        "caller": {
            "human": decision.caller.human.as_deref(),
            "agent": decision.caller.agent.as_deref(),
            "team": decision.caller.team.as_deref(),
            "session": decision.session_id.as_deref(),
        },
        "decision": decision.applied().as_str(),
        "verdict": decision.verdict.as_str(),
        "reason": decision.reason.as_str(),
        "would_deny": decision.would_deny,
        "mode": decision.mode.as_str(),
        "http_status": decision.http_status(),
        "matched_grant": decision.grant_key(),
        "matched_session": decision.session_key(),
        "policy_version": decision.policy_version.map(|v| &**v),
        "policy_revision": decision.revision.map(|r| &**r),
        "tool_facts": facts.map(|f| json!({
            "required_trust": f.required_trust.as_str(),
            "side_effect": f.side_effect.map_or("", SideEffect::as_str),
            "risk_level": f.risk_level.map(|r| r.as_str()),
        })),
        "trust": trust,
        "grants": grants,
    })
}

/// What one grant did for this call, step by step.
fn grant_report(
    g: &CompiledGrant,
    caller: &Identity,
    tool: &str,
    side_effect: Option<SideEffect>,
    now: Timestamp,
    decision: &Decision,
) -> Value {
    let grant = &g.grant;
    let matches = g.subject.matches(caller);
    let is_expired = expired(grant.expires_at, now);
    let rule = rule_for(grant, tool);
    let covers = covers(grant, tool);
    let side_effect_allowed = side_effect.map(|e| grant.allowed_side_effects.contains(&e));
    let live = matches && !grant.disabled && !is_expired;
    let contributes = live && covers && side_effect_allowed == Some(true);
    let outcome = if grant.subject.is_empty() {
        "skipped: its subject is empty, so it matches no one".to_string()
    } else if !matches {
        "skipped: its subject does not match the caller".to_string()
    } else if grant.disabled {
        "skipped: disabled".to_string()
    } else if is_expired {
        format!(
            "skipped: expired at {}",
            grant.expires_at.map(|t| t.to_string()).unwrap_or_default()
        )
    } else if rule.is_some_and(|r| r.decision == RuleDecision::Deny) {
        format!("denies `{tool}` with a deny rule")
    } else if !covers {
        format!("does not cover `{tool}`: it has rules, none for this tool")
    } else if side_effect.is_none() {
        format!("covers `{tool}`, whose side effect is not declared")
    } else if side_effect_allowed == Some(false) {
        format!(
            "covers `{tool}` but does not allow its side effect `{}`",
            side_effect.map_or("", SideEffect::as_str)
        )
    } else {
        format!(
            "contributes: maxTrust {}, rule requires {}",
            grant.max_trust,
            rule_trust(grant, tool)
        )
    };
    json!({
        "name": &*grant.key.full,
        "mode": grant.mode.as_str(),
        "subject": {
            "human": g.subject.subject().human,
            "agent": g.subject.subject().agent,
            "team": g.subject.subject().team,
        },
        "matches": matches,
        "disabled": grant.disabled,
        "expired": is_expired,
        "rule": rule.map(|r| r.decision.as_str()),
        "covers": live && covers,
        "side_effect_allowed": side_effect_allowed,
        "contributes": contributes,
        "max_trust": grant.max_trust.as_str(),
        "rule_required_trust": rule.map(|r| r.required_trust.as_str()),
        "monitor": grant.mode == Mode::Monitor,
        "decided": decision.grant_key() == Some(&*grant.key.full),
        "outcome": outcome,
    })
}
