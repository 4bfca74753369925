//! Verdicts: a person (Plane state, Gitea review) or the stage's agent approves or rejects
//! the task's current stage.
//!
//! A person's Plane verdict is taken only at a human gate: a stale "Approved" on a task that
//! has moved on must not push it further. An approval is recorded and the gate re-checked; a
//! rejection sends the task where the rules say, with the reason as the next agent's
//! `ORCH_FEEDBACK`.

use crate::policy::{self, PlaneAction};
use crate::store::{self, Task, Trigger};

use super::advance::{By, Hold};
use super::{Outcome, Pipeline, PipelineError, VerdictSource};

impl Pipeline {
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
            PlaneAction::Approve => {
                let by = match source {
                    VerdictSource::Plane | VerdictSource::Gitea => By::Person,
                    VerdictSource::Agent => By::Event,
                };
                self.advance_holding(task.id, trigger, Hold::Never, by)
                    .await
            }
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
        let moved = self
            .change_stage(rules, task, &target, Some(feedback), trigger, Vec::new())
            .await?;
        if moved.is_none() {
            return Ok(Outcome::Raced { task_id: task.id });
        }
        tracing::info!(work_item = %task.work_item, from = %task.stage, to = %target, "task rejected");
        Ok(Outcome::Rejected {
            task_id: task.id,
            from: task.stage.clone(),
            to: target,
        })
    }
}
