//! Turning stored webhook deliveries into pipeline calls.
//!
//! Parsing is lenient about what it does not need (peers add fields all the time) and strict
//! about what it does: a delivery missing the fields an action needs is an error recorded on
//! the delivery, never a panic and never a half-applied change.

use serde::Deserialize;

use crate::clock::Timestamp;
use crate::policy::PlaneAction;
use crate::store::{self, InboxItem, Task, Trigger};

use super::{Outcome, Pipeline, PipelineError, VerdictSource, WorkItem};

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("malformed {source_name} payload: {message}")]
    Malformed {
        source_name: &'static str,
        message: String,
    },
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

impl DeliveryError {
    /// A malformed delivery stays malformed however often it is retried.
    pub fn is_permanent(&self) -> bool {
        matches!(self, DeliveryError::Malformed { .. })
    }
}

fn malformed(source_name: &'static str, message: impl Into<String>) -> DeliveryError {
    DeliveryError::Malformed {
        source_name,
        message: message.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Plane payloads as written

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
    data: Option<PlaneComment>,
    activity: Option<PlaneActivity>,
}

#[derive(Debug, Deserialize)]
struct PlaneComment {
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

impl Pipeline {
    /// Applies one stored delivery: [`parse`], then the lookups and the pipeline call.
    pub async fn handle_delivery(&self, delivery: &InboxItem) -> Result<Outcome, DeliveryError> {
        match parse(delivery)? {
            Parsed::PlaneWorkItem(change) => self.handle_plane(change, delivery.received_at).await,
            Parsed::PlaneComment(comment) => {
                self.handle_plane_comment(comment, delivery.received_at)
                    .await
            }
            Parsed::GiteaPush { repo, branch } => self.handle_gitea_push(&repo, &branch).await,
            Parsed::GiteaStatus { repo, sha } => {
                let tasks = self.resolve_status(&repo, &sha).await?;
                let mut last = ignored(format!("status for {repo}@{sha} resolved to no task"));
                for task in tasks {
                    last = self.advance(task.id, Trigger::Webhook).await?;
                }
                Ok(last)
            }
            Parsed::GiteaReview {
                repo,
                branch,
                approved,
                feedback,
            } => {
                self.handle_gitea_review(&repo, &branch, approved, feedback)
                    .await
            }
            Parsed::Ignored { reason } => Ok(ignored(reason)),
        }
    }

    /// `received_at` bounds when the change was made, for payloads that carry no time.
    async fn handle_plane(
        &self,
        change: PlaneChange,
        received_at: Timestamp,
    ) -> Result<Outcome, DeliveryError> {
        if let (Some(ours), Some(actor_id)) = (
            self.config.plane.actor_id.as_deref(),
            change.actor_id.as_deref(),
        ) && ours == actor_id
        {
            tracing::debug!("Plane event caused by orch itself; ignored");
            return Ok(ignored("caused by orch's own API write".into()));
        }
        let Some(mut item) = self.plane_item(change).await? else {
            return Ok(ignored("work item of an unconfigured project".into()));
        };
        // The change was made before orch received it. orch's own clock, so no skew with the
        // time the question was asked (Plane's `updated_at` is Plane's clock).
        item.changed_at = Some(received_at);
        Ok(self.apply_plane_state(&item, Trigger::Webhook).await?)
    }

    /// A person's new comment on a work item whose agent asked a question is the answer.
    async fn handle_plane_comment(
        &self,
        comment: PlaneNewComment,
        received_at: Timestamp,
    ) -> Result<Outcome, DeliveryError> {
        if self.is_own_comment(
            comment.external_source.as_deref(),
            comment.author.as_deref(),
        ) {
            tracing::debug!("Plane comment written by orch itself; ignored");
            return Ok(ignored("orch's own comment".into()));
        }
        let project = comment.project_id;
        if self.config.project_by_plane_id(&project).is_none() {
            tracing::debug!(project = %project, "Plane comment for an unconfigured project; ignored");
            return Ok(ignored("work item of an unconfigured project".into()));
        }
        let issue = comment.plane_issue_id;
        let Some(task) = self
            .store
            .call(move |c| store::tasks::get_by_plane_issue(c, &issue))
            .await
            .map_err(PipelineError::from)?
        else {
            return Ok(ignored(
                "comment on a work item orch has no task for".into(),
            ));
        };
        if comment.text.is_empty() {
            return Ok(ignored("empty comment".into()));
        }
        // Written before orch received it: orch's own clock, comparable with the question's.
        Ok(self
            .answer(&task, comment.text, Some(received_at), Trigger::Webhook)
            .await?)
    }

    /// A comment orch wrote (tagged with its external source, or written by its own Plane
    /// user): never an answer, whichever way it arrives.
    pub fn is_own_comment(&self, external_source: Option<&str>, author: Option<&str>) -> bool {
        external_source == Some(super::COMMENT_SOURCE)
            || (author.is_some() && author == self.config.plane.actor_id.as_deref())
    }

    /// The work item in orch's terms: `None` for an unconfigured project; a state given only
    /// by id is named by asking Plane.
    async fn plane_item(&self, change: PlaneChange) -> Result<Option<PlaneItem>, DeliveryError> {
        let project_id = change.project_id;
        let Some(project) = self.config.project_by_plane_id(&project_id) else {
            tracing::debug!(project = %project_id, "Plane event for an unconfigured project; ignored");
            return Ok(None);
        };
        let (state_name, state_group) = match change.state {
            PlaneStateRef::Named { name, group } => (name, group),
            PlaneStateRef::Id(id) => {
                // v2 (and a non-expanded v1) carries only the state id: ask Plane for its name.
                let states = self
                    .tracker
                    .list_states(&project_id)
                    .await
                    .map_err(PipelineError::from)?;
                let s = states
                    .into_iter()
                    .find(|s| s.id == id)
                    .ok_or_else(|| malformed("Plane", format!("unknown state id {id}")))?;
                (s.name, Some(s.group))
            }
        };
        Ok(Some(PlaneItem {
            item: WorkItem {
                work_item: format!("{}-{}", project.identifier, change.sequence_id),
                plane_issue_id: change.plane_issue_id,
                plane_project_id: project_id,
                title: change.title,
                labels: change.labels,
            },
            state_name,
            state_group,
            actor: change.actor_name,
            changed_at: None,
            plane_updated_at: change.updated_at,
        }))
    }

    /// Applies the pipeline action a Plane state maps to; shared by the webhook and the
    /// reconciler's Plane-side replay.
    pub async fn apply_plane_state(
        &self,
        item: &PlaneItem,
        trigger: Trigger,
    ) -> Result<Outcome, PipelineError> {
        let outcome = self.act_on_plane_state(item, trigger).await?;
        // Applied (or deliberately not acted on): the sweep must not replay this change.
        if let Some(at) = item.plane_updated_at {
            let wi = item.item.work_item.clone();
            self.store
                .call(move |c| store::tasks::record_plane_applied(c, &wi, at))
                .await?;
        }
        Ok(outcome)
    }

    async fn act_on_plane_state(
        &self,
        item: &PlaneItem,
        trigger: Trigger,
    ) -> Result<Outcome, PipelineError> {
        let rules = self.rules.current();
        let Some(action) =
            rules.inbound_plane_action(&item.state_name, item.state_group.as_deref())
        else {
            return Ok(ignored(format!(
                "Plane state {:?} maps to no action",
                item.state_name
            )));
        };
        match action {
            PlaneAction::Start => {
                self.start_changed(&item.item, trigger, item.changed_at)
                    .await
            }
            PlaneAction::Cancel => self.cancel(&item.item.work_item, trigger).await,
            PlaneAction::Approve | PlaneAction::Reject => {
                let feedback = (action == PlaneAction::Reject).then(|| match &item.actor {
                    Some(who) => format!("rejected in Plane by {who}"),
                    None => "rejected in Plane".to_string(),
                });
                self.verdict(
                    &item.item.work_item,
                    action,
                    feedback,
                    VerdictSource::Plane,
                    trigger,
                )
                .await
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Gitea

    async fn handle_gitea_push(&self, repo: &str, branch: &str) -> Result<Outcome, DeliveryError> {
        let Some(task) = self.task_by_branch(repo, branch).await? else {
            return Ok(ignored(format!("no task for {repo} {branch}")));
        };
        if !self.gate_uses_ci(&task) {
            return Ok(ignored(format!(
                "{} is in {}, whose gate does not read CI",
                task.work_item, task.stage
            )));
        }
        Ok(self.advance(task.id, Trigger::Webhook).await?)
    }

    async fn handle_gitea_review(
        &self,
        repo: &str,
        branch: &str,
        approved: bool,
        feedback: Option<String>,
    ) -> Result<Outcome, DeliveryError> {
        let Some(task) = self.task_by_branch(repo, branch).await? else {
            return Ok(ignored(format!("no task for {repo} {branch}")));
        };
        let rules = self.rules.current();
        let Some(action) = rules.gitea_review_action(&task.stage, approved) else {
            return Ok(ignored(format!(
                "no rule maps a Gitea review in {}",
                task.stage
            )));
        };
        Ok(self
            .verdict(
                &task.work_item,
                action,
                feedback,
                VerdictSource::Gitea,
                Trigger::Webhook,
            )
            .await?)
    }

    async fn task_by_branch(
        &self,
        repo: &str,
        branch: &str,
    ) -> Result<Option<Task>, PipelineError> {
        let (r, b) = (repo.to_string(), branch.to_string());
        Ok(self
            .store
            .call(move |c| store::tasks::get_by_branch(c, &r, &b))
            .await?)
    }

    fn gate_uses_ci(&self, task: &Task) -> bool {
        self.rules
            .current()
            .gate_checks(&task.stage)
            .iter()
            .any(|c| c == "ci_green")
    }

    /// F-3: a status event names a sha, not a branch. Ask Gitea which branches point at it;
    /// failing that, fall back to the single task of the repository waiting on CI. Two or
    /// more candidates resolve to nothing: guessing would advance the wrong task.
    pub async fn resolve_status(&self, repo: &str, sha: &str) -> Result<Vec<Task>, PipelineError> {
        match self.forge.branches_at_sha(repo, sha).await {
            Ok(branches) => {
                let mut found = Vec::new();
                for b in branches {
                    if let Some(t) = self.task_by_branch(repo, &b).await? {
                        found.push(t);
                    }
                }
                if !found.is_empty() {
                    tracing::info!(repo, sha, tasks = ?found.iter().map(|t| &t.work_item).collect::<Vec<_>>(), "status resolved through the Gitea API");
                    return Ok(found);
                }
            }
            Err(e) => {
                tracing::warn!(repo, sha, error = %e, "Gitea API unavailable for sha→branch; trying the fallback");
            }
        }
        let rules = self.rules.current();
        let ci_stages: Vec<String> = rules
            .stages()
            .iter()
            .filter(|s| rules.gate_checks(&s.name).iter().any(|c| c == "ci_green"))
            .map(|s| s.name.clone())
            .collect();
        let mut candidates = Vec::new();
        for stage in ci_stages {
            let r = repo.to_string();
            candidates.extend(
                self.store
                    .call(move |c| store::tasks::in_stage_of_repo(c, &r, &stage))
                    .await?,
            );
        }
        match candidates.len() {
            1 => {
                tracing::info!(repo, sha, work_item = %candidates[0].work_item, "status resolved by the fallback: the only task waiting on CI");
                Ok(candidates)
            }
            0 => {
                tracing::info!(
                    repo,
                    sha,
                    "status unresolved: no task waits on CI in this repository"
                );
                Ok(Vec::new())
            }
            n => {
                tracing::info!(
                    repo,
                    sha,
                    candidates = n,
                    "status unresolved: several tasks wait on CI; not guessing"
                );
                Ok(Vec::new())
            }
        }
    }
}

fn ignored(reason: String) -> Outcome {
    Outcome::Ignored { reason }
}

/// The text of a Plane comment's HTML: tags dropped (block ends become line breaks), the
/// common entities decoded, whitespace trimmed. Good enough for an agent to read; not a
/// sanitiser.
pub fn plain_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('>') else {
            // A lone '<' is text.
            out.push_str(&rest[open..]);
            rest = "";
            break;
        };
        let tag = rest[open + 1..open + close]
            .trim_start_matches('/')
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if matches!(
            tag.as_str(),
            "br" | "p" | "div" | "li" | "h1" | "h2" | "h3" | "pre"
        ) && !out.ends_with('\n')
            && !out.is_empty()
        {
            out.push('\n');
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::plain_text;

    #[test]
    fn comment_html_becomes_plain_text() {
        assert_eq!(
            plain_text("<p>Use <strong>GitHub</strong> &amp; Google.</p><p>Then &lt;stop&gt;.</p>"),
            "Use GitHub & Google.\nThen <stop>."
        );
        assert_eq!(plain_text("a<br/>b"), "a\nb");
        assert_eq!(plain_text("1 < 2 and no tag"), "1 < 2 and no tag");
        assert_eq!(plain_text("&amp;lt; stays literal"), "&lt; stays literal");
        assert_eq!(plain_text("<p>  </p>"), "");
        assert_eq!(plain_text("ünïcödé <em>ok</em>"), "ünïcödé ok");
    }
}
