//! The pipeline: the only code that changes a task's stage.
//!
//! Every trigger — a webhook, an agent finishing, the reconciler — goes through these
//! handlers, so a replayed transition is indistinguishable from the original except for the
//! `trigger` recorded in the task history. Each stage change is a compare-and-set on the
//! expected stage: two triggers racing cannot advance a task twice.
//!
//! What to do is the rules' business (`policy`); this module carries it out: it evaluates
//! gates, moves stages, enqueues agents, sets Plane states and sends notifications.

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, Timestamp};
use crate::config::Config;
use crate::git::Git;
use crate::integrations::{Forge, Notifier, Tracker};
use crate::metrics::{KindLabels, Metrics};
use crate::policy::{self, OutboundEvent, PlaneAction, RulesHandle};
use crate::store::{self, NewTask, Store, Task, Trigger};

mod gates;
mod jobs;
pub mod webhook;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    #[error(transparent)]
    Integration(#[from] crate::integrations::IntegrationError),
    #[error("unknown gate check {0:?}")]
    UnknownCheck(String),
    #[error("Plane project {0} is not configured in [[projects]]")]
    UnknownProject(String),
}

/// A work item as the trackers describe it; enough to start a task.
#[derive(Debug, Clone, Default)]
pub struct WorkItem {
    /// `ET-42`.
    pub work_item: String,
    pub plane_issue_id: Option<String>,
    pub plane_project_id: String,
    pub title: String,
    pub labels: Vec<String>,
}

/// Where a verdict came from; recorded with it and used to decide whether the stage takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerdictSource {
    /// A person, through a Plane state (the human gate).
    Plane,
    /// A person, through a Gitea pull-request review.
    Gitea,
    /// The stage's agent, through its result file.
    Agent,
}

impl VerdictSource {
    fn as_str(self) -> &'static str {
        match self {
            VerdictSource::Plane => "plane",
            VerdictSource::Gitea => "gitea",
            VerdictSource::Agent => "agent",
        }
    }
}

/// What a handler did; returned so callers (and tests, and the reconciler's counters) can
/// tell a real change from a no-op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Started {
        task_id: i64,
    },
    AlreadyStarted {
        task_id: i64,
    },
    Advanced {
        task_id: i64,
        from: String,
        to: String,
    },
    Rejected {
        task_id: i64,
        from: String,
        to: String,
    },
    Recorded {
        task_id: i64,
    },
    /// A person answered an agent's question; the agent runs again.
    Resumed {
        task_id: i64,
    },
    Held {
        task_id: i64,
        reason: String,
    },
    /// The work item was cancelled; the task ended in the rules' cancel stage.
    Cancelled {
        task_id: i64,
        from: String,
    },
    /// Another trigger changed the task first.
    Raced {
        task_id: i64,
    },
    Ignored {
        reason: String,
    },
}

/// The `external_source` of every comment orch writes in Plane; a comment webhook carrying
/// it is orch's own and never an answer.
pub const COMMENT_SOURCE: &str = "orch";

/// Everything the handlers need. Cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    pub config: Arc<Config>,
    pub store: Store,
    pub rules: RulesHandle,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub tracker: Arc<dyn Tracker>,
    pub forge: Arc<dyn Forge>,
    pub notifier: Arc<dyn Notifier>,
    pub git: Git,
    /// Wakes the worker when a job is queued.
    pub job_wakeup: Arc<Notify>,
    /// The jobs whose agents run now, so a cancelled task can stop its agent.
    pub running_jobs: RunningJobs,
}

/// Stop handles of the running agent jobs, by job id.
#[derive(Debug, Clone, Default)]
pub struct RunningJobs(Arc<std::sync::Mutex<std::collections::HashMap<i64, CancellationToken>>>);

impl RunningJobs {
    /// Registers a job as running; the token fires when its task is cancelled.
    pub fn register(&self, job_id: i64) -> CancellationToken {
        let token = CancellationToken::new();
        self.lock().insert(job_id, token.clone());
        token
    }

    pub fn unregister(&self, job_id: i64) {
        self.lock().remove(&job_id);
    }

    /// Stops the agent of `job_id`, if it is running here; true when it was.
    pub fn stop(&self, job_id: i64) -> bool {
        self.lock().get(&job_id).map(|t| t.cancel()).is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<i64, CancellationToken>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").finish_non_exhaustive()
    }
}

impl Pipeline {
    // -----------------------------------------------------------------------------------
    // start

    /// Creates the task for a work item (atomically: AC-4), its branch and worktree, and
    /// queues the first stage's agent. Calling it again for the same work item changes nothing.
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
        let (task, created) = self
            .store
            .call(move |c| {
                store::tasks::create_atomic(c, &new, first_agent.as_deref(), &version, trigger, now)
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
        // The worktree is prepared here for visibility; the worker prepares it again
        // (idempotently) before each job, so a failure now is not fatal.
        if let Err(e) = self.prepare_worktree(&task).await {
            tracing::warn!(work_item = %task.work_item, error = %e, "worktree not ready yet; the worker will retry");
        }
        // The first job was queued with the task, in the same transaction.
        self.job_wakeup.notify_one();
        self.announce_stage(&rules, &task, &first.name, trigger)
            .await;
        Ok(Outcome::Started { task_id: task.id })
    }

    /// Clones the task's repository on first use and adds the task's worktree.
    pub async fn prepare_worktree(&self, task: &Task) -> anyhow::Result<std::path::PathBuf> {
        let project = self
            .config
            .projects
            .iter()
            .find(|p| p.repo == task.repo)
            .ok_or_else(|| {
                anyhow::anyhow!("repository {} is not configured in [[projects]]", task.repo)
            })?;
        let url = self.config.clone_url(project).ok_or_else(|| {
            anyhow::anyhow!(
                "no clone_url for {} and no Gitea URL to derive it from",
                task.repo
            )
        })?;
        let repo_path = self.git.ensure_clone(&task.repo, &url).await?;
        Ok(self
            .git
            .add_worktree(&repo_path, &task.branch, None)
            .await?)
    }

    async fn task_of(&self, work_item: &str) -> Result<Option<Task>, PipelineError> {
        let wi = work_item.to_string();
        Ok(self
            .store
            .call(move |c| store::tasks::get_by_work_item(c, &wi))
            .await?)
    }

    // -----------------------------------------------------------------------------------
    // verdict

    /// A verdict on the task's current stage. Approve records it and re-checks the gate;
    /// reject stores the feedback and sends the task where the rules say.
    pub async fn verdict(
        &self,
        work_item: &str,
        action: PlaneAction,
        feedback: Option<String>,
        source: VerdictSource,
        trigger: Trigger,
    ) -> Result<Outcome, PipelineError> {
        let Some(task) = self.task_of(work_item).await? else {
            return Ok(Outcome::Ignored {
                reason: format!("{work_item} has no task"),
            });
        };
        let rules = self.rules.current();
        let Some(stage) = rules.stage(&task.stage).cloned() else {
            return Ok(Outcome::Ignored {
                reason: format!("stage {} is not in the rules", task.stage),
            });
        };
        if stage.terminal {
            return Ok(Outcome::Ignored {
                reason: format!("{} is done", task.work_item),
            });
        }
        // A person's Plane verdict only applies at a human gate: a stale "Approved" on a task
        // that has moved on must not push it further.
        if source == VerdictSource::Plane && !stage.human_gate {
            return Ok(Outcome::Ignored {
                reason: format!("stage {} does not take a verdict from Plane", stage.name),
            });
        }
        let now = self.clock.now();
        let word = match action {
            PlaneAction::Approve => "approve",
            PlaneAction::Reject => "reject",
            PlaneAction::Start | PlaneAction::Cancel => {
                return Ok(Outcome::Ignored {
                    reason: format!("{} is not a verdict", action.as_str()),
                });
            }
        };
        if source != VerdictSource::Agent {
            let (id, st, fb) = (task.id, stage.name.clone(), feedback.clone());
            self.store
                .call(move |c| {
                    store::verdicts::record(c, id, &st, word, source.as_str(), fb.as_deref(), now)
                })
                .await?;
        }
        match action {
            // A person's approval counts even while an agent waits for an answer.
            PlaneAction::Approve => self.advance_unless(task.id, trigger, false).await,
            _ => self.reject(&rules, &task, feedback, trigger).await,
        }
    }

    async fn reject(
        &self,
        rules: &policy::RuleSet,
        task: &Task,
        feedback: Option<String>,
        trigger: Trigger,
    ) -> Result<Outcome, PipelineError> {
        let Some(target) = rules.stage(&task.stage).and_then(|s| s.on_reject.clone()) else {
            return Ok(Outcome::Ignored {
                reason: format!("stage {} has no rejection path", task.stage),
            });
        };
        let feedback = feedback.unwrap_or_else(|| format!("rejected in {}", task.stage));
        let (id, from, to, fb) = (
            task.id,
            task.stage.clone(),
            target.clone(),
            feedback.clone(),
        );
        let version = rules.version().to_string();
        let now = self.clock.now();
        let won = self
            .store
            .call(move |c| {
                store::tasks::compare_and_set_stage(
                    c,
                    id,
                    &from,
                    &to,
                    Some(&fb),
                    trigger,
                    &version,
                    now,
                )
            })
            .await?;
        if !won {
            return Ok(Outcome::Raced { task_id: task.id });
        }
        tracing::info!(work_item = %task.work_item, from = %task.stage, to = %target, "task rejected");
        let mut moved = task.clone();
        moved.stage = target.clone();
        moved.feedback = Some(feedback);
        self.enter_stage(rules, &moved, &target, trigger).await?;
        Ok(Outcome::Rejected {
            task_id: task.id,
            from: task.stage.clone(),
            to: target,
        })
    }

    // -----------------------------------------------------------------------------------
    // cancel

    /// The work item was cancelled: the task moves to the rules' cancel stage (a terminal
    /// one), its queued jobs are failed, its running agent is stopped, and its worktree is
    /// removed. Nothing happens for a task that already ended.
    pub async fn cancel(
        &self,
        work_item: &str,
        trigger: Trigger,
    ) -> Result<Outcome, PipelineError> {
        let Some(task) = self.task_of(work_item).await? else {
            return Ok(Outcome::Ignored {
                reason: format!("{work_item} has no task"),
            });
        };
        let rules = self.rules.current();
        let Some(target) = rules.cancel_stage().map(|s| s.name.clone()) else {
            return Ok(Outcome::Ignored {
                reason: "the rules have no cancel stage".into(),
            });
        };
        if rules.stage(&task.stage).is_some_and(|s| s.terminal) {
            return Ok(Outcome::Ignored {
                reason: format!("{} already ended in {}", task.work_item, task.stage),
            });
        }
        let (id, from, to) = (task.id, task.stage.clone(), target.clone());
        let version = rules.version().to_string();
        let now = self.clock.now();
        let Some(running) = self
            .store
            .call(move |c| store::tasks::cancel(c, id, &from, &to, trigger, &version, now))
            .await?
        else {
            return Ok(Outcome::Raced { task_id: task.id });
        };
        for job in running {
            if !self.running_jobs.stop(job) {
                // Not running in this process (a crash left it): end it here.
                self.store
                    .call(move |c| store::jobs::abandon(c, job, store::jobs::CANCELLED, now))
                    .await?;
            }
        }
        tracing::info!(work_item = %task.work_item, from = %task.stage, to = %target, trigger = trigger.as_str(), "task cancelled");
        let mut moved = task.clone();
        moved.stage = target.clone();
        self.enter_stage(&rules, &moved, &target, trigger).await?;
        Ok(Outcome::Cancelled {
            task_id: task.id,
            from: task.stage.clone(),
        })
    }

    // -----------------------------------------------------------------------------------
    // input

    /// A person answered the question the stage's agent asked: the answer (if the channel
    /// carries one) becomes `ORCH_FEEDBACK` and the agent runs again. `None` when the task was
    /// not waiting, so a second answer, or a replay of the first, changes nothing, and when
    /// the answer was given (`said_at`, when known) before the question.
    pub async fn resume(
        &self,
        rules: &policy::RuleSet,
        task: &Task,
        answer: Option<String>,
        said_at: Option<Timestamp>,
        trigger: Trigger,
    ) -> Result<Option<Outcome>, PipelineError> {
        let Some(agent) = rules.stage(&task.stage).and_then(|s| s.agent.clone()) else {
            return Ok(None);
        };
        let (id, now) = (task.id, self.clock.now());
        let Some(job) = self
            .store
            .call(move |c| {
                store::jobs::resume_after_input(c, id, &agent, answer.as_deref(), said_at, now)
            })
            .await?
        else {
            return Ok(None);
        };
        tracing::info!(work_item = %task.work_item, agent = %job.agent, trigger = trigger.as_str(), "answer received; agent queued again");
        self.job_wakeup.notify_one();
        self.set_plane_state(
            rules,
            task,
            &OutboundEvent::Entered {
                stage: task.stage.clone(),
            },
        )
        .await;
        Ok(Some(Outcome::Resumed { task_id: task.id }))
    }

    /// Handles a person's comment on a work item: an answer when the task waits for one and
    /// the comment came after the question (`said_at`, when known).
    pub async fn answer(
        &self,
        task: &Task,
        answer: String,
        said_at: Option<Timestamp>,
        trigger: Trigger,
    ) -> Result<Outcome, PipelineError> {
        let rules = self.rules.current();
        Ok(self
            .resume(&rules, task, Some(answer), said_at, trigger)
            .await?
            .unwrap_or_else(|| Outcome::Ignored {
                reason: format!("{} is not waiting for an answer", task.work_item),
            }))
    }

    // -----------------------------------------------------------------------------------
    // advance

    /// Evaluates the task's exit gate: green moves it to the next stage; red is reported once
    /// per stage visit for webhook and agent triggers, and is silent for the reconciler.
    /// A task whose agent asked a question is held until a person answers.
    pub async fn advance(&self, task_id: i64, trigger: Trigger) -> Result<Outcome, PipelineError> {
        self.advance_unless(task_id, trigger, true).await
    }

    async fn advance_unless(
        &self,
        task_id: i64,
        trigger: Trigger,
        hold_when_awaiting_input: bool,
    ) -> Result<Outcome, PipelineError> {
        if hold_when_awaiting_input
            && self
                .store
                .call(move |c| store::jobs::awaiting_input(c, task_id))
                .await?
        {
            return Ok(Outcome::Held {
                task_id,
                reason: "the agent is waiting for an answer".into(),
            });
        }
        let Some(task) = self
            .store
            .call(move |c| store::tasks::get(c, task_id))
            .await?
        else {
            return Ok(Outcome::Ignored {
                reason: format!("task {task_id} does not exist"),
            });
        };
        let rules = self.rules.current();
        // No gate I/O for a task that cannot move anyway.
        if rules
            .stage(&task.stage)
            .is_none_or(|s| s.terminal || s.next.is_none())
        {
            return Ok(Outcome::Ignored {
                reason: format!("stage {} is terminal or unknown", task.stage),
            });
        }
        let gate = self.evaluate_gate(&rules, &task).await?;
        self.apply_gate(&rules, &task, &gate, trigger).await
    }

    /// The second half of [`Pipeline::advance`], for callers that already evaluated the gate
    /// (the reconciler evaluates it once per sweep and must not evaluate it twice).
    pub async fn apply_gate(
        &self,
        rules: &policy::RuleSet,
        task: &Task,
        gate: &policy::GateOutcome,
        trigger: Trigger,
    ) -> Result<Outcome, PipelineError> {
        let task_id = task.id;
        let Some(stage) = rules.stage(&task.stage).cloned() else {
            return Ok(Outcome::Ignored {
                reason: format!("stage {} is not in the rules", task.stage),
            });
        };
        let Some(next) = stage.next.clone().filter(|_| !stage.terminal) else {
            return Ok(Outcome::Ignored {
                reason: format!("stage {} is terminal", task.stage),
            });
        };
        if !gate.green {
            self.report_red_gate(rules, task, &stage, &gate.reason, trigger)
                .await;
            return Ok(Outcome::Held {
                task_id,
                reason: gate.reason.clone(),
            });
        }
        let (from, to) = (task.stage.clone(), next.clone());
        let version = rules.version().to_string();
        let now = self.clock.now();
        let won = self
            .store
            .call(move |c| {
                store::tasks::compare_and_set_stage(
                    c, task_id, &from, &to, None, trigger, &version, now,
                )
            })
            .await?;
        if !won {
            return Ok(Outcome::Raced { task_id });
        }
        tracing::info!(work_item = %task.work_item, from = %task.stage, to = %next, trigger = trigger.as_str(), reason = %gate.reason, "task advanced");
        let mut moved = task.clone();
        moved.stage = next.clone();
        moved.feedback = None;
        self.enter_stage(rules, &moved, &next, trigger).await?;
        Ok(Outcome::Advanced {
            task_id,
            from: task.stage.clone(),
            to: next,
        })
    }

    async fn report_red_gate(
        &self,
        rules: &policy::RuleSet,
        task: &Task,
        stage: &policy::Stage,
        reason: &str,
        trigger: Trigger,
    ) {
        // The reconciler is silent on red: a stuck gate is not news, and no-spam must be
        // structural rather than rate-limited.
        if trigger == Trigger::Reconciler {
            return;
        }
        let (kind, event, template) = if stage.human_gate {
            (
                "awaiting_human",
                Some(OutboundEvent::AwaitingHuman),
                "awaiting_human",
            )
        } else {
            ("gate_failed", None, "gate_failed")
        };
        // Once per stage visit: the visit is identified by when the task entered the stage.
        let visit = match self.stage_visit(task.id).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(work_item = %task.work_item, error = %e, "cannot read task history");
                return;
            }
        };
        let key = format!("{}@{}", task.stage, visit);
        let (id, k) = (task.id, key.clone());
        let now = self.clock.now();
        match self
            .store
            .call(move |c| store::verdicts::claim_notice(c, id, kind, &k, now))
            .await
        {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(work_item = %task.work_item, error = %e, "cannot record notice");
                return;
            }
        }
        if let Some(event) = event {
            self.set_plane_state(rules, task, &event).await;
        }
        let text = rules.render(
            template,
            &[
                ("work_item", &task.work_item),
                ("stage", &task.stage),
                ("reason", reason),
                ("title", &task.title),
            ],
        );
        self.comment(task, &format!("{kind}-{key}"), &text).await;
        self.telegram(&text).await;
    }

    /// When the task last entered its current stage (ms), from the history.
    pub(crate) async fn stage_visit(&self, task_id: i64) -> Result<i64, store::StoreError> {
        let history = self
            .store
            .call(move |c| store::tasks::history(c, task_id))
            .await?;
        Ok(history.last().map(|h| h.at.as_millis()).unwrap_or(0))
    }

    /// Side effects of entering `stage`: queue its agent, then announce it.
    async fn enter_stage(
        &self,
        rules: &policy::RuleSet,
        task: &Task,
        stage: &str,
        trigger: Trigger,
    ) -> Result<(), PipelineError> {
        if let Some(agent) = rules.stage(stage).and_then(|s| s.agent.clone()) {
            let (id, st) = (task.id, stage.to_string());
            let now = self.clock.now();
            let (job, created) = self
                .store
                .call(move |c| store::jobs::enqueue(c, id, &agent, &st, now))
                .await?;
            if created {
                tracing::info!(work_item = %task.work_item, agent = %job.agent, job = job.id, "job queued");
                self.job_wakeup.notify_one();
            }
        }
        self.announce_stage(rules, task, stage, trigger).await;
        if rules.stage(stage).is_some_and(|s| s.terminal) {
            self.release_worktree(task).await;
        }
        Ok(())
    }

    /// A finished task's worktree is only disk: remove it (the branch stays in the clone and
    /// on the remote). Best-effort; a failure is logged and the worktree stays.
    async fn release_worktree(&self, task: &Task) {
        let removed = match self.git.clone_path(&task.repo) {
            Ok(clone) if clone.join(".git").exists() => {
                self.git.remove_worktree(&clone, &task.branch).await
            }
            Ok(_) => return,
            Err(e) => Err(e),
        };
        match removed {
            Ok(()) => {
                tracing::info!(work_item = %task.work_item, branch = %task.branch, "worktree removed")
            }
            Err(e) => {
                tracing::warn!(work_item = %task.work_item, error = %e, "cannot remove the worktree of a finished task");
                self.count_failed("git");
            }
        }
    }

    /// Best-effort: the Plane state the rules name for entering `stage`, and a notification.
    async fn announce_stage(
        &self,
        rules: &policy::RuleSet,
        task: &Task,
        stage: &str,
        trigger: Trigger,
    ) {
        self.set_plane_state(
            rules,
            task,
            &OutboundEvent::Entered {
                stage: stage.to_string(),
            },
        )
        .await;
        let text = rules.render(
            "stage_changed",
            &[
                ("work_item", &task.work_item),
                ("stage", stage),
                ("title", &task.title),
                ("trigger", trigger.as_str()),
            ],
        );
        if !text.is_empty() {
            self.telegram(&text).await;
        }
    }

    // -----------------------------------------------------------------------------------
    // outbound, never-raise

    /// Sets the Plane state the rules name for `event`; failures are logged and counted.
    pub async fn set_plane_state(
        &self,
        rules: &policy::RuleSet,
        task: &Task,
        event: &OutboundEvent,
    ) {
        let Some(state) = rules.outbound_plane_state(event) else {
            return;
        };
        let (Some(project), Some(issue)) = (
            task.plane_project_id.as_deref(),
            task.plane_issue_id.as_deref(),
        ) else {
            return;
        };
        if self.cancelled_in_plane(rules, task, project, issue).await {
            return;
        }
        if let Err(e) = self.tracker.set_state_by_name(project, issue, state).await {
            tracing::warn!(work_item = %task.work_item, state, error = %e, "could not set the Plane state");
            self.count_failed("plane_state");
        }
    }

    /// Plane has no conditional write, so before overwriting a work item's state orch reads
    /// it: when a person cancelled the item and the webhook was lost, writing would erase the
    /// cancel unseen. Then the cancel is applied instead (trigger reconciler: it replays a lost
    /// webhook) and true is returned. A failed read is logged and the write goes ahead.
    async fn cancelled_in_plane(
        &self,
        rules: &policy::RuleSet,
        task: &Task,
        project: &str,
        issue: &str,
    ) -> bool {
        if rules.cancel_stage().is_none() {
            return false;
        }
        let current = match self.tracker.work_item_state(project, issue).await {
            Ok(Some(s)) => s,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(work_item = %task.work_item, error = %e, "could not read the Plane state before writing it");
                self.count_failed("plane_state");
                return false;
            }
        };
        let group = Some(current.group.as_str()).filter(|g| !g.is_empty());
        if rules.inbound_plane_action(&current.name, group) != Some(PlaneAction::Cancel) {
            return false;
        }
        tracing::info!(work_item = %task.work_item, state = %current.name, "the work item was cancelled in Plane (lost webhook); cancelling instead of overwriting its state");
        match Box::pin(self.cancel(&task.work_item, Trigger::Reconciler)).await {
            Ok(outcome) => {
                if matches!(outcome, Outcome::Cancelled { .. }) {
                    self.metrics.reconcile_replays.inc();
                }
            }
            Err(e) => {
                tracing::warn!(work_item = %task.work_item, error = %e, "could not cancel the task");
            }
        }
        true
    }

    async fn comment(&self, task: &Task, external_id: &str, text: &str) {
        let (Some(project), Some(issue)) = (
            task.plane_project_id.as_deref(),
            task.plane_issue_id.as_deref(),
        ) else {
            return;
        };
        let html = format!("<p>{}</p>", html_escape(text));
        if let Err(e) = self
            .tracker
            .add_comment(project, issue, &html, external_id)
            .await
        {
            tracing::warn!(work_item = %task.work_item, error = %e, "could not comment in Plane");
            self.count_failed("plane_comment");
        }
    }

    pub async fn telegram(&self, text: &str) {
        if text.is_empty() {
            return;
        }
        if let Err(e) = self.notifier.send(text).await {
            tracing::warn!(error = %e, "could not send the Telegram message");
            self.count_failed("telegram");
        }
    }

    fn count_failed(&self, kind: &str) {
        self.metrics
            .notifications_failed
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .inc();
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
