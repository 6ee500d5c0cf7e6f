//! The performance floor: an ext_authz server on the same tonic stack as mcp-authz that
//! answers OK to everything without looking at the request, on the same connections (TCP
//! options, write buffering). `examples/load.rs` measures mcp-authz against it.
//!
//! Usage: `floor --listen 127.0.0.1:9292`
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test harness: a panic is the report

use mcp_authz::proto::auth::authorization_server::{Authorization, AuthorizationServer};
use mcp_authz::proto::auth::{CheckRequest, CheckResponse, OkHttpResponse, check_response};
use mcp_authz::proto::rpc::Status;
use mcp_authz::response::EncodedResponse;
use tonic::{Request, Response};

/// Answers every Check with the same encoded OK.
struct Floor(EncodedResponse);

#[tonic::async_trait]
impl Authorization for Floor {
    async fn check(
        &self,
        _: Request<CheckRequest>,
    ) -> Result<Response<EncodedResponse>, tonic::Status> {
        Ok(Response::new(self.0.clone()))
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listen = args
        .iter()
        .position(|a| a == "--listen")
        .and_then(|i| args.get(i + 1))
        .map_or("127.0.0.1:9292", String::as_str);
    let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
    eprintln!("floor listening on {}", listener.local_addr().unwrap());
    let ok = EncodedResponse::from_message(&CheckResponse {
        status: Some(Status::default()),
        http_response: Some(check_response::HttpResponse::OkResponse(
            OkHttpResponse::default(),
        )),
        dynamic_metadata: None,
    });
    tonic::transport::Server::builder()
        .add_service(AuthorizationServer::new(Floor(ok)).max_decoding_message_size(16 << 20))
        .serve_with_incoming(mcp_authz::service::incoming(listener))
        .await
        .expect("serve");
}
