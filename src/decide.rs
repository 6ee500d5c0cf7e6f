//! The decision for one call of a governed primitive, a tool, a prompt or a resource (SPEC §2
//! "The decision", steps 1–9, and monitor rule 3): one evaluation for every primitive.
//!
//! Pure and total: every input yields an outcome with its evidence, nothing here fails. What
//! the grant steps find is handed, grant by grant, to a [`Recorder`]: the service passes
//! [`NoRecord`], which compiles away, and `check` passes [`Evidence`], which keeps it to render.

use crate::decision::{Reason, ToolFacts, TrustFigures, Verdict};
use crate::policy::Timestamp;
use crate::policy::snapshot::{CompiledGrant, CompiledServer, CompiledSession, Identity};
use crate::policy::{DefaultDecision, Mode, Primitive, Ruling, Trust};

/// The session a call runs under, as far as the identity stage resolved it.
#[derive(Debug, Clone, Copy)]
pub enum SessionInput<'s, 'r> {
    /// No session id was sent.
    None,
    /// A session id was sent (header or jwt mode); step 3 looks it up.
    Id(&'r str),
    /// mtls mode: the principal named this live session.
    Resolved(&'s CompiledSession),
}

/// The outcome for one call, before service- and server-level monitor mode.
#[derive(Debug, Clone, Copy)]
pub struct CallOutcome<'s> {
    pub verdict: Verdict,
    pub reason: Reason,
    /// Monitor rule 3: the denial is blamed on monitor-mode grants and let through.
    pub would_deny: bool,
    pub grant: Option<&'s CompiledGrant>,
    pub session: Option<&'s CompiledSession>,
    /// Step 4: what the inventory says about the target.
    pub facts: Option<ToolFacts>,
    pub trust: Option<TrustFigures>,
}

impl<'s> CallOutcome<'s> {
    pub fn deny(reason: Reason) -> Self {
        CallOutcome {
            verdict: Verdict::Deny,
            reason,
            would_deny: false,
            grant: None,
            session: None,
            facts: None,
            trust: None,
        }
    }
}

/// What the grant steps found for one grant matching the caller.
#[derive(Debug, Clone, Copy)]
pub struct Finding<'s> {
    pub grant: &'s CompiledGrant,
    pub expired: bool,
    /// Neither disabled nor expired.
    pub live: bool,
    /// Steps 6 and 7, for a live grant.
    pub steps: Option<GrantSteps<'s>>,
}

/// Steps 6 and 7 for one live grant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GrantSteps<'s> {
    /// Deny rule, allow rule, or no rule (covering or not).
    pub ruling: Ruling<'s>,
    /// For a covering grant and a declared side effect: whether `allowedSideEffects` has it.
    pub side_effect_allowed: Option<bool>,
}

impl GrantSteps<'_> {
    /// The grant counts in step 8's trust arithmetic.
    pub fn contributes(&self) -> bool {
        self.side_effect_allowed == Some(true)
    }
}

/// How monitor rule 3 treated a denial of the grant steps.
#[derive(Debug, Clone, Copy)]
pub enum MonitorRule<'s> {
    /// Every live grant of the caller is a monitor-mode grant: the denial is a would-deny.
    AllMonitorGrants,
    /// Steps 5–9 ran again without the monitor-mode grants; this was the denial before.
    Rerun(CallOutcome<'s>),
}

/// Receives what the decision steps find. Every method defaults to doing nothing.
pub trait Recorder<'s> {
    /// Step 5: the grants matching the caller, in the order of step 6.
    fn matching(&mut self, _grants: &[&'s CompiledGrant]) {}
    /// Steps 5–7 for one grant, in the order the evaluation reaches them (again in a rerun).
    fn grant(&mut self, _finding: Finding<'s>) {}
    /// Monitor rule 3 applied.
    fn monitor_rule(&mut self, _rule: MonitorRule<'s>) {}
}

/// The service's recorder: keeps nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRecord;

impl Recorder<'_> for NoRecord {}

/// `check`'s recorder: everything the steps found, to render.
#[derive(Debug, Clone, Default)]
pub struct Evidence<'s> {
    /// `None` when the decision ended before step 5.
    pub matching: Option<Vec<&'s CompiledGrant>>,
    findings: Vec<Finding<'s>>,
    pub monitor_rule: Option<MonitorRule<'s>>,
}

impl<'s> Evidence<'s> {
    /// What the steps found for `grant`; `None` when they never reached it.
    pub fn finding(&self, grant: &CompiledGrant) -> Option<&Finding<'s>> {
        self.findings.iter().find(|f| std::ptr::eq(f.grant, grant))
    }
}

impl<'s> Recorder<'s> for Evidence<'s> {
    fn matching(&mut self, grants: &[&'s CompiledGrant]) {
        self.matching = Some(grants.to_vec());
    }

    fn grant(&mut self, finding: Finding<'s>) {
        // A rerun finds the same for a grant both runs reach; it may reach grants the first
        // run's deny rule stopped before.
        if self.finding(finding.grant).is_none() {
            self.findings.push(finding);
        }
    }

    fn monitor_rule(&mut self, rule: MonitorRule<'s>) {
        self.monitor_rule = Some(rule);
    }
}

/// Steps 1–9 and monitor rule 3 for a call of `target` (of `primitive`; a resource in
/// canonical form) on `server`.
pub fn decide_call<'s, R: Recorder<'s>>(
    server: &'s CompiledServer,
    caller: &Identity,
    session: SessionInput<'s, '_>,
    primitive: Primitive,
    target: &str,
    now: Timestamp,
    recorder: &mut R,
) -> CallOutcome<'s> {
    // 1–3: identity and session.
    if caller.is_empty() {
        return CallOutcome::deny(Reason::MissingIdentity);
    }
    let live_session = match session {
        SessionInput::None if server.server.session_required => {
            return CallOutcome::deny(Reason::MissingSession);
        }
        SessionInput::None => None,
        SessionInput::Resolved(s) => Some(s),
        SessionInput::Id(id) => {
            let Some(found) = server
                .sessions_named(id)
                .find(|s| s.subject.matches(caller))
            else {
                return CallOutcome::deny(Reason::SessionNotFound);
            };
            if let Some(denial) = found.denial(now) {
                return CallOutcome {
                    session: Some(found),
                    ..CallOutcome::deny(denial.into())
                };
            }
            Some(found)
        }
    };

    // 4: what the inventory says about the target.
    let facts = match server.entry(primitive, target) {
        Some(e) => ToolFacts {
            required_trust: e.required_trust,
            side_effect: e.side_effect,
            risk_level: e.risk_level,
        },
        None => ToolFacts {
            required_trust: Trust::Low,
            side_effect: None,
            risk_level: None,
        },
    };
    let call = GrantCall {
        server,
        primitive,
        target,
        facts,
        consented: live_session.map(|s| s.session.consented_trust),
        now,
    };

    // 5–9 with every matching grant, then monitor rule 3.
    let matching = server.matching_grants(caller);
    recorder.matching(&matching);
    let mut outcome = call.grant_steps(matching.iter().copied(), recorder);
    if outcome.verdict == Verdict::Deny && outcome.reason.from_grant_steps() {
        let (mut has_monitor, mut has_enforce) = (false, false);
        for g in matching.iter().filter(|g| g.live(now)) {
            match g.grant.mode {
                Mode::Monitor => has_monitor = true,
                Mode::Enforce => has_enforce = true,
            }
        }
        if has_monitor && !has_enforce {
            recorder.monitor_rule(MonitorRule::AllMonitorGrants);
            outcome.would_deny = true;
        } else if has_monitor {
            recorder.monitor_rule(MonitorRule::Rerun(outcome));
            let enforce_only = matching
                .iter()
                .copied()
                .filter(|g| g.grant.mode == Mode::Enforce);
            let rerun = call.grant_steps(enforce_only, recorder);
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

/// What steps 5–9 know of the call, whichever grants they run over.
#[derive(Clone, Copy)]
struct GrantCall<'c> {
    server: &'c CompiledServer,
    primitive: Primitive,
    target: &'c str,
    facts: ToolFacts,
    consented: Option<Trust>,
    now: Timestamp,
}

impl GrantCall<'_> {
    /// Steps 5–9 over `grants` (matching the caller, in `namespace/name` order), in one pass:
    /// a deny rule ends it at once; every other outcome needs every live grant seen.
    fn grant_steps<'s, R: Recorder<'s>>(
        &self,
        grants: impl Iterator<Item = &'s CompiledGrant>,
        recorder: &mut R,
    ) -> CallOutcome<'s> {
        let [not_granted, denied, unknown] = Reason::for_primitive(self.primitive);
        let outcome = |verdict, reason, grant, trust| CallOutcome {
            verdict,
            reason,
            would_deny: false,
            grant,
            session: None,
            facts: Some(self.facts),
            trust,
        };
        // Step 9 applies only to the "nothing grants it" reasons.
        let by_default = |reason| {
            let verdict = match self.server.server.default_decision {
                DefaultDecision::Allow => Verdict::Allow,
                DefaultDecision::Deny => Verdict::Deny,
            };
            outcome(verdict, reason, None, None)
        };

        let (mut any_matching, mut any_enabled, mut any_live) = (false, false, false);
        let mut first_covering: Option<&CompiledGrant> = None;
        // Step 8 in the same pass: the highest trust an administrator gave and the first
        // contributing grant that gives it, the highest trust a rule requires and the first
        // contributing grant whose rule requires it.
        let mut most_admin: Option<(Trust, &CompiledGrant)> = None;
        let mut most_required: Option<(Trust, &CompiledGrant)> = None;
        for g in grants {
            any_matching = true;
            any_enabled |= !g.grant.disabled;
            let (expired, live) = (g.expired(self.now), g.live(self.now));
            if !live {
                recorder.grant(Finding {
                    grant: g,
                    expired,
                    live,
                    steps: None,
                });
                continue;
            }
            any_live = true;
            // 6: what the grant's rules say; 7: whether it allows the side effect.
            let ruling = g.grant.ruling(self.primitive, self.target);
            let side_effect_allowed = match ruling {
                Ruling::Covered(_) => self
                    .facts
                    .side_effect
                    .map(|e| g.grant.allowed_side_effects.contains(&e)),
                Ruling::Denied(_) | Ruling::Uncovered => None,
            };
            let steps = GrantSteps {
                ruling,
                side_effect_allowed,
            };
            recorder.grant(Finding {
                grant: g,
                expired,
                live,
                steps: Some(steps),
            });
            match ruling {
                Ruling::Denied(_) => return outcome(Verdict::Deny, denied, Some(g), None),
                Ruling::Uncovered => {}
                Ruling::Covered(_) => {
                    first_covering.get_or_insert(g);
                    if steps.contributes() {
                        if most_admin.is_none_or(|(t, _)| g.grant.max_trust > t) {
                            most_admin = Some((g.grant.max_trust, g));
                        }
                        let rule = ruling.required_trust();
                        if most_required.is_none_or(|(t, _)| rule > t) {
                            most_required = Some((rule, g));
                        }
                    }
                }
            }
        }

        // 5: no matching grant, or every enabled one expired.
        if !any_matching {
            return by_default(Reason::NoMatchingGrant);
        }
        if !any_live && any_enabled {
            return by_default(Reason::GrantExpired);
        }
        // 6: no deny rule; some grant must cover the target.
        let Some(first_covering) = first_covering else {
            return by_default(not_granted);
        };

        // 7: the side effect must be declared and allowed.
        if self.facts.side_effect.is_none() {
            return outcome(Verdict::Deny, unknown, Some(first_covering), None);
        }
        let Some((admin, with_admin_trust)) = most_admin else {
            return outcome(
                Verdict::Deny,
                Reason::SideEffectNotAllowed,
                Some(first_covering),
                None,
            );
        };

        // 8: trust arithmetic over the contributing grants.
        let own = self.facts.required_trust;
        let required = most_required.map_or(own, |(t, _)| t.max(own));
        let consented = self.consented.unwrap_or(admin);
        let trust = TrustFigures {
            required,
            admin,
            consented,
            effective: admin.min(consented),
        };
        if trust.effective < required {
            let grant = if required > own {
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
}
