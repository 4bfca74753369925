//! Cancel: the work item was cancelled in Plane.
//!
//! The task moves to the rules' cancel stage (a terminal one) in the same transaction that
//! fails its queued jobs and asks its running ones to stop; then the agent is stopped by the
//! replica that runs it and the worktree removed. A task that already ended is left alone: a
//! cancelled task is final.

use crate::store::{self, Trigger};

use super::{Outcome, Pipeline, PipelineError};

/// Whether a task that reached a terminal stage may still be cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// A finished task is final.
    IsFinal,
    /// Plane was never told the task finished, and a person cancelled it before that.
    NotYetShown,
}

impl Pipeline {
    /// The work item was cancelled: the task moves to the rules' cancel stage (a terminal
    /// one), its queued jobs are failed, its running agent is stopped, and its worktree is
    /// removed. Nothing happens for a task that already ended.
    pub async fn cancel(
        &self,
        work_item: &str,
        trigger: Trigger,
    ) -> Result<Outcome, PipelineError> {
        self.cancel_ending(work_item, trigger, Ended::IsFinal).await
    }

    /// A cancel found in Plane where orch was about to write the state of the stage the task
    /// is in: the person's cancel came before orch ever showed that stage, so it wins even
    /// over a task that finished meanwhile (its webhook was lost; the pipeline ran on).
    pub async fn cancel_found_in_plane(&self, work_item: &str) -> Result<Outcome, PipelineError> {
        self.cancel_ending(work_item, Trigger::Reconciler, Ended::NotYetShown)
            .await
    }

    async fn cancel_ending(
        &self,
        work_item: &str,
        trigger: Trigger,
        ended: Ended,
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
        let reopen = ended == Ended::NotYetShown;
        if rules
            .stage(&task.stage)
            .is_some_and(|s| s.terminal && (s.cancel || !reopen))
        {
            return Ok(Outcome::Ignored {
                reason: format!("{} already ended in {}", task.work_item, task.stage),
            });
        }
        let Some(changed) = self
            .change_stage_ending_jobs(&rules, &task, &target, trigger)
            .await?
        else {
            return Ok(Outcome::Raced { task_id: task.id });
        };
        // Each running job was asked to stop in the change's transaction. Those running here
        // stop now; a live replica stops its own on its next poll; a job whose run is gone (a
        // crash, a silent replica) is ended here. All end cancelled, fenced by their claim.
        let (now, ttl) = (self.clock.now(), self.config.replicas.lease_ttl);
        for job in changed.running {
            if !self.running_jobs.stop(job) {
                self.store
                    .call(move |c| store::jobs::end_cancelled_orphan(c, job, ttl, now))
                    .await?;
            }
        }
        tracing::info!(work_item = %task.work_item, from = %task.stage, to = %target, trigger = trigger.as_str(), "task cancelled");
        Ok(Outcome::Cancelled {
            task_id: task.id,
            from: task.stage.clone(),
        })
    }
}
