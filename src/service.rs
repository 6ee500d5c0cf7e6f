//! The gRPC shell: the Authorization service, health, and the server's life cycle.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::codegen::tokio_stream::Stream;
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::audit::Audit;
use crate::check::{Options, authorize};
use crate::ext_proc::{EXT_PROC_SERVICE, ListFilter};
use crate::metrics::Metrics;
use crate::policy::Timestamp;
use crate::proto::auth::CheckRequest;
use crate::proto::auth::authorization_server::{Authorization, AuthorizationServer};
use crate::proto::ext_proc::external_processor_server::ExternalProcessorServer;
use crate::reload::PolicyStore;
use crate::request::CheckInput;
use crate::response::{EncodedResponse, encode};

/// The service name Envoy's active gRPC health check asks for.
pub const AUTHORIZATION_SERVICE: &str = "envoy.service.auth.v3.Authorization";

/// Largest CheckRequest accepted; Envoy's body cap is usually 1 MiB.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Everything a Check uses besides the request.
#[derive(Clone)]
pub struct CheckContext {
    pub store: Arc<PolicyStore>,
    pub options: Options,
    pub audit: Audit,
    pub metrics: Arc<Metrics>,
}

pub struct AuthzService {
    context: CheckContext,
}

impl AuthzService {
    pub fn new(context: CheckContext) -> Self {
        AuthzService { context }
    }
}

#[tonic::async_trait]
impl Authorization for AuthzService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<EncodedResponse>, Status> {
        // Two clock reads per Check: the decision's time and the span's ends, whose difference
        // is also the duration metric (a wall-clock step during a Check skews one sample).
        let started = SystemTime::now();
        let context = &self.context;
        let snapshot = context.store.current();
        let traceparent = request
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let check = request.into_inner();
        let input = CheckInput::from_proto(&check);
        let decision = authorize(
            snapshot.as_deref(),
            &input,
            &context.options,
            Timestamp::from_system(started),
        );
        let response = encode(&decision);
        let ended = SystemTime::now();
        let seconds = ended
            .duration_since(started)
            .map_or(0.0, |d| d.as_secs_f64());
        context.metrics.record_check(&decision, seconds);
        context
            .audit
            .record([started, ended], traceparent.as_deref(), &input, &decision);
        Ok(Response::new(response))
    }
}

/// Sets every health service name Envoy may ask for.
pub async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    for name in ["", AUTHORIZATION_SERVICE, EXT_PROC_SERVICE] {
        reporter.set_service_status(name, status).await;
    }
}

/// Serves Check, list filtering (ext_proc) and health on `listener` until `shutdown`
/// completes, then stops accepting and lets in-flight Checks finish.
pub async fn serve(
    listener: TcpListener,
    context: CheckContext,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    serve_on(incoming(listener), context, health, shutdown).await
}

/// [`serve`] on any stream of connections, e.g. [`crate::tls::incoming`]'s.
pub async fn serve_on<IO, IE>(
    connections: impl Stream<Item = Result<IO, IE>>,
    context: CheckContext,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error>
where
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let filter = ExternalProcessorServer::new(ListFilter::new(
        Arc::clone(&context.store),
        context.options,
        Arc::clone(&context.metrics),
        context.audit.clone(),
    ))
    .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let authz = AuthorizationServer::new(AuthzService::new(context))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(authz)
        .add_service(filter)
        .serve_with_incoming_shutdown(connections, shutdown)
        .await
}

/// Accepted connections, set up for many small answers on few connections.
///
/// TCP_NODELAY: a Check answer is a few small HTTP/2 frames, which Nagle's algorithm would hold
/// back for a delayed ACK (~40 ms). Writes without vectored I/O: h2 then copies every frame under
/// 1 KiB into its write buffer (with vectored I/O only those under 256 bytes), so the answers to
/// concurrent Checks leave in one `write` instead of one `writev` each. An answer with its
/// dynamic metadata is 300–600 bytes; this halves the CPU the stack spends per Check under load.
pub fn incoming(listener: TcpListener) -> Incoming {
    Incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
}

/// The accepted connections of [`incoming`].
pub struct Incoming(TcpIncoming);

impl Stream for Incoming {
    type Item = std::io::Result<Connection>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.0)
            .poll_next(cx)
            .map(|next| next.map(|accepted| accepted.map(Connection)))
    }
}

/// A TCP connection that tells HTTP/2 to buffer its writes (see [`incoming`]).
pub struct Connection(TcpStream);

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.connect_info()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}
