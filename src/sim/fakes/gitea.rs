//! The fake Gitea: branch heads read from the real bare remote, CI statuses set by the
//! simulation, status webhooks sent (and possibly dropped) when CI finishes.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::Hooks;

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
