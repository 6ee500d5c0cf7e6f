//! Policy files that nest deeply, in every YAML construct: `mcp-authz validate` reports each as
//! a `FILE:LINE:` problem, and a running `serve` rejects each on reload and keeps answering from
//! the last good set. Before nesting was bounded while parsing, the block forms overflowed the
//! stack (SIGABRT) in both.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test harness: a panic is the report

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{BIN, Server, check_raw, conformance_dir, metadata_str, scratch_dir, tool_call};
use mcp_authz::policy::load::MAX_FILE_BYTES;
use mcp_authz::proto::auth::CheckResponse;

const PROBLEM: &str = "nesting deeper than 64 levels";

/// Five lines; what follows `tools:` starts on line 6, at the third level of nesting.
const SERVER: &str = "apiVersion: mcpruntime.org/v1alpha1\nkind: MCPServer\n\
                      metadata: {name: hostile, namespace: labs}\nspec:\n  tools:\n";
const GRANT: &str = "apiVersion: mcpruntime.org/v1alpha1\nkind: MCPAccessGrant\n\
                     metadata: {name: hostile, namespace: mcp-servers}\nspec:\n  toolRules:\n";

/// A hostile file: what it is called, its text, and the line its 65th level opens on.
struct Hostile {
    name: &'static str,
    text: String,
    line: usize,
}

/// `head`, then `open` and `close` repeated around `middle` as often as one policy file holds;
/// panics unless that reaches `at_least` levels.
fn to_the_cap(head: &str, open: &str, middle: &str, close: &str, at_least: usize) -> String {
    let room = MAX_FILE_BYTES as usize - head.len() - middle.len() - 1;
    let levels = room / (open.len() + close.len());
    assert!(levels >= at_least, "{open:?}: only {levels} levels");
    let text = format!(
        "{head}{}{middle}{}\n",
        open.repeat(levels),
        close.repeat(levels)
    );
    assert!(text.len() as u64 <= MAX_FILE_BYTES);
    text
}

/// Mappings nested by indentation, one level per line and one column deeper each time, as many
/// as one policy file holds (the text grows with the square of the depth).
fn indented_mappings() -> String {
    let mut text = SERVER.to_string();
    let mut column = 4;
    while (text.len() + column + "a:\n".len()) as u64 <= MAX_FILE_BYTES {
        text.push_str(&" ".repeat(column));
        text.push_str("a:\n");
        column += 1;
    }
    assert!(column > 5_000, "only {column} levels");
    text
}

fn flow(levels: usize) -> String {
    format!("{}x{}", "[{a: ".repeat(levels), "}]".repeat(levels))
}

fn hostile_files() -> Vec<Hostile> {
    let indented = format!("{SERVER}    ");
    let deep_seq = |levels| format!("{indented}{}x\n", "- ".repeat(levels));
    vec![
        Hostile {
            name: "reported-tools.yaml",
            text: deep_seq(100_000),
            line: 6,
        },
        Hostile {
            name: "reported-tool-rules.yaml",
            text: format!("{GRANT}    {}x\n", "- ".repeat(50_000)),
            line: 6,
        },
        Hostile {
            name: "block-sequence.yaml",
            text: to_the_cap(&indented, "- ", "x", "", 1_000_000),
            line: 6,
        },
        // Levels 3, 4, … open on lines 6, 7, …
        Hostile {
            name: "block-mapping.yaml",
            text: indented_mappings(),
            line: 68,
        },
        Hostile {
            name: "compact-block-mapping.yaml",
            text: to_the_cap(&indented, "? ", "x", "", 1_000_000),
            line: 6,
        },
        Hostile {
            name: "flow-sequence.yaml",
            text: to_the_cap(&indented, "[", "", "]", 1_000_000),
            line: 6,
        },
        Hostile {
            name: "flow-mapping.yaml",
            text: to_the_cap(&indented, "{a: ", "x", "}", 1_000_000),
            line: 6,
        },
        // Neither part is too deep alone: 40 block levels, then 40 flow levels.
        Hostile {
            name: "block-then-flow.yaml",
            text: format!("{SERVER}    {}{}\n", "- ? ".repeat(20), flow(20)),
            line: 6,
        },
        Hostile {
            name: "inside-an-anchor.yaml",
            text: format!(
                "{SERVER}    - &deep\n      {}x\n    - *deep\n",
                "- ".repeat(100_000)
            ),
            line: 7,
        },
        // 43 levels where the anchor is defined, 73 where the alias repeats it.
        Hostile {
            name: "alias-of-a-deep-anchor.yaml",
            text: format!(
                "{SERVER}    - &a {}x{}\n    - {}*a{}\n",
                "[".repeat(40),
                "]".repeat(40),
                "[".repeat(30),
                "]".repeat(30)
            ),
            line: 7,
        },
        // Each anchor wraps an alias of the one before: depth would stack up 60 levels a line.
        Hostile {
            name: "stacked-aliases.yaml",
            text: (1..200).fold(
                format!("{SERVER}    - &a0 {}x{}\n", "[".repeat(60), "]".repeat(60)),
                |text, i| {
                    format!(
                        "{text}    - &a{i} {}*a{}{}\n",
                        "[".repeat(60),
                        i - 1,
                        "]".repeat(60)
                    )
                },
            ),
            line: 7,
        },
    ]
}

/// The problem line `FILE:LINE: … nesting deeper than 64 levels` for `file`.
fn problem_in<'a>(output: &'a str, file: &Path, line: usize) -> Option<&'a str> {
    let place = format!("{}:{line}: ", file.display());
    output
        .lines()
        .find(|l| l.contains(&place) && l.ends_with(PROBLEM))
}

#[test]
fn validate_reports_every_hostile_file_as_a_problem() {
    let dir = scratch_dir("hostile-policy-validate");
    for hostile in hostile_files() {
        let path = dir.join(hostile.name);
        fs::write(&path, &hostile.text).unwrap();
        let output = Command::new(BIN)
            .arg("validate")
            .arg(&path)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        // A crash has no exit code (killed by SIGABRT) or 101 (panic).
        assert_eq!(output.status.code(), Some(1), "{}: {text}", hostile.name);
        assert!(
            problem_in(&text, &path, hostile.line).is_some(),
            "{}: no `{}:{}: … {PROBLEM}` in {text}",
            hostile.name,
            path.display(),
            hostile.line
        );
        fs::remove_file(&path).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_rejects_every_hostile_file_and_keeps_the_last_good_set() {
    let dir = scratch_dir("hostile-policy-serve");
    for entry in fs::read_dir(conformance_dir().join("policies")).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    let mut server = Server::start(&dir, &[]);
    let channel = server.channel().await;
    let allowed = || {
        tool_call(
            "/demo/mcp",
            &[("x-mcp-human-id", "h1"), ("x-mcp-agent-id", "a1")],
            "echo",
        )
    };
    let decision =
        |response: CheckResponse| metadata_str(&response, "decision").map(str::to_string);
    let first = check_raw(&channel, allowed()).await.unwrap();
    assert_eq!(decision(first).as_deref(), Some("allow"));

    for (n, hostile) in hostile_files().into_iter().enumerate() {
        // Written aside and renamed in, so no reload reads half a file.
        let staged = dir.join(".staged");
        let path = dir.join(hostile.name);
        fs::write(&staged, &hostile.text).unwrap();
        fs::rename(&staged, &path).unwrap();
        assert!(
            server.wait_log("policy reload rejected", n + 1, Duration::from_secs(30)),
            "{}: no rejected reload in {:?}",
            hostile.name,
            server.log.lock().unwrap()
        );
        let logged = || {
            let log = server.log.lock().unwrap().join("\n");
            problem_in(&log, &path, hostile.line).is_some()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !logged() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            logged(),
            "{}: no `{}:{}: … {PROBLEM}` in the log",
            hostile.name,
            path.display(),
            hostile.line
        );
        let response = check_raw(&channel, allowed()).await.unwrap();
        assert_eq!(
            decision(response).as_deref(),
            Some("allow"),
            "{}: the last good set answers",
            hostile.name
        );
        fs::remove_file(&path).unwrap();
        assert!(
            server.wait_log("policy reloaded", n + 1, Duration::from_secs(30)),
            "{}: no reload after removing it",
            hostile.name
        );
    }
    assert!(server.child.try_wait().unwrap().is_none(), "serve exited");
}
