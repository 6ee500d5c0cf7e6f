//! Prometheus metrics (SPEC §4a), every label bounded by the policy set or by enums.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::decision::{Decision, Verdict};
use crate::filter::Passthrough;
use crate::policy::{Mode, Snapshot, Text};

/// Check latency buckets, 10 µs to 100 ms.
pub const DURATION_BUCKETS: [f64; 13] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1,
];

/// Server and grant labels are the policy's shared `namespace/name` (`""` when unknown), so
/// counting a Check copies no text.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    server: Option<Text>,
    decision: &'static str,
    reason: &'static str,
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WouldDenyLabels {
    server: Option<Text>,
    grant: Option<Text>,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RevisionLabels {
    revision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HiddenLabels {
    server: Text,
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrantLabels {
    server: Text,
    grant: Text,
    mode: &'static str,
}

pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    would_deny: Family<WouldDenyLabels, Counter>,
    /// The duration histograms of allowed and denied Checks, looked up once.
    duration: [Histogram; 2],
    reloads: Family<ResultLabels, Counter>,
    policy_info: Family<RevisionLabels, Gauge>,
    policy_objects: Family<KindLabels, Gauge>,
    grant_info: Family<GrantLabels, Gauge>,
    spans_dropped: Counter,
    filter_passthrough: Family<ReasonLabels, Counter>,
    entries_hidden: Family<HiddenLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let decisions = Family::default();
        let would_deny = Family::default();
        let duration = Family::<VerdictLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(DURATION_BUCKETS)) as fn() -> Histogram,
        );
        let reloads = Family::default();
        let policy_info = Family::default();
        let policy_objects = Family::default();
        let grant_info = Family::default();
        let spans_dropped = Counter::default();
        let filter_passthrough = Family::default();
        let entries_hidden = Family::default();
        // prometheus-client appends `_total` to counters.
        registry.register(
            "mcp_authz_decisions",
            "Checks decided, by server, applied decision, reason and mode",
            decisions.clone(),
        );
        registry.register(
            "mcp_authz_would_deny",
            "Denials let through by monitor mode, by server, grant and reason",
            would_deny.clone(),
        );
        registry.register(
            "mcp_authz_check_duration_seconds",
            "Time to decide a Check",
            duration.clone(),
        );
        let duration = [Verdict::Allow, Verdict::Deny].map(|verdict| {
            duration
                .get_or_create(&VerdictLabels {
                    decision: verdict.as_str(),
                })
                .clone()
        });
        registry.register(
            "mcp_authz_policy_reloads",
            "Policy reloads after start-up, by result",
            reloads.clone(),
        );
        registry.register(
            "mcp_authz_policy_info",
            "The policy revision in force (value 1)",
            policy_info.clone(),
        );
        registry.register(
            "mcp_authz_policy_objects",
            "Policy objects in force, by kind",
            policy_objects.clone(),
        );
        // A grant that never had a would-deny has no `mcp_authz_would_deny_total` series: this
        // one names every grant, so a query can list the monitor grants with none.
        registry.register(
            "mcp_authz_grant_info",
            "Every grant in force, by server, grant and the grant's own mode (value 1)",
            grant_info.clone(),
        );
        registry.register(
            "mcp_authz_spans_dropped",
            "Audit spans dropped because the export queue was full",
            spans_dropped.clone(),
        );
        registry.register(
            "mcp_authz_filter_passthrough",
            "List answers passed on unfiltered because they could not be read, by reason",
            filter_passthrough.clone(),
        );
        registry.register(
            "mcp_authz_list_entries_hidden",
            "List entries hidden from callers who may not call them, by server and mode",
            entries_hidden.clone(),
        );
        Metrics {
            registry,
            decisions,
            would_deny,
            duration,
            reloads,
            policy_info,
            policy_objects,
            grant_info,
            spans_dropped,
            filter_passthrough,
            entries_hidden,
        }
    }

    /// Counts one Check from its decision.
    pub fn record_check(&self, decision: &Decision, seconds: f64) {
        let server = decision.server.map(|s| Text::clone(&s.server.key.full));
        let verdict = decision.applied();
        let applied = verdict.as_str();
        let reason = decision.reason.as_str();
        if decision.would_deny {
            self.would_deny
                .get_or_create(&WouldDenyLabels {
                    server: server.clone(),
                    grant: decision.grant.map(|g| Text::clone(&g.grant.key.full)),
                    reason,
                })
                .inc();
        }
        self.decisions
            .get_or_create(&DecisionLabels {
                server,
                decision: applied,
                reason,
                mode: decision.mode.as_str(),
            })
            .inc();
        self.duration[usize::from(verdict == Verdict::Deny)].observe(seconds);
    }

    pub fn record_passthrough(&self, reason: Passthrough) {
        self.filter_passthrough
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Counts the entries one filtered list hid.
    pub fn record_hidden(&self, server: &Text, mode: Mode, hidden: usize) {
        self.entries_hidden
            .get_or_create(&HiddenLabels {
                server: Text::clone(server),
                mode: mode.as_str(),
            })
            .inc_by(hidden as u64);
    }

    pub fn record_reload(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
    }

    /// The revision, object counts and grants of the snapshot now in force.
    pub fn set_policy(&self, snapshot: &Snapshot) {
        self.policy_info.clear();
        self.policy_info
            .get_or_create(&RevisionLabels {
                revision: snapshot.revision.to_string(),
            })
            .set(1);
        let counts = snapshot.counts();
        for (kind, count) in [
            ("MCPServer", counts.servers),
            ("MCPAccessGrant", counts.grants),
            ("MCPAgentSession", counts.sessions),
        ] {
            self.policy_objects
                .get_or_create(&KindLabels { kind })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        self.grant_info.clear();
        for server in snapshot.servers() {
            for compiled in &server.grants {
                let grant = &compiled.grant;
                self.grant_info
                    .get_or_create(&GrantLabels {
                        server: Text::clone(&server.server.key.full),
                        grant: Text::clone(&grant.key.full),
                        mode: grant.mode.as_str(),
                    })
                    .set(1);
            }
        }
    }

    /// The counter the audit queue increments when it drops a span.
    pub fn spans_dropped(&self) -> Counter {
        self.spans_dropped.clone()
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::load_files;

    fn snapshot(grants: &str) -> Snapshot {
        let server = "apiVersion: mcpruntime.org/v1alpha1\nkind: MCPServer\nmetadata: {name: s, namespace: ns}\nspec:\n  ingressPath: /s\n  tools: [{name: t, requiredTrust: low, sideEffect: read}]\n";
        let files = [
            ("server.yaml", server.as_bytes()),
            ("grants.yaml", grants.as_bytes()),
        ];
        Snapshot::compile(load_files(&files).unwrap())
    }

    fn grant(name: &str, mode: &str) -> String {
        format!(
            "apiVersion: mcpruntime.org/v1alpha1\nkind: MCPAccessGrant\nmetadata: {{name: {name}, namespace: ns}}\nspec: {{serverRef: {{name: s}}, subject: {{agentID: a}}, maxTrust: low, mode: {mode}}}\n"
        )
    }

    fn grant_info(metrics: &Metrics) -> Vec<String> {
        let mut lines: Vec<String> = metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with("mcp_authz_grant_info{"))
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    }

    #[test]
    fn grant_info_names_every_grant_of_the_set_in_force() {
        let metrics = Metrics::new();
        metrics.set_policy(&snapshot(&format!(
            "{}---\n{}",
            grant("rollout", "monitor"),
            grant("steady", "enforce")
        )));
        assert_eq!(
            grant_info(&metrics),
            [
                r#"mcp_authz_grant_info{server="ns/s",grant="ns/rollout",mode="monitor"} 1"#,
                r#"mcp_authz_grant_info{server="ns/s",grant="ns/steady",mode="enforce"} 1"#,
            ]
        );

        // The rollout flipped to enforce and the other grant removed: no series stays behind.
        metrics.set_policy(&snapshot(&grant("rollout", "enforce")));
        assert_eq!(
            grant_info(&metrics),
            [r#"mcp_authz_grant_info{server="ns/s",grant="ns/rollout",mode="enforce"} 1"#]
        );
    }
}
