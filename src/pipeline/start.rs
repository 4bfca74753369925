//! Start: a work item becomes a task.
//!
//! The task, its first history row, its first job and what entering the first stage owes the
//! peers are one transaction (`store::tasks::create_owing`), so a webhook racing the
//! reconciler never makes a second task (AC-4) and a task never exists without its job.

use crate::clock::Timestamp;
use crate::store::{self, NewTask, Task, Trigger};

use super::{Outcome, Pipeline, PipelineError, WorkItem, effects};

impl Pipeline {
    /// Creates the task for a work item (atomically: AC-4), its branch and worktree, and
    /// queues the first stage's agent. Calling it again for the same work item changes nothing.
    #[cfg_attr(orch_audit, allow(dead_code))]
    pub async fn start(&self, item: &WorkItem, trigger: Trigger) -> Result<Outcome, PipelineError> {
        self.start_changed(item, trigger, None).await
    }

    /// [`Pipeline::start`] for a start state set at `changed_at` (when known): on a task
    /// whose agent asked a question, only a start set after the question resumes it. A start
    /// webhook that waited in the inbox while the agent asked is old news, not an answer.
    pub async fn start_changed(
        &self,
        item: &WorkItem,
        trigger: Trigger,
        changed_at: Option<Timestamp>,
    ) -> Result<Outcome, PipelineError> {
        let project = self
            .config
            .project_by_plane_id(&item.plane_project_id)
            .ok_or_else(|| PipelineError::UnknownProject(item.plane_project_id.clone()))?
            .clone();
        let rules = self.rules.current();
        let first = rules.initial_stage().clone();
        let new = NewTask {
            work_item: item.work_item.clone(),
            plane_issue_id: item.plane_issue_id.clone(),
            plane_project_id: Some(item.plane_project_id.clone()),
            title: item.title.clone(),
            repo: project.repo.clone(),
            branch: crate::git::branch_name(&item.work_item, &item.title),
            stage: first.name.clone(),
            labels: item.labels.clone(),
        };
        let version = rules.version().to_string();
        let now = self.clock.now();
        let first_agent = first.agent.clone();
        // What entering the first stage owes, computed for the task as it will be created
        // (and written only if this call creates it).
        let would_be = Task {
            id: 0,
            work_item: new.work_item.clone(),
            plane_issue_id: new.plane_issue_id.clone(),
            plane_project_id: new.plane_project_id.clone(),
            title: new.title.clone(),
            repo: new.repo.clone(),
            branch: new.branch.clone(),
            stage: new.stage.clone(),
            labels: new.labels.clone(),
            feedback: None,
            created_at: now,
            updated_at: now,
        };
        let owed = effects::entered(&rules, &would_be, &first.name, trigger);
        let (task, created) = self
            .store
            .call(move |c| {
                store::tasks::create_owing(
                    c,
                    &new,
                    first_agent.as_deref(),
                    &version,
                    trigger,
                    now,
                    &owed,
                )
            })
            .await?;
        if !created {
            // Moving the item back to "start" (after the question) is how a person says "go
            // on" to an agent that asked one.
            if let Some(resumed) = self
                .resume(&rules, &task, None, changed_at, trigger)
                .await?
            {
                return Ok(resumed);
            }
            tracing::debug!(work_item = %task.work_item, "start: task exists, nothing to do");
            return Ok(Outcome::AlreadyStarted { task_id: task.id });
        }
        tracing::info!(work_item = %task.work_item, stage = %task.stage, trigger = trigger.as_str(), "task started");
        self.job_wakeup.notify_one();
        self.outbox_wakeup.notify_one();
        // The worktree is prepared here for visibility; the worker prepares it again
        // (idempotently) before each job, so a failure now is not fatal.
        if let Err(e) = self.prepare_worktree(&task).await {
            tracing::warn!(work_item = %task.work_item, error = %e, "worktree not ready yet; the worker will retry");
        }
        Ok(Outcome::Started { task_id: task.id })
    }

    /// Clones the task's repository on first use (fetches it otherwise), adds the task's
    /// worktree and brings it to the remote branch, when there is one.
    pub async fn prepare_worktree(&self, task: &Task) -> Result<std::path::PathBuf, PipelineError> {
        let project = self
            .config
            .projects
            .iter()
            .find(|p| p.repo == task.repo)
            .ok_or_else(|| {
                PipelineError::Worktree(format!(
                    "repository {} is not configured in [[projects]]",
                    task.repo
                ))
            })?;
        let url = self.config.clone_url(project).ok_or_else(|| {
            PipelineError::Worktree(format!(
                "no clone_url for {} and no Gitea URL to derive it from",
                task.repo
            ))
        })?;
        let repo_path = self.git.ensure_clone(&task.repo, &url).await?;
        let worktree = self
            .git
            .add_worktree(&repo_path, &task.branch, None)
            .await?;
        // The remote branch is the truth: another replica (or an earlier run) may have pushed.
        self.git
            .sync_worktree(&repo_path, &worktree, &task.branch)
            .await?;
        Ok(worktree)
    }
}
