//! The admin listener: liveness, readiness, Prometheus metrics and the device census
//! (never on the device port).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::state::AppState;

/// `/healthz`, `/readyz`, `/metrics`, `/census`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/census", get(census))
}

/// The process is up.
async fn healthz() -> &'static str {
    "ok"
}

/// A config is loaded and the cache directory is writable.
#[tracing::instrument(level = "debug", skip_all)]
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: no config loaded or cache directory not writable")
    }
}

#[tracing::instrument(level = "debug", skip_all)]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    if let Some(census) = state.census() {
        state.metrics().census(census);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics().render())
}

/// This replica's census sketches (`updraft_core::census::Report`; no device id in
/// them), which the operator merges across replicas; 404 when the census is off.
#[tracing::instrument(level = "debug", skip_all)]
async fn census(State(state): State<AppState>) -> Response {
    match state.census() {
        Some(census) => Json(census.report(std::time::SystemTime::now())).into_response(),
        None => (StatusCode::NOT_FOUND, "the census is off (--no-census)").into_response(),
    }
}
