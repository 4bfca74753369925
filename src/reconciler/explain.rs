//! `orch explain` and `GET /explain/{work_item}`: why the sweep does, or does not, move one
//! task.
//!
//! Invariant: explaining changes nothing. The gate is never applied, nothing here touches
//! the error backoff, and no gate reading is stored. The decision comes from the same
//! `policy::decide_task` calls the gate side makes, so an operator reads the sweep's own
//! reasoning, with the facts it used, rather than a second account of it that could drift.
//!
//! Two ways to get the gate ([`GateView`]): `orch explain` on the command line evaluates it
//! live (an operator at a terminal asks the forge once, on purpose); `GET /explain` only
//! shows the last reading the pipeline or the sweep stored, with when it was read, and never
//! calls Gitea — an HTTP endpoint anyone can poll must not turn into forge traffic or move
//! the gate metrics.

use serde::Serialize;

use crate::clock::Timestamp;
use crate::policy::Outcome as Decided;
use crate::policy::{self, Decision};
use crate::store;

use super::due::{has_news, is_due, red_due_at};
use super::{Reconciler, snapshot_of};

/// Where an explanation takes the gate from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateView {
    /// Evaluate it now (read-only): calls the forge; for `orch explain`.
    Live,
    /// The last reading stored for the task's current stage; calls nothing; for
    /// `GET /explain`.
    LastKnown,
}

impl Reconciler {
    /// The current decision for one task, with the facts it used; `None` for an unknown
    /// work item. Evaluates the gate live (read-only) when the decision is to check it.
    pub async fn explain(&self, work_item: &str) -> Result<Option<Explanation>, store::StoreError> {
        self.explain_with(work_item, GateView::Live).await
    }

    /// [`Reconciler::explain`] taking the gate from `view`. With [`GateView::LastKnown`] the
    /// decision uses the stored reading when there is one for the task's current stage, and
    /// `facts.gate.read_at` says how old it is.
    pub async fn explain_with(
        &self,
        work_item: &str,
        view: GateView,
    ) -> Result<Option<Explanation>, store::StoreError> {
        let wi = work_item.to_string();
        let loaded = self.pipeline()
            .store
            .call(move |c| {
                let Some(t) = store::tasks::get_by_work_item(c, &wi)? else {
                    return Ok(None);
                };
                let busy = store::jobs::has_active(c, t.id)?;
                let question = store::jobs::open_question(c, t.id)?;
                let reading = store::gate_readings::latest(c, t.id)?;
                let logged = store::decisions::list(c, Some(&wi), None, LAST_DECISIONS)?;
                let streak = store::gate_backoff::get(c, t.id)?;
                Ok(Some((t, busy, question, reading, logged, streak)))
            })
            .await?;
        let Some((task, busy, question, reading, mut logged, streak)) = loaded else {
            return Ok(None);
        };
        let awaiting = question.is_some();
        let rules = self.pipeline().rules.current();
        let now = self.pipeline().clock.now();
        let snapshot = snapshot_of(&task, busy, awaiting);
        let mut decision = policy::decide_task(&rules, &self.overrides, &snapshot, None, now);
        let next_check = self.next_check(&rules, &task, &decision, streak.as_ref(), now);
        let mut gate = None;
        if matches!(decision.outcome, Decided::CheckGate { .. }) {
            match view {
                GateView::Live => match self.pipeline().evaluate_gate(&rules, &task).await {
                    Ok(g) => {
                        decision =
                            policy::decide_task(&rules, &self.overrides, &snapshot, Some(&g), now);
                        gate = Some(serde_json::json!({
                            "green": g.green, "reason": g.reason, "read_at": now,
                        }));
                    }
                    Err(e) => {
                        gate = Some(serde_json::json!({ "error": e.to_string(), "read_at": now }))
                    }
                },
                GateView::LastKnown => {
                    // A reading from an earlier stage is about another gate.
                    if let Some(r) = reading.filter(|r| r.stage == task.stage) {
                        if let (Some(green), Some(reason)) = (r.green, r.reason.clone()) {
                            let g = policy::GateOutcome { green, reason };
                            decision = policy::decide_task(
                                &rules,
                                &self.overrides,
                                &snapshot,
                                Some(&g),
                                now,
                            );
                        }
                        gate = serde_json::to_value(&r).ok();
                    }
                }
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
            next_check,
            now,
            last_decisions: {
                logged.reverse();
                logged
            },
        }))
    }

    /// When the sweep reads the task's gate next, and why then.
    fn next_check(
        &self,
        rules: &policy::RuleSet,
        task: &store::Task,
        decision: &Decision,
        streak: Option<&store::gate_backoff::RedStreak>,
        now: Timestamp,
    ) -> Option<NextCheck> {
        match decision.outcome {
            Decided::Wait { remaining_s } => Some(NextCheck {
                at: now.plus(std::time::Duration::from_secs(remaining_s)),
                why: "when the task's grace ends; the gate is not read before".into(),
            }),
            Decided::CheckGate { .. } => {
                if let Some(at) = self.error_backoff_until(task.id).filter(|at| now < *at) {
                    return Some(NextCheck {
                        at,
                        why: "the gate could not be read; the sweep backs off before asking again"
                            .into(),
                    });
                }
                let red = red_due_at(rules, self.interval, &task.stage, streak)
                    .filter(|at| !is_due(*at, now, self.interval));
                Some(match (red, streak) {
                    (Some(at), Some(s)) => NextCheck {
                        at,
                        why: format!(
                            "the sweep read the gate red {} time(s) in a row (last at {}: {}); it \
                             waits 1, 2, 4 … intervals up to reconcile.red_backoff_cap, or reads it \
                             at the next sweep after an event about the task (a push, a CI status, \
                             a verdict, a job ending)",
                            s.reds,
                            s.last_at.to_rfc3339(),
                            s.reason
                        ),
                    },
                    _ if has_news(&task.stage, streak) => NextCheck {
                        at: now,
                        why:
                            "an event about the task came after the sweep last read the gate red: \
                              the next sweep reads it, before the tasks that only waited"
                                .into(),
                    },
                    _ => NextCheck {
                        at: now,
                        why: format!(
                            "due: the next sweep reads the gate (oldest-due first, at most {} per sweep)",
                            self.max_gate_checks
                        ),
                    },
                })
            }
            _ => None,
        }
    }
}

/// When the sweep reads a task's gate next.
#[derive(Debug, Clone, Serialize)]
pub struct NextCheck {
    pub at: Timestamp,
    pub why: String,
}

/// How many logged decisions an explanation shows (`orch decisions` has them all).
const LAST_DECISIONS: usize = 10;

#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub work_item: String,
    pub stage: String,
    pub decision: Decision,
    pub facts: Facts,
    pub grace_left_s: Option<u64>,
    /// When the sweep reads the gate next, and why (absent when it does not read it).
    pub next_check: Option<NextCheck>,
    pub now: Timestamp,
    /// The latest decisions that acted on the task (the decision log), newest first: the
    /// history of why it moved.
    pub last_decisions: Vec<store::decisions::DecisionRow>,
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
    /// The exit gate: `green` and `reason`, or `error`, and `read_at`. `None` when the
    /// decision did not need it, or (`GET /explain`) when it was never read in this stage.
    pub gate: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Question {
    pub text: String,
    pub asked_at: Timestamp,
}
