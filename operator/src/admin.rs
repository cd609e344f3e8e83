//! The operator's admin port: `/metrics`, `/healthz`, `/readyz`, and the read-only
//! status page at `/` and `/status` (`page`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use crate::metrics::Metrics;
use crate::page;

#[derive(Clone)]
pub(crate) struct AdminState {
    pub metrics: Metrics,
    /// Set once the controllers' caches are filled (and, with leader election, this
    /// replica leads or stands by).
    pub ready: Arc<AtomicBool>,
    /// What the status page reads, once the controllers run.
    pub page: page::Slot,
}

pub(crate) fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/", get(status_page))
        .route("/status", get(status_page))
        .with_state(state)
}

async fn metrics(State(state): State<AdminState>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not yet synced")
    }
}

async fn status_page(State(state): State<AdminState>) -> Response {
    page::page(&state.page, state.ready.load(Ordering::Relaxed)).await
}
