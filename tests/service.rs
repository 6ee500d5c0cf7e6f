//! The gRPC service in-process: answers before a policy is loaded, and after a swap.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test harness: a panic is the report

mod common;

use std::sync::Arc;

use common::{check_raw, conformance_dir, metadata_str};
use mcp_authz::check::Options;
use mcp_authz::policy::load_paths;
use mcp_authz::proto::auth::check_response::HttpResponse;
use mcp_authz::reload::PolicyStore;
use mcp_authz::service::{serve, set_health};
use tonic_health::ServingStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_unavailable_until_loaded_then_the_swap_applies() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let store = Arc::new(PolicyStore::default());
    let (reporter, health) = tonic_health::server::health_reporter();
    set_health(&reporter, ServingStatus::NotServing).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let context = mcp_authz::service::CheckContext {
        store: Arc::clone(&store),
        options: Options::default(),
        audit: mcp_authz::audit::line::log_only().expect("start the audit log thread"),
        metrics: Arc::default(),
    };
    let server = tokio::spawn(serve(listener, context, health, async {
        let _ = stopped.await;
    }));
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let request = std::fs::read(conformance_dir().join("requests/04-echo-allowed.bin")).unwrap();

    let response = check_raw(&channel, request.clone()).await.unwrap();
    assert_eq!(response.status.as_ref().unwrap().code, 14);
    assert_eq!(
        metadata_str(&response, "reason"),
        Some("policy_unavailable")
    );
    match &response.http_response {
        Some(HttpResponse::DeniedResponse(denied)) => {
            assert_eq!(denied.status.as_ref().unwrap().code, 503)
        }
        other => panic!("{other:?}"),
    }
    let status = common::authorization_health(&channel).await;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
    );

    let set = load_paths(&[conformance_dir().join("policies")]).unwrap();
    store.install_set(set);
    let response = check_raw(&channel, request).await.unwrap();
    assert_eq!(metadata_str(&response, "decision"), Some("allow"));
    assert_eq!(
        metadata_str(&response, "matched_grant"),
        Some("mcp-servers/g1")
    );

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
