//! Hot reload against the running binary: every kind of change flips the same Check, invalid
//! updates keep the last good set, ConfigMap swaps, SIGHUP, and reloads under load.

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Server, check_raw, scratch_dir, tool_call, verdict};
use tonic::transport::Channel;

const SERVER: &str = "apiVersion: mcpruntime.org/v1alpha1
kind: MCPServer
metadata: {name: demo, namespace: ns}
spec:
  ingressPath: /demo/mcp
  tools: [{name: echo, sideEffect: read}]
";

fn grant(name: &str, agent: &str, decision: &str) -> String {
    format!(
        "apiVersion: mcpruntime.org/v1alpha1
kind: MCPAccessGrant
metadata: {{name: {name}, namespace: ns}}
spec:
  serverRef: {{name: demo}}
  subject: {{agentID: {agent}}}
  allowedSideEffects: [read]
  toolRules: [{{name: echo, decision: {decision}}}]
"
    )
}

async fn answer(channel: &Channel, agent: &str) -> (String, String, String) {
    let request = tool_call("/demo/mcp", &[("x-mcp-agent-id", agent)], "echo");
    verdict(&check_raw(channel, request).await.expect("Check answers"))
}

/// Polls until `agent`'s answer has `reason`; returns how long that took.
async fn until(channel: &Channel, agent: &str, reason: &str, what: &str) -> Duration {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        if answer(channel, agent).await.1 == reason {
            let took = started.elapsed();
            println!("reload latency, {what}: {} ms", took.as_millis());
            return took;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "{what}: `{agent}` never got `{reason}` within 5 s (last: {:?})",
        answer(channel, agent).await
    );
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_change_flips_the_answer() {
    let dir = scratch_dir("reload-kinds");
    fs::write(dir.join("server.yaml"), SERVER).unwrap();
    fs::write(dir.join("grants.yaml"), grant("g1", "a1", "allow")).unwrap();
    let server = Server::start(&dir, &[]);
    let channel = server.channel().await;
    assert_eq!(answer(&channel, "a1").await.1, "allowed");

    fs::write(dir.join("grants.yaml"), grant("g1", "a1", "deny")).unwrap();
    until(&channel, "a1", "tool_denied", "edit in place").await;

    write_atomically(&dir.join("grants.yaml"), &grant("g1", "a1", "allow"));
    until(&channel, "a1", "allowed", "rename into place").await;

    fs::write(dir.join("extra.yml"), grant("g2", "a2", "allow")).unwrap();
    until(&channel, "a2", "allowed", "new file").await;

    fs::remove_file(dir.join("extra.yml")).unwrap();
    until(&channel, "a2", "no_matching_grant", "deleted file").await;

    fs::create_dir_all(dir.join("team/nested")).unwrap();
    fs::write(dir.join("team/nested/g3.json"), grant("g3", "a3", "allow")).unwrap();
    until(&channel, "a3", "allowed", "new sub-directory").await;

    fs::rename(dir.join("team"), dir.join(".team-disabled")).unwrap();
    until(
        &channel,
        "a3",
        "no_matching_grant",
        "directory renamed away",
    )
    .await;

    // A changed mode is logged as a security event.
    let mut monitor = grant("g1", "a1", "allow");
    monitor.push_str("  mode: monitor\n");
    fs::write(dir.join("grants.yaml"), &monitor).unwrap();
    assert!(server.wait_log("policy mode changed", 1, Duration::from_secs(5)));
    let line = server.find_log("policy mode changed").unwrap();
    assert!(
        line.contains("ns/g1")
            && line.contains("from=\"enforce\"")
            && line.contains("to=\"monitor\""),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_updates_keep_the_last_good_set() {
    let dir = scratch_dir("reload-invalid");
    fs::write(dir.join("server.yaml"), SERVER).unwrap();
    fs::write(dir.join("grants.yaml"), grant("g1", "a1", "allow")).unwrap();
    let server = Server::start(&dir, &[]);
    let channel = server.channel().await;
    let good = answer(&channel, "a1").await;
    assert_eq!(good.1, "allowed");

    for (n, broken) in [
        "apiVersion: mcpruntime.org/v1alpha1\nkind: [MCPAccessGrant\n".to_string(),
        grant("g1", "a1", "allow").replace(
            "allowedSideEffects: [read]",
            "allowedSideEffects: [read, teleport]",
        ),
    ]
    .iter()
    .enumerate()
    {
        fs::write(dir.join("grants.yaml"), broken).unwrap();
        assert!(
            server.wait_log("policy reload rejected", n + 1, Duration::from_secs(5)),
            "no rejection logged"
        );
        assert_eq!(
            answer(&channel, "a1").await,
            good,
            "the last good set answers"
        );
        let status = common::authorization_health(&channel).await;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }
    assert!(
        server.wait_log("teleport", 1, Duration::from_secs(10)),
        "the problem itself is logged"
    );

    fs::write(dir.join("grants.yaml"), grant("g1", "a1", "deny")).unwrap();
    until(&channel, "a1", "tool_denied", "fixed file").await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_volume_swaps() {
    use std::os::unix::fs::symlink;
    let dir = scratch_dir("reload-configmap");
    let write_version = |version: &str, decision: &str| {
        let data = dir.join(version);
        fs::create_dir_all(&data).unwrap();
        fs::write(data.join("server.yaml"), SERVER).unwrap();
        fs::write(data.join("grants.yaml"), grant("g1", "a1", decision)).unwrap();
    };
    write_version("..2026_11_26_10_00_00.000000001", "allow");
    symlink("..2026_11_26_10_00_00.000000001", dir.join("..data")).unwrap();
    symlink("..data/server.yaml", dir.join("server.yaml")).unwrap();
    symlink("..data/grants.yaml", dir.join("grants.yaml")).unwrap();

    let server = Server::start(&dir, &[]);
    let loaded = server.find_log("policy loaded").unwrap();
    assert!(
        loaded.contains("files=2") && loaded.contains("grants=1"),
        "each file once: {loaded}"
    );
    let channel = server.channel().await;
    assert_eq!(answer(&channel, "a1").await.1, "allowed");

    // What the kubelet does: a new timestamped directory, `..data_tmp` → it, renamed over
    // `..data`, the old directory removed.
    write_version("..2026_11_26_10_05_00.000000002", "deny");
    symlink("..2026_11_26_10_05_00.000000002", dir.join("..data_tmp")).unwrap();
    fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    fs::remove_dir_all(dir.join("..2026_11_26_10_00_00.000000001")).unwrap();
    until(&channel, "a1", "tool_denied", "ConfigMap ..data swap").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_the_process_keeps_running() {
    let dir = scratch_dir("reload-sighup");
    fs::write(dir.join("server.yaml"), SERVER).unwrap();
    fs::write(dir.join("grants.yaml"), grant("g1", "a1", "allow")).unwrap();
    let server = Server::start(&dir, &[]);
    let channel = server.channel().await;
    for n in 1..=2 {
        server.signal("HUP");
        assert!(
            server.wait_log("cause=\"SIGHUP\"", n, Duration::from_secs(5)),
            "no SIGHUP reload"
        );
    }
    assert!(
        server
            .find_log("cause=\"SIGHUP\"")
            .unwrap()
            .contains("unchanged=true")
    );
    assert_eq!(answer(&channel, "a1").await.1, "allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_never_show_a_partial_set() {
    let dir = scratch_dir("reload-load");
    fs::write(dir.join("server.yaml"), SERVER).unwrap();
    fs::write(dir.join("grants.yaml"), grant("g1", "a1", "allow")).unwrap();
    let server = Server::start(&dir, &[]);
    let channel = server.channel().await;

    let allow = (
        String::from("allow"),
        String::from("allowed"),
        String::from("ns/g1"),
    );
    let deny = (
        String::from("deny"),
        String::from("tool_denied"),
        String::from("ns/g1"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (answers, errors) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut callers = Vec::new();
    for _ in 0..8 {
        let (channel, stop, answers, errors) = (
            channel.clone(),
            Arc::clone(&stop),
            Arc::clone(&answers),
            Arc::clone(&errors),
        );
        let (allow, deny) = (allow.clone(), deny.clone());
        callers.push(tokio::spawn(async move {
            let mut strays = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let request = tool_call("/demo/mcp", &[("x-mcp-agent-id", "a1")], "echo");
                match check_raw(&channel, request).await {
                    Ok(response) => {
                        let seen = verdict(&response);
                        if seen != allow && seen != deny {
                            strays.push(seen);
                        }
                        answers.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            strays
        }));
    }
    for i in 0..30 {
        let decision = if i % 2 == 0 { "deny" } else { "allow" };
        fs::write(dir.join("grants.yaml"), grant("g1", "a1", decision)).unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut strays = Vec::new();
    for caller in callers {
        strays.extend(caller.await.unwrap());
    }
    let total = answers.load(Ordering::Relaxed);
    println!("{total} answers from 8 callers during 30 rewrites");
    assert_eq!(errors.load(Ordering::Relaxed), 0, "gRPC errors");
    assert!(
        strays.is_empty(),
        "{} answers no whole set gives, such as {:?}",
        strays.len(),
        &strays[..strays.len().min(3)]
    );
    assert!(total > 100, "too few answers to mean anything: {total}");
    // The last write (i = 29) allows.
    assert_eq!(answer(&channel, "a1").await, allow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_re_arms_when_the_directory_is_replaced() {
    let parent = scratch_dir("reload-rearm");
    let dir = parent.join("policies");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("server.yaml"), SERVER).unwrap();
    fs::write(dir.join("grants.yaml"), grant("g1", "a1", "allow")).unwrap();
    let server = Server::start(&dir, &[]);
    let channel = server.channel().await;

    // Replace the whole directory, the way a deploy tool might.
    let next = parent.join("policies.next");
    fs::create_dir_all(&next).unwrap();
    fs::write(next.join("server.yaml"), SERVER).unwrap();
    fs::write(next.join("grants.yaml"), grant("g1", "a1", "deny")).unwrap();
    fs::rename(&dir, parent.join("policies.old")).unwrap();
    fs::rename(&next, &dir).unwrap();
    until(&channel, "a1", "tool_denied", "directory replaced").await;

    // The new directory is watched in turn.
    fs::write(dir.join("grants.yaml"), grant("g1", "a1", "allow")).unwrap();
    until(&channel, "a1", "allowed", "edit after the replacement").await;
}
