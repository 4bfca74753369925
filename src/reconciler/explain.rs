//! `orch explain` and `GET /explain/{work_item}`: why the sweep does, or does not, move one
//! task.
//!
//! Invariant: explaining changes nothing. The gate is evaluated (read-only) but never
//! applied, and nothing here touches the error backoff. The decision comes from the same
//! `policy::decide_task` calls the gate side makes, so an operator reads the sweep's own
//! reasoning, with the facts it used, rather than a second account of it that could drift.

use serde::Serialize;

use crate::clock::Timestamp;
use crate::policy::{self, Decision, Outcome as D};
use crate::store;

use super::{Reconciler, snapshot_of};

impl Reconciler {
    /// The current decision for one task, with the facts it used; `None` for an unknown
    /// work item. Evaluates the gate (read-only) when the decision is to check it.
    pub async fn explain(&self, work_item: &str) -> Result<Option<Explanation>, store::StoreError> {
        let wi = work_item.to_string();
        let loaded = self
            .pipeline
            .store
            .call(move |c| {
                let Some(t) = store::tasks::get_by_work_item(c, &wi)? else {
                    return Ok(None);
                };
                let busy = store::jobs::has_active(c, t.id)?;
                let question = store::jobs::open_question(c, t.id)?;
                Ok(Some((t, busy, question)))
            })
            .await?;
        let Some((task, busy, question)) = loaded else {
            return Ok(None);
        };
        let awaiting = question.is_some();
        let rules = self.pipeline.rules.current();
        let now = self.pipeline.clock.now();
        let snapshot = snapshot_of(&task, busy, awaiting);
        let mut decision = policy::decide_task(&rules, &self.overrides, &snapshot, None, now);
        let mut gate = None;
        if matches!(decision.outcome, D::CheckGate { .. }) {
            match self.pipeline.evaluate_gate(&rules, &task).await {
                Ok(g) => {
                    decision =
                        policy::decide_task(&rules, &self.overrides, &snapshot, Some(&g), now);
                    gate = Some(serde_json::to_value(&g).unwrap_or_default());
                }
                Err(e) => gate = Some(serde_json::json!({ "error": e.to_string() })),
            }
        }
        Ok(Some(Explanation {
            work_item: task.work_item.clone(),
            stage: task.stage.clone(),
            grace_left_s: decision.grace_left_s,
            facts: Facts {
                has_active_job: busy,
                awaiting_input: awaiting,
                question: question.map(|(text, asked_at)| Question { text, asked_at }),
                age_s: now.since(task.updated_at).as_secs(),
                updated_at: task.updated_at,
                labels: task.labels.clone(),
                gate,
            },
            decision,
            now,
        }))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub work_item: String,
    pub stage: String,
    pub decision: Decision,
    pub facts: Facts,
    pub grace_left_s: Option<u64>,
    pub now: Timestamp,
}

#[derive(Debug, Clone, Serialize)]
pub struct Facts {
    pub has_active_job: bool,
    pub awaiting_input: bool,
    /// The question the task waits on, when it waits on one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub question: Option<Question>,
    pub age_s: u64,
    pub updated_at: Timestamp,
    pub labels: Vec<String>,
    pub gate: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Question {
    pub text: String,
    pub asked_at: Timestamp,
}
