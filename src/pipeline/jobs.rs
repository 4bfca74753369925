//! What happens when an agent job ends: record it, then retry, reject, ask or advance.
//!
//! The end of a job and what it owes (a question's Needs Input, comment and message; a
//! blocked report) are one transaction (`store::jobs::finish_owing`). Moving on afterwards
//! (advance, reject) is a transition of its own; a crash between the two leaves a quiet task
//! with no active job, which is exactly what the reconciler's sweep picks up.

use std::time::Duration;

use crate::agent::{AgentOutcome, AgentStatus};
use crate::policy::{DEFAULT_START_ATTEMPTS, OutboundEvent, PlaneAction, RuleSet};
use crate::store::outbox::NewEffect;
use crate::store::{self, Job, Trigger, jobs::JobResult};

use super::{Outcome, Pipeline, PipelineError, VerdictSource, effects};

/// Used when the rules give an agent no retry policy.
const DEFAULT_MAX_ATTEMPTS: u32 = 3;
const DEFAULT_BACKOFF: Duration = Duration::from_secs(30);
/// Backoff never grows past this.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

impl Pipeline {
    /// Records the end of `job` and moves the pipeline on.
    pub async fn job_finished(
        &self,
        job: &Job,
        outcome: AgentOutcome,
    ) -> Result<Outcome, PipelineError> {
        let now = self.clock.now();
        let verdict = outcome.verdict.map(|v| v.as_str().to_string());
        let failure = match (&outcome.status, &outcome.result_error) {
            (_, Some(e)) => Some(format!("invalid result file: {e}")),
            (AgentStatus::Succeeded, None) => None,
            (AgentStatus::Failed { exit_code }, None) => Some(format!(
                "exited with {}",
                exit_code.map_or("a signal".to_string(), |c| c.to_string())
            )),
            (AgentStatus::TimedOut, None) => Some("timed out".to_string()),
            (AgentStatus::SpawnFailed { error }, None)
            | (AgentStatus::NotPrepared { error }, None) => Some(format!("could not start: {error}")),
        };
        let result = JobResult {
            exit_code: match outcome.status {
                AgentStatus::Failed { exit_code } => exit_code.map(i64::from),
                AgentStatus::Succeeded => Some(0),
                _ => None,
            },
            verdict: verdict.clone(),
            summary: outcome.summary.clone(),
            log_excerpt: Some(outcome.output_excerpt.clone()),
            error: failure.clone(),
        };
        let task_id = job.task_id;
        let Some(task) = self
            .store
            .call(move |c| store::tasks::get(c, task_id))
            .await?
        else {
            return Ok(Outcome::Ignored {
                reason: format!("task {task_id} is gone"),
            });
        };
        let rules = self.rules.current();
        // A job ending is news about the task: the sweep reads its gate again next time.
        self.clear_red_backoff(task_id).await;
        if let Some(error) = failure {
            let not_prepared = matches!(outcome.status, AgentStatus::NotPrepared { .. });
            return self
                .job_failed(&rules, job, &task, result, &error, not_prepared)
                .await;
        }
        // A question is owed (Plane state, comment, message) in the transaction that records
        // the answer-less end of the job: "awaiting input" and its announcement exist together.
        let asks = verdict.as_deref() == Some("needs_input");
        let owed = if asks {
            self.question_effects(&rules, &task, job, outcome.summary.clone())
        } else {
            Vec::new()
        };
        let (job_id, claim, stage) = (job.id, job.claim, job.stage.clone());
        let (ended, _) = self
            .store
            .call(move |c| {
                store::jobs::finish_owing(c, job_id, claim, true, &result, &stage, None, &owed, now)
            })
            .await?;
        if ended.is_none() {
            return Ok(lost_claim(job));
        }
        if task.stage != job.stage {
            // The task moved on while the agent ran (e.g. a human rejected it); the result
            // belongs to a visit that is over.
            return Ok(Outcome::Ignored {
                reason: format!("task left {} while {} ran", job.stage, job.agent),
            });
        }
        let has_reject_path = rules
            .stage(&task.stage)
            .is_some_and(|s| s.on_reject.is_some());
        match verdict.as_deref() {
            Some("needs_input") => {
                tracing::info!(work_item = %task.work_item, agent = %job.agent, stage = %task.stage, "agent asked for input");
                self.outbox_wakeup.notify_one();
                Ok(Outcome::Held {
                    task_id: task.id,
                    reason: format!("{} is waiting for an answer", job.agent),
                })
            }
            Some("reject") | Some("fail") if has_reject_path => {
                let feedback = outcome
                    .summary
                    .clone()
                    .unwrap_or_else(|| format!("{} rejected the work", job.agent));
                self.verdict(
                    &task.work_item,
                    PlaneAction::Reject,
                    Some(feedback),
                    VerdictSource::Agent,
                    Trigger::AgentFinished,
                )
                .await
            }
            _ => self.advance(task.id, Trigger::AgentFinished).await,
        }
    }

    /// The agent asked a question: Plane shows Needs Input with the question as a comment,
    /// and a message goes out; nothing advances the task until a person answers (a comment
    /// on the work item, or moving it back to the state that means start).
    fn question_effects(
        &self,
        rules: &RuleSet,
        task: &store::Task,
        job: &Job,
        question: Option<String>,
    ) -> Vec<NewEffect> {
        let question = question
            .filter(|q| !q.trim().is_empty())
            .unwrap_or_else(|| format!("{} needs more information", job.agent));
        let text = rules.render(
            "needs_input",
            &[
                ("work_item", &task.work_item),
                ("stage", &task.stage),
                ("agent", &job.agent),
                ("reason", &question),
                ("title", &task.title),
            ],
        );
        let text = if text.is_empty() { question } else { text };
        effects::plane_state(rules, task, &OutboundEvent::NeedsInput)
            .into_iter()
            .chain(effects::comment(
                task,
                &format!("needs-input-job-{}", job.id),
                &text,
            ))
            .chain(effects::telegram(&task.work_item, &text))
            .collect()
    }

    async fn job_failed(
        &self,
        rules: &RuleSet,
        job: &Job,
        task: &store::Task,
        result: JobResult,
        error: &str,
        not_prepared: bool,
    ) -> Result<Outcome, PipelineError> {
        // A job whose worktree could not be prepared never ran its agent: it has a budget of
        // its own, so an outage of the git remote does not block every task it met.
        let (max_attempts, backoff) = rules
            .agent_policy(&job.agent)
            .map(|p| {
                let max = if not_prepared { p.start_attempts } else { p.max_attempts };
                (max, p.backoff)
            })
            .unwrap_or((
                if not_prepared { DEFAULT_START_ATTEMPTS } else { DEFAULT_MAX_ATTEMPTS },
                DEFAULT_BACKOFF,
            ));
        let now = self.clock.now();
        let (job_id, claim) = (job.id, job.claim);
        if job.attempts < i64::from(max_attempts) {
            let exp = u32::try_from(job.attempts.saturating_sub(1))
                .unwrap_or(0)
                .min(16);
            let delay = crate::duration::doubled(backoff, exp, MAX_BACKOFF);
            let due = now.plus(delay);
            let requeued = self
                .store
                .call(move |c| {
                    if store::jobs::retry_later(c, job_id, claim, &result, due)? {
                        return Ok(Some(true));
                    }
                    // The task left the stage while the agent ran (a cancel): no retry.
                    let ended = store::jobs::abandon(
                        c,
                        job_id,
                        claim,
                        "the task left its stage while the job ran",
                        now,
                    )?;
                    Ok(ended.then_some(false))
                })
                .await?;
            match requeued {
                Some(true) => {}
                Some(false) => {
                    return Ok(Outcome::Ignored {
                        reason: format!("task left {} while {} ran", job.stage, job.agent),
                    });
                }
                None => return Ok(lost_claim(job)),
            }
            tracing::warn!(job = job.id, agent = %job.agent, attempt = job.attempts, error, retry_in = ?delay, "job failed; will retry");
            return Ok(Outcome::Held {
                task_id: job.task_id,
                reason: format!("{} {error}; retrying", job.agent),
            });
        }
        tracing::error!(job = job.id, agent = %job.agent, attempts = job.attempts, error, "job failed; retries exhausted, task blocked");
        // Blocked: reported once per job, in the transaction that ends it.
        let key = format!("job-{}", job.id);
        let attempts = job.attempts.to_string();
        let text = rules.render(
            "blocked",
            &[
                ("work_item", &task.work_item),
                ("stage", &task.stage),
                ("agent", &job.agent),
                ("attempts", &attempts),
                ("reason", error),
                ("title", &task.title),
            ],
        );
        let owed: Vec<NewEffect> = effects::plane_state(rules, task, &OutboundEvent::Blocked)
            .into_iter()
            .chain(effects::comment(task, &format!("blocked-{key}"), &text))
            .chain(effects::telegram(&task.work_item, &text))
            .collect();
        let stage = job.stage.clone();
        let (ended, owed) = self
            .store
            .call(move |c| {
                store::jobs::finish_owing(
                    c,
                    job_id,
                    claim,
                    false,
                    &result,
                    &stage,
                    Some(("blocked", &key)),
                    &owed,
                    now,
                )
            })
            .await?;
        if ended.is_none() {
            return Ok(lost_claim(job));
        }
        if owed {
            self.outbox_wakeup.notify_one();
        }
        Ok(Outcome::Held {
            task_id: job.task_id,
            reason: format!("{} failed {} times: {error}", job.agent, job.attempts),
        })
    }
}

/// The job's run no longer holds its claim: the job ended meanwhile (a cancel), or its
/// replica was taken for dead and another run claimed it. Nothing was written; the result
/// belongs to nobody.
fn lost_claim(job: &Job) -> Outcome {
    tracing::warn!(job = job.id, agent = %job.agent, claim = job.claim, "the run lost its claim; its result is dropped");
    Outcome::Ignored {
        reason: "the run lost its claim".to_string(),
    }
}
