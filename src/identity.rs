//! Who is calling (SPEC §2): per server, from headers, jwt_authn claims, or a SPIFFE principal.

use std::borrow::Cow;

use crate::decision::Reason;
use crate::policy::AuthMode;
use crate::policy::Timestamp;
use crate::policy::snapshot::{CompiledServer, CompiledSession, Identity};
use crate::request::CheckInput;

/// The caller and their session as the request names them.
#[derive(Debug, Clone)]
pub struct Caller<'a> {
    pub identity: Identity<'a>,
    /// The session id as sent (mtls: the session's name).
    pub session_id: Option<Cow<'a, str>>,
    /// mtls only: the live session the principal names.
    pub session: Option<&'a CompiledSession>,
}

/// Why the caller could not be established, with the session when one was found.
#[derive(Debug, Clone, Copy)]
pub struct IdentityDenial<'a> {
    pub reason: Reason,
    pub session: Option<&'a CompiledSession>,
}

pub fn resolve<'a>(
    server: &'a CompiledServer,
    input: &CheckInput<'a>,
    now: Timestamp,
) -> Result<Caller<'a>, IdentityDenial<'a>> {
    let auth = &server.server.auth;
    match auth.mode {
        AuthMode::Header => Ok(Caller {
            identity: Identity {
                human: input.headers.get(&auth.human_header),
                agent: input.headers.get(&auth.agent_header),
                team: input.headers.get(&auth.team_header),
            },
            session_id: input.headers.get(&auth.session_header),
            session: None,
        }),
        AuthMode::Jwt => {
            let claims = input
                .jwt_payloads
                .iter()
                .find(|(key, _)| *key == auth.jwt_payload_key)
                .map(|(_, c)| *c)
                .unwrap_or_default();
            Ok(Caller {
                identity: Identity {
                    human: claims.sub.map(Cow::Borrowed),
                    agent: claims.azp.or(claims.client_id).map(Cow::Borrowed),
                    team: claims
                        .team_id
                        .or(claims.tenant_id)
                        .or(claims.tid)
                        .map(Cow::Borrowed),
                },
                session_id: input.headers.get(&auth.session_header),
                session: None,
            })
        }
        AuthMode::Mtls => {
            let denial = |reason, session| IdentityDenial { reason, session };
            let trust_domain = auth.trust_domain.as_deref().unwrap_or_default();
            let Some((namespace, name)) = spiffe_session(input.principal, trust_domain) else {
                return Err(denial(Reason::InvalidSpiffeIdentity, None));
            };
            let Some(session) = server
                .sessions_named(name)
                .find(|s| &*s.session.key.namespace == namespace)
            else {
                return Err(denial(Reason::SessionNotFound, None));
            };
            if let Some(reason) = session.denial(now) {
                return Err(denial(reason.into(), Some(session)));
            }
            let subject = session.subject.subject();
            let borrow = |field: &'a Option<String>| field.as_deref().map(Cow::Borrowed);
            Ok(Caller {
                identity: Identity {
                    human: borrow(&subject.human),
                    agent: borrow(&subject.agent),
                    team: borrow(&subject.team),
                },
                session_id: Some(Cow::Borrowed(&*session.session.key.name)),
                session: Some(session),
            })
        }
    }
}

/// `spiffe://<trust_domain>/ns/<namespace>/session/<name>` → (namespace, name).
fn spiffe_session<'p>(principal: &'p str, trust_domain: &str) -> Option<(&'p str, &'p str)> {
    let rest = principal
        .strip_prefix("spiffe://")?
        .strip_prefix(trust_domain)?
        .strip_prefix("/ns/")?;
    let (namespace, rest) = rest.split_once('/')?;
    let name = rest.strip_prefix("session/")?;
    let valid = |s: &str| !s.is_empty() && !s.contains('/');
    (valid(namespace) && valid(name)).then_some((namespace, name))
}

#[cfg(test)]
mod tests {
    use super::spiffe_session;

    #[test]
    fn spiffe_principals() {
        let td = "cluster.local";
        assert_eq!(
            spiffe_session("spiffe://cluster.local/ns/team-a/session/s1", td),
            Some(("team-a", "s1"))
        );
        for bad in [
            "spiffe://cluster.localx/ns/team-a/session/s1",
            "spiffe://evil/ns/team-a/session/s1",
            "spiffe://cluster.local/ns/team-a/sa/s1",
            "spiffe://cluster.local/ns//session/s1",
            "spiffe://cluster.local/ns/team-a/session/",
            "spiffe://cluster.local/ns/team-a/session/s1/x",
            "cluster.local/ns/team-a/session/s1",
            "",
        ] {
            assert_eq!(spiffe_session(bad, td), None, "{bad}");
        }
    }
}
