//! The admin endpoint (SPEC §4a): plain HTTP `/metrics`, `/healthz`, `/ready`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::reload::PolicyStore;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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

/// Answers one admin request.
pub fn respond(state: &AdminState, method: &Method, path: &str) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    let text = "text/plain; charset=utf-8";
    if method != Method::GET && method != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            text,
            "method not allowed\n".into(),
        );
    }
    match path {
        "/metrics" => reply(StatusCode::OK, OPENMETRICS, state.metrics.encode()),
        "/healthz" => reply(StatusCode::OK, text, "ok\n".into()),
        "/ready" if state.ready() => reply(StatusCode::OK, text, "ready\n".into()),
        "/ready" => reply(StatusCode::SERVICE_UNAVAILABLE, text, "not ready\n".into()),
        _ => reply(StatusCode::NOT_FOUND, text, "not found\n".into()),
    }
}

/// Serves the admin endpoint until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("admin accept failed: {e}");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let response = respond(&state, request.method(), request.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::load_files;

    #[test]
    fn ready_only_with_a_policy_and_until_shutdown() {
        let state = AdminState {
            metrics: Arc::default(),
            store: Arc::default(),
            shutting_down: AtomicBool::new(false),
        };
        let status = |path: &str| respond(&state, &Method::GET, path).status();
        assert_eq!(status("/ready"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status("/healthz"), StatusCode::OK);
        state.store.install_set(load_files(&[]).unwrap());
        assert_eq!(status("/ready"), StatusCode::OK);
        assert_eq!(status("/metrics"), StatusCode::OK);
        state.shutting_down.store(true, Ordering::Relaxed);
        assert_eq!(status("/ready"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status("/healthz"), StatusCode::OK);
        assert_eq!(
            respond(&state, &Method::POST, "/metrics").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
