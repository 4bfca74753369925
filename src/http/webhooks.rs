//! Webhook intake: verify, persist, acknowledge. Nothing else happens while the peer waits
//! (Gitea gives up after 5 s and never retries): the inbox processor does the work.
//!
//! Unsigned is opt-in: a delivery is accepted without a signature only when its peer has no
//! webhook secret *and* the operator set `allow_unsigned` for it. A delivery can start,
//! approve or cancel work, so an endpoint that trusts anyone who can reach it must be a
//! decision someone made, not a default they forgot.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use sha2::Sha256;

use super::AppState;
use crate::secret::Secret;

/// Largest accepted body; Plane and Gitea payloads are a few KiB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub async fn plane(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let secret = state.config.plane.webhook_secret.clone();
    let sig = header(&headers, "x-plane-signature");
    let auth = Auth {
        secret: secret.as_ref(),
        allow_unsigned: state.config.plane.allow_unsigned,
        signature: sig.as_deref(),
    };
    intake(&state, "plane", &headers, body, auth, |h, v| {
        header(h, "x-plane-event")
            .filter(|s| !s.is_empty())
            .or_else(|| v.get("event").and_then(|e| e.as_str()).map(str::to_string))
            .ok_or("no X-Plane-Event header and no \"event\" field")
    })
    .await
}

pub async fn gitea(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let secret = state.config.gitea.webhook_secret.clone();
    // Gitea sends both; X-Hub-Signature-256 carries a `sha256=` prefix.
    let sig = header(&headers, "x-gitea-signature")
        .filter(|s| !s.is_empty())
        .or_else(|| {
            header(&headers, "x-hub-signature-256")
                .map(|s| s.trim_start_matches("sha256=").to_string())
        });
    let auth = Auth {
        secret: secret.as_ref(),
        allow_unsigned: state.config.gitea.allow_unsigned,
        signature: sig.as_deref(),
    };
    intake(&state, "gitea", &headers, body, auth, |h, _| {
        // Key off the exact type: X-Gitea-Event is coarse and was empty for `status` in 1.23.
        header(h, "x-gitea-event-type")
            .filter(|s| !s.is_empty())
            .or_else(|| header(h, "x-gitea-event").filter(|s| !s.is_empty()))
            .ok_or("no X-Gitea-Event-Type or X-Gitea-Event header")
    })
    .await
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Constant-time check of a hex HMAC-SHA256 over the raw body.
pub fn signature_valid(secret: &Secret, body: &[u8], hex_sig: &str) -> bool {
    let Ok(sig) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// What decides whether a delivery is authentic: the peer's secret (if any), whether the
/// operator accepts unsigned deliveries from it, and the signature the delivery carries.
struct Auth<'a> {
    secret: Option<&'a Secret>,
    allow_unsigned: bool,
    signature: Option<&'a str>,
}

impl Auth<'_> {
    /// `Err` with the reason to give the peer when the delivery must be refused.
    fn check(&self, source: &str, body: &[u8]) -> Result<(), (&'static str, String)> {
        match self.secret.filter(|s| !s.is_empty()) {
            Some(secret) => {
                if self
                    .signature
                    .is_some_and(|sig| signature_valid(secret, body, sig))
                {
                    Ok(())
                } else {
                    Err(("bad_signature", "missing or invalid signature".to_string()))
                }
            }
            None if self.allow_unsigned => Ok(()),
            None => Err((
                "unsigned",
                format!(
                    "no webhook secret is configured for {source}: set {source}.webhook_secret \
                     (ORCH_{up}_WEBHOOK_SECRET), or {source}.allow_unsigned = true \
                     (ORCH_{up}_ALLOW_UNSIGNED) to accept unsigned deliveries",
                    up = source.to_uppercase()
                ),
            )),
        }
    }
}

async fn intake(
    state: &AppState,
    source: &'static str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    auth: Auth<'_>,
    // The event decides the handler; a delivery that does not say is not stored.
    event_of: impl FnOnce(&HeaderMap, &serde_json::Value) -> Result<String, &'static str>,
) -> Response {
    let metrics = &state.metrics;
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            let status = rejection.status();
            let outcome = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "too_large"
            } else {
                "malformed"
            };
            metrics.delivery(source, outcome);
            return error(
                status,
                format!("cannot read the request body: {}", rejection.body_text()),
            );
        }
    };
    if let Err((outcome, why)) = auth.check(source, &body) {
        metrics.delivery(source, outcome);
        tracing::warn!(source, "webhook rejected: {why}");
        return error(StatusCode::UNAUTHORIZED, why);
    }
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        Ok(_) => {
            metrics.delivery(source, "malformed");
            return error(StatusCode::BAD_REQUEST, "the body must be a JSON object");
        }
        Err(e) => {
            metrics.delivery(source, "malformed");
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body is not valid JSON: {e}"),
            );
        }
    };
    let event = match event_of(headers, &value) {
        Ok(e) => e,
        Err(why) => {
            metrics.delivery(source, "malformed");
            return error(
                StatusCode::BAD_REQUEST,
                format!("cannot tell which event this is: {why}"),
            );
        }
    };
    let now = state.clock.now();
    let stored = state
        .store
        .call(move |c| crate::store::inbox::insert(c, source, &event, &body, now))
        .await;
    match stored {
        Ok(Some(id)) => {
            metrics.delivery(source, "accepted");
            state.inbox_wakeup.notify_one();
            (
                StatusCode::ACCEPTED,
                Json(json!({ "status": "accepted", "id": id })),
            )
                .into_response()
        }
        Ok(None) => {
            metrics.delivery(source, "duplicate");
            (StatusCode::ACCEPTED, Json(json!({ "status": "duplicate" }))).into_response()
        }
        Err(e) => {
            // Not stored: let the peer see a 5xx (Plane retries network errors only, but the
            // reconciler will heal what is lost either way).
            tracing::error!(source, error = %e, "webhook could not be stored");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the delivery could not be stored",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_a_known_vector() {
        // echo -n '{"a":1}' | openssl dgst -sha256 -hmac secret
        let s = Secret::new("secret");
        let body = br#"{"a":1}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(b"secret").unwrap();
        mac.update(body);
        let good = hex::encode(mac.finalize().into_bytes());
        assert!(signature_valid(&s, body, &good));
        assert!(!signature_valid(&s, body, &good.replace('a', "b")));
        assert!(!signature_valid(&s, body, "not-hex"));
        assert!(!signature_valid(&s, body, ""));
    }
}
