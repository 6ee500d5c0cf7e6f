//! A valid [`PolicySet`] compiled once per load into an immutable, indexed snapshot.
//!
//! A Check finds its server by name or path with hash lookups, then looks only at that
//! server's grants through a subject index and at its sessions by name: it never parses policy
//! text and never scans another server's grants.

use std::borrow::Cow;
use std::collections::HashMap;

use super::load::PolicySet;
use super::{Entry, Grant, Primitive, Server, Session, Subject, Text, lookup};
use crate::policy::Timestamp;

/// A caller's identity as resolved from the request; empty strings never appear here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity<'a> {
    pub human: Option<Cow<'a, str>>,
    pub agent: Option<Cow<'a, str>>,
    pub team: Option<Cow<'a, str>>,
}

impl Identity<'_> {
    pub fn is_empty(&self) -> bool {
        self.human.is_none() && self.agent.is_none() && self.team.is_none()
    }
}

/// A grant or session subject with the server's team filled in where it had none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveSubject {
    subject: Subject,
    /// False when the subject as written is empty: it then matches no one.
    matchable: bool,
}

impl EffectiveSubject {
    fn new(written: &Subject, server: Option<&Server>) -> Self {
        let mut subject = written.clone();
        if subject.team.is_none() {
            subject.team = server.and_then(|s| s.team_id.clone());
        }
        EffectiveSubject {
            subject,
            matchable: !written.is_empty(),
        }
    }

    /// Every non-empty field equals the caller's.
    pub fn matches(&self, caller: &Identity) -> bool {
        fn field(want: &Option<String>, have: &Option<Cow<str>>) -> bool {
            want.as_deref().is_none_or(|w| have.as_deref() == Some(w))
        }
        self.matchable
            && field(&self.subject.human, &caller.human)
            && field(&self.subject.agent, &caller.agent)
            && field(&self.subject.team, &caller.team)
    }

    pub fn subject(&self) -> &Subject {
        &self.subject
    }
}

#[derive(Debug)]
pub struct CompiledGrant {
    pub grant: Grant,
    pub subject: EffectiveSubject,
}

#[derive(Debug)]
pub struct CompiledSession {
    pub session: Session,
    pub subject: EffectiveSubject,
}

/// Past `expiresAt` (strictly: equal is still valid).
fn past(expires_at: Option<Timestamp>, now: Timestamp) -> bool {
    expires_at.is_some_and(|t| t < now)
}

impl CompiledGrant {
    /// Past its `expiresAt`: skipped by the grant steps (SPEC §2 step 5).
    pub fn expired(&self, now: Timestamp) -> bool {
        past(self.grant.expires_at, now)
    }

    /// Neither disabled nor expired: the grant takes part in steps 6–9 and in monitor rule 3.
    pub fn live(&self, now: Timestamp) -> bool {
        !self.grant.disabled && !self.expired(now)
    }
}

/// Why a session, found, cannot be used (the decision reports it as `session_revoked` or
/// `session_expired`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionDenial {
    Revoked,
    Expired,
}

impl CompiledSession {
    /// Why the session, found, cannot be used: revoked, else expired (SPEC §2 step 3).
    pub fn denial(&self, now: Timestamp) -> Option<SessionDenial> {
        if self.session.revoked {
            Some(SessionDenial::Revoked)
        } else if past(self.session.expires_at, now) {
            Some(SessionDenial::Expired)
        } else {
            None
        }
    }
}

/// One server with everything a Check on it needs.
#[derive(Debug)]
pub struct CompiledServer {
    pub server: Server,
    /// Inventory entries named exactly, per primitive (indexes into the server's lists).
    exact: [HashMap<String, usize>; 3],
    /// This server's grants in byte order of `namespace/name`.
    pub grants: Vec<CompiledGrant>,
    /// Grant indexes by the first non-empty field of their effective subject.
    by_human: HashMap<String, Vec<usize>>,
    by_agent: HashMap<String, Vec<usize>>,
    by_team: HashMap<String, Vec<usize>>,
    /// Sessions by `metadata.name`, each list in byte order of `namespace/name`.
    sessions: HashMap<String, Vec<CompiledSession>>,
}

impl CompiledServer {
    /// What the inventory says about `target` (SPEC §2 step 4): the entry named exactly so,
    /// else (resources) the longest `uriPrefix` it starts with.
    pub fn entry(&self, primitive: Primitive, target: &str) -> Option<&Entry> {
        let entries = self.server.entries(primitive);
        match self.exact[primitive as usize].get(target) {
            Some(&i) => Some(&entries[i]),
            None if primitive == Primitive::Resource => {
                lookup(entries, target, |e| (&e.name, e.prefix))
            }
            None => None,
        }
    }

    /// Grants whose subject matches the caller, in byte order of `namespace/name`.
    pub fn matching_grants(&self, caller: &Identity) -> Vec<&CompiledGrant> {
        // Each grant is in one index (its subject's first field) and every list ascends, so
        // merging the caller's lists gives the grants in order.
        let mut lists = [
            (&self.by_human, &caller.human),
            (&self.by_agent, &caller.agent),
            (&self.by_team, &caller.team),
        ]
        .map(|(index, key)| {
            key.as_deref()
                .and_then(|k| index.get(k))
                .map_or(&[][..], Vec::as_slice)
        });
        let mut grants = Vec::with_capacity(lists.iter().map(|l| l.len()).sum());
        while let Some(list) = lists
            .iter_mut()
            .filter(|l| !l.is_empty())
            .min_by_key(|l| l[0])
        {
            let grant = &self.grants[list[0]];
            *list = &list[1..];
            if grant.subject.matches(caller) {
                grants.push(grant);
            }
        }
        grants
    }

    /// Sessions of this server named `name` whose subject matches the caller.
    pub fn sessions_named<'s>(
        &'s self,
        name: &str,
    ) -> impl Iterator<Item = &'s CompiledSession> + 's {
        self.sessions.get(name).into_iter().flatten()
    }
}

/// How a bare server name resolves.
#[derive(Debug, Clone, Copy)]
enum NameLookup {
    Unique(usize),
    Ambiguous,
}

/// Object counts, for the summary line, logs and metrics: [`Snapshot::counts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub files: usize,
    pub servers: usize,
    pub grants: usize,
    pub sessions: usize,
}

#[derive(Debug)]
pub struct Snapshot {
    pub revision: Text,
    /// How many files the set was read from.
    files: usize,
    /// Servers in byte order of `namespace/name`.
    servers: Vec<CompiledServer>,
    /// Loaded grants and sessions whose `serverRef` names no loaded server (a warning): they
    /// take part in no decision.
    detached: (Vec<Grant>, Vec<Session>),
    by_key: HashMap<Text, usize>,
    by_name: HashMap<Text, NameLookup>,
    by_path: HashMap<String, usize>,
}

impl Snapshot {
    pub fn compile(set: PolicySet) -> Snapshot {
        let mut detached = (Vec::new(), Vec::new());
        let mut servers: Vec<CompiledServer> = set
            .servers
            .into_iter()
            .map(|server| CompiledServer {
                exact: Primitive::ALL.map(|p| {
                    server
                        .entries(p)
                        .iter()
                        .enumerate()
                        .filter(|(_, e)| !e.prefix)
                        .map(|(i, e)| (e.name.clone(), i))
                        .collect()
                }),
                server,
                grants: Vec::new(),
                by_human: HashMap::new(),
                by_agent: HashMap::new(),
                by_team: HashMap::new(),
                sessions: HashMap::new(),
            })
            .collect();
        servers.sort_by(|a, b| a.server.key.full.cmp(&b.server.key.full));
        let by_key: HashMap<Text, usize> = servers
            .iter()
            .enumerate()
            .map(|(i, s)| (s.server.key.full.clone(), i))
            .collect();

        let mut grants = set.grants;
        grants.sort_by(|a, b| a.key.full.cmp(&b.key.full));
        for grant in grants {
            let Some(&i) = by_key.get(&*grant.server_ref.full) else {
                detached.0.push(grant);
                continue;
            };
            let server = &mut servers[i];
            let subject = EffectiveSubject::new(&grant.subject, Some(&server.server));
            let index = server.grants.len();
            if subject.matchable {
                let s = subject.subject();
                let (map, key) = if let Some(h) = &s.human {
                    (&mut server.by_human, h)
                } else if let Some(a) = &s.agent {
                    (&mut server.by_agent, a)
                } else if let Some(t) = &s.team {
                    (&mut server.by_team, t)
                } else {
                    unreachable!("a matchable subject has a field")
                };
                map.entry(key.clone()).or_default().push(index);
            }
            server.grants.push(CompiledGrant { grant, subject });
        }

        let mut sessions = set.sessions;
        sessions.sort_by(|a, b| a.key.full.cmp(&b.key.full));
        for session in sessions {
            let Some(&i) = by_key.get(&*session.server_ref.full) else {
                detached.1.push(session);
                continue;
            };
            let server = &mut servers[i];
            let subject = EffectiveSubject::new(&session.subject, Some(&server.server));
            server
                .sessions
                .entry(session.key.name.to_string())
                .or_default()
                .push(CompiledSession { session, subject });
        }

        let mut by_name = HashMap::new();
        for (i, s) in servers.iter().enumerate() {
            by_name
                .entry(s.server.key.name.clone())
                .and_modify(|e| *e = NameLookup::Ambiguous)
                .or_insert(NameLookup::Unique(i));
        }
        let by_path = servers
            .iter()
            .enumerate()
            .map(|(i, s)| (s.server.ingress_path.clone(), i))
            .collect();
        Snapshot {
            revision: set.revision.into(),
            files: set.files,
            servers,
            detached,
            by_key,
            by_name,
            by_path,
        }
    }

    /// How many files, servers, grants and sessions were loaded (detached ones included).
    pub fn counts(&self) -> Counts {
        let (grants, sessions) = self.servers.iter().fold(
            (self.detached.0.len(), self.detached.1.len()),
            |(g, s), server| {
                (
                    g + server.grants.len(),
                    s + server.sessions.values().map(Vec::len).sum::<usize>(),
                )
            },
        );
        Counts {
            files: self.files,
            servers: self.servers.len(),
            grants,
            sessions,
        }
    }

    /// Every server, in byte order of `namespace/name`.
    pub fn servers(&self) -> &[CompiledServer] {
        &self.servers
    }

    /// `namespace/name`, or a bare `name` that exactly one server has.
    pub fn server_named(&self, name: &str) -> Option<&CompiledServer> {
        let index = if name.contains('/') {
            *self.by_key.get(name)?
        } else {
            match self.by_name.get(name)? {
                NameLookup::Unique(i) => *i,
                NameLookup::Ambiguous => return None,
            }
        };
        Some(&self.servers[index])
    }

    /// The server whose ingress path is the longest path-boundary prefix of `path` (no query).
    pub fn server_for_path(&self, path: &str) -> Option<&CompiledServer> {
        if !path.starts_with('/') {
            return None;
        }
        let mut candidate = path;
        loop {
            if let Some(&i) = self.by_path.get(candidate) {
                return Some(&self.servers[i]);
            }
            match candidate.rfind('/') {
                Some(0) if candidate.len() > 1 => candidate = "/",
                Some(0) | None => return None,
                Some(i) => candidate = &candidate[..i],
            }
        }
    }
}

/// A grant or server whose mode differs between two snapshots: a security event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeChange {
    pub kind: super::Kind,
    pub key: Text,
    pub from: super::Mode,
    pub to: super::Mode,
}

/// Grants and servers present in both snapshots whose mode changed, in key order.
pub fn mode_changes(old: &Snapshot, new: &Snapshot) -> Vec<ModeChange> {
    use super::{Kind, Mode};
    let modes = |s: &Snapshot| -> HashMap<(bool, Text), Mode> {
        let mut out = HashMap::new();
        for server in &s.servers {
            out.insert((false, server.server.key.full.clone()), server.server.mode);
            for g in &server.grants {
                out.insert((true, g.grant.key.full.clone()), g.grant.mode);
            }
        }
        out
    };
    let before = modes(old);
    let mut changes: Vec<ModeChange> = modes(new)
        .into_iter()
        .filter_map(|((is_grant, key), to)| {
            let from = *before.get(&(is_grant, key.clone()))?;
            (from != to).then_some(ModeChange {
                kind: if is_grant { Kind::Grant } else { Kind::Server },
                key,
                from,
                to,
            })
        })
        .collect();
    changes.sort_by(|a, b| a.key.cmp(&b.key));
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    const SET: &str = r#"
apiVersion: mcpruntime.org/v1alpha1
kind: MCPServer
metadata: {name: demo, namespace: ns}
spec:
  ingressPath: /demo
  tools:
    - {name: echo, requiredTrust: low, sideEffect: read}
---
apiVersion: mcpruntime.org/v1alpha1
kind: MCPAccessGrant
metadata: {name: g1, namespace: ns}
spec:
  serverRef: {name: demo}
  subject: {humanID: h1}
  maxTrust: high
---
apiVersion: mcpruntime.org/v1alpha1
kind: MCPAccessGrant
metadata: {name: orphan, namespace: ns}
spec:
  serverRef: {name: gone}
  subject: {humanID: h1}
  maxTrust: high
---
apiVersion: mcpruntime.org/v1alpha1
kind: MCPAgentSession
metadata: {name: s1, namespace: ns}
spec:
  serverRef: {name: demo}
  subject: {humanID: h1}
  consentedTrust: low
---
apiVersion: mcpruntime.org/v1alpha1
kind: MCPAgentSession
metadata: {name: s2, namespace: ns}
spec:
  serverRef: {name: gone}
  subject: {humanID: h1}
  consentedTrust: low
"#;

    #[test]
    fn counts_include_objects_no_server_takes() {
        let set = super::super::load_files(&[("a.yaml", SET.as_bytes())]).unwrap();
        assert_eq!(set.warnings.len(), 2, "{:?}", set.warnings);
        let snapshot = Snapshot::compile(set);
        assert_eq!(
            snapshot.counts(),
            Counts {
                files: 1,
                servers: 1,
                grants: 2,
                sessions: 2,
            }
        );
        assert_eq!(snapshot.servers()[0].grants.len(), 1);
    }
}
