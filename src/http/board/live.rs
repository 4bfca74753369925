//! Live updates: `GET /live/{board,tasks/<WI>,rules}?fp=<fingerprint>`.
//!
//! The fingerprint is a digest of everything a page shows that can change: the database's
//! change stamp (`store::stamp`), the rules' generation and last reload error, the sweep's
//! last run, the loops' states, and the clock in 30-second steps (times in stage move). When
//! the caller's fingerprint is current the answer is `{"fp": …}` and nothing is rendered,
//! so a page left open costs one small query a second; otherwise it carries the page's new
//! `<main>` as `html`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{BoardError, FilterQuery, Page, render_main};
use crate::clock::Timestamp;
use crate::http::AppState;
use crate::store::{self, StoreError};

/// How often, in ms, the times shown on a page are allowed to go stale.
const CLOCK_STEP_MS: i64 = 30_000;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct LiveQuery {
    #[serde(default)]
    fp: String,
    #[serde(flatten)]
    filter: FilterQuery,
}

/// The current fingerprint of everything the pages show.
pub(crate) async fn fingerprint(state: &AppState, now: Timestamp) -> Result<String, StoreError> {
    let db = state.store.call(store::stamp::changes).await?;
    let rules = state.rules.status();
    let last_sweep = state.reconcile.lock().ok().and_then(|s| s.last_sweep_at);
    let loops: Vec<_> = state.loops().iter().map(|b| b.status().state).collect();
    let mut h = Sha256::new();
    h.update(
        format!(
            "{db:?}|{}|{}|{:?}|{:?}|{:?}|{}",
            rules.generation,
            rules.reloads_failed,
            rules.last_reload_error,
            last_sweep,
            loops,
            now.as_millis().div_euclid(CLOCK_STEP_MS),
        )
        .as_bytes(),
    );
    Ok(hex::encode(&h.finalize()[..10]))
}

async fn answer(state: &AppState, page: Page, known: &str) -> Result<Response, BoardError> {
    let now = state.clock.now();
    let fp = fingerprint(state, now).await?;
    if fp == known {
        return Ok(Json(json!({ "fp": fp })).into_response());
    }
    match render_main(state, &page, now).await? {
        Some((_, html)) => Ok(Json(json!({ "fp": fp, "html": html })).into_response()),
        None => Ok((
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "no such task" })),
        )
            .into_response()),
    }
}

pub(crate) async fn board(State(state): State<AppState>, Query(q): Query<LiveQuery>) -> Response {
    answer(&state, Page::Board(q.filter.filter()), &q.fp)
        .await
        .into_response()
}

pub(crate) async fn task(
    State(state): State<AppState>,
    Path(work_item): Path<String>,
    Query(q): Query<LiveQuery>,
) -> Response {
    answer(&state, Page::Task(work_item), &q.fp)
        .await
        .into_response()
}

pub(crate) async fn rules(State(state): State<AppState>, Query(q): Query<LiveQuery>) -> Response {
    answer(&state, Page::Rules, &q.fp).await.into_response()
}
