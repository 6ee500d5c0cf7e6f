//! The gRPC shell: the Authorization service, health, and the server's life cycle.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::check::{Options, authorize};
use crate::proto::auth::authorization_server::{Authorization, AuthorizationServer};
use crate::proto::auth::{CheckRequest, CheckResponse};
use crate::reload::PolicyStore;
use crate::request::CheckInput;
use crate::response::check_response;
use crate::time::Timestamp;

/// The service name Envoy's active gRPC health check asks for.
pub const AUTHORIZATION_SERVICE: &str = "envoy.service.auth.v3.Authorization";

/// Largest CheckRequest accepted; Envoy's body cap is usually 1 MiB.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

pub struct AuthzService {
    store: Arc<PolicyStore>,
    options: Options,
}

impl AuthzService {
    pub fn new(store: Arc<PolicyStore>, options: Options) -> Self {
        AuthzService { store, options }
    }
}

#[tonic::async_trait]
impl Authorization for AuthzService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let snapshot = self.store.current();
        let check = request.into_inner();
        let input = CheckInput::from_proto(&check);
        let decision = authorize(snapshot.as_deref(), &input, &self.options, Timestamp::now());
        tracing::debug!(
            decision = decision.applied().as_str(),
            reason = decision.reason.as_str(),
            would_deny = decision.would_deny,
            server = decision.server_key(),
            grant = decision.grant_key(),
            "check"
        );
        Ok(Response::new(check_response(&decision)))
    }
}

/// Sets both health service names Envoy may ask for.
pub async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    for name in ["", AUTHORIZATION_SERVICE] {
        reporter.set_service_status(name, status).await;
    }
}

/// Serves Check and health on `listener` until `shutdown` completes, then stops accepting and
/// lets in-flight Checks finish.
pub async fn serve(
    listener: TcpListener,
    store: Arc<PolicyStore>,
    options: Options,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let authz = AuthorizationServer::new(AuthzService::new(store, options))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(authz)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}
