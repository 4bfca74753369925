//! What a sweep decided and did: one line per task (F-1), one per Plane item (F-2), and the
//! unblocks, answers and errors of the pass.
//!
//! Plain serialisable data with no behaviour, so `orch reconcile` (its JSON and its table in
//! `crate::report`) and the tests read one shape. A dry run reports the same decisions
//! without acting on them: that is how an operator sees what a sweep would do before letting
//! it.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::clock::Timestamp;
use crate::policy::{self, Decision};

/// One task's line in a sweep report.
#[derive(Debug, Clone, Serialize)]
pub struct TaskReport {
    pub work_item: String,
    pub stage: String,
    pub decision: Decision,
    /// What the pipeline did (absent in dry runs and when nothing was due).
    pub action: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlaneReport {
    pub work_item: String,
    pub state: String,
    pub decision: policy::PlaneDecision,
    pub action: Option<String>,
}

/// Which task lines a sweep keeps. Counting is always complete ([`SweepReport::summary`]);
/// the lines of 100,000 tasks are not, unless asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows {
    /// One line per open task (`orch reconcile --once --all`, `--format json`, the tests).
    All,
    /// Only the lines worth reading: tasks that advance (or would), and errors. The
    /// background loop keeps these, so its memory does not grow with the number of tasks.
    Notable,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SweepReport {
    pub at: Option<Timestamp>,
    pub gate_enabled: bool,
    pub plane_enabled: bool,
    /// Open tasks per stage and decision (`skip:human_gate`, `wait`, `backoff`, `late`, `moved`,
    /// `over_budget`, `advance`, `hold`, `error`, …): every open task is counted once.
    pub summary: BTreeMap<String, BTreeMap<String, u64>>,
    /// Gate evaluations this sweep made (at most `reconcile.max_gate_checks`).
    pub gate_checks: u64,
    /// Tasks due for a gate check that the budget left for a later sweep.
    pub over_budget: u64,
    /// Tasks whose red gate is not due again yet (the red-gate backoff).
    pub backing_off: u64,
    /// One line per task, or only the notable ones (see [`Rows`]).
    pub tasks: Vec<TaskReport>,
    pub plane: Vec<PlaneReport>,
    /// The unblock lines logged in this sweep.
    pub unblocked: Vec<String>,
    /// Answers to agents' questions found in Plane after their comment webhook was lost.
    pub answers: Vec<String>,
    /// Plane states the level sync found wrong and owed again.
    pub synced: Vec<String>,
    pub replays: u64,
    pub errors: Vec<String>,
    /// Tasks the rules could not decide. Separate from `errors` (peers, store) because the
    /// fix is an edit of the rules, not a retry; either makes `orch reconcile --once` exit 2.
    pub decision_errors: Vec<DecisionError>,
}

impl SweepReport {
    /// Counts one open task under `stage` × `decision`.
    pub(super) fn count(&mut self, stage: &str, decision: &str) {
        let per_stage = match self.summary.get_mut(stage) {
            Some(m) => m,
            None => self.summary.entry(stage.to_string()).or_default(),
        };
        match per_stage.get_mut(decision) {
            Some(n) => *n += 1,
            None => {
                per_stage.insert(decision.to_string(), 1);
            }
        }
    }
}

/// A task the policy could not decide: its grace expression failed, or its stage is not in
/// the rule set. Such a task is stuck until someone edits the rules, so it must be seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionError {
    pub work_item: String,
    pub stage: String,
    pub message: String,
}
