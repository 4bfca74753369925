//! The named checks a rule's exit gate is built from. Each returns green or red with a
//! reason; an `Err` means the check could not be evaluated (the forge is down), which is not
//! the same as red and is handled differently by the reconciler (backoff, not silence).

use policy::CheckResult;

use crate::integrations::gitea::CiState;
use crate::policy;
use crate::store::{self, Task};

use super::{Pipeline, PipelineError};

impl Pipeline {
    /// Evaluates one named check for `task` in its current stage.
    pub async fn check(&self, task: &Task, check: &str) -> Result<CheckResult, PipelineError> {
        let result = match check {
            "ci_green" => self.ci_green(task).await,
            "analysis_approved" => self.verdict_is(task, "approve").await,
            "review_approved" => self.latest_job_verdict_is(task, "approve").await,
            "tests_passed" => self.latest_job_verdict_is(task, "pass").await,
            other => Err(PipelineError::UnknownCheck(other.to_string())),
        };
        let label = match &result {
            Ok(r) if r.green => "green",
            Ok(_) => "red",
            Err(_) => "error",
        };
        self.metrics.gate(check, label);
        result
    }

    /// Evaluates every check of the task's exit gate and combines them per the rules.
    pub async fn evaluate_gate(
        &self,
        rules: &policy::RuleSet,
        task: &Task,
    ) -> Result<policy::GateOutcome, PipelineError> {
        let mut results = std::collections::BTreeMap::new();
        for check in rules.gate_checks(&task.stage) {
            let r = self.check(task, &check).await?;
            results.insert(check, r);
        }
        Ok(rules.gate_outcome(&task.stage, &results)?)
    }

    /// [`Pipeline::evaluate_gate`] whose result, green, red or an error, is kept as the
    /// task's last reading (`store::gate_readings`) for `GET /explain`, which shows it rather
    /// than asking the forge itself. For the evaluations that act on the result; an
    /// explanation or a dry run must not call this, as they change nothing.
    pub async fn evaluate_gate_noted(
        &self,
        rules: &policy::RuleSet,
        task: &Task,
    ) -> Result<policy::GateOutcome, PipelineError> {
        let result = self.evaluate_gate(rules, task).await;
        let reading = self.gate_reading(task, &result);
        let id = task.id;
        if let Err(e) = self
            .store
            .call(move |c| store::gate_readings::record(c, id, &reading))
            .await
        {
            // Only `/explain` reads it: losing a reading is no reason to fail the gate.
            tracing::warn!(work_item = %task.work_item, error = %e, "cannot keep the gate reading");
        }
        result
    }

    /// What [`Pipeline::evaluate_gate`] said, as the task's last reading (for a caller that
    /// stores many at once: the sweep).
    pub fn gate_reading(
        &self,
        task: &Task,
        result: &Result<policy::GateOutcome, PipelineError>,
    ) -> store::gate_readings::GateReading {
        store::gate_readings::GateReading {
            stage: task.stage.clone(),
            green: result.as_ref().ok().map(|g| g.green),
            reason: result.as_ref().ok().map(|g| g.reason.clone()),
            error: result.as_ref().err().map(|e| e.to_string()),
            read_at: self.clock.now(),
        }
    }

    /// Gitea's combined status of the branch head; pending or no status is red.
    async fn ci_green(&self, task: &Task) -> Result<CheckResult, PipelineError> {
        let Some(sha) = self.forge.branch_head(&task.repo, &task.branch).await? else {
            return Ok(red(format!(
                "branch {} not found in {}",
                task.branch, task.repo
            )));
        };
        let status = self.forge.combined_status(&task.repo, &sha).await?;
        let short: String = sha.chars().take(10).collect();
        Ok(match status.state {
            CiState::Success => CheckResult {
                green: true,
                reason: format!("CI green on {short}"),
            },
            CiState::Pending => red(format!("CI pending on {short}")),
            CiState::None => red(format!("no CI status on {short}")),
            other => red(format!(
                "CI {} on {short}",
                format!("{other:?}").to_lowercase()
            )),
        })
    }

    /// The latest verdict recorded for the task in its current stage (human verdicts),
    /// counting only this visit of the stage.
    async fn verdict_is(
        &self,
        task: &Task,
        wanted: &'static str,
    ) -> Result<CheckResult, PipelineError> {
        let visit = self.stage_visit(task.id).await?;
        let (id, stage) = (task.id, task.stage.clone());
        let latest = self
            .store
            .call(move |c| store::verdicts::latest(c, id, &stage))
            .await?
            .filter(|v| v.at.as_millis() >= visit);
        Ok(match latest {
            Some(v) if v.verdict == wanted => CheckResult {
                green: true,
                reason: format!("{} by {}", v.verdict, v.source),
            },
            Some(v) => red(format!("latest verdict is {} by {}", v.verdict, v.source)),
            None => red(format!("no verdict yet for {}", task.stage)),
        })
    }

    /// The most recent verdict of this stage visit: the stage agent's (its latest finished
    /// job) or a person's (a Gitea review, where the rules take them), whichever came last.
    async fn latest_job_verdict_is(
        &self,
        task: &Task,
        wanted: &'static str,
    ) -> Result<CheckResult, PipelineError> {
        let rules = self.rules.current();
        let Some(agent) = rules.stage(&task.stage).and_then(|s| s.agent.clone()) else {
            return Ok(red(format!(
                "stage {} has no agent to give a verdict",
                task.stage
            )));
        };
        let visit = self.stage_visit(task.id).await?;
        let (id, agent2, stage) = (task.id, agent.clone(), task.stage.clone());
        let (job, human) = self
            .store
            .call(move |c| {
                Ok((
                    store::jobs::latest_done(c, id, &agent2)?,
                    store::verdicts::latest(c, id, &stage)?,
                ))
            })
            .await?;
        let from_job = job
            .and_then(|j| Some((j.finished_at?.as_millis(), j.verdict?, agent.clone())))
            .filter(|(at, _, _)| *at >= visit);
        let from_human = human.filter(|v| v.at.as_millis() >= visit).map(|v| {
            (
                v.at.as_millis(),
                v.verdict,
                format!("a person ({})", v.source),
            )
        });
        let latest = match (from_job, from_human) {
            (Some(j), Some(h)) => Some(if h.0 >= j.0 { h } else { j }),
            (j, h) => j.or(h),
        };
        Ok(match latest {
            Some((_, v, who)) if v == wanted => CheckResult {
                green: true,
                reason: format!("{who} says {v}"),
            },
            Some((_, v, who)) => red(format!("{who} says {v}")),
            None => red(format!("no verdict from {agent} yet")),
        })
    }
}

fn red(reason: String) -> CheckResult {
    CheckResult {
        green: false,
        reason,
    }
}
