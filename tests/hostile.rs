//! Hostile input against the running binary: huge and numerous headers, oversized bodies, huge
//! batches, hostile policy files on reload, and SIGTERM under load.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test harness: a panic is the report

mod common;

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{
    Server, check_raw, conformance_dir, metadata_str, peak_rss_mib, post, post_with_headers,
    scratch_dir,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_a_decision_in_bounded_memory() {
    let server = Server::start(
        &conformance_dir().join("policies"),
        &["--max-body-bytes", "65536"],
    );
    let channel = server.channel().await;
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#;
    let reason = |r: &mcp_authz::proto::auth::CheckResponse| {
        metadata_str(r, "reason").unwrap_or_default().to_string()
    };

    // 10,000 headers, and the identity among them.
    let mut headers: Vec<(String, String)> = (0..10_000)
        .map(|i| (format!("x-junk-{i}"), "v".repeat(20)))
        .collect();
    headers.push(("x-mcp-human-id".into(), "h1".into()));
    headers.push(("x-mcp-agent-id".into(), "a1".into()));
    let response = check_raw(&channel, post_with_headers(headers, "/demo/mcp", call))
        .await
        .unwrap();
    assert_eq!(reason(&response), "allowed");

    // A 1 MiB identity header value: an identity nobody is granted.
    let huge = vec![("x-mcp-agent-id".to_string(), "a".repeat(1 << 20))];
    let response = check_raw(&channel, post_with_headers(huge, "/demo/mcp", call))
        .await
        .unwrap();
    assert_eq!(reason(&response), "no_matching_grant");

    // A 10 MiB body against --max-body-bytes 65536.
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"echo","arguments":{{"x":"{}"}}}}}}"#,
        "y".repeat(10 << 20)
    );
    let response = check_raw(
        &channel,
        post("/demo/mcp", &[("x-mcp-agent-id", "a1")], &big),
    )
    .await
    .unwrap();
    assert_eq!(reason(&response), "rpc_inspection_failed");

    // A batch of 10,000 tool calls, the last one denied.
    let mut elements = vec![call.to_string(); 9_999];
    elements.push(
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_row"}}"#.into(),
    );
    let batch = format!("[{}]", elements.join(","));
    let identity = [("x-mcp-human-id", "h1"), ("x-mcp-agent-id", "a1")];
    let server_limit = Server::start(
        &conformance_dir().join("policies"),
        &["--max-body-bytes", "4194304"],
    );
    let limit_channel = server_limit.channel().await;
    let response = check_raw(&limit_channel, post("/demo/mcp", &identity, &batch))
        .await
        .unwrap();
    assert_eq!(reason(&response), "side_effect_not_allowed");
    assert_eq!(metadata_str(&response, "tool"), Some("delete_row"));

    // Measured (debug build): ~42 MiB for the first server, which holds the 10 MiB CheckRequest
    // while decoding it, ~19 MiB for the batch. The bounds leave room for allocator noise, not
    // for another copy of the body.
    let (headers_and_body, batch) = (
        peak_rss_mib(server.child.id()),
        peak_rss_mib(server_limit.child.id()),
    );
    println!(
        "peak RSS after hostile requests: {headers_and_body:.1} MiB (headers, body), {batch:.1} MiB (batch)"
    );
    for (what, rss, bound) in [
        ("headers and body", headers_and_body, 64.0),
        ("batch", batch, 32.0),
    ] {
        assert!(rss > 0.0, "{what}: no peak RSS read");
        assert!(
            rss <= bound,
            "{what}: memory is not bounded: {rss:.1} MiB > {bound} MiB"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_policy_files_are_rejected_and_the_last_good_set_kept() {
    let dir = scratch_dir("hostile-policy");
    for entry in fs::read_dir(conformance_dir().join("policies")).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    let server = Server::start(&dir, &[]);
    let channel = server.channel().await;
    let allowed = || {
        post(
            "/demo/mcp",
            &[("x-mcp-human-id", "h1"), ("x-mcp-agent-id", "a1")],
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#,
        )
    };

    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        bomb.push_str(&format!(
            "a{i}: &a{i} [{}]\n",
            vec![format!("*a{}", i - 1); 10].join(", ")
        ));
    }
    let deep = format!("a: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let oversized = "# padding\n".repeat(1_700_000);
    let hostile = [
        ("bomb.yaml", bomb, "aliases expanded"),
        ("deep.yaml", deep, "nesting deeper"),
        ("big.yaml", oversized, "larger than the 16777216-byte limit"),
    ];
    for (n, (name, text, message)) in hostile.iter().enumerate() {
        fs::write(dir.join(name), text).unwrap();
        assert!(
            server.wait_log("policy reload rejected", n + 1, Duration::from_secs(10)),
            "{name}"
        );
        assert!(
            server.wait_log(message, 1, Duration::from_secs(10)),
            "{name}: no `{message}` in the log"
        );
        let response = check_raw(&channel, allowed()).await.unwrap();
        assert_eq!(
            metadata_str(&response, "decision"),
            Some("allow"),
            "{name}: last good set"
        );
        fs::remove_file(dir.join(name)).unwrap();
        assert!(server.wait_log("policy reloaded", n + 1, Duration::from_secs(10)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_answers_every_check_in_flight() {
    let server = Server::start(&conformance_dir().join("policies"), &[]);
    let channel = server.channel().await;
    let request =
        Arc::new(fs::read(conformance_dir().join("requests/04-echo-allowed.bin")).unwrap());
    let (answered, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut callers = Vec::new();
    for _ in 0..8 {
        let (channel, request) = (channel.clone(), Arc::clone(&request));
        let (answered, refused) = (Arc::clone(&answered), Arc::clone(&refused));
        callers.push(tokio::spawn(async move {
            loop {
                match check_raw(&channel, request.to_vec()).await {
                    Ok(response) => {
                        assert_eq!(metadata_str(&response, "decision"), Some("allow"));
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    // Once shutdown starts, Checks sent after the server's GOAWAY are refused
                    // (Envoy retries them elsewhere). Whether any accepted Check was dropped is
                    // told by the server's own audit trail below.
                    Err(_) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = answered.load(Ordering::Relaxed);
    server.signal("TERM");
    for caller in callers {
        caller.await.unwrap();
    }
    assert!(before > 50, "load was running: {before}");
    assert!(server.wait_log("stopped", 1, Duration::from_secs(10)));
    let mut server = server;
    let status = server.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    // Every Check the server decided was answered, and its audit record was written out
    // before exit (the audit trail is flushed on shutdown).
    let decided = server.count_log("mcp_authz::audit:");
    let answered = answered.load(Ordering::Relaxed);
    assert_eq!(decided, answered, "decided {decided}, answered {answered}");
    println!(
        "{answered} Checks answered, {} refused after SIGTERM",
        refused.load(Ordering::Relaxed)
    );
}
