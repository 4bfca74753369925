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

    /// Gitea's combined status of the branch head; pending or no status is red.
    async fn ci_green(&self, task: &Task) -> Result<CheckResult, PipelineError> {
        let Some(sha) = self.forge.branch_head(&task.repo, &task.branch).await? else {
            return Ok(red(format!(
                "branch {} not found in {}",
                task.branch, task.repo
            )));
        };
        let status = self.forge.combined_status(&task.repo, &sha).await?;
        let short = &sha[..sha.len().min(10)];
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

    /// The latest verdict recorded for the task in its current stage (human verdicts).
    async fn verdict_is(
        &self,
        task: &Task,
        wanted: &'static str,
    ) -> Result<CheckResult, PipelineError> {
        let (id, stage) = (task.id, task.stage.clone());
        let latest = self
            .store
            .call(move |c| store::verdicts::latest(c, id, &stage))
            .await?;
        Ok(match latest {
            Some(v) if v.verdict == wanted => CheckResult {
                green: true,
                reason: format!("{} by {}", v.verdict, v.source),
            },
            Some(v) => red(format!("latest verdict is {} by {}", v.verdict, v.source)),
            None => red(format!("no verdict yet for {}", task.stage)),
        })
    }

    /// The verdict of the latest finished job of the stage's agent.
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
        let id = task.id;
        let agent2 = agent.clone();
        let job = self
            .store
            .call(move |c| store::jobs::latest_done(c, id, &agent2))
            .await?;
        Ok(match job.and_then(|j| j.verdict) {
            Some(v) if v == wanted => CheckResult {
                green: true,
                reason: format!("{agent} says {v}"),
            },
            Some(v) => red(format!("{agent} says {v}")),
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
