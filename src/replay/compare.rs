//! Each record decided again, compared with its baseline, classified and grouped (SPEC §8).

use std::borrow::Cow;
use std::collections::HashMap;

use super::keys::Field;
use super::read::{Position, Record};
use crate::check::{Options, decide_call};
use crate::decision::{Decision, Reason};
use crate::identity::{self, Caller};
use crate::policy::Timestamp;
use crate::policy::snapshot::{CompiledServer, Identity};
use crate::policy::{AuthMode, Mode, Primitive, Snapshot};
use crate::request::CheckInput;
use crate::rpc;

/// The verdict as the gateway applied it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    Allow,
    WouldDeny,
    Deny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::WouldDeny => "would-deny",
            Verdict::Deny => "deny",
        }
    }
}

/// What a decision comes to for replay: verdict, reason, attribution.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Outcome<'a> {
    pub verdict: Verdict,
    pub reason: Reason,
    pub grant: Option<Cow<'a, str>>,
}

impl Outcome<'_> {
    fn of<'a>(decision: &Decision<'a>) -> Outcome<'a> {
        let verdict = match (decision.applied(), decision.would_deny) {
            (crate::decision::Verdict::Deny, _) => Verdict::Deny,
            (_, true) => Verdict::WouldDeny,
            _ => Verdict::Allow,
        };
        Outcome {
            verdict,
            reason: decision.reason,
            grant: decision.grant_key().map(Cow::Borrowed),
        }
    }

    /// An order for reports: verdict, then the reason's and the grant's names.
    fn order(&self) -> (Verdict, &str, Option<&str>) {
        (self.verdict, self.reason.as_str(), self.grant.as_deref())
    }

    fn into_owned(self) -> Outcome<'static> {
        Outcome {
            grant: self.grant.map(|g| Cow::Owned(g.into_owned())),
            ..self
        }
    }
}

/// How an outcome changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Change {
    /// An allowed or would-deny record becomes denied.
    Tighten,
    /// A denied record becomes allowed or would-deny.
    Loosen,
    /// Same applied verdict class, another reason or grant (allow ↔ would-deny included).
    Reason,
}

impl Change {
    pub const ALL: [Change; 3] = [Change::Tighten, Change::Loosen, Change::Reason];

    pub fn as_str(self) -> &'static str {
        match self {
            Change::Tighten => "tighten",
            Change::Loosen => "loosen",
            Change::Reason => "reason",
        }
    }
}

pub fn classify(before: &Outcome, after: &Outcome) -> Option<Change> {
    if before == after {
        return None;
    }
    let denied = |o: &Outcome| o.verdict == Verdict::Deny;
    Some(match (denied(before), denied(after)) {
        (false, true) => Change::Tighten,
        (true, false) => Change::Loosen,
        _ => Change::Reason,
    })
}

/// Why a record cannot be decided again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NotReplayable {
    NoTime,
    NoDecision,
    InvalidSampleRate,
    ServerNotRecorded,
    TargetNotRecorded,
    CallerNotRecorded,
    PrincipalNotRecorded,
}

impl NotReplayable {
    pub const ALL: [NotReplayable; 7] = [
        NotReplayable::NoTime,
        NotReplayable::NoDecision,
        NotReplayable::InvalidSampleRate,
        NotReplayable::ServerNotRecorded,
        NotReplayable::TargetNotRecorded,
        NotReplayable::CallerNotRecorded,
        NotReplayable::PrincipalNotRecorded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotReplayable::NoTime => "no_time",
            NotReplayable::NoDecision => "no_decision",
            NotReplayable::InvalidSampleRate => "invalid_sample_rate",
            NotReplayable::ServerNotRecorded => "server_not_recorded",
            NotReplayable::TargetNotRecorded => "target_not_recorded",
            NotReplayable::CallerNotRecorded => "caller_not_recorded",
            NotReplayable::PrincipalNotRecorded => "principal_not_recorded",
        }
    }

    pub fn why(self) -> &'static str {
        match self {
            NotReplayable::NoTime => "the record has no time",
            NotReplayable::NoDecision => "the record has no decision and reason, or an unknown one",
            NotReplayable::InvalidSampleRate => "the sample rate is not a number in (0, 1]",
            NotReplayable::ServerNotRecorded => {
                "no server was recorded, and the policy now routes the request's path to one"
            }
            NotReplayable::TargetNotRecorded => {
                "the call is decided now, but its tool, prompt or resource was not recorded"
            }
            NotReplayable::CallerNotRecorded => {
                "the call is decided now, but the caller was not resolved when it was recorded"
            }
            NotReplayable::PrincipalNotRecorded => {
                "an mtls server, and no session names the caller's SPIFFE principal"
            }
        }
    }
}

/// One sampled record stands for 1/r decisions, counted in millionths so that sums are exact
/// whatever order the workers merge in.
pub const ONE: u64 = 1_000_000;

/// What the record says was decided.
#[derive(Debug, Clone)]
pub struct Recorded<'r> {
    pub time: Timestamp,
    pub outcome: Outcome<'r>,
}

fn reason_named(name: &str) -> Option<Reason> {
    Reason::ALL.into_iter().find(|r| r.as_str() == name)
}

/// The record's time and decision.
pub fn recorded(record: &Record) -> Result<Recorded<'_>, NotReplayable> {
    let time = record.time.ok_or(NotReplayable::NoTime)?;
    let reason = record
        .text(Field::Reason)
        .and_then(reason_named)
        .ok_or(NotReplayable::NoDecision)?;
    let verdict = match (record.text(Field::Decision), record.would_deny) {
        (Some("deny"), _) => Verdict::Deny,
        (Some("allow"), Some(true)) => Verdict::WouldDeny,
        (Some("allow"), _) => Verdict::Allow,
        _ => return Err(NotReplayable::NoDecision),
    };
    Ok(Recorded {
        time,
        outcome: Outcome {
            verdict,
            reason,
            grant: record
                .text(Field::Grant)
                .filter(|g| !g.is_empty())
                .map(Cow::Borrowed),
        },
    })
}

/// The weight of a record: 1/r in millionths.
pub fn weight(record: &Record) -> Result<u64, NotReplayable> {
    match record.sample_rate {
        None => Ok(ONE),
        Some(r) if r > 0.0 && r <= 1.0 => Ok((ONE as f64 / r).round() as u64),
        Some(_) => Err(NotReplayable::InvalidSampleRate),
    }
}

/// Reasons reached before any policy but the server's own is read (inspection): a record
/// keeps them, and only monitor rules 1 and 2 can change its verdict.
fn policy_independent(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::RpcInspectionFailed
            | Reason::RpcBodyTruncated
            | Reason::RpcBodyMissing
            | Reason::RpcAmbiguous
            | Reason::RpcHeaderMismatch
    )
}

/// The primitives the decision core decides today: tools, whatever `govern` says.
fn decided(primitive: Primitive) -> bool {
    primitive == Primitive::Tool
}

/// A re-decided record: its outcome, and whether it kept its recorded reason.
#[derive(Debug, Clone)]
pub struct Decided<'a> {
    pub outcome: Outcome<'a>,
    pub kept: bool,
}

/// A policy set and the service mode records are decided in.
#[derive(Debug)]
pub struct Policy {
    pub snapshot: Snapshot,
    pub options: Options,
}

impl Policy {
    pub fn new(snapshot: Snapshot, mode: Mode) -> Self {
        Policy {
            snapshot,
            options: Options {
                mode,
                ..Options::default()
            },
        }
    }

    /// Decides `record` again at its own time.
    pub fn decide<'a>(
        &'a self,
        record: &'a Record,
        recorded: &Recorded,
    ) -> Result<Decided<'a>, NotReplayable> {
        let service_monitor = self.options.mode == Mode::Monitor;
        let denied = |reason, monitor: bool, kept| Decided {
            outcome: Outcome {
                verdict: if monitor {
                    Verdict::WouldDeny
                } else {
                    Verdict::Deny
                },
                reason,
                grant: None,
            },
            kept,
        };
        let allowed = Decided {
            outcome: Outcome {
                verdict: Verdict::Allow,
                reason: Reason::Allowed,
                grant: None,
            },
            kept: false,
        };
        let Some(key) = record.server() else {
            // Nothing was resolved without a server: only "still no server" can be replayed.
            let routed = record
                .text(Field::Path)
                .and_then(|path| self.snapshot.server_for_path(path));
            if routed.is_some() {
                return Err(NotReplayable::ServerNotRecorded);
            }
            return Ok(denied(Reason::UnknownServer, service_monitor, false));
        };
        let Some(server) = self.snapshot.server_named(&key) else {
            return Ok(denied(Reason::UnknownServer, service_monitor, false));
        };
        let monitor = service_monitor || server.server.mode == Mode::Monitor;
        if policy_independent(recorded.outcome.reason) {
            return Ok(denied(recorded.outcome.reason, monitor, true));
        }
        let Some(primitive) = record
            .text(Field::Method)
            .and_then(rpc::primitive_of)
            .filter(|&p| decided(p))
        else {
            return Ok(allowed);
        };
        let target = record
            .target(primitive)
            .ok_or(NotReplayable::TargetNotRecorded)?;
        let given = |field| record.text(field).filter(|v| !v.is_empty());
        let identity = Identity {
            human: given(Field::Human).map(Cow::Borrowed),
            agent: given(Field::Agent).map(Cow::Borrowed),
            team: given(Field::Team).map(Cow::Borrowed),
        };
        // The first edition resolved the caller only for calls it decided; an allowed record
        // without a grant was not one of them.
        if identity.is_empty()
            && record.first_edition()
            && recorded.outcome.reason == Reason::Allowed
            && recorded.outcome.grant.is_none()
        {
            return Err(NotReplayable::CallerNotRecorded);
        }
        let session_id = record.agent_session().filter(|s| !s.is_empty());
        let caller = match server.server.auth.mode {
            AuthMode::Header | AuthMode::Jwt => Caller {
                identity,
                session_id: session_id.map(Cow::Borrowed),
                session: None,
            },
            AuthMode::Mtls => match self.mtls_caller(server, record, session_id, recorded.time) {
                Ok(caller) => caller,
                Err(Some(reason)) => return Ok(denied(reason, monitor, false)),
                Err(None) => return Err(NotReplayable::PrincipalNotRecorded),
            },
        };
        let decision = decide_call(
            &self.snapshot,
            server,
            caller,
            crate::decision::Target {
                primitive,
                name: target.into(),
            },
            &self.options,
            recorded.time,
            &mut crate::decide::NoRecord,
        );
        Ok(Decided {
            outcome: Outcome::of(&decision),
            kept: false,
        })
    }

    /// In mtls mode the caller is the session the principal names: the recorded principal, else
    /// one rebuilt from the recorded session (`namespace/name`), resolved as the service would.
    /// `Err(None)` when the record does not name it.
    fn mtls_caller<'a>(
        &'a self,
        server: &'a CompiledServer,
        record: &Record,
        session_id: Option<&str>,
        now: Timestamp,
    ) -> Result<Caller<'a>, Option<Reason>> {
        let principal = match record.text(Field::Principal).filter(|p| !p.is_empty()) {
            Some(principal) => principal.to_string(),
            None => {
                let namespace = record
                    .text(Field::Session)
                    .and_then(|s| s.split_once('/'))
                    .map(|(namespace, _)| namespace)
                    .ok_or(None)?;
                let name = session_id.ok_or(None)?;
                let trust_domain = server.server.auth.trust_domain.as_deref().unwrap_or("");
                format!("spiffe://{trust_domain}/ns/{namespace}/session/{name}")
            }
        };
        let input = CheckInput {
            principal: &principal,
            ..CheckInput::default()
        };
        let caller = identity::resolve(server, &input, now).map_err(|d| Some(d.reason))?;
        // The session is looked up again so that the caller borrows only from the policy.
        let session = caller.session.and_then(|s| {
            server
                .sessions_named(&s.session.key.name)
                .find(|found| found.session.key == s.session.key)
        });
        let own = |v: Option<Cow<str>>| v.map(|v| Cow::Owned(v.into_owned()));
        Ok(Caller {
            identity: Identity {
                human: own(caller.identity.human),
                agent: own(caller.identity.agent),
                team: own(caller.identity.team),
            },
            session_id: own(caller.session_id),
            session,
        })
    }
}

/// Records and the decisions they stand for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    pub records: u64,
    /// Decisions in millionths (see [`ONE`]).
    pub weight: u64,
}

impl Count {
    fn add(&mut self, weight: u64) {
        self.records += 1;
        self.weight += weight;
    }

    fn merge(&mut self, other: Count) {
        self.records += other.records;
        self.weight += other.weight;
    }

    /// The decisions these records stand for.
    pub fn decisions(self) -> f64 {
        self.weight as f64 / ONE as f64
    }
}

/// A change group: one server, one before → after.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupKey {
    pub change: Change,
    pub server: Option<String>,
    pub before: Outcome<'static>,
    pub after: Outcome<'static>,
}

/// A record shown as an example of its group.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub position: Position,
    pub time: Timestamp,
    pub trace_id: Option<String>,
    pub request_id: Option<String>,
    pub human: Option<String>,
    pub agent: Option<String>,
    pub team: Option<String>,
    pub session: Option<String>,
    pub method: Option<String>,
    /// The tool, prompt or resource, under its primitive.
    pub target: Option<(Primitive, String)>,
}

impl Example {
    fn of(record: &Record, time: Timestamp) -> Self {
        let text = |field| record.text(field).map(str::to_string);
        Example {
            position: record.position,
            time,
            trace_id: text(Field::TraceId),
            request_id: text(Field::RequestId),
            human: text(Field::Human),
            agent: text(Field::Agent),
            team: text(Field::Team),
            session: record.agent_session().map(str::to_string),
            method: text(Field::Method),
            target: Primitive::ALL
                .into_iter()
                .find_map(|p| Some((p, record.target(p)?.to_string()))),
        }
    }
}

/// Examples kept per group: the first ones in input order.
pub const EXAMPLES: usize = 3;

#[derive(Debug, Clone, Default)]
pub struct Group {
    pub count: Count,
    pub examples: Vec<Example>,
}

impl Group {
    fn keep(&mut self, examples: impl IntoIterator<Item = Example>) {
        self.examples.extend(examples);
        self.examples.sort_by_key(|e| e.position);
        self.examples.truncate(EXAMPLES);
    }
}

/// Everything counted over the records; each worker keeps one and they are merged.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub read: Count,
    pub unchanged: Count,
    /// Replayed records that kept their recorded reason: it did not depend on policy.
    pub kept: Count,
    pub changed: [Count; 3],
    pub not_replayable: [Count; 7],
    pub groups: HashMap<GroupKey, Group>,
}

impl Tally {
    pub fn replayed(&self) -> Count {
        let mut replayed = self.unchanged;
        for count in self.changed {
            replayed.merge(count);
        }
        replayed
    }

    pub fn changed_total(&self) -> Count {
        let mut total = Count::default();
        for count in self.changed {
            total.merge(count);
        }
        total
    }

    pub fn not_replayable_total(&self) -> Count {
        let mut total = Count::default();
        for count in self.not_replayable {
            total.merge(count);
        }
        total
    }

    pub fn merge(&mut self, other: Tally) {
        self.read.merge(other.read);
        self.unchanged.merge(other.unchanged);
        self.kept.merge(other.kept);
        for (mine, theirs) in self.changed.iter_mut().zip(other.changed) {
            mine.merge(theirs);
        }
        for (mine, theirs) in self.not_replayable.iter_mut().zip(other.not_replayable) {
            mine.merge(theirs);
        }
        for (key, group) in other.groups {
            let mine = self.groups.entry(key).or_default();
            mine.count.merge(group.count);
            mine.keep(group.examples);
        }
    }

    /// The groups, new denials first, then loosenings, then other changes; the largest first.
    pub fn sorted_groups(&self) -> Vec<(&GroupKey, &Group)> {
        let mut groups: Vec<_> = self.groups.iter().collect();
        groups.sort_by(|(a, ga), (b, gb)| {
            a.change
                .cmp(&b.change)
                .then(gb.count.weight.cmp(&ga.count.weight))
                .then(gb.count.records.cmp(&ga.count.records))
                .then_with(|| a.server.cmp(&b.server))
                .then_with(|| a.before.order().cmp(&b.before.order()))
                .then_with(|| a.after.order().cmp(&b.after.order()))
        });
        groups
    }
}

/// What each record is compared with.
#[derive(Debug)]
pub enum Baseline {
    /// The decision as recorded.
    Recorded,
    /// The record decided again against CURRENT (`--against`).
    Current(Box<Policy>),
}

#[derive(Debug)]
pub struct Replayer {
    pub candidate: Policy,
    pub baseline: Baseline,
}

impl Replayer {
    /// Decides `record` against the candidate and its baseline, and counts it in `tally`.
    pub fn replay(&self, record: &Record, tally: &mut Tally) {
        let weight = match weight(record) {
            Ok(weight) => weight,
            Err(why) => {
                tally.read.add(ONE);
                tally.not_replayable[why as usize].add(ONE);
                return;
            }
        };
        tally.read.add(weight);
        let compared = recorded(record).and_then(|recorded| {
            let after = self.candidate.decide(record, &recorded)?;
            let before = match &self.baseline {
                Baseline::Recorded => Decided {
                    outcome: recorded.outcome.clone(),
                    kept: false,
                },
                Baseline::Current(current) => current.decide(record, &recorded)?,
            };
            Ok((recorded.time, before, after))
        });
        let (time, before, after) = match compared {
            Ok(compared) => compared,
            Err(why) => {
                tally.not_replayable[why as usize].add(weight);
                return;
            }
        };
        if before.kept || after.kept {
            tally.kept.add(weight);
        }
        let Some(change) = classify(&before.outcome, &after.outcome) else {
            tally.unchanged.add(weight);
            return;
        };
        tally.changed[change as usize].add(weight);
        let key = GroupKey {
            change,
            server: record.server().map(Cow::into_owned),
            before: before.outcome.into_owned(),
            after: after.outcome.into_owned(),
        };
        let group = tally.groups.entry(key).or_default();
        group.count.add(weight);
        if group.examples.len() < EXAMPLES
            || group
                .examples
                .last()
                .is_some_and(|e| record.position < e.position)
        {
            group.keep([Example::of(record, time)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(verdict: Verdict, reason: Reason, grant: Option<&str>) -> Outcome<'_> {
        Outcome {
            verdict,
            reason,
            grant: grant.map(Cow::Borrowed),
        }
    }

    #[test]
    fn changes_are_classified_by_the_applied_verdict() {
        let allow = outcome(Verdict::Allow, Reason::Allowed, Some("ns/g"));
        let would = outcome(Verdict::WouldDeny, Reason::ToolDenied, Some("ns/m"));
        let deny = outcome(Verdict::Deny, Reason::ToolDenied, Some("ns/m"));
        let other_deny = outcome(Verdict::Deny, Reason::TrustTooLow, Some("ns/m"));
        let other_grant = outcome(Verdict::Allow, Reason::Allowed, Some("ns/h"));
        assert_eq!(classify(&allow, &allow.clone()), None);
        assert_eq!(classify(&allow, &deny), Some(Change::Tighten));
        assert_eq!(classify(&would, &deny), Some(Change::Tighten));
        assert_eq!(classify(&deny, &allow), Some(Change::Loosen));
        assert_eq!(classify(&deny, &would), Some(Change::Loosen));
        assert_eq!(classify(&allow, &would), Some(Change::Reason));
        assert_eq!(classify(&would, &allow), Some(Change::Reason));
        assert_eq!(classify(&deny, &other_deny), Some(Change::Reason));
        assert_eq!(classify(&allow, &other_grant), Some(Change::Reason));
    }

    #[test]
    fn sample_rates_weigh_records() {
        let rated = |r| {
            let mut record = Record::default();
            record.sample_rate = r;
            record
        };
        assert_eq!(weight(&rated(None)), Ok(ONE));
        assert_eq!(weight(&rated(Some(1.0))), Ok(ONE));
        assert_eq!(weight(&rated(Some(0.1))), Ok(10 * ONE));
        assert_eq!(weight(&rated(Some(0.3))), Ok(3_333_333));
        for bad in [0.0, -1.0, 1.5, f64::NAN] {
            assert_eq!(
                weight(&rated(Some(bad))),
                Err(NotReplayable::InvalidSampleRate)
            );
        }
    }
}
