//! Input: a person answers the question the stage's agent asked.
//!
//! "Awaiting input" is derived, never stored (the task's latest job ran in its current stage
//! and ended `needs_input`), so an answer is one transaction: the answer becomes the task's
//! feedback, the agent is queued again and the Plane state the stage maps to is owed
//! (`store::jobs::resume_after_input`). A second answer, or a replay, finds nothing waiting.

use crate::clock::Timestamp;
use crate::policy::{self, OutboundEvent};
use crate::store::{self, Task, Trigger};

use super::{Outcome, Pipeline, PipelineError, effects};

impl Pipeline {
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
        let owed: Vec<_> = effects::plane_state(
            rules,
            task,
            &OutboundEvent::Entered {
                stage: task.stage.clone(),
            },
        )
        .into_iter()
        .collect();
        let (id, now) = (task.id, self.clock.now());
        let Some(job) = self
            .store
            .call(move |c| {
                store::jobs::resume_after_input(
                    c,
                    id,
                    &agent,
                    answer.as_deref(),
                    said_at,
                    now,
                    &owed,
                )
            })
            .await?
        else {
            return Ok(None);
        };
        tracing::info!(work_item = %task.work_item, agent = %job.agent, trigger = trigger.as_str(), "answer received; agent queued again");
        self.job_wakeup.notify_one();
        self.outbox_wakeup.notify_one();
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
}
