//! The API token: with `http.token` set, every endpoint except the open ones needs
//! `Authorization: Bearer <token>`, or the board's session cookie.
//!
//! The cookie is what a browser has after the board's login form (`/login`): not the token
//! itself but a digest of it ([`session_value`]), so a cookie that leaks (a proxy log, a
//! shared profile) is not the API token, and changing the token ends every session. Asking
//! for a board page without either gets a redirect to the login form instead of a 401.
//!
//! Open are `/health` and `/ready` (a load balancer or orchestrator probes them without
//! credentials), the board's login form and its static script and stylesheet (no data) and `/webhooks/*` (Plane and Gitea cannot send a bearer token; their
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
    matches!(path, "/health" | "/ready" | "/login")
        || path.starts_with("/webhooks/")
        || path.starts_with("/static/")
}

/// The board's pages, which a browser asks for: sent to the login form rather than a 401.
fn is_page(path: &str) -> bool {
    matches!(path, "/" | "/rules") || path.starts_with("/tasks/")
}

/// The cookie the login form sets.
pub const SESSION_COOKIE: &str = "orch_session";

/// The session cookie's value for `token`: a digest, never the token itself.
pub fn session_value(token: &Secret) -> String {
    let mut h = Sha256::new();
    h.update(b"orch board session\0");
    h.update(token.expose().as_bytes());
    hex::encode(h.finalize())
}

/// The middleware: passes the request on, or answers 401.
pub async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(token) = state.config.http.token.as_ref().filter(|t| !t.is_empty()) else {
        return next.run(req).await;
    };
    let path = req.uri().path();
    if is_open(path)
        || bearer(req.headers()).is_some_and(|p| matches(token, p))
        || session(req.headers()).is_some_and(|c| session_matches(token, c))
    {
        return next.run(req).await;
    }
    if is_page(path) && req.method() == axum::http::Method::GET {
        // Only a path of ours goes into `next`: the login form redirects to it.
        let next = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let location = format!("/login?next={}", encode_query_value(next));
        return (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response();
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

/// The value of the session cookie, when the request carries one.
fn session(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
}

/// Constant-time equality of a presented session cookie and the one `token` gives.
fn session_matches(token: &Secret, presented: &str) -> bool {
    let want = Sha256::digest(session_value(token).as_bytes());
    let got = Sha256::digest(presented.as_bytes());
    want.ct_eq(&got).into()
}

/// Percent-encodes everything but unreserved characters and `/`.
pub(crate) fn encode_query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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
    fn the_session_cookie_is_a_digest_of_the_token_not_the_token() {
        let t = Secret::new("s3cret-token");
        let v = session_value(&t);
        assert!(!v.contains("s3cret"));
        assert!(session_matches(&t, &v));
        assert!(!session_matches(&Secret::new("other"), &v));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            format!("a=b; {SESSION_COOKIE}={v}").parse().unwrap(),
        );
        assert_eq!(session(&h), Some(v.as_str()));
    }

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
        assert!(is_open("/login"));
        assert!(!is_open("/"));
        assert!(!is_open("/rules"));
        assert!(!is_open("/queue"));
        assert!(!is_open("/explain/ET-1"));
        assert!(!is_open("/healthz"));
    }
}
