//! `deploy/grafana/mcp-authz.json` is a Grafana dashboard over what mcp-authz really exports:
//! every metric and label that its queries name is on the running binary's `/metrics`, and the
//! JSON has what Grafana needs (panel ids, targets, datasource references, defined variables).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test harness: a panic is the report

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::install::npm_package;
use common::manifests::deploy;
use common::{Server, admin_addr, check_raw, http_get, tool_call};
use serde_json::Value;

/// Metric name (as sampled: `_total`, `_bucket`, …) → the label names on its samples.
type Exported = BTreeMap<String, BTreeSet<String>>;

/// The samples of a Prometheus or OpenMetrics text exposition.
fn exported(exposition: &str) -> Exported {
    let mut out = Exported::new();
    for line in exposition.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..name_end].to_string()).or_default();
        let Some(rest) = line[name_end..].strip_prefix('{') else {
            continue;
        };
        // name="value",…} — values are quoted, with `\"` and `\\` escapes.
        let mut chars = rest.chars();
        loop {
            let name: String = chars.by_ref().take_while(|&c| c != '=').collect();
            let name = name.trim_start_matches(',').to_string();
            if name.is_empty() || name.starts_with('}') {
                break;
            }
            assert_eq!(chars.next(), Some('"'), "{line}");
            let mut escaped = false;
            for c in chars.by_ref() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '"' if !escaped => break,
                    _ => escaped = false,
                }
            }
            labels.insert(name);
        }
    }
    out
}

#[derive(Debug, PartialEq)]
enum Token {
    Ident(String),
    Punct(String),
    /// A string, a number, a range `[…]` or a Grafana variable: nothing named.
    Other,
}

fn tokens(expr: &str) -> Vec<Token> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        i += 1;
        match c {
            c if c.is_whitespace() => continue,
            '"' | '\'' | '`' => {
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
                out.push(Token::Other);
            }
            '[' => {
                while i < chars.len() && chars[i] != ']' {
                    i += 1;
                }
                i += 1;
                out.push(Token::Other);
            }
            '$' => {
                while i < chars.len() && (ident(chars[i]) || "{}".contains(chars[i])) {
                    i += 1;
                }
                out.push(Token::Other);
            }
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
                out.push(Token::Other);
            }
            c if ident(c) => {
                while i < chars.len() && ident(chars[i]) {
                    i += 1;
                }
                out.push(Token::Ident(chars[start..i].iter().collect()));
            }
            '=' | '!' | '<' | '>' => {
                while i < chars.len() && "=~".contains(chars[i]) {
                    i += 1;
                }
                out.push(Token::Punct(chars[start..i].iter().collect()));
            }
            _ => out.push(Token::Punct(c.to_string())),
        }
    }
    out
}

/// What a PromQL expression names: each series selector's metric with the labels it matches
/// on, and the labels of `by (…)`, `without`, `on`, `ignoring`, `group_left`/`group_right`.
#[derive(Debug, Default)]
struct Names {
    selectors: Vec<(String, Vec<String>)>,
    grouping: Vec<String>,
}

const GROUPING: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const KEYWORDS: [&str; 5] = ["and", "or", "unless", "offset", "bool"];

fn names(expr: &str) -> Names {
    let tokens = tokens(expr);
    let punct = |i: usize, p: &str| matches!(tokens.get(i), Some(Token::Punct(q)) if q == p);
    let mut names = Names::default();
    let mut i = 0;
    while i < tokens.len() {
        let Token::Ident(word) = &tokens[i] else {
            assert!(
                !punct(i, "{"),
                "a selector without a metric name in `{expr}`"
            );
            i += 1;
            continue;
        };
        i += 1;
        if GROUPING.contains(&word.as_str()) && punct(i, "(") {
            while !punct(i, ")") {
                if let Some(Token::Ident(label)) = tokens.get(i) {
                    names.grouping.push(label.clone());
                }
                i += 1;
            }
        } else if punct(i, "(")
            || matches!(tokens.get(i), Some(Token::Ident(next)) if next == "by" || next == "without")
            || KEYWORDS.contains(&word.as_str())
        {
            // a function, an aggregation (`sum by (…) (…)`) or an operator
        } else {
            let mut labels = Vec::new();
            if punct(i, "{") {
                while !punct(i, "}") {
                    if let (Some(Token::Ident(label)), Some(Token::Punct(op))) =
                        (tokens.get(i), tokens.get(i + 1))
                        && ["=", "!=", "=~", "!~"].contains(&op.as_str())
                    {
                        labels.push(label.clone());
                    }
                    i += 1;
                }
            }
            names.selectors.push((word.clone(), labels));
        }
    }
    names
}

/// A dashboard query as Grafana holds it: a panel target's PromQL, or a variable's
/// `label_values(SELECTOR, LABEL)`, whose label must be on the selector's metric.
fn query_names(query: &str) -> Names {
    let Some(args) = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
    else {
        return names(query);
    };
    let (selector, label) = args.rsplit_once(',').unwrap();
    let mut names = names(selector);
    assert_eq!(names.selectors.len(), 1, "{query}");
    names.selectors[0].1.push(label.trim().to_string());
    names
}

/// Every query of the dashboard: panel targets and query variables.
fn queries(dashboard: &Value) -> Vec<String> {
    let targets = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .map(|t| t["expr"].as_str().unwrap().to_string());
    let variables = variables(dashboard)
        .filter(|v| v["type"] == "query")
        .map(|v| v["query"]["query"].as_str().unwrap().to_string());
    targets.chain(variables).collect()
}

fn variables(dashboard: &Value) -> impl Iterator<Item = &Value> {
    dashboard["templating"]["list"].as_array().unwrap().iter()
}

/// What the dashboard's queries name that `exported` does not have.
fn unexported(dashboard: &Value, exported: &Exported) -> Vec<String> {
    let mut problems = Vec::new();
    for query in queries(dashboard) {
        let names = query_names(&query);
        if names.selectors.is_empty() {
            problems.push(format!("`{query}` names no metric"));
        }
        for (metric, labels) in &names.selectors {
            let Some(exported_labels) = exported.get(metric) else {
                problems.push(format!("`{metric}` is not exported"));
                continue;
            };
            for label in labels {
                if !exported_labels.contains(label) {
                    problems.push(format!("`{metric}` has no label `{label}`"));
                }
            }
        }
        for label in &names.grouping {
            let on_some_metric = names
                .selectors
                .iter()
                .any(|(m, _)| exported.get(m).is_some_and(|l| l.contains(label)));
            if !on_some_metric {
                problems.push(format!("no metric of `{query}` has label `{label}`"));
            }
        }
    }
    problems
}

/// Prometheus's own PromQL grammar, as its web UI parses queries with it.
const LEZER_PROMQL: &str = "0.315.0";

/// The queries that the PromQL grammar does not parse, each with where it stops. Grafana's
/// range variables become durations first; a variable's `label_values(SELECTOR, LABEL)` is
/// Grafana's, so only its selector is PromQL.
fn unparsable(queries: &[String]) -> Vec<String> {
    let prefix = npm_package("lezer-promql", "@prometheus-io/lezer-promql", LEZER_PROMQL);
    let promql: Vec<String> = queries
        .iter()
        .map(|q| {
            let q = q
                .strip_prefix("label_values(")
                .and_then(|args| Some(args.rsplit_once(',')?.0))
                .unwrap_or(q);
            q.replace("$__rate_interval", "5m")
                .replace("$__range", "7d")
                .replace("$__interval", "1m")
        })
        .collect();
    let script = r#"
        const { parser } = require("@prometheus-io/lezer-promql");
        const failed = [];
        for (const query of JSON.parse(require("fs").readFileSync(0, "utf8"))) {
            let at = null;
            parser.parse(query).iterate({ enter(node) {
                if (node.type.isError && at === null) at = node.from;
            } });
            if (at !== null) failed.push(`${query} (at ${at})`);
        }
        console.log(JSON.stringify(failed));
    "#;
    let mut node = Command::new("node")
        .args(["-e", script])
        .current_dir(&prefix)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run node");
    node.stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&promql).unwrap().as_bytes())
        .unwrap();
    let out = node.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

fn dashboard_text() -> String {
    std::fs::read_to_string(deploy().join("grafana/mcp-authz.json")).unwrap()
}

/// mcp-authz serving `deploy/policies` after a few Checks and a reload: its `/metrics` text.
async fn scrape_after_some_checks() -> String {
    let server = Server::start(
        &deploy().join("policies"),
        &["--admin-listen", "127.0.0.1:0"],
    );
    let channel = server.channel().await;
    let support = [
        ("x-mcp-agent-id", "support-bot"),
        ("x-mcp-team-id", "support"),
    ];
    let triage = [("x-mcp-agent-id", "triage-bot")];
    for (path, headers, tool) in [
        ("/demo/mcp", &support[..], "search"),
        // The triage grant is in monitor mode and allows only reads: a would-deny.
        ("/demo/mcp", &triage[..], "create_ticket"),
        ("/unknown/mcp", &support[..], "search"),
    ] {
        check_raw(&channel, tool_call(path, headers, tool))
            .await
            .unwrap();
    }
    server.signal("HUP");
    assert!(server.wait_log("policy reloaded", 1, Duration::from_secs(10)));
    let (status, metrics) = http_get(&admin_addr(&server), "/metrics");
    assert_eq!(status, 200);
    metrics
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_and_label_the_dashboard_queries_is_exported() {
    let exported = exported(&scrape_after_some_checks().await);
    // The scrape has what the queries need to be checked against, would-denies included.
    for (metric, label) in [
        ("mcp_authz_would_deny_total", "grant"),
        ("mcp_authz_grant_info", "mode"),
        ("mcp_authz_check_duration_seconds_bucket", "le"),
        ("mcp_authz_policy_reloads_total", "result"),
    ] {
        assert!(exported[metric].contains(label), "{metric}: {exported:?}");
    }

    let text = dashboard_text();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    assert!(queries(&dashboard).len() >= 10);
    assert_eq!(unexported(&dashboard, &exported), Vec::<String>::new());

    // The check sees a misspelt metric, selector label or grouping label.
    for (from, to, problem) in [
        (
            "mcp_authz_would_deny_total{",
            "mcp_authz_would_denies_total{",
            "`mcp_authz_would_denies_total` is not exported",
        ),
        (
            r#"{result="failure"}"#,
            r#"{results="failure"}"#,
            "`mcp_authz_policy_reloads_total` has no label `results`",
        ),
        (
            "sum by (le, decision)",
            "sum by (le, verdict)",
            "has label `verdict`",
        ),
        (
            "label_values(mcp_authz_grant_info, server)",
            "label_values(mcp_authz_grant_info, servers)",
            "`mcp_authz_grant_info` has no label `servers`",
        ),
    ] {
        // As the JSON text spells them, quotes escaped.
        let escaped = |s: &str| {
            let quoted = serde_json::to_string(s).unwrap();
            quoted[1..quoted.len() - 1].to_string()
        };
        let edited = text.replace(&escaped(from), &escaped(to));
        assert!(edited != text, "the dashboard has no `{from}`");
        let problems = unexported(&serde_json::from_str(&edited).unwrap(), &exported);
        assert!(
            problems.iter().any(|p| p.contains(problem)),
            "`{from}` → `{to}`: {problems:?}"
        );
    }
}

#[test]
fn every_query_is_promql() {
    let dashboard: Value = serde_json::from_str(&dashboard_text()).unwrap();
    let queries = queries(&dashboard);
    assert_eq!(unparsable(&queries), Vec::<String>::new());

    // The grammar does reject: a parenthesis left open, a word that is no operator.
    let broken = [
        "sum by (reason (rate(mcp_authz_decisions_total[5m]))".to_string(),
        "mcp_authz_grant_info unles mcp_authz_would_deny_total".to_string(),
    ];
    assert_eq!(unparsable(&broken).len(), 2, "{broken:?}");
}

#[test]
fn the_tokenizer_finds_metrics_and_labels_and_skips_the_rest() {
    let names = names(
        r#"histogram_quantile(0.99, sum by (le, decision) (rate(a_bucket{x=~"$v", y!="}"}[$__rate_interval] offset 1h))) unless on (z) b or vector(0)"#,
    );
    assert_eq!(
        names.selectors,
        [
            (
                "a_bucket".to_string(),
                vec!["x".to_string(), "y".to_string()]
            ),
            ("b".to_string(), vec![]),
        ]
    );
    assert_eq!(names.grouping, ["le", "decision", "z"]);
}

#[test]
fn the_dashboard_is_grafana_json() {
    let dashboard: Value = serde_json::from_str(&dashboard_text()).unwrap();
    let schema = dashboard["schemaVersion"].as_u64().unwrap();
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    for key in ["uid", "title"] {
        assert!(!dashboard[key].as_str().unwrap().is_empty(), "{key}");
    }

    // A Prometheus datasource variable, and every other variable and panel refers to it.
    let datasource = variables(&dashboard)
        .find(|v| v["type"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(datasource["query"], "prometheus");
    let reference = serde_json::json!({
        "type": "prometheus",
        "uid": format!("${{{}}}", datasource["name"].as_str().unwrap()),
    });
    let mut defined: BTreeSet<String> = variables(&dashboard)
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    for variable in variables(&dashboard).filter(|v| v["type"] == "query") {
        assert_eq!(variable["datasource"], reference, "{variable}");
        assert!(
            variable["query"]["query"]
                .as_str()
                .unwrap()
                .starts_with("label_values(")
        );
    }
    for name in ["server", "grant"] {
        assert!(defined.contains(name), "no `{name}` variable");
    }
    defined.extend(["__range", "__rate_interval", "__interval"].map(String::from));

    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    let mut areas: Vec<[u64; 4]> = Vec::new();
    for panel in panels {
        let id = panel["id"].as_u64().expect("every panel has an id");
        assert!(ids.insert(id), "panel id {id} twice");
        let title = panel["title"].as_str().unwrap();
        assert!(!title.is_empty(), "panel {id} has no title");
        let grid = ["x", "y", "w", "h"].map(|k| panel["gridPos"][k].as_u64().unwrap());
        assert!(grid[0] + grid[2] <= 24, "{title}: wider than the grid");
        for other in &areas {
            let apart = grid[0] + grid[2] <= other[0]
                || other[0] + other[2] <= grid[0]
                || grid[1] + grid[3] <= other[1]
                || other[1] + other[3] <= grid[1];
            assert!(apart, "{title} overlaps another panel");
        }
        areas.push(grid);
        if panel["type"] == "row" {
            continue;
        }
        assert!(
            ["timeseries", "table", "stat"].contains(&panel["type"].as_str().unwrap()),
            "{title}: {}",
            panel["type"]
        );
        assert_eq!(panel["datasource"], reference, "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has no targets");
        let mut ref_ids = BTreeSet::new();
        for target in targets {
            assert!(ref_ids.insert(target["refId"].as_str().unwrap()), "{title}");
            assert_eq!(target["datasource"], reference, "{title}");
            let expr = target["expr"].as_str().unwrap();
            for used in expr.split('$').skip(1) {
                let name: String = used
                    .trim_start_matches('{')
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(defined.contains(&name), "{title}: `${name}` is not defined");
            }
        }
    }
    for title in [
        "Decisions by reason and mode",
        "Would-denies per grant",
        "Safe to flip: monitor grants without a would-deny in the range",
        "Check latency percentiles",
        "Reload failures in the range",
        "Dropped audit spans in the range",
    ] {
        assert!(
            panels.iter().any(|p| p["title"] == title),
            "no panel `{title}`"
        );
    }
}
