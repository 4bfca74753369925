//! Plane REST API v1: states, work items (cursor-paged), state changes and comments.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::IntegrationError;
use super::retry::{Reply, RetryPolicy, decode, execute_paced};
use crate::clock::Timestamp;
use crate::secret::Secret;

mod disabled;
mod wire;

pub use disabled::DisabledPlane;
use wire::{ApiComment, ApiItem, ApiLabel, ApiStateRef, Envelope, Listing};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PlaneStateInfo {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub group: String,
}

/// A work item as the reconciler needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaneWorkItem {
    pub id: String,
    pub sequence_id: i64,
    pub name: String,
    pub state_id: String,
    pub state_name: String,
    pub state_group: Option<String>,
    pub updated_at: Timestamp,
    pub labels: Vec<String>,
}

/// A comment on a work item, as the reconciler needs it to find a lost answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaneComment {
    pub id: String,
    pub html: String,
    /// `orch` on the comments orch wrote itself.
    pub external_source: Option<String>,
    /// The user who wrote it (Plane's `actor`, or `created_by` when that is absent).
    pub author: Option<String>,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Default)]
pub struct WorkItemPage {
    pub items: Vec<PlaneWorkItem>,
    /// `None` on the last page.
    pub next_cursor: Option<String>,
}

#[async_trait]
pub trait Tracker: Send + Sync {
    async fn list_states(&self, project_id: &str) -> Result<Vec<PlaneStateInfo>, IntegrationError>;
    async fn set_state_by_name(
        &self,
        project_id: &str,
        issue_id: &str,
        state_name: &str,
    ) -> Result<(), IntegrationError>;
    /// Adds a comment; `external_id` makes a retry a no-op (Plane answers 409 to a duplicate).
    async fn add_comment(
        &self,
        project_id: &str,
        issue_id: &str,
        html: &str,
        external_id: &str,
    ) -> Result<(), IntegrationError>;
    /// One page of work items, most recently updated first.
    async fn list_work_items_page(
        &self,
        project_id: &str,
        cursor: Option<&str>,
        per_page: u32,
    ) -> Result<WorkItemPage, IntegrationError>;
    /// A work item's current state (name and group), read just before orch writes one, so a
    /// change whose webhook was lost is not overwritten unseen.
    async fn work_item_state(
        &self,
        project_id: &str,
        issue_id: &str,
    ) -> Result<Option<PlaneStateInfo>, IntegrationError>;
    /// The newest comments of a work item (one page, newest first): enough to find the
    /// answer to a question orch asked, which is always among the latest.
    async fn recent_comments(
        &self,
        project_id: &str,
        issue_id: &str,
    ) -> Result<Vec<PlaneComment>, IntegrationError>;
}

/// The `external_source` of every comment orch writes in Plane; a comment webhook carrying
/// it is orch's own and never an answer.
pub const COMMENT_SOURCE: &str = "orch";

pub struct HttpPlane {
    client: reqwest::Client,
    base: String,
    token: Secret,
    workspace: String,
    retry: RetryPolicy,
    /// Minimum spacing between requests: Plane allows 60/min per key.
    spacing: Duration,
    next_slot: Mutex<Instant>,
    states: Mutex<HashMap<String, Vec<PlaneStateInfo>>>,
}

impl HttpPlane {
    pub fn new(
        base_url: &str,
        token: Secret,
        workspace: &str,
        requests_per_minute: u32,
        retry: RetryPolicy,
    ) -> Result<Self, IntegrationError> {
        let client = super::client("plane", retry.attempt_timeout)?;
        let rpm = requests_per_minute.max(1);
        Ok(HttpPlane {
            client,
            base: base_url.trim_end_matches('/').to_string(),
            token,
            workspace: workspace.to_string(),
            retry,
            spacing: Duration::from_secs(60) / rpm,
            next_slot: Mutex::new(Instant::now()),
            states: Mutex::new(HashMap::new()),
        })
    }

    /// Waits for this client's next request slot.
    async fn pace(&self) {
        let wait_until = {
            let mut next = self.next_slot.lock().await;
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.spacing;
            slot
        };
        tokio::time::sleep_until(wait_until).await;
    }

    fn project_path(&self, project_id: &str, rest: &str) -> String {
        format!(
            "/workspaces/{}/projects/{}/{}",
            self.workspace, project_id, rest
        )
    }

    async fn request(
        &self,
        method: reqwest::Method,
        op: &'static str,
        path: &str,
        query: &[(&str, String)],
        body: Option<serde_json::Value>,
        accept: &[u16],
    ) -> Result<Reply, IntegrationError> {
        let url = format!("{}/api/v1{}", self.base, path);
        let pace = || self.pace();
        execute_paced("plane", op, path, &self.retry, accept, pace, || {
            let mut rb = self
                .client
                .request(method.clone(), &url)
                .header("X-API-Key", self.token.expose())
                .query(query);
            if let Some(b) = &body {
                rb = rb.json(b);
            }
            rb
        })
        .await
    }

    /// A GET whose reply is decoded as `T`.
    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        op: &'static str,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, IntegrationError> {
        let reply = self
            .request(reqwest::Method::GET, op, path, query, None, &[])
            .await?;
        decode("plane", op, path, &reply)
    }

    async fn fetch_states(
        &self,
        project_id: &str,
    ) -> Result<Vec<PlaneStateInfo>, IntegrationError> {
        let path = self.project_path(project_id, "states/");
        let listing: Listing<PlaneStateInfo> = self.get("list states", &path, &[]).await?;
        Ok(listing.into_rows())
    }

    async fn state_id(&self, project_id: &str, name: &str) -> Result<String, IntegrationError> {
        let find = |states: &[PlaneStateInfo]| {
            states
                .iter()
                .find(|s| s.name.eq_ignore_ascii_case(name))
                .map(|s| s.id.clone())
        };
        if let Some(id) = self
            .states
            .lock()
            .await
            .get(project_id)
            .and_then(|s| find(s))
        {
            return Ok(id);
        }
        // A miss refreshes the cache once: the state may have been created since.
        let fresh = self.fetch_states(project_id).await?;
        let id = find(&fresh);
        self.states
            .lock()
            .await
            .insert(project_id.to_string(), fresh);
        id.ok_or_else(|| IntegrationError::Invalid {
            peer: "plane",
            message: format!("project {project_id} has no state named {name:?}"),
        })
    }
}

#[async_trait]
impl Tracker for HttpPlane {
    async fn list_states(&self, project_id: &str) -> Result<Vec<PlaneStateInfo>, IntegrationError> {
        if let Some(s) = self.states.lock().await.get(project_id) {
            return Ok(s.clone());
        }
        let fresh = self.fetch_states(project_id).await?;
        self.states
            .lock()
            .await
            .insert(project_id.to_string(), fresh.clone());
        Ok(fresh)
    }

    async fn set_state_by_name(
        &self,
        project_id: &str,
        issue_id: &str,
        state_name: &str,
    ) -> Result<(), IntegrationError> {
        let state = self.state_id(project_id, state_name).await?;
        let path = self.project_path(project_id, &format!("work-items/{issue_id}/"));
        self.request(
            reqwest::Method::PATCH,
            "set state",
            &path,
            &[],
            Some(json!({ "state": state })),
            &[],
        )
        .await?;
        Ok(())
    }

    async fn add_comment(
        &self,
        project_id: &str,
        issue_id: &str,
        html: &str,
        external_id: &str,
    ) -> Result<(), IntegrationError> {
        let path = self.project_path(project_id, &format!("work-items/{issue_id}/comments/"));
        let body = json!({ "comment_html": html, "external_source": COMMENT_SOURCE, "external_id": external_id });
        // 409: this comment was already posted (a retry); that is success.
        self.request(
            reqwest::Method::POST,
            "add comment",
            &path,
            &[],
            Some(body),
            &[409],
        )
        .await?;
        Ok(())
    }

    async fn list_work_items_page(
        &self,
        project_id: &str,
        cursor: Option<&str>,
        per_page: u32,
    ) -> Result<WorkItemPage, IntegrationError> {
        let path = self.project_path(project_id, "work-items/");
        let mut query = vec![
            ("per_page", per_page.to_string()),
            ("order_by", "-updated_at".to_string()),
            ("expand", "state,labels".to_string()),
        ];
        if let Some(c) = cursor {
            query.push(("cursor", c.to_string()));
        }
        let env: Envelope<ApiItem> = self.get("list work items", &path, &query).await?;
        let mut items = Vec::with_capacity(env.results.len());
        let states = match env
            .results
            .iter()
            .any(|i| matches!(i.state, ApiStateRef::Id(_)))
        {
            true => Some(self.list_states(project_id).await?),
            false => None,
        };
        for i in env.results {
            let (state_id, state_name, state_group) = match i.state {
                ApiStateRef::Expanded(s) => (s.id, s.name, Some(s.group)),
                ApiStateRef::Id(id) => {
                    let found = states
                        .as_ref()
                        .and_then(|all| all.iter().find(|s| s.id == id));
                    match found {
                        Some(s) => (id.clone(), s.name.clone(), Some(s.group.clone())),
                        None => (id, String::new(), None),
                    }
                }
            };
            let updated_at =
                Timestamp::parse_rfc3339(&i.updated_at).map_err(|e| IntegrationError::Decode {
                    peer: "plane",
                    op: "list work items",
                    path: path.clone(),
                    message: format!("bad updated_at {:?}: {e}", i.updated_at),
                })?;
            items.push(PlaneWorkItem {
                id: i.id,
                sequence_id: i.sequence_id,
                name: i.name,
                state_id,
                state_name,
                state_group,
                updated_at,
                labels: i
                    .labels
                    .into_iter()
                    .filter_map(|l| match l {
                        ApiLabel::Expanded { name } => Some(name),
                        ApiLabel::Id(_) => None,
                    })
                    .collect(),
            });
        }
        // Plane's cursors are never empty, even on the last page: `next_page_results` decides.
        let next_cursor = env
            .next_cursor
            .filter(|c| env.next_page_results && !c.is_empty());
        Ok(WorkItemPage { items, next_cursor })
    }

    async fn work_item_state(
        &self,
        project_id: &str,
        issue_id: &str,
    ) -> Result<Option<PlaneStateInfo>, IntegrationError> {
        #[derive(Deserialize)]
        struct Item {
            state: ApiStateRef,
        }
        let path = self.project_path(project_id, &format!("work-items/{issue_id}/"));
        let query = [
            ("expand", "state".to_string()),
            ("fields", "id,state".to_string()),
        ];
        let item: Item = self.get("get work item", &path, &query).await?;
        Ok(match item.state {
            ApiStateRef::Expanded(s) => Some(s),
            ApiStateRef::Id(id) => self
                .list_states(project_id)
                .await?
                .into_iter()
                .find(|s| s.id == id),
        })
    }

    async fn recent_comments(
        &self,
        project_id: &str,
        issue_id: &str,
    ) -> Result<Vec<PlaneComment>, IntegrationError> {
        let path = self.project_path(project_id, &format!("work-items/{issue_id}/comments/"));
        let query = [
            ("per_page", COMMENTS_PAGE.to_string()),
            ("order_by", "-created_at".to_string()),
        ];
        let listing: Listing<ApiComment> = self.get("list comments", &path, &query).await?;
        let rows = listing.into_rows();
        let mut comments = Vec::with_capacity(rows.len());
        for c in rows {
            let created_at =
                Timestamp::parse_rfc3339(&c.created_at).map_err(|e| IntegrationError::Decode {
                    peer: "plane",
                    op: "list comments",
                    path: path.clone(),
                    message: format!("bad created_at {:?}: {e}", c.created_at),
                })?;
            comments.push(PlaneComment {
                id: c.id,
                html: c.comment_html.unwrap_or_default(),
                external_source: c.external_source,
                author: c.actor.or(c.created_by),
                created_at,
            });
        }
        // Whatever order the server used, newest first.
        comments.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        Ok(comments)
    }
}

/// Comments read per work item when looking for a lost answer.
const COMMENTS_PAGE: u32 = 100;
