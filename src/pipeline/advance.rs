//! Advance: a task leaves its stage when the exit gate is green, and every action ends in
//! the one stage change here.
//!
//! A stage change is a compare-and-set on the stage the caller saw, committed in one
//! transaction with its history row, the new stage's job and every effect it owes
//! (`store::tasks::change_stage`): after a crash at any point either all of it happened or
//! none of it did, and what it owes Plane and Telegram is still owed.

use crate::metrics::KindLabels;
use crate::policy::{self, OutboundEvent};
use crate::store::outbox::NewEffect;
use crate::store::tasks::{StageChange, StageChanged};
use crate::store::{self, Task, Trigger};

use super::{Outcome, Pipeline, PipelineError, effects};

/// Whether [`Pipeline::advance`] holds a task whose agent asked a question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hold {
    /// The agent waits for an answer: nothing but an answer or a person's verdict moves it.
    WhileAwaitingInput,
    /// A person's approval counts even while an agent waits.
    Never,
}

/// What asks a task to leave its stage. A human gate is left only through a person's
/// verdict, whatever its gate expression says: `analysis_approved || ci_green` must not let
/// a push move a task out of analysis with no person involved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum By {
    /// A person's verdict (a mapped Plane state, a Gitea review the stage takes).
    Person,
    /// Anything else: an agent finishing, a push or CI status, the sweep.
    Event,
}

impl Pipeline {
    /// Evaluates the task's exit gate: green moves it to the next stage; red is reported once
    /// per stage visit for webhook and agent triggers, and is silent for the reconciler.
    /// A task whose agent asked a question is held until a person answers.
    pub async fn advance(&self, task_id: i64, trigger: Trigger) -> Result<Outcome, PipelineError> {
        self.advance_holding(task_id, trigger, Hold::WhileAwaitingInput, By::Event)
            .await
    }

    pub(crate) async fn advance_holding(
        &self,
        task_id: i64,
        trigger: Trigger,
        hold: Hold,
        by: By,
    ) -> Result<Outcome, PipelineError> {
        // An event about the task (a push, a CI status, a verdict, an agent's end): whatever
        // it finds, the sweep reads the gate again next time rather than keep backing off.
        if trigger != Trigger::Reconciler {
            self.clear_red_backoff(task_id).await;
        }
        if hold == Hold::WhileAwaitingInput
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
        let gate = self.evaluate_gate_noted(&rules, &task).await?;
        self.leave_if(&rules, &task, &gate, trigger, by, Vec::new())
            .await
    }

    /// Ends the sweep's red-gate backoff of the task: the next sweep reads its gate first
    /// (best-effort: a failure only costs a wait the sweep would have saved).
    pub(crate) async fn clear_red_backoff(&self, task_id: i64) {
        let now = self.clock.now();
        if let Err(e) = self
            .store
            .call(move |c| store::gate_backoff::news(c, task_id, now))
            .await
        {
            tracing::warn!(task_id, error = %e, "cannot reset the red-gate backoff");
        }
    }

    /// The second half of [`Pipeline::advance`], for callers that already evaluated the gate
    /// (the reconciler evaluates it once per sweep and must not evaluate it twice),
    /// that also owes `extra` effects if, and only if, the task
    /// advances (the reconciler's unblock message), in the same transaction.
    pub async fn apply_gate_owing(
        &self,
        rules: &policy::RuleSet,
        task: &Task,
        gate: &policy::GateOutcome,
        trigger: Trigger,
        extra: Vec<NewEffect>,
    ) -> Result<Outcome, PipelineError> {
        self.leave_if(rules, task, gate, trigger, By::Event, extra)
            .await
    }

    /// Moves the task on when its gate is green and, at a human gate, a person asked.
    async fn leave_if(
        &self,
        rules: &policy::RuleSet,
        task: &Task,
        gate: &policy::GateOutcome,
        trigger: Trigger,
        by: By,
        extra: Vec<NewEffect>,
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
        let waits_for_person = stage.human_gate && by != By::Person;
        if !gate.green || waits_for_person {
            let reason = if gate.green {
                format!(
                    "{}, but {} is a human gate: only a person's verdict leaves it",
                    gate.reason, stage.name
                )
            } else {
                gate.reason.clone()
            };
            self.report_red_gate(rules, task, &stage, &reason, trigger)
                .await;
            let held = Outcome::Held { task_id, reason };
            self.observe_leave(rules, task, gate, trigger, by == By::Person, &held)
                .await;
            return Ok(held);
        }
        let moved = self
            .change_stage(rules, task, &next, None, trigger, extra)
            .await?;
        if moved.is_none() {
            return Ok(Outcome::Raced { task_id });
        }
        tracing::info!(work_item = %task.work_item, from = %task.stage, to = %next, trigger = trigger.as_str(), reason = %gate.reason, "task advanced");
        let advanced = Outcome::Advanced {
            task_id,
            from: task.stage.clone(),
            to: next,
        };
        self.observe_leave(rules, task, gate, trigger, by == By::Person, &advanced)
            .await;
        Ok(advanced)
    }

    /// A red gate, once per stage visit, for webhook and agent triggers: the Plane state for
    /// a human gate, a comment and a message, owed together with the notice that says it was
    /// given.
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
        let (kind, event) = if stage.human_gate {
            ("awaiting_human", Some(OutboundEvent::AwaitingHuman))
        } else {
            ("gate_failed", None)
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
        let text = rules.render(
            kind,
            &[
                ("work_item", &task.work_item),
                ("stage", &task.stage),
                ("reason", reason),
                ("title", &task.title),
            ],
        );
        let owed: Vec<NewEffect> = event
            .and_then(|e| effects::plane_state(rules, task, &e))
            .into_iter()
            .chain(effects::comment(task, &format!("{kind}-{key}"), &text))
            .chain(effects::telegram(&task.work_item, &text))
            .collect();
        let (id, now) = (task.id, self.clock.now());
        match self
            .store
            .call(move |c| store::verdicts::claim_notice_owing(c, id, kind, &key, &owed, now))
            .await
        {
            Ok(true) => self.outbox_wakeup.notify_one(),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(work_item = %task.work_item, error = %e, "cannot record notice");
            }
        }
    }

    /// The notice a human gate owes (Plane "In Review", a comment, a message) for a visit
    /// whose agent finished but whose notice was never written: the job's end was committed
    /// and the process died before the gate was evaluated. Nothing else would ever say that
    /// the task waits for a person, since the sweep does not advance a human gate. Once per
    /// visit, shared with the webhook path's notice; true when this call owed it.
    pub async fn owe_awaiting_human(
        &self,
        rules: &policy::RuleSet,
        task: &Task,
    ) -> Result<bool, PipelineError> {
        let Some(stage) = rules.stage(&task.stage).filter(|s| s.human_gate).cloned() else {
            return Ok(false);
        };
        if let Some(agent) = stage.agent.clone() {
            let (id, st) = (task.id, task.stage.clone());
            let finished_here = self
                .store
                .call(move |c| {
                    Ok(store::jobs::latest_done(c, id, &agent)?.is_some_and(|j| j.stage == st))
                })
                .await?;
            if !finished_here {
                return Ok(false);
            }
        }
        let visit = self.stage_visit(task.id).await?;
        let (id, key) = (task.id, format!("{}@{}", task.stage, visit));
        let given = self
            .store
            .call(move |c| store::verdicts::notice_given(c, id, "awaiting_human", &key))
            .await?;
        if given {
            return Ok(false);
        }
        let gate = self.evaluate_gate_noted(rules, task).await?;
        if gate.green {
            // Approved: the approval's own delivery moves the task.
            return Ok(false);
        }
        self.report_red_gate(rules, task, &stage, &gate.reason, Trigger::AgentFinished)
            .await;
        Ok(true)
    }

    /// When the task last entered its current stage (ms), from the history.
    pub(crate) async fn stage_visit(&self, task_id: i64) -> Result<i64, store::StoreError> {
        let history = self
            .store
            .call(move |c| store::tasks::history(c, task_id))
            .await?;
        Ok(history.last().map(|h| h.at.as_millis()).unwrap_or(0))
    }

    /// Moves `task` to `to` with everything entering `to` owes (its agent's job, its Plane
    /// state, its message) plus `extra`, in one transaction. `None` when another trigger
    /// moved the task first.
    pub(crate) async fn change_stage(
        &self,
        rules: &policy::RuleSet,
        task: &Task,
        to: &str,
        feedback: Option<String>,
        trigger: Trigger,
        extra: Vec<NewEffect>,
    ) -> Result<Option<StageChanged>, PipelineError> {
        self.commit_change(rules, task, to, feedback, trigger, extra, false)
            .await
    }

    /// [`Pipeline::change_stage`] for a task that ends now (cancel): its queued jobs fail in
    /// the same transaction and its running ones are returned for the caller to stop.
    pub(crate) async fn change_stage_ending_jobs(
        &self,
        rules: &policy::RuleSet,
        task: &Task,
        to: &str,
        trigger: Trigger,
    ) -> Result<Option<StageChanged>, PipelineError> {
        self.commit_change(rules, task, to, None, trigger, Vec::new(), true)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn commit_change(
        &self,
        rules: &policy::RuleSet,
        task: &Task,
        to: &str,
        feedback: Option<String>,
        trigger: Trigger,
        extra: Vec<NewEffect>,
        end_jobs: bool,
    ) -> Result<Option<StageChanged>, PipelineError> {
        let mut moved = task.clone();
        moved.stage = to.to_string();
        moved.feedback = feedback.clone();
        let mut owed = effects::entered(rules, &moved, to, trigger);
        owed.extend(extra);
        let change = StageChange {
            task_id: task.id,
            from: task.stage.clone(),
            to: to.to_string(),
            feedback,
            trigger,
            rules_version: rules.version().to_string(),
            agent: rules.stage(to).and_then(|s| s.agent.clone()),
            end_jobs,
            effects: owed,
        };
        let now = self.clock.now();
        let Some(changed) = self
            .store
            .call(move |c| store::tasks::change_stage(c, &change, now))
            .await?
        else {
            return Ok(None);
        };
        if let Some((job, true)) = &changed.job {
            tracing::info!(work_item = %task.work_item, agent = %job.agent, job = job.id, "job queued");
            self.job_wakeup.notify_one();
        }
        self.outbox_wakeup.notify_one();
        if rules.stage(to).is_some_and(|s| s.terminal) {
            self.release_worktree(&moved).await;
        }
        Ok(Some(changed))
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
                self.metrics
                    .notifications_failed
                    .get_or_create(&KindLabels {
                        kind: "git".to_string(),
                    })
                    .inc();
            }
        }
    }
}
