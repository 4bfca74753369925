//! The API token: with `http.token` set, every endpoint except the open ones needs
//! `Authorization: Bearer <token>`.
//!
//! Open are `/health` and `/ready` (a load balancer or orchestrator probes them without
//! credentials) and `/webhooks/*` (Plane and Gitea cannot send a bearer token; their
//! deliveries are authenticated by their HMAC signatures instead). The check is one layer over
//! the whole router, keyed on the path, so an endpoint added later is protected by default
//! rather than by remembering to. The token is compared in constant time, over SHA-256
//! digests so that not even its length leaks through timing.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use crate::secret::Secret;

/// Paths that never need the token.
fn is_open(path: &str) -> bool {
    matches!(path, "/health" | "/ready") || path.starts_with("/webhooks/")
}

/// The middleware: passes the request on, or answers 401.
pub async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(token) = state.config.http.token.as_ref().filter(|t| !t.is_empty()) else {
        return next.run(req).await;
    };
    if is_open(req.uri().path()) || bearer(req.headers()).is_some_and(|p| matches(token, p)) {
        return next.run(req).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(json!({ "error": "missing or invalid API token: send Authorization: Bearer <http.token>" })),
    )
        .into_response()
}

/// The credentials of an `Authorization: Bearer …` header (the scheme in any case).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credentials) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim())
}

/// Constant-time equality of the presented token and the configured one.
pub fn matches(token: &Secret, presented: &str) -> bool {
    let want = Sha256::digest(token.expose().as_bytes());
    let got = Sha256::digest(presented.as_bytes());
    want.ct_eq(&got).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_matches() {
        let t = Secret::new("s3cret-token");
        assert!(matches(&t, "s3cret-token"));
        assert!(!matches(&t, "s3cret-toke"));
        assert!(!matches(&t, "s3cret-token2"));
        assert!(!matches(&t, ""));
    }

    #[test]
    fn health_ready_and_webhooks_are_open() {
        assert!(is_open("/health"));
        assert!(is_open("/ready"));
        assert!(is_open("/webhooks/plane"));
        assert!(!is_open("/queue"));
        assert!(!is_open("/explain/ET-1"));
        assert!(!is_open("/healthz"));
    }
}
