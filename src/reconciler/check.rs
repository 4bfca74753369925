//! Reading the gates of the tasks a sweep's budget took (see `due.rs`), at most
//! `reconcile.gate_concurrency` at a time, each on a tokio task of its own; what they said is
//! recorded by `gate.rs` (`Reconciler::record`), and the red-gate backoff it changes is
//! written in one transaction for the sweep.

use std::sync::Arc;

use crate::clock::Timestamp;
use crate::pipeline::{Outcome, PipelineError};
use crate::policy::Outcome as Decided;
use crate::policy::{self, Decision, GateOutcome, RuleSet};
use crate::store::outbox::NewEffect;
use crate::store::{self, Task, Trigger};

use super::due::Due;
use super::{Mode, Reconciler, Rows, SweepReport};

/// What one task's check brought back from its own tokio task.
pub(super) struct Checked {
    pub(super) task: Task,
    /// The decision before the gate was evaluated; reported when the gate could not be.
    pub(super) first: Decision,
    pub(super) gate: Result<GateOutcome, PipelineError>,
    pub(super) decided: Option<Decision>,
    pub(super) applied: Option<Result<Outcome, PipelineError>>,
    /// The reading to keep (applied sweeps only).
    pub(super) reading: Option<store::gate_readings::GateReading>,
}

impl Reconciler {
    /// Reads the gates of the tasks this sweep's budget took, `reconcile.gate_concurrency`
    /// at a time, and records what they said: red readings extend the backoff, green ones
    /// end it (in one transaction for the sweep).
    pub(super) async fn check_due(
        &self,
        rules: &Arc<RuleSet>,
        mode: Mode,
        rows: Rows,
        now: Timestamp,
        due: Vec<Due>,
        report: &mut SweepReport,
    ) {
        let Some(due) = self.read_due(due, report).await else {
            return;
        };
        let semaphore = Arc::new(tokio::sync::Semaphore::new(self.concurrency.max(1)));
        let mut set = tokio::task::JoinSet::new();
        for (d, task) in due {
            let extra = self.unblock_effects(rules, &task);
            let check = check_one(
                crate::pipeline::Pipeline::clone(&self.pipeline()),
                Arc::clone(rules),
                self.overrides.clone(),
                mode,
                task,
                d.snapshot,
                d.decision,
                extra,
            );
            let permit = Arc::clone(&semaphore);
            set.spawn(async move {
                let _permit = permit.acquire_owned().await;
                check.await
            });
        }
        let mut readings = Readings::default();
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(checked) => {
                    self.record(rules, mode, rows, checked, &mut readings, report)
                        .await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "reconciler: a task check panicked");
                    report.errors.push(format!("task check panicked: {e}"));
                }
            }
        }
        if mode == Mode::Apply && !readings.notes.is_empty() {
            let Readings { reds, green, notes } = readings;
            let written = self.pipeline()
                .store
                .call(move |c| {
                    c.write(|tx| {
                        for (id, reading) in &notes {
                            store::gate_readings::record(tx, *id, reading)?;
                        }
                        store::gate_backoff::record_reds(tx, &reds, now)?;
                        store::gate_backoff::clear_many(tx, &green)
                    })
                })
                .await;
            if let Err(e) = written {
                // Only costs checks (without a streak a task is simply due again) and what
                // `GET /explain` shows.
                tracing::warn!(error = %e, "reconciler: cannot record the gate readings");
                report
                    .errors
                    .push(format!("recording the gate readings: {e}"));
            }
        }
    }
}

impl Reconciler {
    /// The budget's tasks read in full (the pass read only what deciding needs), still in the
    /// stage and visit they were decided in: one that moved since is left to the next sweep.
    async fn read_due(&self, due: Vec<Due>, report: &mut SweepReport) -> Option<Vec<(Due, Task)>> {
        let ids: Vec<i64> = due.iter().map(|d| d.id).collect();
        let tasks = self
            .pipeline()
            .store
            .call(move |c| store::tasks::get_many(c, &ids))
            .await;
        let mut tasks: std::collections::HashMap<i64, Task> = match tasks {
            Ok(t) => t.into_iter().map(|t| (t.id, t)).collect(),
            Err(e) => {
                tracing::error!(error = %e, "reconciler: cannot read the tasks to check");
                report.errors.push(format!("reading the tasks to check: {e}"));
                return None;
            }
        };
        let mut out = Vec::with_capacity(due.len());
        for d in due {
            match tasks.remove(&d.id) {
                Some(t) if t.stage == d.snapshot.stage && t.updated_at == d.snapshot.updated_at => {
                    out.push((d, t));
                }
                // Every open task is counted once: this one under what it was decided as.
                _ => report.count(&d.snapshot.stage, "moved"),
            }
        }
        Some(out)
    }
}

/// What a sweep's gate readings change, written together at its end: the red-gate backoff
/// and each task's last reading (for `GET /explain`); one transaction, not one per check.
#[derive(Default)]
pub(super) struct Readings {
    pub(super) reds: Vec<store::gate_backoff::Red>,
    pub(super) green: Vec<i64>,
    pub(super) notes: Vec<(i64, store::gate_readings::GateReading)>,
}

/// One task's gate check, on a tokio task of its own: evaluate (noting the reading unless
/// it is a dry run), decide again with the gate, and advance when the decision says so.
#[allow(clippy::too_many_arguments)]
async fn check_one(
    pipeline: crate::pipeline::Pipeline,
    rules: Arc<RuleSet>,
    overrides: policy::Overrides,
    mode: Mode,
    task: Task,
    snapshot: policy::TaskSnapshot,
    first: Decision,
    extra: Vec<NewEffect>,
) -> Checked {
    let gate = pipeline.evaluate_gate(&rules, &task).await;
    // A dry run changes nothing, the last gate reading included.
    let reading = (mode == Mode::Apply).then(|| pipeline.gate_reading(&task, &gate));
    let decided = gate
        .as_ref()
        .ok()
        .map(|g| policy::decide_task(&rules, &overrides, &snapshot, Some(g), pipeline.clock.now()));
    let applied = match (&gate, &decided) {
        (Ok(g), Some(d)) if matches!(d.outcome, Decided::Advance { .. }) && mode == Mode::Apply => {
            Some(
                pipeline
                    .apply_gate_owing(&rules, &task, g, Trigger::Reconciler, extra)
                    .await,
            )
        }
        _ => None,
    };
    Checked {
        task,
        first,
        gate,
        decided,
        applied,
        reading,
    }
}
