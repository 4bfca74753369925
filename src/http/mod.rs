//! The HTTP surface: routing and the handlers that only read state.
//!
//! Handlers stay thin: they verify, persist or read, and answer. Work happens in the
//! background services, never while a peer waits for a reply.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{get, post};

use crate::app::AppState;

pub mod auth;
pub mod status;

pub use status::status_json;
pub mod webhooks;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/queue", get(status::queue))
        .route("/metrics", get(status::metrics))
        .route("/explain/{work_item}", get(status::explain))
        .route("/webhooks/plane", post(webhooks::plane))
        .route("/webhooks/gitea", post(webhooks::gitea))
        .layer(DefaultBodyLimit::max(webhooks::MAX_BODY_BYTES))
        // Over every route and the fallback: a route added later is protected by default.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .with_state(state)
}

/// 200 when the store answers, 503 otherwise.
async fn health(State(state): State<AppState>) -> impl IntoResponse {
    if state.store.ping().await {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "store unavailable")
    }
}
