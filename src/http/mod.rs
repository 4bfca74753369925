//! The HTTP surface: routing and the handlers that only read state.
//!
//! Handlers stay thin: they verify, persist or read, and answer. Work happens in the
//! background services, never while a peer waits for a reply.

use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

pub mod auth;
mod shadow;
pub mod board;
mod state;
pub mod status;

pub use state::{AppState, Loops};

pub use status::status_json;
pub mod webhooks;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/queue", get(status::queue))
        .route("/metrics", get(status::metrics))
        .route("/explain/{work_item}", get(status::explain))
        .route("/shadow", get(shadow::shadow))
        .route("/webhooks/plane", post(webhooks::plane))
        .route("/webhooks/gitea", post(webhooks::gitea))
        .merge(board::routes())
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

/// For a load balancer: 200 when every background loop runs and the store answers; 503 with
/// the reasons otherwise (a loop restarting or stopped, named with its last error; the store).
///
/// `/health` says the process can answer; this says it is doing its job: a process whose sweep
/// or dispatcher is down would otherwise look healthy while tasks pile up. A rule set that
/// fails to load is not a case here: startup refuses bad rules, and a bad reload keeps the
/// last good set running.
async fn ready(State(state): State<AppState>) -> Response {
    let loops_down = state.loops_down();
    let mut reasons: Vec<String> = loops_down
        .iter()
        .map(|(name, s)| match &s.last_error {
            Some(e) if s.state == crate::service::LoopState::Restarting => {
                format!("background loop {name} is restarting after: {e}")
            }
            _ => format!("background loop {name} is stopped"),
        })
        .collect();
    let down: Vec<&str> = loops_down.iter().map(|(n, _)| *n).collect();
    let store = state.store.ping().await;
    if !store {
        reasons.push("the store does not answer".to_string());
    }
    if reasons.is_empty() {
        (StatusCode::OK, Json(serde_json::json!({ "ready": true }))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "ready": false,
                "reason": reasons.join("; "),
                "loops_down": down,
                "store": if store { "ok" } else { "unreachable" },
            })),
        )
            .into_response()
    }
}
