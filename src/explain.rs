//! `mcp-authz check`: a decision with its trust arithmetic and what every grant of the server
//! did, as JSON. The verdict is the one `serve` gives ([`crate::check::decide_call`]), and the
//! per-grant story is a rendering of what the decision steps recorded ([`Evidence`]): nothing
//! here decides anything again.

use serde_json::{Value, json};

use crate::decide::{Evidence, Finding, MonitorRule};
use crate::decision::{Decision, Verdict};
use crate::policy::Timestamp;
use crate::policy::snapshot::CompiledGrant;
use crate::policy::{Mode, Primitive, Ruling, SideEffect};

/// Exit status of `check` for a decision: 0 allowed, 1 denied, 3 would-deny.
pub fn exit_code(decision: &Decision) -> u8 {
    match (decision.would_deny, decision.applied()) {
        (true, _) => 3,
        (false, Verdict::Allow) => 0,
        (false, Verdict::Deny) => 1,
    }
}

/// The whole report of `decision`, whose steps recorded `evidence`.
pub fn report(decision: &Decision, evidence: &Evidence, now: Timestamp) -> Value {
    let target = decision.call.as_ref().and_then(|c| c.target.as_ref());
    let primitive = target.map_or(Primitive::Tool, |t| t.primitive);
    let name = target.map_or("", |t| &*t.name);
    let trust = decision.trust.map(|t| {
        json!({
            "required": t.required.as_str(),
            "admin": t.admin.as_str(),
            "consented": t.consented.as_str(),
            "effective": t.effective.as_str(),
        })
    });
    let facts = decision.tool.map(|f| {
        json!({
            "required_trust": f.required_trust.as_str(),
            "side_effect": f.side_effect.map_or("", SideEffect::as_str),
            "risk_level": f.risk_level.map(|r| r.as_str()),
        })
    });
    let side_effect = decision.tool.and_then(|f| f.side_effect);
    let story = Story {
        decision,
        evidence,
        primitive,
        name,
        side_effect,
    };
    let grants: Vec<Value> = decision
        .server
        .map(|server| server.grants.iter().map(|g| story.grant(g)).collect())
        .unwrap_or_default();
    let monitor_rule = evidence.monitor_rule.map(|rule| match rule {
        MonitorRule::AllMonitorGrants => json!("all_monitor_grants"),
        MonitorRule::Rerun(first) => json!({
            "rerun_without_monitor_grants": {
                "first_reason": first.reason.as_str(),
                "first_grant": first.grant.map(|g| &*g.grant.key.full),
            }
        }),
    });

    let mut report = json!({
        "server": decision.server_key(),
        "primitive": primitive.key(),
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
        "trust": trust,
        "monitor_rule": monitor_rule,
        "grants": grants,
    });
    // The target and its facts under the primitive's key, as the metadata reports the target.
    if let Value::Object(fields) = &mut report {
        fields.insert(primitive.key().into(), name.into());
        fields.insert(format!("{}_facts", primitive.key()), facts.into());
    }
    report
}

/// What the report of one decision needs to tell each grant's story.
struct Story<'r> {
    decision: &'r Decision<'r>,
    evidence: &'r Evidence<'r>,
    primitive: Primitive,
    name: &'r str,
    side_effect: Option<SideEffect>,
}

impl Story<'_> {
    /// What one grant did for this call, step by step, as the steps recorded it.
    fn grant(&self, g: &CompiledGrant) -> Value {
        let grant = &g.grant;
        let matches = self
            .evidence
            .matching
            .as_ref()
            .map(|m| m.iter().any(|&c| std::ptr::eq(c, g)));
        let finding = self.evidence.finding(g);
        let steps = finding.and_then(|f| f.steps);
        let rule = steps.and_then(|s| s.ruling.rule());
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
            "expired": finding.map(|f| f.expired),
            "live": finding.map(|f| f.live),
            "rule": rule.map(|r| r.decision.as_str()),
            "rule_name": rule.map(|r| r.name.as_str()),
            "covers": steps.map(|s| matches!(s.ruling, Ruling::Covered(_))),
            "side_effect_allowed": steps.and_then(|s| s.side_effect_allowed),
            "contributes": steps.map(|s| s.contributes()),
            "max_trust": grant.max_trust.as_str(),
            "rule_required_trust": rule.map(|r| r.required_trust.as_str()),
            "monitor": grant.mode == Mode::Monitor,
            "decided": self.decision.grant.is_some_and(|d| std::ptr::eq(d, g)),
            "outcome": self.outcome(g, matches, finding),
        })
    }

    fn outcome(
        &self,
        g: &CompiledGrant,
        matches: Option<bool>,
        finding: Option<&Finding>,
    ) -> String {
        let grant = &g.grant;
        let (kind, name) = (self.primitive.key(), self.name);
        match (matches, finding) {
            (None, _) => format!(
                "not reached: the decision ended at `{}` before the grants",
                self.decision.reason.as_str()
            ),
            (Some(false), _) if grant.subject.is_empty() => {
                "skipped: its subject is empty, so it matches no one".to_string()
            }
            (Some(false), _) => "skipped: its subject does not match the caller".to_string(),
            (Some(true), None) => {
                "not reached: an earlier grant's deny rule decided first".to_string()
            }
            (Some(true), Some(f)) => match f.steps {
                None if grant.disabled => "skipped: disabled".to_string(),
                None => format!(
                    "skipped: expired at {}",
                    grant.expires_at.map(|t| t.to_string()).unwrap_or_default()
                ),
                Some(steps) => match (steps.ruling, steps.side_effect_allowed) {
                    (Ruling::Denied(_), _) => format!("denies `{name}` with a deny rule"),
                    (Ruling::Uncovered, _) => {
                        format!("does not cover `{name}`: it has rules, none for this {kind}")
                    }
                    (Ruling::Covered(_), None) if self.primitive == Primitive::Tool => {
                        format!("covers `{name}`, whose side effect is not declared")
                    }
                    (Ruling::Covered(_), None) => {
                        format!("covers `{name}`, which the server does not declare")
                    }
                    (Ruling::Covered(_), Some(false)) => format!(
                        "covers `{name}` but does not allow its side effect `{}`",
                        self.side_effect.map_or("", SideEffect::as_str)
                    ),
                    (Ruling::Covered(_), Some(true)) => format!(
                        "contributes: maxTrust {}, rule requires {}",
                        grant.max_trust,
                        steps.ruling.required_trust()
                    ),
                },
            },
        }
    }
}
