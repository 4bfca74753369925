//! Read-only status endpoints: `/queue` (JSON for people and dashboards), `/metrics` and
//! `/explain`. None of them calls a peer.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use crate::store::{self, JobStatus};

struct Levels {
    jobs: BTreeMap<&'static str, i64>,
    tasks: BTreeMap<String, i64>,
    /// Tasks held until a person answers their agent's question.
    awaiting_input: i64,
    inbox: store::inbox::Backlog,
    outbox: Vec<(store::outbox::Peer, store::outbox::EffectStatus, i64)>,
    replicas: Vec<store::replicas::Replica>,
    leases: Vec<store::leases::LeaseRow>,
}

async fn levels(state: &AppState) -> Result<Levels, store::StoreError> {
    let ttl = state.config.replicas.lease_ttl;
    state
        .store
        .call(move |c| {
            let mut jobs: BTreeMap<&'static str, i64> =
                JobStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect();
            for (s, n) in store::jobs::counts_by_status(c)? {
                jobs.insert(s.as_str(), n);
            }
            let tasks = store::tasks::counts_by_stage(c)?.into_iter().collect();
            let awaiting_input = store::jobs::tasks_awaiting_input(c)?.len() as i64;
            let inbox = store::inbox::backlog(c, crate::inbox::MAX_ATTEMPTS)?;
            let outbox = store::outbox::counts(c)?;
            let replicas = store::replicas::list(c, ttl)?;
            let leases = store::leases::list(c)?;
            Ok(Levels {
                jobs,
                tasks,
                awaiting_input,
                inbox,
                outbox,
                replicas,
                leases,
            })
        })
        .await
}

/// The body of `GET /queue`.
pub async fn status_json(state: &AppState) -> Result<serde_json::Value, store::StoreError> {
    let levels = levels(state).await?;
    Ok(json!({
        "jobs": levels.jobs,
        "tasks": levels.tasks,
        "awaiting_input": levels.awaiting_input,
        "inbox": levels.inbox,
        "outbox": outbox_block(&levels.outbox),
        "loops": state.loops_status(),
        "reconcile": state.reconcile_status(),
        "decision_errors": state.decision_errors(),
        "rules": state.rules_status(),
        "replica": state.replica.as_str(),
        "replicas": replicas_block(state, &levels.replicas),
        // Who does the work one replica at a time: name, holder, token, since (acquired),
        // expires_at, valid (held and not expired by the database's clock).
        "leases": levels.leases,
    }))
}

/// The replicas sharing the database, alive first; `self` marks this one.
fn replicas_block(state: &AppState, replicas: &[store::replicas::Replica]) -> serde_json::Value {
    replicas
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("self".into(), json!(r.id == state.replica.as_str()));
            }
            v
        })
        .collect()
}

pub async fn queue(State(state): State<AppState>) -> Response {
    match status_json(&state).await {
        Ok(body) => Json(body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read queue status");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "error": "store unavailable" })),
            )
                .into_response()
        }
    }
}

/// `{"plane": {"pending": 0, "sending": 0, "sent": 3, "skipped": 1, "dead": 0}, …}`.
fn outbox_block(
    counts: &[(store::outbox::Peer, store::outbox::EffectStatus, i64)],
) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for peer in store::outbox::Peer::ALL {
        let mut by_status = serde_json::Map::new();
        for status in store::outbox::EffectStatus::ALL {
            let n = counts
                .iter()
                .find(|(p, s, _)| *p == peer && *s == status)
                .map_or(0, |(_, _, n)| *n);
            by_status.insert(status.as_str().to_string(), json!(n));
        }
        out.insert(
            peer.as_str().to_string(),
            serde_json::Value::Object(by_status),
        );
    }
    serde_json::Value::Object(out)
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let m = &state.metrics;
    if let Ok(levels) = levels(&state).await {
        m.jobs.clear();
        for (status, n) in &levels.jobs {
            m.jobs
                .get_or_create(&crate::metrics::StatusLabels {
                    status: status.to_string(),
                })
                .set(*n);
        }
        m.tasks.clear();
        for (stage, n) in &levels.tasks {
            m.tasks
                .get_or_create(&crate::metrics::StageLabels {
                    stage: stage.clone(),
                })
                .set(*n);
        }
        m.tasks_awaiting_input.set(levels.awaiting_input);
        m.replicas_alive
            .set(levels.replicas.iter().filter(|r| r.alive).count() as i64);
        m.inbox_pending.set(levels.inbox.pending);
        m.inbox_dead.set(levels.inbox.dead);
        let lag = levels
            .inbox
            .oldest_received_at
            .map(|t| state.clock.now().since(t).as_secs_f64())
            .unwrap_or(0.0);
        m.inbox_lag_seconds.set(lag);
        m.outbox.clear();
        for peer in store::outbox::Peer::ALL {
            for status in store::outbox::EffectStatus::ALL {
                let n = levels
                    .outbox
                    .iter()
                    .find(|(p, s, _)| *p == peer && *s == status)
                    .map_or(0, |(_, _, n)| *n);
                m.outbox
                    .get_or_create(&crate::metrics::PeerStatusLabels {
                        peer: peer.as_str().to_string(),
                        status: status.as_str().to_string(),
                    })
                    .set(n);
            }
        }
    }
    // Reloads are counted by the rules handle; mirror its monotonic counts.
    let rules = state.rules.status();
    for (result, total) in [("ok", rules.reloads_ok), ("failed", rules.reloads_failed)] {
        let c = m
            .rules_reloads
            .get_or_create(&crate::metrics::ResultLabels {
                result: result.to_string(),
            });
        c.inc_by(total.saturating_sub(c.get()));
    }
    m.set_rules_version(&rules.version);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
        .into_response()
}

/// `GET /explain/{work_item}`: the reconciler's current view of one task, with the gate's
/// last known reading: reading the API never calls Gitea (see `reconciler::explain`).
pub async fn explain(
    State(state): State<AppState>,
    axum::extract::Path(work_item): axum::extract::Path<String>,
) -> Response {
    let view = crate::reconciler::GateView::LastKnown;
    match state.reconciler.explain_with(&work_item, view).await {
        Ok(Some(x)) => Json(x).into_response(),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("no task for work item {work_item}") })),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "explain failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "error": "store unavailable" })),
            )
                .into_response()
        }
    }
}
