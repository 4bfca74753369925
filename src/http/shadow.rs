//! `GET /shadow`: the shadow rule set (its version and reload status) and the divergences it
//! kept from the live set. Read-only; calls no peer.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;

/// How many divergences the endpoint returns (the latest); `orch rules shadow-report` has all.
const LIMIT: usize = 1000;

pub(super) async fn shadow(State(state): State<AppState>) -> Response {
    let Some(shadow) = state.pipeline.shadow.clone() else {
        return Json(json!({
            "enabled": false,
            "live_version": state.rules.current().version(),
            "divergences": [],
        }))
        .into_response();
    };
    match state
        .store
        .call(|c| crate::store::shadow::list(c, None, LIMIT))
        .await
    {
        Ok(rows) => {
            let mut by_rule: BTreeMap<&str, usize> = BTreeMap::new();
            for r in &rows {
                *by_rule
                    .entry(r.divergence.shadow.rule.as_str())
                    .or_insert(0) += 1;
            }
            Json(json!({
                "enabled": true,
                "live_version": state.rules.current().version(),
                "rules": shadow.rules.status(),
                "by_rule": by_rule,
                "divergences": rows,
            }))
            .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "reading the shadow divergences failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "error": "store unavailable" })),
            )
                .into_response()
        }
    }
}
