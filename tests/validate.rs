//! Validation (SPEC §1): every error class with its file, line and field; loading rules.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test harness: a panic is the report

use std::fs;
use std::path::Path;

use mcp_authz::policy::{Problem, Severity, load_files, load_paths};

const HEAD: &str = "apiVersion: mcpruntime.org/v1alpha1\n";

fn problems(files: &[(&str, &str)]) -> Vec<Problem> {
    let files: Vec<(&str, &[u8])> = files.iter().map(|(n, t)| (*n, t.as_bytes())).collect();
    match load_files(&files) {
        Ok(set) => set.warnings,
        Err(e) => e.problems().to_vec(),
    }
}

/// Asserts one problem at `file:line` on `field` whose message contains `text`.
#[track_caller]
fn has(all: &[Problem], file: &str, line: usize, field: &str, text: &str) {
    let found = all.iter().any(|p| {
        p.file == file
            && p.line == line
            && p.field.as_deref().unwrap_or("") == field
            && p.message.contains(text)
    });
    assert!(
        found,
        "no problem {file}:{line}: {field}: …{text}… in:\n{}",
        all.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn errors(all: &[Problem]) -> usize {
    all.iter().filter(|p| p.severity == Severity::Error).count()
}

#[test]
fn every_error_class_with_file_line_and_field() {
    let servers = format!(
        "{HEAD}kind: MCPServer
metadata: {{name: s1, namespace: ns}}
spec:
  ingressPath: demo
  image: ignored:1.0
  tools:
    - {{name: a, requiredTrust: extreme, sideEffect: read}}
    - {{name: a, sideEffect: explode, riskLevel: max, color: red}}
  auth: {{mode: mtls}}
  policy: {{mode: shadow, defaultDecision: maybe}}
  session: {{required: yes}}
---
{HEAD}kind: MCPServer
metadata: {{name: s2, namespace: ns}}
spec:
  ingressPath: /s2/
  auth: {{mode: kerberos, typo: 1}}
---
{HEAD}kind: MCPServer
metadata: {{name: same, namespace: a}}
---
{HEAD}kind: MCPServer
metadata: {{name: same, namespace: b}}
"
    );
    let grants = format!(
        "{HEAD}kind: MCPAccessGrant
metadata: {{name: g1, namespace: ns}}
spec:
  serverRef: {{name: s1}}
  subject: {{humanID: no, teamID: 1234}}
  maxTrust: total
  allowedSideEffects: [read, read, fly]
  toolRules:
    - {{name: a, decision: maybe}}
    - {{name: a, requiredTrust: high}}
  expiresAt: next tuesday
  mode: shadow
  disabled: \"true\"
  extra: 1
---
{HEAD}kind: MCPAccessGrant
metadata: {{namespace: ns}}
spec: {{serverRef: {{name: s1}}}}
---
apiVersion: mcpruntime.org/v2
kind: MCPAccessGrant
metadata: {{name: g2}}
---
{HEAD}kind: MCPPolicy
metadata: {{name: p}}
---
{HEAD}kind: MCPAccessGrant
metadata: {{name: g1, namespace: ns}}
spec: {{serverRef: {{name: s1}}, subject: {{agentID: x}}}}
"
    );
    let sessions = format!(
        "{HEAD}kind: MCPAgentSession
metadata: {{name: s, namespace: ns}}
spec:
  serverRef: {{name: s1}}
  subject: {{}}
  consentedTrust: max
  expiresAt: 2026-13-01T00:00:00Z
  upstreamTokenSecretRef: {{name: ignored}}
  revoked: 1
"
    );
    let broken = "a: [1, 2\nb: 3\n";
    let all = problems(&[
        ("servers.yaml", &servers),
        ("grants.yaml", &grants),
        ("sessions.yaml", &sessions),
        ("broken.yaml", broken),
    ]);

    has(
        &all,
        "servers.yaml",
        5,
        "spec.ingressPath",
        "must start with `/`",
    );
    has(
        &all,
        "servers.yaml",
        8,
        "spec.tools[0].requiredTrust",
        "`extreme` is not one of",
    );
    has(
        &all,
        "servers.yaml",
        9,
        "spec.tools[1].name",
        "duplicate tool `a`",
    );
    has(
        &all,
        "servers.yaml",
        9,
        "spec.tools[1].sideEffect",
        "`explode`",
    );
    has(&all, "servers.yaml", 9, "spec.tools[1].riskLevel", "`max`");
    has(
        &all,
        "servers.yaml",
        9,
        "spec.tools[1].color",
        "unknown field",
    );
    has(
        &all,
        "servers.yaml",
        10,
        "spec.auth.trustDomain",
        "required when `mode: mtls`",
    );
    has(&all, "servers.yaml", 11, "spec.policy.mode", "`shadow`");
    has(
        &all,
        "servers.yaml",
        11,
        "spec.policy.defaultDecision",
        "`maybe`",
    );
    has(
        &all,
        "servers.yaml",
        12,
        "spec.session.required",
        "expected true or false",
    );
    has(
        &all,
        "servers.yaml",
        18,
        "spec.ingressPath",
        "not end with `/`",
    );
    has(&all, "servers.yaml", 19, "spec.auth.mode", "`kerberos`");
    has(&all, "servers.yaml", 19, "spec.auth.typo", "unknown field");
    has(
        &all,
        "servers.yaml",
        25,
        "spec.ingressPath",
        "also the ingress path of MCPServer a/same",
    );

    has(
        &all,
        "grants.yaml",
        6,
        "spec.subject.humanID",
        "expected a string, found a boolean (quote it)",
    );
    has(
        &all,
        "grants.yaml",
        6,
        "spec.subject.teamID",
        "found a number",
    );
    has(&all, "grants.yaml", 7, "spec.maxTrust", "`total`");
    has(
        &all,
        "grants.yaml",
        8,
        "spec.allowedSideEffects[1]",
        "duplicate side effect",
    );
    has(
        &all,
        "grants.yaml",
        8,
        "spec.allowedSideEffects[2]",
        "`fly`",
    );
    has(
        &all,
        "grants.yaml",
        10,
        "spec.toolRules[0].decision",
        "`maybe`",
    );
    has(
        &all,
        "grants.yaml",
        11,
        "spec.toolRules[1].name",
        "duplicate rule `a`",
    );
    has(
        &all,
        "grants.yaml",
        12,
        "spec.expiresAt",
        "not an RFC 3339 time",
    );
    has(&all, "grants.yaml", 13, "spec.mode", "`shadow`");
    has(
        &all,
        "grants.yaml",
        14,
        "spec.disabled",
        "expected true or false",
    );
    has(&all, "grants.yaml", 15, "spec.extra", "unknown field");
    has(&all, "grants.yaml", 19, "metadata.name", "missing");
    has(
        &all,
        "grants.yaml",
        22,
        "apiVersion",
        "unknown apiVersion `mcpruntime.org/v2`",
    );
    has(&all, "grants.yaml", 27, "kind", "unknown kind `MCPPolicy`");
    has(
        &all,
        "grants.yaml",
        30,
        "metadata.name",
        "defined twice (first at grants.yaml:1)",
    );

    has(
        &all,
        "sessions.yaml",
        6,
        "spec.subject",
        "needs at least one of",
    );
    has(&all, "sessions.yaml", 7, "spec.consentedTrust", "`max`");
    has(
        &all,
        "sessions.yaml",
        8,
        "spec.expiresAt",
        "not an RFC 3339 time",
    );
    has(
        &all,
        "sessions.yaml",
        10,
        "spec.revoked",
        "expected true or false",
    );

    assert!(
        all.iter()
            .any(|p| p.file == "broken.yaml" && p.message.starts_with("invalid YAML")),
        "{all:?}"
    );
    // Problems name their object.
    let rendered: Vec<String> = all.iter().map(ToString::to_string).collect();
    assert!(
        rendered.contains(
            &"grants.yaml:7: MCPAccessGrant ns/g1: spec.maxTrust: `total` is not one of `low`, `medium`, `high`"
                .to_string()
        ),
        "{rendered:#?}"
    );
    assert!(errors(&all) >= 33, "{}", errors(&all));
}

#[test]
fn lists_and_their_errors() {
    let list = "apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: List
    items: []
  -
  - apiVersion: mcpruntime.org/v1alpha1
    kind: MCPServer
    metadata: {name: ok}
---
apiVersion: mcpruntime.org/v1alpha1
kind: List
items: []
";
    let all = problems(&[("list.yaml", list)]);
    has(&all, "list.yaml", 4, "items[0]", "a List inside a List");
    // The parser places an empty item at the next token: the `-` line or the one after it.
    assert!(
        all.iter().any(|p| p.field.as_deref() == Some("items[1]")
            && p.message == "null item"
            && (7..=8).contains(&p.line)),
        "{all:?}"
    );
    has(
        &all,
        "list.yaml",
        12,
        "apiVersion",
        "needs `apiVersion: v1`",
    );
    assert_eq!(errors(&all), 3, "{all:?}");
}

#[test]
fn what_is_accepted_and_ignored() {
    let text = format!(
        "# kubectl output, with everything kubectl adds
{HEAD}kind: MCPServer
metadata:
  name: demo
  namespace: ns
  uid: 1234-5678
  resourceVersion: \"42\"
  labels: {{app: demo}}
  annotations: {{note: x}}
spec:
  image: demo:1
  port: 8080
  replicas: 2
  tools:
    - {{name: t, requiredTrust: HIGH, sideEffect: Read, riskLevel: LOW, description: d, labels: {{a: b}}}}
  policy: {{mode: OBSERVE, defaultDecision: Allow}}
status:
  phase: Ready
---
---
{HEAD}kind: MCPAccessGrant
metadata: {{name: g, namespace: ns}}
spec:
  serverRef: {{name: demo}}
  subject: {{humanID: \"no\", teamID: !!str 1234, agentID: ''}}
  expiresAt: \"2030-01-01T00:00:00+02:00\"
  mode: Observe
  disabled: False
"
    );
    let files: Vec<(&str, &[u8])> = vec![
        ("a.yaml", text.as_bytes()),
        (
            "b.json",
            br#"{"apiVersion": "mcpruntime.org/v1alpha1", "kind": "MCPAgentSession", "metadata": {"name": "s", "namespace": "ns"}, "spec": {"serverRef": {"name": "demo"}, "subject": {"humanID": "h"}}}"#,
        ),
    ];
    let set = match load_files(&files) {
        Ok(set) => set,
        Err(e) => panic!("{:#?}", e.problems()),
    };
    assert_eq!(
        (set.servers.len(), set.grants.len(), set.sessions.len()),
        (1, 1, 1)
    );
    let server = &set.servers[0];
    assert_eq!(server.ingress_path, "/demo/mcp");
    assert_eq!(server.mode, mcp_authz::policy::Mode::Monitor);
    let grant = &set.grants[0];
    assert_eq!(grant.subject.human.as_deref(), Some("no"));
    assert_eq!(grant.subject.team.as_deref(), Some("1234"));
    assert_eq!(grant.subject.agent, None);
    assert_eq!(grant.mode, mcp_authz::policy::Mode::Monitor);
    assert!(set.warnings.is_empty(), "{:?}", set.warnings);
}

#[test]
fn warnings_do_not_reject_the_set() {
    let text = format!(
        "{HEAD}kind: MCPAccessGrant
metadata: {{name: g}}
spec: {{serverRef: {{name: missing}}, subject: {{}}}}
---
{HEAD}kind: MCPAgentSession
metadata: {{name: s}}
spec: {{serverRef: {{name: missing}}, subject: {{agentID: a}}}}
"
    );
    let set = load_files(&[("w.yaml", text.as_bytes())]).expect("warnings only");
    let all = set.warnings;
    assert!(all.iter().all(|p| p.severity == Severity::Warning));
    has(
        &all,
        "w.yaml",
        1,
        "spec.serverRef",
        "names no loaded MCPServer (`default/missing`)",
    );
    has(&all, "w.yaml", 1, "spec.subject", "matches no one");
    has(
        &all,
        "w.yaml",
        6,
        "spec.serverRef",
        "names no loaded MCPServer",
    );
    assert!(all[0].to_string().contains(": warning: "), "{}", all[0]);
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("mcp-authz-validate-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn server_yaml(name: &str) -> String {
    format!("{HEAD}kind: MCPServer\nmetadata: {{name: {name}}}\n")
}

#[test]
fn directory_walk_follows_the_rules() {
    let dir = scratch("walk");
    fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    fs::create_dir_all(dir.join(".hidden")).unwrap();
    fs::write(dir.join("a.yaml"), server_yaml("a")).unwrap();
    fs::write(dir.join("sub/b.yml"), server_yaml("b")).unwrap();
    fs::write(dir.join("sub/deeper/c.json"), server_yaml("c")).unwrap();
    fs::write(dir.join("d.YAML"), server_yaml("d")).unwrap();
    fs::write(dir.join("notes.txt"), "not: [policy").unwrap();
    fs::write(dir.join(".e.yaml"), server_yaml("e")).unwrap();
    fs::write(dir.join(".hidden/f.yaml"), server_yaml("f")).unwrap();
    fs::write(dir.join("empty.yaml"), "").unwrap();
    let set = load_paths(&[&dir]).unwrap();
    let mut names: Vec<_> = set.servers.iter().map(|s| s.key.name.to_string()).collect();
    names.sort();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(set.files, 4);

    // The revision: path, NUL, bytes, NUL, in byte order of the relative path.
    let mut files = ["a.yaml", "empty.yaml", "sub/b.yml", "sub/deeper/c.json"];
    files.sort();
    let expected = sha256_hex(&files.iter().fold(Vec::new(), |mut acc, f| {
        acc.extend_from_slice(f.as_bytes());
        acc.push(0);
        acc.extend_from_slice(&fs::read(dir.join(f)).unwrap());
        acc.push(0);
        acc
    }));
    assert_eq!(set.revision, format!("sha256:{expected}"));
}

fn sha256_hex(bytes: &[u8]) -> String {
    let out = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(bytes)?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

#[cfg(unix)]
#[test]
fn configmap_layout_loads_each_file_once() {
    use std::os::unix::fs::symlink;
    let dir = scratch("configmap");
    let data = dir.join("..2026_11_26_10_00_00.000000001");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("servers.yaml"), server_yaml("cm")).unwrap();
    symlink("..2026_11_26_10_00_00.000000001", dir.join("..data")).unwrap();
    symlink("..data/servers.yaml", dir.join("servers.yaml")).unwrap();
    let set = load_paths(&[&dir]).unwrap();
    assert_eq!(set.servers.len(), 1);
    assert_eq!(set.files, 1);
}

#[cfg(unix)]
#[test]
fn symlinks_are_followed_and_loops_reported() {
    use std::os::unix::fs::symlink;
    let dir = scratch("loop");
    let outside = scratch("outside");
    fs::write(outside.join("x.yaml"), server_yaml("x")).unwrap();
    symlink(&outside, dir.join("linked")).unwrap();
    let set = load_paths(&[&dir]).unwrap();
    assert_eq!(&*set.servers[0].key.name, "x");

    fs::create_dir_all(dir.join("sub")).unwrap();
    symlink(&dir, dir.join("sub/back")).unwrap();
    let err = load_paths(&[&dir]).unwrap_err();
    assert!(
        err.problems()
            .iter()
            .any(|p| p.message.contains("directory loop")),
        "{:?}",
        err.problems()
    );
}

#[test]
fn paths_form_one_set_and_unreadable_paths_are_errors() {
    let dir = scratch("paths");
    fs::write(dir.join("one.yaml"), server_yaml("dup")).unwrap();
    fs::write(dir.join("two.yaml"), server_yaml("dup")).unwrap();
    let err = load_paths(&[dir.join("one.yaml"), dir.join("two.yaml")]).unwrap_err();
    assert!(
        err.problems()[0].message.contains("defined twice"),
        "{:?}",
        err.problems()
    );
    let missing = load_paths(&[Path::new("/nonexistent/policies")]).unwrap_err();
    assert!(
        missing.problems()[0]
            .to_string()
            .starts_with("/nonexistent/policies: cannot read")
    );
}

#[test]
fn hostile_files_are_rejected_with_a_clear_error() {
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        bomb.push_str(&format!(
            "a{i}: &a{i} [{}]\n",
            vec![format!("*a{}", i - 1); 10].join(", ")
        ));
    }
    let all = problems(&[("bomb.yaml", &bomb)]);
    assert!(all[0].message.contains("aliases expanded"), "{all:?}");

    let deep = format!(
        "{HEAD}kind: MCPServer\nmetadata: {}{}\n",
        "{a: ".repeat(5000),
        "}".repeat(5000)
    );
    let all = problems(&[("deep.yaml", &deep)]);
    assert!(all[0].message.contains("nesting"), "{all:?}");

    // Millions of (empty) documents run into the node limit; thousands of objects are fine.
    let endless = "---\n".repeat(1_100_000);
    let all = problems(&[("endless.yaml", &endless)]);
    assert!(all[0].message.contains("nodes"), "{all:?}");

    let many: String = (0..5000)
        .map(|i| format!("---\n{}", server_yaml(&format!("s{i}"))))
        .collect();
    let set = load_files(&[("many.yaml", many.as_bytes())]).unwrap();
    assert_eq!(set.servers.len(), 5000);
}

/// The problems of one file, rendered `FILE:LINE: KIND NS/NAME: FIELD: problem`.
fn rendered(file: &str, text: &str) -> Vec<String> {
    problems(&[(file, text)])
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .map(ToString::to_string)
        .collect()
}

#[test]
fn every_problem_of_prompts_resources_govern_and_deny_as() {
    let server = |body: &str| {
        format!("{HEAD}kind: MCPServer\nmetadata: {{name: s, namespace: ns}}\nspec:\n{body}")
    };
    let grant = |body: &str| {
        format!(
            "{HEAD}kind: MCPAccessGrant\nmetadata: {{name: g, namespace: ns}}\nspec:\n  serverRef: {{name: s}}\n  subject: {{agentID: a}}\n{body}"
        )
    };
    let s = "MCPServer ns/s";
    let g = "MCPAccessGrant ns/g";
    // (document, line, object, field, message): each document has exactly that one error.
    let cases: Vec<(String, usize, &str, &str, &str)> = vec![
        (
            server("  prompts:\n    - {requiredTrust: low}\n"),
            6,
            s,
            "spec.prompts[0].name",
            "missing",
        ),
        (
            server("  prompts:\n    - {name: p}\n    - {name: p, requiredTrust: high}\n"),
            7,
            s,
            "spec.prompts[1].name",
            "duplicate prompt `p`",
        ),
        (
            server("  prompts:\n    - {name: no}\n"),
            6,
            s,
            "spec.prompts[0].name",
            "expected a string, found a boolean (quote it)",
        ),
        (
            server("  prompts:\n    - {name: p, sideEffect: write}\n"),
            6,
            s,
            "spec.prompts[0].sideEffect",
            "unknown field",
        ),
        (
            server("  prompts:\n    - {name: p, requiredTrust: extreme}\n"),
            6,
            s,
            "spec.prompts[0].requiredTrust",
            "`extreme` is not one of `low`, `medium`, `high`",
        ),
        (
            server("  prompts:\n    - {name: p, riskLevel: max}\n"),
            6,
            s,
            "spec.prompts[0].riskLevel",
            "`max` is not one of `low`, `medium`, `high`",
        ),
        (
            server("  prompts: {name: p}\n"),
            5,
            s,
            "spec.prompts",
            "expected a sequence, found a mapping",
        ),
        (
            server("  resources:\n    - {name: handbook}\n"),
            6,
            s,
            "spec.resources[0]",
            "needs `uri` or `uriPrefix`",
        ),
        (
            server("  resources:\n    - {uri: \"kb://a\", uriPrefix: \"kb://\"}\n"),
            6,
            s,
            "spec.resources[0]",
            "has both `uri` and `uriPrefix` (give one of them)",
        ),
        (
            server("  resources:\n    - {uri: \"\"}\n"),
            6,
            s,
            "spec.resources[0].uri",
            "must not be empty",
        ),
        (
            server("  resources:\n    - {uriPrefix: ''}\n"),
            6,
            s,
            "spec.resources[0].uriPrefix",
            "must not be empty",
        ),
        (
            server("  resources:\n    - {uriPrefix: 12}\n"),
            6,
            s,
            "spec.resources[0].uriPrefix",
            "expected a string, found a number (quote it)",
        ),
        (
            server("  resources:\n    -\n      uri: \"file:///a%00b\"\n"),
            7,
            s,
            "spec.resources[0].uri",
            "`file:///a%00b` has no canonical form (percent-decoded, it is not UTF-8 or holds a NUL or a backslash)",
        ),
        (
            server("  resources:\n    - {uriPrefix: \"file:///a%5C\"}\n"),
            6,
            s,
            "spec.resources[0].uriPrefix",
            "`file:///a%5C` has no canonical form (percent-decoded, it is not UTF-8 or holds a NUL or a backslash)",
        ),
        (
            server(
                "  resources:\n    - {uri: \"file:///data/report\"}\n    - {uri: \"file:///data/x/%2E%2E/report\"}\n",
            ),
            7,
            s,
            "spec.resources[1].uri",
            "duplicate resource `file:///data/x/%2E%2E/report` (canonical form `file:///data/report`)",
        ),
        (
            server(
                "  resources:\n    - {uriPrefix: \"kb://t/\"}\n    - {uri: \"kb://t/\"}\n    - {uriPrefix: \"kb://t/\"}\n",
            ),
            8,
            s,
            "spec.resources[2].uriPrefix",
            "duplicate resource `kb://t/`",
        ),
        (
            server("  resources:\n    - {uri: \"kb://a\", sideEffect: read}\n"),
            6,
            s,
            "spec.resources[0].sideEffect",
            "unknown field",
        ),
        (
            server("  resources:\n    - {uri: \"kb://a\", name: 5}\n"),
            6,
            s,
            "spec.resources[0].name",
            "expected a string, found a number (quote it)",
        ),
        (
            server("  resources:\n    - {uri: \"kb://a\", requiredTrust: total}\n"),
            6,
            s,
            "spec.resources[0].requiredTrust",
            "`total` is not one of `low`, `medium`, `high`",
        ),
        (
            server("  policy: {govern: [prompts, resources]}\n"),
            5,
            s,
            "spec.policy.govern",
            "must contain `tools` (tool calls are always decided)",
        ),
        (
            server("  policy:\n    govern: []\n"),
            6,
            s,
            "spec.policy.govern",
            "must contain `tools` (tool calls are always decided)",
        ),
        (
            server("  policy:\n    govern:\n      - tools\n      - secrets\n"),
            8,
            s,
            "spec.policy.govern[1]",
            "`secrets` is not one of `tools`, `prompts`, `resources`",
        ),
        (
            server("  policy: {govern: [tools, prompts, TOOLS]}\n"),
            5,
            s,
            "spec.policy.govern[2]",
            "duplicate entry `TOOLS`",
        ),
        (
            server("  policy: {govern: tools}\n"),
            5,
            s,
            "spec.policy.govern",
            "expected a sequence, found a string",
        ),
        (
            server("  policy: {govern: [tools, 7]}\n"),
            5,
            s,
            "spec.policy.govern[1]",
            "expected a string, found a number (quote it)",
        ),
        (
            server("  policy:\n    denyAs: teapot\n"),
            6,
            s,
            "spec.policy.denyAs",
            "`teapot` is not one of `http-status`, `jsonrpc-error`, `tool-error`",
        ),
        (
            server("  policy: {deny_as: http-status}\n"),
            5,
            s,
            "spec.policy.deny_as",
            "unknown field",
        ),
        (
            grant("  promptRules:\n    - {name: p}\n    - {name: p, decision: deny}\n"),
            9,
            g,
            "spec.promptRules[1].name",
            "duplicate rule `p`",
        ),
        (
            grant("  promptRules:\n    - {decision: deny}\n"),
            8,
            g,
            "spec.promptRules[0].name",
            "missing",
        ),
        (
            grant("  promptRules:\n    - {name: 1234}\n"),
            8,
            g,
            "spec.promptRules[0].name",
            "expected a string, found a number (quote it)",
        ),
        (
            grant("  promptRules:\n    - {name: p, decision: maybe}\n"),
            8,
            g,
            "spec.promptRules[0].decision",
            "`maybe` is not one of `allow`, `deny`",
        ),
        (
            grant("  promptRules:\n    - {name: p, uri: \"kb://a\"}\n"),
            8,
            g,
            "spec.promptRules[0].uri",
            "unknown field",
        ),
        (
            grant("  resourceRules:\n    - {decision: deny}\n"),
            8,
            g,
            "spec.resourceRules[0]",
            "needs `uri` or `uriPrefix`",
        ),
        (
            grant("  resourceRules:\n    - {uri: \"kb://a\", uriPrefix: \"kb://\"}\n"),
            8,
            g,
            "spec.resourceRules[0]",
            "has both `uri` and `uriPrefix` (give one of them)",
        ),
        (
            grant("  resourceRules:\n    - {uriPrefix: \"\"}\n"),
            8,
            g,
            "spec.resourceRules[0].uriPrefix",
            "must not be empty",
        ),
        (
            grant("  resourceRules:\n    - {uri: \"kb://%FF\"}\n"),
            8,
            g,
            "spec.resourceRules[0].uri",
            "`kb://%FF` has no canonical form (percent-decoded, it is not UTF-8 or holds a NUL or a backslash)",
        ),
        (
            grant(
                "  resourceRules:\n    - {uri: \"kb://a/b\"}\n    - {uri: \"kb://a/./b\", decision: deny}\n",
            ),
            9,
            g,
            "spec.resourceRules[1].uri",
            "duplicate rule `kb://a/./b` (canonical form `kb://a/b`)",
        ),
        (
            grant(
                "  resourceRules:\n    - {uriPrefix: \"kb://a/\"}\n    - {uri: \"kb://a/\"}\n    - {uriPrefix: \"kb://a/\"}\n",
            ),
            10,
            g,
            "spec.resourceRules[2].uriPrefix",
            "duplicate rule `kb://a/`",
        ),
        (
            grant("  resourceRules:\n    - {uri: \"kb://a\", name: a}\n"),
            8,
            g,
            "spec.resourceRules[0].name",
            "unknown field",
        ),
        (
            grant("  resourceRules:\n    - {uri: \"kb://a\", requiredTrust: max}\n"),
            8,
            g,
            "spec.resourceRules[0].requiredTrust",
            "`max` is not one of `low`, `medium`, `high`",
        ),
        (
            grant("  resourceRules: kb://a\n"),
            7,
            g,
            "spec.resourceRules",
            "expected a sequence, found a string",
        ),
    ];
    for (i, (document, line, object, field, message)) in cases.iter().enumerate() {
        let file = format!("case-{i}.yaml");
        assert_eq!(
            rendered(&file, document),
            [format!("{file}:{line}: {object}: {field}: {message}")],
            "{document}"
        );
    }
}

#[test]
fn prompts_resources_govern_and_deny_as_load() {
    use mcp_authz::policy::{DenyAs, Entry, Governs, Primitive, RiskLevel, Rule, RuleDecision};
    use mcp_authz::policy::{SideEffect, Trust};
    let text = format!(
        "{HEAD}kind: MCPServer
metadata: {{name: docs, namespace: kb}}
spec:
  tools:
    - {{name: search, sideEffect: read}}
  prompts:
    - {{name: summarize, requiredTrust: MEDIUM, riskLevel: low, description: d, labels: {{a: b}}, arguments: [{{name: topic, required: true}}]}}
    - {{name: greet, arguments: whatever}}
  resources:
    - {{uri: \"kb://handbook/./intro\", name: Handbook, mimeType: text/markdown, labels: [x]}}
    - {{uriPrefix: \"kb://tickets/\", requiredTrust: high}}
    - {{uri: \"kb://tickets/\", description: the index itself}}
  policy: {{govern: [Tools, resources, PROMPTS], denyAs: JSONRPC-Error}}
---
{HEAD}kind: MCPServer
metadata: {{name: plain, namespace: kb}}
spec:
  policy: {{govern: [tools], denyAs: tool-error}}
---
{HEAD}kind: MCPServer
metadata: {{name: defaults, namespace: kb}}
---
{HEAD}kind: MCPAccessGrant
metadata: {{name: readers, namespace: kb}}
spec:
  serverRef: {{name: docs}}
  subject: {{agentID: reader-bot}}
  promptRules:
    - {{name: summarize, requiredTrust: medium}}
    - {{name: greet, decision: deny}}
  resourceRules:
    - {{uri: \"kb://handbook/%69ntro\"}}
    - {{uriPrefix: \"kb://tickets/\", decision: DENY}}
    - {{uri: \"kb://tickets/\"}}
"
    );
    let set = match load_files(&[("p.yaml", text.as_bytes())]) {
        Ok(set) => set,
        Err(e) => panic!("{:#?}", e.problems()),
    };
    let server = |name: &str| set.servers.iter().find(|s| &*s.key.name == name).unwrap();
    let entry = |name: &str, prefix: bool, required_trust: Trust, risk_level| Entry {
        name: name.into(),
        prefix,
        required_trust,
        side_effect: Some(SideEffect::Read),
        risk_level,
    };
    let docs = server("docs");
    assert_eq!(
        docs.govern,
        Governs {
            prompts: true,
            resources: true
        }
    );
    assert_eq!(docs.deny_as, DenyAs::JsonrpcError);
    assert_eq!(
        docs.prompts,
        [
            entry("summarize", false, Trust::Medium, Some(RiskLevel::Low)),
            entry("greet", false, Trust::Low, None),
        ]
    );
    assert_eq!(
        docs.resources,
        [
            entry("kb://handbook/intro", false, Trust::Low, None),
            entry("kb://tickets/", true, Trust::High, None),
            entry("kb://tickets/", false, Trust::Low, None),
        ]
    );
    assert_eq!(docs.entries(Primitive::Tool)[0].name, "search");
    assert_eq!(
        (server("plain").govern, server("plain").deny_as),
        (Governs::TOOLS_ONLY, DenyAs::ToolError)
    );
    assert_eq!(
        (server("defaults").govern, server("defaults").deny_as),
        (Governs::TOOLS_ONLY, DenyAs::HttpStatus)
    );
    let rule = |name: &str, prefix: bool, decision, required_trust| Rule {
        name: name.into(),
        prefix,
        decision,
        required_trust,
    };
    let grant = &set.grants[0];
    assert_eq!(
        grant.prompt_rules,
        [
            rule("summarize", false, RuleDecision::Allow, Trust::Medium),
            rule("greet", false, RuleDecision::Deny, Trust::Low),
        ]
    );
    assert_eq!(
        grant.resource_rules,
        [
            rule(
                "kb://handbook/intro",
                false,
                RuleDecision::Allow,
                Trust::Low
            ),
            rule("kb://tickets/", true, RuleDecision::Deny, Trust::Low),
            rule("kb://tickets/", false, RuleDecision::Allow, Trust::Low),
        ]
    );
    assert!(grant.tool_rules.is_empty());
    // Rules are found by the canonical form of the called URI.
    assert_eq!(
        grant
            .rule_for(Primitive::Resource, "kb://tickets/7")
            .map(|r| r.decision),
        Some(RuleDecision::Deny)
    );
    assert!(set.warnings.is_empty(), "{:?}", set.warnings);
}

#[test]
fn the_conformance_primitives_policy_loads_without_problems() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/policies");
    let text = fs::read(dir.join("primitives.yaml")).unwrap();
    let set = match load_files(&[("primitives.yaml", &text)]) {
        Ok(set) => set,
        Err(e) => panic!("{:#?}", e.problems()),
    };
    assert!(set.warnings.is_empty(), "{:?}", set.warnings);
    let docs = set
        .servers
        .iter()
        .find(|s| s.key.full.as_ref() == "kb/docs")
        .unwrap();
    assert!(docs.govern.prompts && docs.govern.resources);
    assert_eq!(
        (docs.prompts.len(), docs.resources.len()),
        (2, 3),
        "{docs:?}"
    );
    assert_eq!(set.grants.len(), 4);
}
