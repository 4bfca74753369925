//! Stored deliveries parsed into what they ask of the pipeline, without I/O: the payloads as
//! the peers write them (lenient about what orch does not read) and [`parse`].

use serde::Deserialize;

use crate::clock::Timestamp;
use crate::store::InboxItem;

use super::{DeliveryError, malformed, plain_text};
use crate::pipeline::WorkItem;

#[derive(Debug, Deserialize)]
struct PlaneV1 {
    event: Option<String>,
    action: Option<String>,
    data: Option<PlaneIssue>,
    activity: Option<PlaneActivity>,
}

#[derive(Debug, Deserialize)]
struct PlaneIssue {
    id: Option<String>,
    name: Option<String>,
    sequence_id: Option<i64>,
    /// v1: `project`; v2: `project_id`.
    #[serde(alias = "project_id")]
    project: Option<String>,
    /// v1 expands the state; v2 sends only `state_id`.
    state: Option<PlaneState>,
    state_id: Option<String>,
    #[serde(default)]
    labels: Vec<PlaneLabel>,
    /// Plane's stamp of the change (RFC 3339); unreadable is as good as absent.
    updated_at: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PlaneState {
    id: Option<String>,
    name: Option<String>,
    group: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PlaneLabel {
    Expanded { name: String },
    Id(serde::de::IgnoredAny),
}

#[derive(Debug, Deserialize)]
struct PlaneActivity {
    field: Option<String>,
    actor: Option<PlaneActor>,
}

#[derive(Debug, Deserialize)]
struct PlaneActor {
    id: Option<String>,
    display_name: Option<String>,
}

/// v1 `issue_comment`: `data` is the comment.
#[derive(Debug, Deserialize)]
struct PlaneCommentV1 {
    action: Option<String>,
    data: Option<CommentPayload>,
    activity: Option<PlaneActivity>,
}

#[derive(Debug, Deserialize)]
struct CommentPayload {
    /// The work item's Plane id.
    issue: Option<String>,
    project: Option<String>,
    comment_html: Option<String>,
    external_source: Option<String>,
    /// The author's user id.
    actor: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PlaneV2 {
    event: Option<String>,
    data: Option<PlaneIssue>,
    #[serde(default)]
    previous_attributes: serde_json::Map<String, serde_json::Value>,
}

/// A Plane work item reduced to what the pipeline acts on.
#[derive(Debug, Clone)]
pub struct PlaneItem {
    pub item: WorkItem,
    pub state_name: String,
    pub state_group: Option<String>,
    pub actor: Option<String>,
    /// When the state was set, as far as orch can tell: a start set before an agent asked its
    /// question is not an answer to it. `None` when unknown.
    pub changed_at: Option<Timestamp>,
    /// The item's `updated_at` as Plane stamped it (Plane's clock), when the payload or the
    /// listing carries it; recorded once applied, for the sweep's "already applied".
    pub plane_updated_at: Option<Timestamp>,
}

/// A stored delivery parsed into what it asks of the pipeline, before any lookup: no store,
/// no peer, no configuration, so it can be checked on arbitrary bytes (the fuzz targets in
/// `fuzz/` do). [`Pipeline::handle_delivery`] acts on it.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// A Plane work item was created or its state changed.
    PlaneWorkItem(PlaneChange),
    /// A new comment on a Plane work item (perhaps the answer to an agent's question).
    PlaneComment(PlaneNewComment),
    /// A push to a branch.
    GiteaPush { repo: String, branch: String },
    /// A commit status (CI); the sha still has to be resolved to a branch (F-3).
    GiteaStatus { repo: String, sha: String },
    /// A pull-request review.
    GiteaReview {
        repo: String,
        branch: String,
        approved: bool,
        feedback: Option<String>,
    },
    /// Well-formed, but nothing the pipeline acts on.
    Ignored { reason: String },
}

/// A Plane work item's creation or state change, as the payload carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaneChange {
    pub plane_issue_id: Option<String>,
    pub project_id: String,
    pub sequence_id: i64,
    pub title: String,
    pub labels: Vec<String>,
    pub state: PlaneStateRef,
    /// Who made the change (v1 only): orch's own writes are recognised by the id.
    pub actor_id: Option<String>,
    pub actor_name: Option<String>,
    /// Plane's stamp of the change; an unreadable one is as good as absent.
    pub updated_at: Option<Timestamp>,
}

/// The new state: expanded (v1) or only its id (v2), which Plane is asked to name.
#[derive(Debug, Clone, PartialEq)]
pub enum PlaneStateRef {
    Named { name: String, group: Option<String> },
    Id(String),
}

/// A new comment on a Plane work item.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaneNewComment {
    pub project_id: String,
    pub plane_issue_id: String,
    /// The comment as plain text ([`plain_text`]).
    pub text: String,
    pub external_source: Option<String>,
    /// The author's user id.
    pub author: Option<String>,
}

/// Parses one stored delivery. Pure: a malformed payload is an error (permanent: it stays
/// malformed however often it is retried), never a panic.
pub fn parse(delivery: &InboxItem) -> Result<Parsed, DeliveryError> {
    match delivery.source.as_str() {
        "plane" => parse_plane(&delivery.body),
        "gitea" => parse_gitea(&delivery.event, &delivery.body),
        other => Ok(Parsed::Ignored {
            reason: format!("unknown source {other}"),
        }),
    }
}

fn parse_plane(body: &[u8]) -> Result<Parsed, DeliveryError> {
    let bad = |e: serde_json::Error| malformed("Plane", e.to_string());
    let value: serde_json::Value = serde_json::from_slice(body).map_err(bad)?;
    let is_v2 = value.get("version").and_then(|v| v.as_str()) == Some("v2");
    let (issue, actor, relevant) = if is_v2 {
        let p: PlaneV2 = serde_json::from_value(value).map_err(bad)?;
        let event = p.event.unwrap_or_default();
        let relevant = event.ends_with(".created")
            || (event.ends_with(".updated") && p.previous_attributes.contains_key("state_id"));
        if !event.starts_with("workitem") && !event.starts_with("issue") {
            return Ok(parsed_ignored(format!(
                "Plane event {event} is not about work items"
            )));
        }
        (p.data, None, relevant)
    } else {
        if value.get("event").and_then(|v| v.as_str()) == Some("issue_comment") {
            return parse_plane_comment(value);
        }
        let p: PlaneV1 = serde_json::from_value(value).map_err(bad)?;
        if p.event.as_deref() != Some("issue") {
            return Ok(parsed_ignored(format!(
                "Plane event {} is not about work items",
                p.event.unwrap_or_default()
            )));
        }
        let field = p.activity.as_ref().and_then(|a| a.field.clone());
        let relevant = p.action.as_deref() == Some("created")
            || matches!(field.as_deref(), Some("state") | Some("state_id"));
        let actor = p.activity.and_then(|a| a.actor);
        (p.data, actor, relevant)
    };
    if !relevant {
        return Ok(parsed_ignored("not a creation or a state change".into()));
    }
    let issue = issue.ok_or_else(|| malformed("Plane", "no data"))?;
    let project_id = issue
        .project
        .ok_or_else(|| malformed("Plane", "data.project is missing"))?;
    let sequence_id = issue
        .sequence_id
        .ok_or_else(|| malformed("Plane", "data.sequence_id is missing"))?;
    let state = match issue.state {
        Some(PlaneState {
            name: Some(name),
            group,
            ..
        }) => PlaneStateRef::Named { name, group },
        other => PlaneStateRef::Id(
            other
                .and_then(|s| s.id)
                .or(issue.state_id)
                .ok_or_else(|| malformed("Plane", "data.state is missing"))?,
        ),
    };
    let labels = issue
        .labels
        .into_iter()
        .filter_map(|l| match l {
            PlaneLabel::Expanded { name } => Some(name),
            PlaneLabel::Id(_) => None,
        })
        .collect();
    let (actor_id, actor_name) = match actor {
        Some(a) => (a.id, a.display_name),
        None => (None, None),
    };
    Ok(Parsed::PlaneWorkItem(PlaneChange {
        plane_issue_id: issue.id,
        project_id,
        sequence_id,
        title: issue.name.unwrap_or_default(),
        labels,
        state,
        actor_id,
        actor_name,
        updated_at: issue
            .updated_at
            .as_deref()
            .and_then(|t| Timestamp::parse_rfc3339(t).ok()),
    }))
}

/// v1 `issue_comment`: only a new comment can answer a question.
fn parse_plane_comment(value: serde_json::Value) -> Result<Parsed, DeliveryError> {
    let p: PlaneCommentV1 =
        serde_json::from_value(value).map_err(|e| malformed("Plane", e.to_string()))?;
    if p.action.as_deref() != Some("created") {
        return Ok(parsed_ignored("only a new comment can answer".into()));
    }
    let comment = p
        .data
        .ok_or_else(|| malformed("Plane", "comment without data"))?;
    let author = p
        .activity
        .and_then(|a| a.actor)
        .and_then(|a| a.id)
        .or(comment.actor);
    let project_id = comment
        .project
        .ok_or_else(|| malformed("Plane", "data.project is missing"))?;
    let plane_issue_id = comment
        .issue
        .ok_or_else(|| malformed("Plane", "data.issue is missing"))?;
    Ok(Parsed::PlaneComment(PlaneNewComment {
        project_id,
        plane_issue_id,
        text: plain_text(comment.comment_html.as_deref().unwrap_or_default()),
        external_source: comment.external_source,
        author,
    }))
}

fn parse_gitea(event: &str, body: &[u8]) -> Result<Parsed, DeliveryError> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| malformed("Gitea", e.to_string()))?;
    let repo = || {
        v.pointer("/repository/full_name")
            .and_then(|r| r.as_str())
            .map(str::to_string)
            .ok_or_else(|| malformed("Gitea", "repository.full_name is missing"))
    };
    match event {
        "push" => {
            let repo = repo()?;
            let git_ref = v.get("ref").and_then(|r| r.as_str()).unwrap_or_default();
            match git_ref.strip_prefix("refs/heads/") {
                Some(branch) => Ok(Parsed::GiteaPush {
                    repo,
                    branch: branch.to_string(),
                }),
                None => Ok(parsed_ignored(format!("push of {git_ref} is not a branch"))),
            }
        }
        "status" => {
            let repo = repo()?;
            let sha = v
                .get("sha")
                .and_then(|s| s.as_str())
                .ok_or_else(|| malformed("Gitea", "sha is missing"))?;
            Ok(Parsed::GiteaStatus {
                repo,
                sha: sha.to_string(),
            })
        }
        "pull_request_review_approved" | "pull_request_review_rejected" => {
            let repo = repo()?;
            let branch = v
                .pointer("/pull_request/head/ref")
                .and_then(|b| b.as_str())
                .ok_or_else(|| malformed("Gitea", "pull_request.head.ref is missing"))?;
            let feedback = v
                .pointer("/review/content")
                .and_then(|c| c.as_str())
                .filter(|c| !c.trim().is_empty())
                .map(str::to_string);
            Ok(Parsed::GiteaReview {
                repo,
                branch: branch.to_string(),
                approved: event.ends_with("approved"),
                feedback,
            })
        }
        other => Ok(parsed_ignored(format!("Gitea event {other} is not used"))),
    }
}

fn parsed_ignored(reason: String) -> Parsed {
    Parsed::Ignored { reason }
}
