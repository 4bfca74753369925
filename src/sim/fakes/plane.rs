//! The fake Plane: states, work items (paged, newest first), state changes, comments; a
//! person's change sends its (possibly dropped) webhook; every request orch makes is counted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use serde_json::{Value, json};

use crate::clock::{Clock, SystemClock, Timestamp};

use super::{Hooks, PlaneStates, state_id};

async fn count_plane_request(
    State(requests): State<Arc<PlaneRequests>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use std::sync::atomic::Ordering;
    let per_item =
        req.uri().path().contains("/work-items/") && !req.uri().path().ends_with("/work-items/");
    tracing::debug!(method = %req.method(), path = req.uri().path(), "fake Plane request");
    if per_item {
        requests.item.fetch_add(1, Ordering::Relaxed);
    } else {
        requests.listing.fetch_add(1, Ordering::Relaxed);
    }
    next.run(req).await
}

#[derive(Debug, Clone)]
pub struct PlaneItem {
    pub id: String,
    pub seq: i64,
    pub name: String,
    pub state: String,
    pub updated_at: Timestamp,
    pub started: Option<Instant>,
    pub done: Option<Instant>,
}

/// A comment on a work item, by orch (tagged with its external source) or by a person.
#[derive(Debug, Clone)]
pub struct FakeComment {
    pub id: u64,
    pub item_id: String,
    pub html: String,
    pub external_source: Option<String>,
    /// The sender's id for the comment: Plane refuses a second one with the same
    /// `(item, external_source, external_id)`.
    pub external_id: Option<String>,
    pub actor: String,
    pub created_at: Timestamp,
}

#[derive(Default)]
pub struct PlaneData {
    pub items: Vec<PlaneItem>,
    pub comments: Vec<FakeComment>,
}

/// Plane API requests orch made, by kind: what one work item costs in Plane's budget.
#[derive(Debug, Default)]
pub struct PlaneRequests {
    /// Requests about one work item (read, state write, comments).
    pub item: std::sync::atomic::AtomicU64,
    /// Listings: work item pages (the Plane-side sweep) and states.
    pub listing: std::sync::atomic::AtomicU64,
    /// Effects sent again and harmless: a comment refused as a repeat of one with the same
    /// `external_id` (409), a state written that the item already had.
    pub resent: std::sync::atomic::AtomicU64,
}

#[derive(Clone)]
pub struct FakePlane {
    pub project: String,
    pub data: Arc<Mutex<PlaneData>>,
    pub requests: Arc<PlaneRequests>,
    hooks: Arc<Hooks>,
    clock: Arc<dyn Clock>,
    states: Arc<PlaneStates>,
}

impl FakePlane {
    /// A project with Plane's states as the default rules name them.
    #[cfg_attr(orch_audit, allow(dead_code))]
    pub fn new(project: &str, hooks: Arc<Hooks>) -> FakePlane {
        FakePlane::with_states(project, hooks, PlaneStates::default())
    }

    /// A project with `states` (a rule set's own state names).
    pub fn with_states(project: &str, hooks: Arc<Hooks>, states: PlaneStates) -> FakePlane {
        FakePlane {
            project: project.to_string(),
            data: Arc::new(Mutex::new(PlaneData::default())),
            requests: Arc::default(),
            hooks,
            clock: Arc::new(SystemClock),
            states: Arc::new(states),
        }
    }

    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .route(
                "/api/v1/workspaces/{ws}/projects/{project}/states/",
                get(plane_states),
            )
            .route(
                "/api/v1/workspaces/{ws}/projects/{project}/work-items/",
                get(plane_list),
            )
            .route(
                "/api/v1/workspaces/{ws}/projects/{project}/work-items/{id}/",
                patch(plane_patch).get(plane_get),
            )
            .route(
                "/api/v1/workspaces/{ws}/projects/{project}/work-items/{id}/comments/",
                post(plane_comment).get(plane_comments),
            )
            .with_state(self.clone())
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&self.requests),
                count_plane_request,
            ))
    }

    pub fn create(&self, seq: i64, name: &str) {
        let now = self.clock.now();
        let mut d = self.data.lock().unwrap_or_else(|p| p.into_inner());
        d.items.push(PlaneItem {
            id: format!("item-{seq}"),
            seq,
            name: name.to_string(),
            state: "Backlog".into(),
            updated_at: now,
            started: None,
            done: None,
        });
    }

    /// A person moves an item to `state` in the web UI: state change + webhook.
    pub async fn human_sets(&self, seq: i64, state: &str) {
        let now = self.clock.now();
        let item = {
            let mut d = self.data.lock().unwrap_or_else(|p| p.into_inner());
            let Some(item) = d.items.iter_mut().find(|i| i.seq == seq) else {
                return;
            };
            item.state = state.to_string();
            item.updated_at = now;
            if state == self.states.start && item.started.is_none() {
                item.started = Some(Instant::now());
            }
            item.clone()
        };
        let body = json!({
            "event": "issue", "action": "updated", "webhook_id": "sim", "workspace_id": "sim",
            "data": {
                "id": item.id, "name": item.name, "sequence_id": item.seq, "project": self.project,
                "state": {"id": state_id(state), "name": state, "color": "#000", "group": self.states.group_of(state)},
                "labels": [], "updated_at": now.to_rfc3339()
            },
            "activity": {"field": "state_id", "new_value": state_id(state), "old_value": null,
                         "actor": {"id": "human", "display_name": "sim-human"}}
        });
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        self.hooks
            .send(
                "/webhooks/plane",
                "X-Plane-Signature",
                &[("X-Plane-Event", "issue")],
                bytes,
            )
            .await;
    }

    /// A person answers in a comment on the item: the comment is stored, and its webhook sent
    /// (or dropped).
    pub async fn human_comments(&self, seq: i64, text: &str) {
        let now = self.clock.now();
        let comment = {
            let mut d = self.data.lock().unwrap_or_else(|p| p.into_inner());
            let Some(item_id) = d.items.iter().find(|i| i.seq == seq).map(|i| i.id.clone()) else {
                return;
            };
            let c = FakeComment {
                id: d.comments.len() as u64 + 1,
                item_id,
                html: format!("<p>{text}</p>"),
                external_source: None,
                external_id: None,
                actor: "human".into(),
                created_at: now,
            };
            d.comments.push(c.clone());
            c
        };
        let body = json!({
            "event": "issue_comment", "action": "created", "webhook_id": "sim", "workspace_id": "sim",
            "data": {
                "id": format!("comment-{}", comment.id), "comment_html": comment.html,
                "issue": comment.item_id, "project": self.project, "actor": comment.actor,
                "external_source": null, "external_id": null,
                "created_at": now.to_rfc3339(), "updated_at": now.to_rfc3339()
            },
            "activity": {"field": null, "actor": {"id": "human", "display_name": "sim-human"}}
        });
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        self.hooks
            .send(
                "/webhooks/plane",
                "X-Plane-Signature",
                &[("X-Plane-Event", "issue_comment")],
                bytes,
            )
            .await;
    }

    /// Comments by orch a person would see twice (see [`comments_duplicated`]).
    pub(crate) fn comments_duplicated(&self) -> u64 {
        comments_duplicated(&self.data.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn items(&self) -> Vec<PlaneItem> {
        self.data
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .items
            .clone()
    }
}

fn envelope(results: Vec<Value>, per_page: usize, page: usize, more: bool) -> Value {
    json!({
        "grouped_by": null, "sub_grouped_by": null, "total_count": results.len(),
        "next_cursor": format!("{per_page}:{}:0", page + 1), "prev_cursor": format!("{per_page}:{}:1", page as i64 - 1),
        "next_page_results": more, "prev_page_results": page > 0, "count": results.len(),
        "total_pages": 1, "total_results": results.len(), "extra_stats": null, "results": results
    })
}

async fn plane_states(State(p): State<FakePlane>) -> Json<Value> {
    let results = p
        .states
        .all
        .iter()
        .map(|(n, g)| json!({"id": state_id(n), "name": n, "group": g}))
        .collect();
    Json(envelope(results, 100, 0, false))
}

async fn plane_list(
    State(p): State<FakePlane>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    let per_page: usize = q
        .get("per_page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
        .max(1);
    let page: usize = q
        .get("cursor")
        .and_then(|c| c.split(':').nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut items = p.items();
    items.sort_by_key(|i| std::cmp::Reverse(i.updated_at));
    let start = page * per_page;
    let slice: Vec<Value> = items
        .iter()
        .skip(start)
        .take(per_page)
        .map(|i| {
            json!({"id": i.id, "name": i.name, "sequence_id": i.seq, "project": p.project,
                   "state": {"id": state_id(&i.state), "name": i.state, "group": p.states.group_of(&i.state)},
                   "labels": [], "updated_at": i.updated_at.to_rfc3339()})
        })
        .collect();
    let more = start + per_page < items.len();
    Json(envelope(slice, per_page, page, more))
}

async fn plane_patch(
    State(p): State<FakePlane>,
    Path((_ws, _project, id)): Path<(String, String, String)>,
    Json(body): Json<Value>,
) -> Response {
    let Some(name) = body
        .get("state")
        .and_then(|s| s.as_str())
        .and_then(|id| p.states.name_of(id))
    else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"non_field_errors": ["State is not valid"]})),
        )
            .into_response();
    };
    let now = p.clock.now();
    let mut d = p.data.lock().unwrap_or_else(|e| e.into_inner());
    let Some(item) = d.items.iter_mut().find(|i| i.id == id) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "The requested resource does not exist."})),
        )
            .into_response();
    };
    if item.state == name {
        p.requests
            .resent
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    item.state = name.to_string();
    item.updated_at = now;
    if p.states.done.as_deref() == Some(name.as_str()) && item.done.is_none() {
        item.done = Some(Instant::now());
    }
    Json(json!({"id": id, "state": state_id(&name)})).into_response()
}

async fn plane_get(
    State(p): State<FakePlane>,
    Path((_ws, _project, id)): Path<(String, String, String)>,
) -> Response {
    let d = p.data.lock().unwrap_or_else(|e| e.into_inner());
    let Some(item) = d.items.iter().find(|i| i.id == id) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "The requested resource does not exist."})),
        )
            .into_response();
    };
    let state = json!({"id": state_id(&item.state), "name": item.state, "color": "#000", "group": p.states.group_of(&item.state)});
    Json(json!({"id": item.id, "state": state})).into_response()
}

async fn plane_comment(
    State(p): State<FakePlane>,
    Path((_ws, _project, id)): Path<(String, String, String)>,
    Json(body): Json<Value>,
) -> Response {
    let now = p.clock.now();
    let mut d = p.data.lock().unwrap_or_else(|e| e.into_inner());
    let external_source = body["external_source"].as_str().map(str::to_string);
    let external_id = body["external_id"].as_str().map(str::to_string);
    // Like Plane: one comment per (item, external_source, external_id); a repeat is a 409.
    if external_id.is_some()
        && d.comments.iter().any(|c| {
            c.item_id == id && c.external_source == external_source && c.external_id == external_id
        })
    {
        p.requests
            .resent
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return (
            StatusCode::CONFLICT,
            Json(json!({"error": "Comment with the same external id and source already exists"})),
        )
            .into_response();
    }
    let comment = FakeComment {
        id: d.comments.len() as u64 + 1,
        item_id: id,
        html: body["comment_html"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        external_source,
        external_id,
        actor: "orch".into(),
        created_at: now,
    };
    let cid = comment.id;
    d.comments.push(comment);
    (
        StatusCode::CREATED,
        Json(json!({"id": format!("comment-{cid}")})),
    )
        .into_response()
}

/// Comments a person would see twice: orch's comments with the same `(item,
/// external_source, external_id)` (or, without an id, the same text) beyond the first. The
/// fake refuses repeats with an id, so only comments sent without one can count.
fn comments_duplicated(data: &PlaneData) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut twice = 0;
    for c in data.comments.iter().filter(|c| c.actor == "orch") {
        let key = (&c.item_id, &c.external_source, &c.external_id, c.external_id.is_none().then_some(&c.html));
        if !seen.insert(key) {
            twice += 1;
        }
    }
    twice
}

/// The item's comments, newest first, in Plane's cursor envelope (one page is all orch reads).
async fn plane_comments(
    State(p): State<FakePlane>,
    Path((_ws, _project, id)): Path<(String, String, String)>,
) -> Json<Value> {
    let d = p.data.lock().unwrap_or_else(|e| e.into_inner());
    let mut rows: Vec<&FakeComment> = d.comments.iter().filter(|c| c.item_id == id).collect();
    rows.sort_by_key(|c| std::cmp::Reverse((c.created_at, c.id)));
    let results: Vec<Value> = rows
        .iter()
        .take(100)
        .map(|c| {
            json!({"id": format!("comment-{}", c.id), "comment_html": c.html, "issue": c.item_id,
                   "actor": c.actor, "external_source": c.external_source,
                   "created_at": c.created_at.to_rfc3339()})
        })
        .collect();
    Json(envelope(results, 100, 0, false))
}
