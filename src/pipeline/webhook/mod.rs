//! Turning stored webhook deliveries into pipeline calls.
//!
//! Parsing is lenient about what it does not need (peers add fields all the time) and strict
//! about what it does: a delivery missing the fields an action needs is an error recorded on
//! the delivery, never a panic and never a half-applied change.

use crate::clock::Timestamp;
use crate::policy::PlaneAction;
use crate::store::{self, InboxItem, Task, Trigger};

use super::{Outcome, Pipeline, PipelineError, VerdictSource, WorkItem};

mod parse;

pub use parse::{Parsed, PlaneChange, PlaneItem, PlaneNewComment, PlaneStateRef, parse};

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

/// The text of a Plane comment's HTML: tags dropped (block ends become line breaks), every
/// entity decoded (the `html-escape` crate), whitespace trimmed. Good enough for an agent to read; not a
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
    // Every named and numeric entity (`&#8217;`, `&hellip;` …), decoded once: an agent reads
    // what the person typed, never `&amp;lt;` turned into a tag.
    html_escape::decode_html_entities(&out)
        .replace('\u{a0}', " ")
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
        assert_eq!(
            plain_text("<p>It&#8217;s done&hellip; &ldquo;mostly&rdquo;&nbsp;&#x2014; ok</p>"),
            "It\u{2019}s done\u{2026} \u{201c}mostly\u{201d} \u{2014} ok"
        );
    }
}
