//! A deterministic large policy set for benchmarks: `servers` MCP servers with
//! `tools_per_server` tools each and `grants_per_server` grants each, with mixed subjects
//! (human, agent, team), monitor-mode grants, deny rules and tool rules.
#![allow(dead_code)]

/// Files of the generated set: `(relative path, YAML)`.
pub fn policy_files(
    servers: usize,
    tools_per_server: usize,
    grants_per_server: usize,
) -> Vec<(String, String)> {
    let trust = ["low", "medium", "high"];
    let effects = ["read", "write", "destructive"];
    let mut files = Vec::new();
    for s in 0..servers {
        let (ns, name) = (namespace(s), format!("srv-{s}"));
        let mut text = format!(
            "apiVersion: mcpruntime.org/v1alpha1\nkind: MCPServer\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  ingressPath: /{name}/mcp\n  teamID: team-{}\n  tools:\n",
            s % 7
        );
        for t in 0..tools_per_server {
            text.push_str(&format!(
                "    - {{name: tool-{t}, requiredTrust: {}, sideEffect: {}, riskLevel: {}}}\n",
                trust[t % 3],
                effects[t % 3],
                trust[(t / 3) % 3]
            ));
        }
        text.push_str("  policy: {defaultDecision: deny, policyVersion: gen-1}\n");
        for g in 0..grants_per_server {
            let mut rng = Lcg((s * 100_003 + g) as u64);
            let subject = match g % 4 {
                0 => format!("{{humanID: human-{g}}}"),
                1 => format!("{{agentID: agent-{g}}}"),
                2 => format!("{{humanID: human-{}, agentID: agent-{g}}}", g - 1),
                _ => format!("{{agentID: agent-{}, teamID: team-{}}}", g - 2, s % 7),
            };
            let mode = if g % 5 == 0 { "monitor" } else { "enforce" };
            let allowed: Vec<&str> = effects
                .iter()
                .copied()
                .filter(|_| !rng.next().is_multiple_of(3))
                .collect();
            let mut rules = String::new();
            if g % 3 != 0 {
                rules.push_str("  toolRules:\n");
                for r in 0..(1 + rng.next() as usize % 6) {
                    let tool = (g + r * 3) % tools_per_server;
                    let decision = if g % 10 == 1 && r == 0 {
                        "deny"
                    } else {
                        "allow"
                    };
                    rules.push_str(&format!(
                        "    - {{name: tool-{tool}, decision: {decision}, requiredTrust: {}}}\n",
                        trust[rng.next() as usize % 3]
                    ));
                }
            }
            text.push_str(&format!(
                "---\napiVersion: mcpruntime.org/v1alpha1\nkind: MCPAccessGrant\nmetadata: {{name: {name}-grant-{g}, namespace: {ns}}}\nspec:\n  serverRef: {{name: {name}}}\n  subject: {subject}\n  maxTrust: {}\n  allowedSideEffects: [{}]\n  mode: {mode}\n{rules}",
                trust[rng.next() as usize % 3],
                allowed.join(", ")
            ));
        }
        files.push((format!("{ns}/{name}.yaml"), text));
    }
    files
}

/// The 10,000-grant set: 50 servers × 20 tools, 200 grants each.
pub fn large() -> Vec<(String, String)> {
    policy_files(50, 20, 200)
}

pub fn namespace(server: usize) -> String {
    format!("team-ns-{}", server % 5)
}

/// Writes the files under `dir`.
pub fn write(dir: &std::path::Path, files: &[(String, String)]) {
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}
