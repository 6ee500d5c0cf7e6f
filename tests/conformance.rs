//! Every conformance vector, sent as raw bytes to the running binary over gRPC.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test harness: a panic is the report

mod common;

use std::collections::BTreeMap;

use common::{Server, check_raw, conformance_dir, metadata_bool, metadata_str};
use mcp_authz::proto::auth::{CheckRequest, CheckResponse, check_response::HttpResponse};
use mcp_authz::proto::core::header_value_option::HeaderAppendAction;
use prost::Message;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    request: String,
    http: Http,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
struct Http {
    #[serde(default)]
    method: Option<String>,
    path: String,
}

#[derive(Debug, Deserialize)]
struct Expect {
    grpc_code: i32,
    decision: String,
    reason: String,
    would_deny: bool,
    http_status: Option<i32>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    headers_removed: Vec<String>,
    matched_grant: Option<String>,
    matched_session: Option<String>,
    mcp_server: Option<String>,
    tool: Option<String>,
    prompt: Option<String>,
    resource: Option<String>,
    body: Option<Body>,
}

/// The denied body's expected form (SPEC §3).
#[derive(Debug, Deserialize)]
struct Body {
    form: String,
    id: Option<serde_json::Value>,
    code: Option<i64>,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(conformance_dir().join("cases.yaml")).unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

const WOULD_DENY_HEADERS: [&str; 2] = ["x-would-deny", "x-would-deny-reason"];

/// Every expectation of one case; returns the failures.
fn verify(case: &Case, response: &CheckResponse) -> Vec<String> {
    let mut failures = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            failures.push(what);
        }
    };
    let e = &case.expect;
    let code = response.status.as_ref().map_or(0, |s| s.code);
    check(
        code == e.grpc_code,
        format!("grpc_code {code} != {}", e.grpc_code),
    );
    for (key, want) in [
        ("decision", Some(&e.decision)),
        ("reason", Some(&e.reason)),
        ("matched_grant", e.matched_grant.as_ref()),
        ("matched_session", e.matched_session.as_ref()),
        ("mcp_server", e.mcp_server.as_ref()),
        ("tool", e.tool.as_ref()),
        ("prompt", e.prompt.as_ref()),
        ("resource", e.resource.as_ref()),
    ] {
        if let Some(want) = want {
            let got = metadata_str(response, key);
            check(
                got == Some(want.as_str()),
                format!("{key} {got:?} != {want:?}"),
            );
        }
    }
    let would_deny = metadata_bool(response, "would_deny");
    check(
        would_deny == Some(e.would_deny),
        format!("would_deny {would_deny:?} != {}", e.would_deny),
    );
    let revision = metadata_str(response, "policy_revision").unwrap_or_default();
    check(
        revision.starts_with("sha256:"),
        format!("policy_revision {revision:?}"),
    );

    match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            check(
                e.http_status.is_none(),
                "ok_response where a denial was expected".into(),
            );
            let set = |name: &str| {
                ok.headers.iter().find_map(|h| {
                    let hv = h.header.as_ref()?;
                    (hv.key == name).then_some((hv.value.clone(), h.append_action))
                })
            };
            for (name, value) in &e.headers {
                check(
                    set(name).map(|(v, _)| v) == Some(value.clone()),
                    format!("header {name} not set to {value:?}: {:?}", ok.headers),
                );
            }
            for name in &e.headers_removed {
                check(
                    ok.headers_to_remove.contains(name),
                    format!("{name} not removed"),
                );
            }
            for name in WOULD_DENY_HEADERS {
                if e.would_deny {
                    check(
                        set(name).map(|(_, a)| a)
                            == Some(HeaderAppendAction::OverwriteIfExistsOrAdd as i32),
                        format!(
                            "would-deny header {name} missing or not OVERWRITE_IF_EXISTS_OR_ADD"
                        ),
                    );
                    check(
                        !ok.headers_to_remove.contains(&name.to_string()),
                        format!("{name} listed for removal"),
                    );
                } else {
                    check(set(name).is_none(), format!("allow sets {name}"));
                }
            }
        }
        Some(HttpResponse::DeniedResponse(denied)) => {
            let status = denied.status.as_ref().map(|s| s.code);
            check(
                status == e.http_status,
                format!("http_status {status:?} != {:?}", e.http_status),
            );
            let content_type = denied.headers.iter().find_map(|h| {
                let hv = h.header.as_ref()?;
                (hv.key == "content-type").then_some(hv.value.as_str())
            });
            check(
                content_type == Some("application/json"),
                format!("content-type {content_type:?}"),
            );
            match serde_json::from_str::<serde_json::Value>(&denied.body) {
                Ok(body) => {
                    for failure in verify_body(e, &body) {
                        check(false, failure);
                    }
                }
                Err(err) => check(false, format!("body is not JSON: {err}")),
            }
        }
        None => check(false, "no http_response".into()),
    }
    failures
}

/// The denied body in the form the case expects (`plain` when it names none).
fn verify_body(e: &Expect, body: &serde_json::Value) -> Vec<String> {
    let mut failures = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            failures.push(what);
        }
    };
    let form = e.body.as_ref().map_or("plain", |b| b.form.as_str());
    let id = e.body.as_ref().and_then(|b| b.id.as_ref());
    if form != "plain" {
        check(
            body["jsonrpc"] == "2.0",
            format!("jsonrpc {}", body["jsonrpc"]),
        );
        check(
            id.is_some_and(|id| &body["id"] == id),
            format!("id {} != {id:?}", body["id"]),
        );
    }
    match form {
        "plain" => {
            check(
                body["error"] == e.reason.as_str(),
                format!("body error {}", body["error"]),
            );
            check(body["message"].is_string(), "body has no message".into());
        }
        "jsonrpc" => {
            let error = &body["error"];
            let code = e.body.as_ref().and_then(|b| b.code);
            check(
                code.is_some_and(|c| error["code"] == c),
                format!("error code {} != {code:?}", error["code"]),
            );
            check(
                error["message"].as_str().is_some_and(|m| !m.is_empty()),
                "error has no message".into(),
            );
            check(
                error["data"]["reason"] == e.reason.as_str(),
                format!("error.data.reason {}", error["data"]["reason"]),
            );
        }
        "tool-error" => {
            let result = &body["result"];
            check(
                result["resultType"] == "complete",
                format!("resultType {}", result["resultType"]),
            );
            check(result["isError"] == true, "isError is not true".into());
            check(
                result["content"][0]["type"] == "text"
                    && result["content"][0]["text"]
                        .as_str()
                        .is_some_and(|t| !t.is_empty()),
                format!("content {}", result["content"]),
            );
            check(
                result["_meta"]["mcp-authz/reason"] == e.reason.as_str(),
                format!("_meta {}", result["_meta"]),
            );
        }
        other => check(false, format!("unknown body form `{other}`")),
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_vector_through_the_running_binary() {
    let cases = cases();
    assert!(cases.len() >= 80, "the corpus shrank: {}", cases.len());
    let server = Server::start(&conformance_dir().join("policies"), &[]);
    let channel = server.channel().await;
    let mut failures = Vec::new();
    for case in &cases {
        let bytes = std::fs::read(conformance_dir().join(&case.request)).unwrap();
        // Our generated types must read what Envoy's complete API wrote.
        let decoded = CheckRequest::decode(bytes.as_slice()).expect("decode with proto/");
        let http = decoded
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
            .expect("attributes.request.http");
        assert_eq!(http.path, case.http.path, "{}: path", case.name);
        assert_eq!(
            http.method,
            case.http.method.as_deref().unwrap_or("POST"),
            "{}: method",
            case.name
        );

        let response = check_raw(&channel, bytes).await.expect("Check answers");
        for failure in verify(case, &response) {
            failures.push(format!("{}: {failure}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("{} conformance vectors passed", cases.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_request_is_invalid_argument() {
    let server = Server::start(&conformance_dir().join("policies"), &[]);
    let channel = server.channel().await;
    let status = check_raw(&channel, vec![0x0a, 0xff, 0xff])
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    // The service keeps answering afterwards.
    let bytes = std::fs::read(conformance_dir().join("requests/04-echo-allowed.bin")).unwrap();
    let response = check_raw(&channel, bytes).await.unwrap();
    assert_eq!(metadata_str(&response, "decision"), Some("allow"));
}

/// The shared vectors `tests/conformance` copies, beside the checkout.
const SHARED_VECTORS: &str = "../shared/conformance-v2";

/// `tests/conformance` is a copy of the shared vectors; it must not drift from them.
#[test]
fn the_copy_matches_the_shared_vectors() {
    let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(SHARED_VECTORS);
    if !shared.is_dir() {
        // CI always lays shared/ beside the checkout: there a missing copy is a failure, not a
        // comparison that silently did not happen.
        assert!(
            std::env::var_os("CI").is_none(),
            "no {SHARED_VECTORS} beside the checkout in CI"
        );
        eprintln!("no {SHARED_VECTORS} beside the checkout: nothing to compare");
        return;
    }
    fn files(root: &std::path::Path) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let rel = path
                        .strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned();
                    out.insert(rel, std::fs::read(&path).unwrap());
                }
            }
        }
        out
    }
    let (ours, theirs) = (files(&conformance_dir()), files(&shared));
    let differing: Vec<&String> = ours
        .keys()
        .chain(theirs.keys())
        .filter(|k| ours.get(*k) != theirs.get(*k))
        .collect();
    assert!(
        differing.is_empty(),
        "tests/conformance differs from {SHARED_VECTORS} (copy it again): {differing:?}"
    );
}
