//! Which open tasks a sweep reads the gate of, and in what order.
//!
//! The gate side streams the open stages page by page (`store::tasks::open_page`), so a sweep
//! holds one page and the tasks it will check, never the table. Each task is decided once
//! ([`Reconciler::triage`]); a task the policy says to check waits when its gate was red on
//! the sweep's last reads (the red-gate backoff, `policy::next_gate_check`) and otherwise
//! queues for this sweep's budget ([`DueQueue`]): at most `reconcile.max_gate_checks`, the
//! tasks with news first (an event since their last red reading), then the oldest-due. A task the budget leaves out is counted and stays due, so it only moves
//! up: every due task is read within `due tasks / budget` sweeps.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashSet};
use std::time::Duration;

use crate::clock::Timestamp;
use crate::policy::Outcome as Decided;
use crate::policy::{self, Decision, RuleSet, SkipReason, TaskSnapshot};
use crate::store::OpenTask;
use crate::store::gate_backoff::RedStreak;

use super::{Mode, Reconciler, Rows, SweepReport, TaskReport};

/// Tasks per page the sweep reads from the store.
pub(super) const PAGE: usize = 500;

/// What the whole gate side needs besides the tasks: read once per sweep.
pub(super) struct Context {
    pub(super) active: HashSet<i64>,
    pub(super) awaiting: HashSet<i64>,
    /// The tasks deliveries still waiting in the inbox concern: late, not lost.
    pub(super) late: HashSet<i64>,
}

/// One pass over the open tasks: the settings it runs with and what it collects.
pub(super) struct Pass<'a> {
    pub(super) rules: &'a RuleSet,
    pub(super) mode: Mode,
    pub(super) rows: Rows,
    pub(super) now: Timestamp,
    pub(super) ctx: &'a Context,
    pub(super) due: DueQueue,
    /// Human gates whose notice may never have been given (see `announce_human_gates`):
    /// task ids with the visit (`updated_at`) to check.
    pub(super) unannounced: Vec<(i64, Timestamp)>,
}

/// A task due for a gate check.
pub(super) struct Due {
    /// An event about the task since its last red reading: read before the others.
    pub(super) news: bool,
    pub(super) due_at: Timestamp,
    /// The task's id; the pass read only what deciding needs (the snapshot), the check reads
    /// the task in full.
    pub(super) id: i64,
    pub(super) snapshot: TaskSnapshot,
    pub(super) decision: Decision,
}

impl Due {
    fn key(&self) -> (bool, Timestamp, i64) {
        (!self.news, self.due_at, self.id)
    }
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// The `budget` oldest-due tasks seen so far (a max-heap: the latest due is on top, first
/// to lose its place).
pub(super) struct DueQueue {
    budget: usize,
    heap: BinaryHeap<Due>,
}

impl DueQueue {
    pub(super) fn new(budget: usize) -> DueQueue {
        DueQueue {
            budget,
            heap: BinaryHeap::with_capacity(budget.min(PAGE * 4)),
        }
    }

    /// Queues `due`; returns the task that does not fit the budget (it or a later-due one).
    pub(super) fn push(&mut self, due: Due) -> Option<Due> {
        if self.heap.len() < self.budget {
            self.heap.push(due);
            return None;
        }
        match self.heap.peek() {
            Some(latest) if due < *latest => {
                let out = self.heap.pop();
                self.heap.push(due);
                out
            }
            _ => Some(due),
        }
    }

    /// Oldest-due first.
    pub(super) fn into_sorted(self) -> Vec<Due> {
        self.heap.into_sorted_vec()
    }
}

/// When the task's red gate is read again, if the sweep's red streak still holds: same stage,
/// and the stage's gate as the rules write it now (a reload that changed it voids the wait).
pub(super) fn red_due_at(
    rules: &RuleSet,
    interval: Duration,
    stage: &str,
    streak: Option<&RedStreak>,
) -> Option<Timestamp> {
    let s = streak.filter(|s| s.reds > 0)?;
    let gate = rules.stage(stage)?.gate.as_deref().unwrap_or("");
    (s.stage == stage && s.gate == gate)
        .then(|| policy::next_gate_check(rules, s.last_at, s.reds, interval))
}

/// Whether an event about the task came after the sweep's last red reading of its gate in
/// this stage (`store::gate_backoff::news`).
pub(super) fn has_news(stage: &str, streak: Option<&RedStreak>) -> bool {
    streak.is_some_and(|s| s.reds == 0 && s.stage == stage)
}

/// A sweep starts at least one interval after the previous one began, but the clock it reads
/// and the timer it waits on may disagree by a little: a check due within a tenth of an
/// interval counts as due, so "one interval" never turns into two.
pub(super) fn is_due(at: Timestamp, now: Timestamp, interval: Duration) -> bool {
    now.plus(interval / 10) >= at
}

/// The summary's name for a decision.
pub(super) fn label(outcome: &Decided) -> &'static str {
    match outcome {
        Decided::Skip { why } => match why {
            SkipReason::Terminal => "skip:terminal",
            SkipReason::HumanGate => "skip:human_gate",
            SkipReason::Busy => "skip:busy",
            SkipReason::AwaitingInput => "skip:awaiting_input",
            SkipReason::Disabled => "skip:disabled",
            SkipReason::UnknownStage => "skip:unknown_stage",
        },
        Decided::Wait { .. } => "wait",
        Decided::CheckGate { .. } => "check_gate",
        Decided::Advance { .. } => "advance",
        Decided::Hold { .. } => "hold",
        Decided::Error { .. } => "error",
    }
}

impl Reconciler {
    /// Decides one open task and sorts it: counted and left (not for the sweep, inside its
    /// grace, backing off, late), or queued for a gate check within the budget.
    pub(super) async fn triage(
        &self,
        pass: &mut Pass<'_>,
        stage: &str,
        task: OpenTask,
        streak: Option<&RedStreak>,
        report: &mut SweepReport,
    ) {
        let (rules, now, id) = (pass.rules, pass.now, task.id);
        let snapshot = TaskSnapshot {
            work_item: task.work_item,
            stage: stage.to_string(),
            labels: task.labels,
            updated_at: task.updated_at,
            has_active_job: pass.ctx.active.contains(&id),
            awaiting_input: pass.ctx.awaiting.contains(&id),
        };
        let decision = policy::decide_task(rules, &self.overrides, &snapshot, None, now);
        self.note_decision_error(rules, pass.mode, id, &snapshot, &decision, report);
        if pass.mode == Mode::Apply {
            // The decision log (a decision that failed) and the shadow set's comparison.
            self.pipeline()
                .observe_sweep(&self.overrides, &snapshot, id, &decision, now)
                .await;
        }
        if matches!(
            decision.outcome,
            Decided::Skip {
                why: SkipReason::HumanGate
            }
        ) && !snapshot.has_active_job
            && !snapshot.awaiting_input
            && now.since(snapshot.updated_at) >= self.interval
        {
            pass.unannounced.push((id, snapshot.updated_at));
        }
        // The line's action is written only when the line is kept: most tasks are only counted,
        // and formatting 60,000 "backing off until …" lines per sweep was a fair part of it.
        let left = |report: &mut SweepReport,
                    what: &str,
                    decision: Decision,
                    action: &dyn Fn() -> Option<String>| {
            report.count(stage, what);
            if pass.rows == Rows::All || matches!(decision.outcome, Decided::Error { .. }) {
                report.tasks.push(TaskReport {
                    work_item: snapshot.work_item.clone(),
                    stage: stage.to_string(),
                    decision,
                    action: action(),
                });
            }
        };
        if !matches!(decision.outcome, Decided::CheckGate { .. }) {
            return left(report, label(&decision.outcome), decision, &|| None);
        }
        if self.backing_off(id, now) {
            return left(report, "error_backoff", decision, &|| None);
        }
        let red_due = red_due_at(rules, self.interval, stage, streak);
        if let (Some(at), Some(s)) = (red_due, streak)
            && !is_due(at, now, self.interval)
        {
            report.backing_off += 1;
            let action = || {
                Some(format!(
                    "red gate backing off ({} red in a row): next check at {}",
                    s.reds,
                    at.to_rfc3339()
                ))
            };
            return left(report, "backoff", decision, &action);
        }
        if pass.ctx.late.contains(&id) {
            if pass.mode == Mode::Apply {
                self.pipeline().metrics.reconcile_late.inc();
            }
            let action = || Some("left to a delivery waiting in the inbox (late, not lost)".into());
            return left(report, "late", decision, &action);
        }
        let grace =
            policy::grace_for(rules, &self.overrides, &snapshot, now).unwrap_or(Duration::ZERO);
        let due_at = red_due.unwrap_or_else(|| snapshot.updated_at.plus(grace));
        let queued = Due {
            news: has_news(stage, streak),
            due_at,
            id,
            snapshot,
            decision,
        };
        if let Some(lost) = pass.due.push(queued) {
            report.over_budget += 1;
            report.count(&lost.snapshot.stage, "over_budget");
            if pass.rows == Rows::All {
                report.tasks.push(TaskReport {
                    work_item: lost.snapshot.work_item,
                    stage: lost.snapshot.stage,
                    decision: lost.decision,
                    action: Some(
                        "over this sweep's budget (reconcile.max_gate_checks): checked in a later sweep"
                            .into(),
                    ),
                });
            }
        }
    }
}
