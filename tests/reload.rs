//! Hot reload against the running binary: every kind of change flips the same Check, invalid
//! updates keep the last good set, ConfigMap swaps, SIGHUP, reloads under load, a stream of
//! renames and writes in place.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test harness: a panic is the report

mod common;

use std::collections::BTreeSet;
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

/// Polls until `agent`'s answer has `reason` (or comes from the grant so named); returns how
/// long that took.
async fn until(channel: &Channel, agent: &str, reason: &str, what: &str) -> Duration {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        let (_, got, grant) = answer(channel, agent).await;
        if got == reason || grant == reason {
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

/// A set's single grant, named after its generation, so each answer says which set decided it.
fn generation(n: usize) -> String {
    grant(&format!("gen{n}"), "a1", "allow")
}

/// The revision the service reports for `server.yaml` with generation `n`'s grants.
fn generation_revision(n: usize) -> String {
    let grants = generation(n);
    mcp_authz::policy::load_files(&[
        ("grants.yaml", grants.as_bytes()),
        ("server.yaml", SERVER.as_bytes()),
    ])
    .expect("each generation is valid")
    .revision
}

/// The revision of every "policy reloaded" line so far.
fn installed_revisions(server: &Server) -> Vec<String> {
    server
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|line| line.contains("policy reloaded"))
        .filter_map(|line| {
            let start = line.find("revision=")? + "revision=".len();
            line[start..].split_whitespace().next().map(str::to_string)
        })
        .collect()
}

/// Pauses between writes: 50 to 150 ms, varied.
fn pause(n: usize) -> Duration {
    Duration::from_millis(50 + (n as u64 * 37) % 101)
}

/// What Checks saw while the writes went on: the generations that answered, and every answer
/// no written generation gives.
type Seen = (BTreeSet<usize>, Vec<(String, String, String)>);

/// Checks from 8 tasks until `writing` is cleared.
fn start_callers(
    channel: &Channel,
    writing: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Seen>> {
    (0..8)
        .map(|_| {
            let (channel, writing) = (channel.clone(), Arc::clone(writing));
            tokio::spawn(async move {
                let (mut generations, mut strays) = (BTreeSet::new(), Vec::new());
                while writing.load(Ordering::Relaxed) {
                    let seen = answer(&channel, "a1").await;
                    let n = seen
                        .2
                        .strip_prefix("ns/gen")
                        .and_then(|n| n.parse::<usize>().ok());
                    match n {
                        Some(n) if seen.1 == "allowed" => {
                            // Only what was answered before the writes stopped counts.
                            if writing.load(Ordering::Relaxed) {
                                generations.insert(n);
                            }
                        }
                        _ => strays.push(seen),
                    }
                }
                (generations, strays)
            })
        })
        .collect()
}

async fn gather(callers: Vec<tokio::task::JoinHandle<Seen>>) -> Seen {
    let (mut generations, mut strays) = (BTreeSet::new(), Vec::new());
    for caller in callers {
        let (g, s) = caller.await.expect("a caller panicked");
        generations.extend(g);
        strays.extend(s);
    }
    (generations, strays)
}

/// A sync loop or controller replacing its files by rename, each every 50–150 ms on its own
/// schedule, changed or not: sets are installed while the stream lasts, not only once it
/// stops, and each is one that was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_renames_installs_new_sets_while_it_lasts() {
    let dir = scratch_dir("reload-churn");
    fs::write(dir.join("server.yaml"), SERVER).unwrap();
    fs::write(dir.join("grants.yaml"), generation(0)).unwrap();
    let server = Server::start(&dir, &[]);
    let channel = server.channel().await;
    assert_eq!(answer(&channel, "a1").await.2, "ns/gen0");

    let writing = Arc::new(AtomicBool::new(true));
    let callers = start_callers(&channel, &writing);
    // The same server file, replaced all the while: it changes no revision.
    let (path, flag) = (dir.join("server.yaml"), Arc::clone(&writing));
    let unchanged = tokio::task::spawn_blocking(move || {
        let mut n = 0;
        while flag.load(Ordering::Relaxed) {
            n += 1;
            write_atomically(&path, SERVER);
            std::thread::sleep(pause(n + 50));
        }
    });
    let (path, flag) = (dir.join("grants.yaml"), Arc::clone(&writing));
    let written = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut n = 0;
        while started.elapsed() < Duration::from_secs(5) {
            n += 1;
            write_atomically(&path, &generation(n));
            std::thread::sleep(pause(n));
        }
        flag.store(false, Ordering::Relaxed);
        n
    })
    .await
    .unwrap();
    unchanged.await.unwrap();
    // The sets installed while the writes went on, other than the first.
    let first = generation_revision(0);
    let during: BTreeSet<_> = installed_revisions(&server)
        .into_iter()
        .filter(|revision| *revision != first)
        .collect();
    let (generations, strays) = gather(callers).await;
    println!(
        "{written} sets written; {} new ones installed and generations {generations:?} answered during the writes",
        during.len()
    );
    assert!(
        strays.is_empty(),
        "answers no written set gives: {:?}",
        &strays[..strays.len().min(3)]
    );
    // One a second is due (MAX_DELAY and a read); a third of that is a generous bound.
    assert!(
        during.len() >= 3,
        "only {} new sets installed during 5 s of renames",
        during.len()
    );
    let new: Vec<_> = generations.iter().filter(|&&n| n > 0).collect();
    assert!(
        new.len() >= 2,
        "Checks saw only generations {generations:?} during the writes"
    );
    let revisions: Vec<_> = (0..=written).map(generation_revision).collect();
    for revision in installed_revisions(&server) {
        assert!(
            revisions.contains(&revision),
            "installed `{revision}`, which was never written"
        );
    }
    until(
        &channel,
        "a1",
        &format!("ns/gen{written}"),
        "the last write",
    )
    .await;
}

/// Truncates `path` and writes `text` in two halves, calling `meanwhile` and pausing between
/// them: a reader then finds half a file, and right after the truncation an empty one (no
/// grant).
fn write_in_place_slowly(path: &Path, text: &str, meanwhile: impl FnOnce()) {
    use std::io::Write;
    let mut file = fs::File::create(path).unwrap();
    let (head, tail) = text.split_at(text.len() / 2);
    file.write_all(head.as_bytes()).unwrap();
    meanwhile();
    std::thread::sleep(Duration::from_millis(20));
    file.write_all(tail.as_bytes()).unwrap();
}

/// Truncate-then-write in place, with a SIGHUP forcing a read in the middle of each write: no
/// half-written or empty file is ever installed (it would answer `no_matching_grant`, be
/// rejected, or show a revision never written), and the last write is served once they stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_in_place_never_install_a_torn_set() {
    let dir = scratch_dir("reload-in-place");
    fs::write(dir.join("server.yaml"), SERVER).unwrap();
    fs::write(dir.join("grants.yaml"), generation(0)).unwrap();
    let server = Server::start(&dir, &[]);
    let channel = server.channel().await;

    let writing = Arc::new(AtomicBool::new(true));
    let callers = start_callers(&channel, &writing);
    let path = dir.join("grants.yaml");
    let flag = Arc::clone(&writing);
    let pid = server.child.id().to_string();
    let written = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut n = 0;
        while started.elapsed() < Duration::from_secs(5) {
            n += 1;
            // A forced reload while the file is half-written.
            write_in_place_slowly(&path, &generation(n), || {
                let hup = std::process::Command::new("kill")
                    .args(["-HUP", &pid])
                    .status();
                assert!(hup.unwrap().success());
            });
            std::thread::sleep(pause(n));
        }
        flag.store(false, Ordering::Relaxed);
        n
    })
    .await
    .unwrap();
    let (generations, strays) = gather(callers).await;
    let installed = installed_revisions(&server);
    println!(
        "{written} sets written in place; {} installed; generations {generations:?} answered",
        installed.len()
    );
    assert!(
        strays.is_empty(),
        "torn answers: {:?}",
        &strays[..strays.len().min(3)]
    );
    assert_eq!(
        server.count_log("policy reload rejected"),
        0,
        "a torn read was rejected"
    );
    let revisions: Vec<_> = (0..=written).map(generation_revision).collect();
    for revision in &installed {
        assert!(
            revisions.contains(revision),
            "installed `{revision}`, which was never written"
        );
    }
    until(
        &channel,
        "a1",
        &format!("ns/gen{written}"),
        "the last write",
    )
    .await;
}

/// A SIGHUP as soon as the first set is loaded reloads it: the handler is in place before the
/// service says it is loaded (SIGHUP's default action would end the process).
#[test]
fn a_sighup_right_after_start_reloads() {
    let dir = scratch_dir("reload-early-hup");
    fs::write(dir.join("server.yaml"), SERVER).unwrap();
    fs::write(dir.join("grants.yaml"), generation(0)).unwrap();
    // Many directories to watch make setting the watches up take a while.
    for n in 0..3000 {
        fs::create_dir_all(dir.join(format!("d{}/{n}", n % 30))).unwrap();
    }
    for _ in 0..3 {
        let mut server = Server::start(&dir, &[]);
        server.signal("HUP");
        assert!(
            server.wait_log("policy reloaded", 1, Duration::from_secs(10)),
            "{:?}",
            server.log.lock().unwrap()
        );
        assert!(
            server.child.try_wait().unwrap().is_none(),
            "the service ended"
        );
    }
}
