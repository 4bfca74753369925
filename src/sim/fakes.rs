//! In-process fake Plane and Gitea: real HTTP servers speaking the subset of the peers' APIs
//! orch uses, so the simulation runs orch's real clients, webhooks and reconciler unchanged.
//!
//! Webhooks the fakes send (Plane state changes by the simulated humans, Gitea CI statuses)
//! are dropped with a seeded probability: that is the chaos the reconciler must heal.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::clock::{Clock, SystemClock, Timestamp};

pub const STATES: &[(&str, &str)] = &[
    ("Backlog", "backlog"),
    ("In Progress", "started"),
    ("In Review", "started"),
    ("Approved", "started"),
    ("Rejected", "started"),
    ("Needs Input", "started"),
    ("Blocked", "started"),
    ("Done", "completed"),
    ("Cancelled", "cancelled"),
];

pub fn state_id(name: &str) -> String {
    format!("state-{}", name.to_lowercase().replace(' ', "-"))
}

fn state_name(id: &str) -> Option<&'static str> {
    STATES
        .iter()
        .find(|(n, _)| state_id(n) == id)
        .map(|(n, _)| *n)
}

fn group_of(name: &str) -> &'static str {
    STATES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, g)| *g)
        .unwrap_or("started")
}

/// Sends webhooks to orch, dropping some on purpose.
pub struct Hooks {
    client: reqwest::Client,
    /// orch's URL; a restarted engine listens elsewhere.
    target: Mutex<String>,
    drop_rate: f64,
    /// Every delivery is signed, so the chaos run goes through signature checks as in production.
    secret: String,
    rng: Mutex<StdRng>,
    pub sent: std::sync::atomic::AtomicU64,
    pub dropped: std::sync::atomic::AtomicU64,
    /// Deliveries orch refused (an HTTP error): a healthy run has none.
    pub rejected: std::sync::atomic::AtomicU64,
    /// Deliveries that found no orch to answer (it was being killed and restarted): lost
    /// webhooks like a 502 during a deploy, healed like the dropped ones.
    pub unreachable: std::sync::atomic::AtomicU64,
}

impl Hooks {
    pub fn new(
        target: String,
        secret: String,
        drop_rate: f64,
        seed: u64,
    ) -> Result<Hooks, reqwest::Error> {
        Ok(Hooks {
            client: crate::http_client::build(Duration::from_secs(5))?,
            target: Mutex::new(target),
            drop_rate,
            secret,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            sent: Default::default(),
            dropped: Default::default(),
            rejected: Default::default(),
            unreachable: Default::default(),
        })
    }

    /// Points the webhooks at a restarted orch.
    pub fn retarget(&self, url: &str) {
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = url.to_string();
    }

    fn dropped_now(&self) -> bool {
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        rng.random::<f64>() < self.drop_rate
    }

    /// Delivers (or drops on purpose) one webhook, signed in `signature_header`.
    pub async fn send(
        &self,
        path: &str,
        signature_header: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) {
        use hmac::{Hmac, KeyInit, Mac};
        use std::sync::atomic::Ordering;
        if self.dropped_now() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let signature = match Hmac::<sha2::Sha256>::new_from_slice(self.secret.as_bytes()) {
            Ok(mut mac) => {
                mac.update(&body);
                hex::encode(mac.finalize().into_bytes())
            }
            Err(_) => String::new(),
        };
        let target = self
            .target
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut req = self
            .client
            .post(format!("{target}{path}"))
            .header(signature_header, signature)
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => {
                self.sent.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => {
                tracing::warn!(status = %r.status(), path, "orch refused a simulated webhook");
                self.rejected.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::info!(error = %e, path, "a simulated webhook did not reach orch");
                self.unreachable.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Plane

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
pub struct PlaneComment {
    pub id: u64,
    pub item_id: String,
    pub html: String,
    pub external_source: Option<String>,
    pub actor: String,
    pub created_at: Timestamp,
}

#[derive(Default)]
pub struct PlaneData {
    pub items: Vec<PlaneItem>,
    pub comments: Vec<PlaneComment>,
}

/// Plane API requests orch made, by kind: what one work item costs in Plane's budget.
#[derive(Debug, Default)]
pub struct PlaneRequests {
    /// Requests about one work item (read, state write, comments).
    pub item: std::sync::atomic::AtomicU64,
    /// Listings: work item pages (the Plane-side sweep) and states.
    pub listing: std::sync::atomic::AtomicU64,
}

#[derive(Clone)]
pub struct FakePlane {
    pub project: String,
    pub data: Arc<Mutex<PlaneData>>,
    pub requests: Arc<PlaneRequests>,
    hooks: Arc<Hooks>,
    clock: Arc<dyn Clock>,
}

impl FakePlane {
    pub fn new(project: &str, hooks: Arc<Hooks>) -> FakePlane {
        FakePlane {
            project: project.to_string(),
            data: Arc::new(Mutex::new(PlaneData::default())),
            requests: Arc::default(),
            hooks,
            clock: Arc::new(SystemClock),
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
            if state == "In Progress" && item.started.is_none() {
                item.started = Some(Instant::now());
            }
            item.clone()
        };
        let body = json!({
            "event": "issue", "action": "updated", "webhook_id": "sim", "workspace_id": "sim",
            "data": {
                "id": item.id, "name": item.name, "sequence_id": item.seq, "project": self.project,
                "state": {"id": state_id(state), "name": state, "color": "#000", "group": group_of(state)},
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
            let c = PlaneComment {
                id: d.comments.len() as u64 + 1,
                item_id,
                html: format!("<p>{text}</p>"),
                external_source: None,
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

async fn plane_states(State(_): State<FakePlane>) -> Json<Value> {
    let results = STATES
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
                   "state": {"id": state_id(&i.state), "name": i.state, "group": group_of(&i.state)},
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
        .and_then(state_name)
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
    item.state = name.to_string();
    item.updated_at = now;
    if name == "Done" && item.done.is_none() {
        item.done = Some(Instant::now());
    }
    Json(json!({"id": id, "state": state_id(name)})).into_response()
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
    let state = json!({"id": state_id(&item.state), "name": item.state, "color": "#000", "group": group_of(&item.state)});
    Json(json!({"id": item.id, "state": state})).into_response()
}

async fn plane_comment(
    State(p): State<FakePlane>,
    Path((_ws, _project, id)): Path<(String, String, String)>,
    Json(body): Json<Value>,
) -> Response {
    let now = p.clock.now();
    let mut d = p.data.lock().unwrap_or_else(|e| e.into_inner());
    let comment = PlaneComment {
        id: d.comments.len() as u64 + 1,
        item_id: id,
        html: body["comment_html"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        external_source: body["external_source"].as_str().map(str::to_string),
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

/// The item's comments, newest first, in Plane's cursor envelope (one page is all orch reads).
async fn plane_comments(
    State(p): State<FakePlane>,
    Path((_ws, _project, id)): Path<(String, String, String)>,
) -> Json<Value> {
    let d = p.data.lock().unwrap_or_else(|e| e.into_inner());
    let mut rows: Vec<&PlaneComment> = d.comments.iter().filter(|c| c.item_id == id).collect();
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

// ---------------------------------------------------------------------------------------------
// Gitea

#[derive(Clone)]
pub struct FakeGitea {
    pub repo: String,
    pub bare: PathBuf,
    /// Shas whose CI has finished (green); others are pending.
    pub green: Arc<Mutex<HashSet<String>>>,
    hooks: Arc<Hooks>,
}

impl FakeGitea {
    pub fn new(repo: &str, bare: PathBuf, hooks: Arc<Hooks>) -> FakeGitea {
        FakeGitea {
            repo: repo.to_string(),
            bare,
            green: Arc::new(Mutex::new(HashSet::new())),
            hooks,
        }
    }

    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .route("/api/v1/repos/{owner}/{name}/branches", get(gitea_branches))
            .route(
                "/api/v1/repos/{owner}/{name}/branches/{*branch}",
                get(gitea_branch),
            )
            .route(
                "/api/v1/repos/{owner}/{name}/commits/{sha}/statuses",
                get(gitea_statuses),
            )
            .with_state(self.clone())
    }

    /// Branch heads in the bare repository.
    pub async fn heads(&self) -> BTreeMap<String, String> {
        let out = tokio::process::Command::new("git")
            .args([
                "for-each-ref",
                "--format=%(refname:short) %(objectname)",
                "refs/heads",
            ])
            .current_dir(&self.bare)
            .output()
            .await;
        let mut map = BTreeMap::new();
        if let Ok(out) = out {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some((b, s)) = line.split_once(' ') {
                    map.insert(b.to_string(), s.to_string());
                }
            }
        }
        map
    }

    /// CI finishes for `sha`: green, and Gitea sends a status event (no branch in it).
    pub async fn ci_finished(&self, sha: &str) {
        self.green
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sha.to_string());
        let body = json!({
            "commit": {"id": sha, "message": "sim", "url": "", "author": {"name": "a", "email": "a@x", "username": "a"},
                       "committer": {"name": "a", "email": "a@x", "username": "a"}, "verification": null,
                       "timestamp": "2026-01-01T00:00:00Z", "added": null, "removed": null, "modified": null},
            "context": "ci/build", "created_at": "2026-01-01T00:00:00Z", "description": "Build passed", "id": 1,
            "repository": {"id": 1, "name": "widget", "full_name": self.repo, "owner": {"id": 1, "login": "acme", "username": "acme"}},
            "sender": {"id": 2, "login": "ci", "username": "ci"},
            "sha": sha, "state": "success", "target_url": "", "updated_at": "2026-01-01T00:00:00Z"
        });
        let bytes = serde_json::to_vec_pretty(&body).unwrap_or_default();
        self.hooks
            .send(
                "/webhooks/gitea",
                "X-Gitea-Signature",
                &[
                    ("X-Gitea-Event", "status"),
                    ("X-Gitea-Event-Type", "status"),
                ],
                bytes,
            )
            .await;
    }
}

async fn gitea_branches(State(g): State<FakeGitea>) -> Response {
    let heads = g.heads().await;
    let list: Vec<Value> = heads
        .iter()
        .map(|(b, s)| json!({"name": b, "commit": {"id": s}}))
        .collect();
    ([("X-Total-Count", list.len().to_string())], Json(list)).into_response()
}

async fn gitea_branch(
    State(g): State<FakeGitea>,
    Path((_o, _n, branch)): Path<(String, String, String)>,
) -> Response {
    match g.heads().await.get(&branch) {
        Some(sha) => Json(json!({"name": branch, "commit": {"id": sha}})).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"message": "branch not found"})),
        )
            .into_response(),
    }
}

async fn gitea_statuses(
    State(g): State<FakeGitea>,
    Path((_o, _n, sha)): Path<(String, String, String)>,
) -> Response {
    let green = g
        .green
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(&sha);
    let status = if green { "success" } else { "pending" };
    let list = vec![json!({"id": 1, "status": status, "context": "ci/build"})];
    ([("X-Total-Count", "1".to_string())], Json(list)).into_response()
}
