//! F-1, the gate side: advances tasks whose exit gate is green but whose webhook was lost.
//!
//! Every open task that is quiet for longer than its grace and has no active job gets its
//! exit gate evaluated, once per sweep; green is advanced through [`Pipeline::apply_gate`]
//! exactly as a webhook would, with trigger `reconciler`, so a sweep and a late webhook
//! cannot both move a task. Red is silence. Invariant: what is eligible is the policy's
//! decision ([`policy::decide_task`]), never code here, so human gates, grace and kill
//! switches stay rules an operator can read and change.
//!
//! A gate that cannot be evaluated backs off per task, so a peer that is down is not asked
//! again every sweep, and is reported once as needing a human at [`GATE_ERROR_CAP`]. Every
//! unblock logs one line (the rules' `unblock` template), optionally sends it to Telegram and
//! is counted for `/queue` and `/metrics` (F-4): a healed task must be visible, or a lost
//! webhook goes unnoticed.
//!
//! [`Pipeline::apply_gate`]: crate::pipeline::Pipeline::apply_gate

use std::collections::HashSet;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::clock::Timestamp;
use crate::pipeline::Outcome;
use crate::pipeline::subjects::Subjects;
use crate::policy::Outcome as Decided;
use crate::policy::{Decision, RuleSet, SkipReason};
use crate::store::outbox::NewEffect;
use crate::store::{self, Task};

use super::check::{Checked, Readings};
use super::due::{Context, DueQueue, PAGE, Pass, label};
use super::{DecisionError, Mode, Reconciler, Rows, Sides, SweepReport, TaskReport};

/// After this many consecutive gate errors a task is reported once as needing a human.
pub const GATE_ERROR_CAP: u32 = 5;
/// How many waiting inbox deliveries a sweep looks at to tell a late webhook from a lost one.
const INBOX_LOOKAHEAD: usize = 10_000;

/// The tasks deliveries still waiting in the inbox may move: the sweep leaves them to those
/// deliveries (late, not lost).
fn late_tasks(c: &store::Conn<'_>) -> Result<HashSet<i64>, store::StoreError> {
    let waiting = store::inbox::pending(
        c,
        crate::inbox::MAX_ATTEMPTS,
        0,
        Timestamp::from_millis(i64::MAX),
        INBOX_LOOKAHEAD,
    )?;
    Subjects::of(&waiting).tasks(c)
}

/// Kept in memory only: a restart is a fresh chance for every task.
#[derive(Debug, Clone, Copy)]
pub(super) struct ErrorBackoff {
    failures: u32,
    next_at: Timestamp,
}

impl Reconciler {
    /// The gate side alone, applied: lets a test watch F-1 without the Plane side acting in
    /// the same pass.
    #[cfg_attr(orch_audit, allow(dead_code))]
    pub async fn reconcile_gate_once(&self) -> SweepReport {
        self.run_sides(
            Sides::Gate,
            Mode::Apply,
            Rows::All,
            &CancellationToken::new(),
        )
        .await
    }

    pub(super) async fn gate_side(
        &self,
        rules: &Arc<RuleSet>,
        mode: Mode,
        rows: Rows,
        cancel: &CancellationToken,
        report: &mut SweepReport,
    ) {
        let Some(ctx) = self.load_context(report).await else {
            return;
        };
        let Some(stages) = self.open_stages(rules, report).await else {
            return;
        };
        let mut pass = Pass {
            rules,
            mode,
            rows,
            now: self.pipeline().clock.now(),
            ctx: &ctx,
            due: DueQueue::new(self.max_gate_checks),
            unannounced: Vec::new(),
        };
        'stages: for stage in stages {
            let mut after = 0;
            loop {
                if cancel.is_cancelled() {
                    break 'stages;
                }
                let st = stage.clone();
                let page = self.pipeline()
                    .store
                    .call(move |c| store::tasks::open_page(c, &st, after, PAGE))
                    .await;
                let page = match page {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!(stage = %stage, error = %e, "reconciler: cannot read open tasks");
                        report.errors.push(format!("reading tasks in {stage}: {e}"));
                        continue 'stages;
                    }
                };
                let full = page.len() == PAGE;
                for (task, streak) in page {
                    after = task.id;
                    self.triage(&mut pass, &stage, task, streak.as_ref(), report)
                        .await;
                }
                if !full {
                    break;
                }
            }
        }
        let (now, due, unannounced) = (pass.now, pass.due, pass.unannounced);
        if !cancel.is_cancelled() {
            self.check_due(rules, mode, rows, now, due.into_sorted(), report)
                .await;
        }
        if mode == Mode::Apply {
            self.announce_human_gates(rules, unannounced, cancel, report)
                .await;
        }
        report.tasks.sort_by(|a, b| a.work_item.cmp(&b.work_item));
    }

    /// Human gates whose "ready for review" notice was never written (a crash between the
    /// agent's end and the gate): owe it now. Not an unblock, and not a red gate report: the
    /// notice is the one the webhook path gives, once per visit.
    ///
    /// Each visit of a human gate (a task id and its `updated_at`) is checked once per process:
    /// a notice found or owed stays so, and a gate with thousands of tasks waiting for people
    /// would otherwise cost several reads per task on every sweep.
    async fn announce_human_gates(
        &self,
        rules: &Arc<RuleSet>,
        visits: Vec<(i64, Timestamp)>,
        cancel: &CancellationToken,
        report: &mut SweepReport,
    ) {
        let fresh: Vec<(i64, Timestamp)> = {
            let mut checked = self.announced.lock().unwrap_or_else(|p| p.into_inner());
            // Visits no longer waiting (moved on, or a new visit) are forgotten.
            let now_waiting: HashSet<(i64, Timestamp)> = visits.iter().copied().collect();
            checked.retain(|v| now_waiting.contains(v));
            visits.into_iter().filter(|v| !checked.contains(v)).collect()
        };
        for (id, visit) in fresh {
            if cancel.is_cancelled() {
                return;
            }
            let task = match self.pipeline().store.call(move |c| store::tasks::get(c, id)).await {
                Ok(Some(t)) if t.updated_at == visit => t,
                // Gone or moved since the pass read it: the next sweep sees the new visit.
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(task_id = id, error = %e, "reconciler: cannot read a human gate's task");
                    report.errors.push(format!("task {id}: {e}"));
                    continue;
                }
            };
            match self.pipeline().owe_awaiting_human(rules, &task).await {
                Ok(owed) => {
                    if owed {
                        tracing::info!(work_item = %task.work_item, stage = %task.stage, "reconciler: the human gate's notice was never given (crash); owed now");
                    }
                    self.announced
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert((id, visit));
                }
                Err(e) => {
                    tracing::warn!(work_item = %task.work_item, error = %e, "reconciler: cannot check the human gate's notice");
                    report.errors.push(format!("{}: {e}", task.work_item));
                }
            }
        }
    }

    /// Which tasks have an active job, which wait for an answer, and the deliveries still
    /// waiting in the inbox: one read for the whole sweep.
    async fn load_context(&self, report: &mut SweepReport) -> Option<Context> {
        let loaded = self.pipeline()
            .store
            .call(move |c| {
                Ok((
                    store::jobs::tasks_with_active_jobs(c)?,
                    store::jobs::tasks_awaiting_input(c)?,
                    late_tasks(c)?,
                ))
            })
            .await;
        match loaded {
            Ok((active, awaiting, late)) => Some(Context {
                active,
                awaiting,
                late,
            }),
            Err(e) => {
                tracing::error!(error = %e, "reconciler: cannot load open tasks");
                report.errors.push(format!("loading tasks: {e}"));
                None
            }
        }
    }

    /// The stages tasks are in that are not terminal (stages the rules do not have
    /// included: their tasks are decision errors to report).
    async fn open_stages(&self, rules: &RuleSet, report: &mut SweepReport) -> Option<Vec<String>> {
        match self.pipeline()
            .store
            .call(store::tasks::stages_in_use)
            .await
        {
            Ok(stages) => Some(
                stages
                    .into_iter()
                    .filter(|s| rules.stage(s).is_none_or(|st| !st.terminal))
                    .collect(),
            ),
            Err(e) => {
                tracing::error!(error = %e, "reconciler: cannot load open tasks");
                report.errors.push(format!("loading tasks: {e}"));
                None
            }
        }
    }

    /// The unblock message, owed in the transaction that advances the task (when the
    /// switches send it).
    pub(super) fn unblock_effects(&self, rules: &RuleSet, task: &Task) -> Vec<NewEffect> {
        if !self.overrides.effective_switches(rules).notify_unblock {
            return Vec::new();
        }
        let Some(to) = rules.stage(&task.stage).and_then(|s| s.next.clone()) else {
            return Vec::new();
        };
        let text = rules.render(
            "unblock",
            &[
                ("work_item", &task.work_item),
                ("stage", &task.stage),
                ("to", &to),
            ],
        );
        crate::pipeline::effects::telegram(&task.work_item, &text)
            .into_iter()
            .collect()
    }

    /// Reports one checked task and acts on what its check found: errors feed the backoff, a
    /// green gate clears it, and an advance is an unblock.
    pub(super) async fn record(
        &self,
        rules: &Arc<RuleSet>,
        mode: Mode,
        rows: Rows,
        checked: Checked,
        readings: &mut Readings,
        report: &mut SweepReport,
    ) {
        let Checked {
            task,
            first,
            gate,
            decided,
            applied,
            reading,
        } = checked;
        if let Some(r) = reading {
            readings.notes.push((task.id, r));
        }
        let mut line = TaskReport {
            work_item: task.work_item.clone(),
            stage: task.stage.clone(),
            decision: decided.unwrap_or(first),
            action: None,
        };
        report.gate_checks += 1;
        match &gate {
            Err(e) => {
                tracing::warn!(work_item = %task.work_item, stage = %task.stage, error = %e, "reconciler: gate check failed");
                report.errors.push(format!("{}: {e}", task.work_item));
                line.action = Some(format!("error: {e}"));
                if mode == Mode::Apply {
                    self.gate_error(rules, &task, &e.to_string()).await;
                }
            }
            Ok(g) => {
                self.backoff
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&task.id);
                if g.green {
                    readings.green.push(task.id);
                } else {
                    readings.reds.push(store::gate_backoff::Red {
                        task_id: task.id,
                        stage: task.stage.clone(),
                        gate: rules
                            .stage(&task.stage)
                            .and_then(|s| s.gate.clone())
                            .unwrap_or_default(),
                        reason: g.reason.clone(),
                    });
                }
            }
        }
        match applied {
            Some(Ok(Outcome::Advanced { from, to, .. })) => {
                let text = rules.render(
                    "unblock",
                    &[
                        ("work_item", &task.work_item),
                        ("stage", &from),
                        ("to", &to),
                    ],
                );
                tracing::info!("{text}");
                self.pipeline().metrics.reconcile_unblocked.inc();
                self.with_state(|s| s.last_unblocked = Some(task.work_item.clone()));
                line.action = Some(format!("advanced {from} -> {to}"));
                report.unblocked.push(text);
            }
            Some(Ok(other)) => line.action = Some(format!("{other:?}")),
            Some(Err(e)) => {
                tracing::warn!(work_item = %task.work_item, error = %e, "reconciler: advance failed");
                report.errors.push(format!("{}: {e}", task.work_item));
                line.action = Some(format!("error: {e}"));
            }
            None => {}
        }
        let what = if gate.is_err() {
            "error"
        } else {
            label(&line.decision.outcome)
        };
        report.count(&task.stage, what);
        let notable = line.action.is_some()
            || matches!(
                line.decision.outcome,
                Decided::Advance { .. } | Decided::Error { .. }
            );
        if rows == Rows::All || notable {
            report.tasks.push(line);
        }
    }

    /// A decision that errors, or a task in a stage the rules no longer have, leaves the task
    /// stuck until the rules are fixed: it goes in the report (and `/queue`, and the exit code
    /// of `orch reconcile --once`) every sweep, but is logged and counted once per rule-set
    /// version, so a broken rule is loud without filling the log.
    pub(super) fn note_decision_error(
        &self,
        rules: &RuleSet,
        mode: Mode,
        task_id: i64,
        task: &crate::policy::TaskSnapshot,
        decision: &Decision,
        report: &mut SweepReport,
    ) {
        let message = match &decision.outcome {
            Decided::Error { message } => format!("{}: {message}", decision.rule),
            Decided::Skip {
                why: SkipReason::UnknownStage,
            } => decision.reason.clone(),
            _ => return,
        };
        if mode == Mode::Apply {
            let key = (rules.version.clone(), task_id, task.stage.clone());
            let first = {
                let mut seen = self
                    .reported_decision_errors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                // Only the active version's entries can recur; older ones would only grow.
                seen.retain(|(v, _, _)| *v == rules.version);
                seen.insert(key)
            };
            if first {
                tracing::error!(
                    work_item = %task.work_item,
                    stage = %task.stage,
                    rules = %rules.version,
                    "reconciler: cannot decide {} in {}: {message}; it stays where it is until the rules are fixed",
                    task.work_item,
                    task.stage
                );
                self.pipeline().metrics.decision_errors.inc();
            }
        }
        report.decision_errors.push(DecisionError {
            work_item: task.work_item.clone(),
            stage: task.stage.clone(),
            message,
        });
    }

    /// Until when the task's gate errors back off, if they do.
    pub(super) fn error_backoff_until(&self, task_id: i64) -> Option<Timestamp> {
        self.backoff
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&task_id)
            .map(|b| b.next_at)
    }

    pub(super) fn backing_off(&self, task_id: i64, now: Timestamp) -> bool {
        self.backoff
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&task_id)
            .is_some_and(|b| now < b.next_at)
    }

    /// A gate that errors (not red: could not be evaluated) backs off per task; at the cap it
    /// is reported once as needing a human.
    async fn gate_error(&self, rules: &RuleSet, task: &Task, error: &str) {
        let now = self.pipeline().clock.now();
        let failures = {
            let mut map = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
            let entry = map.entry(task.id).or_insert(ErrorBackoff {
                failures: 0,
                next_at: now,
            });
            entry.failures = entry.failures.saturating_add(1);
            let exp = entry.failures.min(6);
            entry.next_at = now.plus(crate::duration::doubled(
                self.interval,
                exp,
                std::time::Duration::MAX,
            ));
            entry.failures
        };
        if failures == GATE_ERROR_CAP {
            let (id, key) = (
                task.id,
                format!("{}:{}", task.stage, task.updated_at.as_millis()),
            );
            let text = rules.render(
                "needs_human",
                &[
                    ("work_item", &task.work_item),
                    ("stage", &task.stage),
                    ("reason", error),
                ],
            );
            let text = if text.is_empty() {
                format!(
                    "reconciler: {} {}: gate check keeps failing ({error}); needs a human",
                    task.work_item, task.stage
                )
            } else {
                text
            };
            let owed: Vec<_> = crate::pipeline::effects::telegram(&task.work_item, &text)
                .into_iter()
                .collect();
            let claimed = self.pipeline()
                .store
                .call(move |c| {
                    store::verdicts::claim_notice_owing(c, id, "needs_human", &key, &owed, now)
                })
                .await
                .unwrap_or(false);
            if claimed {
                tracing::error!("{text}");
                self.pipeline().outbox_wakeup.notify_one();
            }
        }
    }
}
