//! The admin endpoint (SPEC §4a): plain HTTP `/metrics`, `/healthz`, `/ready`, served by axum
//! (already compiled in as tonic's router).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::reload::PolicyStore;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// What the admin endpoint reports on.
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub store: Arc<PolicyStore>,
    pub shutting_down: AtomicBool,
}

impl AdminState {
    /// Ready once a policy is loaded, and until shutdown starts.
    pub fn ready(&self) -> bool {
        self.store.current().is_some() && !self.shutting_down.load(Ordering::Relaxed)
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<String>) -> Response {
    (status, [(header::CONTENT_TYPE, content_type)], body.into()).into_response()
}

/// The admin routes: GET (and HEAD) only; any other method is 405, an unknown path 404.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(state): State<Arc<AdminState>>| async move {
                reply(StatusCode::OK, OPENMETRICS, state.metrics.encode())
            }),
        )
        .route(
            "/healthz",
            get(|| async { reply(StatusCode::OK, TEXT, "ok\n") }),
        )
        .route(
            "/ready",
            get(|State(state): State<Arc<AdminState>>| async move {
                match state.ready() {
                    true => reply(StatusCode::OK, TEXT, "ready\n"),
                    false => reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, "not ready\n"),
                }
            }),
        )
        .method_not_allowed_fallback(|| async { method_not_allowed() })
        .fallback(|method: Method| async move {
            match method {
                Method::GET | Method::HEAD => reply(StatusCode::NOT_FOUND, TEXT, "not found\n"),
                _ => method_not_allowed(),
            }
        })
        .with_state(state)
}

fn method_not_allowed() -> Response {
    reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "method not allowed\n")
}

/// Serves the admin endpoint until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let stopped = async move {
        let _ = shutdown.changed().await;
    };
    if let Err(e) = axum::serve(listener, router(state))
        .with_graceful_shutdown(stopped)
        .await
    {
        tracing::warn!("admin endpoint failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::load_files;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn status(state: &Arc<AdminState>, method: Method, path: &str) -> StatusCode {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        router(Arc::clone(state))
            .oneshot(request)
            .await
            .unwrap()
            .status()
    }

    #[tokio::test]
    async fn ready_only_with_a_policy_and_until_shutdown() {
        let state = Arc::new(AdminState {
            metrics: Arc::default(),
            store: Arc::default(),
            shutting_down: AtomicBool::new(false),
        });
        let get = |path: &'static str| status(&state, Method::GET, path);
        assert_eq!(get("/ready").await, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(get("/healthz").await, StatusCode::OK);
        state.store.install_set(load_files(&[]).unwrap());
        assert_eq!(get("/ready").await, StatusCode::OK);
        assert_eq!(get("/metrics").await, StatusCode::OK);
        state.shutting_down.store(true, Ordering::Relaxed);
        assert_eq!(get("/ready").await, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(get("/healthz").await, StatusCode::OK);
        assert_eq!(
            status(&state, Method::POST, "/metrics").await,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            status(&state, Method::POST, "/elsewhere").await,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(get("/elsewhere").await, StatusCode::NOT_FOUND);
        assert_eq!(
            status(&state, Method::HEAD, "/healthz").await,
            StatusCode::OK
        );
    }
}
