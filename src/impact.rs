//! What a rule edit would do to the work in flight: the open tasks of a database as the
//! evaluator sees them, run through the old and the new rule set at one `now`
//! ([`policy::impact`]), and only the decisions that change. Read-only: the database is opened
//! without write access and no gate is evaluated, so nothing anywhere changes.
//!
//! Orch keeps no copy of Plane's work items (the Plane-side sweep reads them from Plane each
//! time), so the impact covers tasks; `orch rules diff --scenarios` covers Plane states.

use std::path::Path;

use crate::clock::Timestamp;
use crate::policy::impact::{self, ChangedDecision};
use crate::policy::{Overrides, RuleSet, TaskSnapshot};
use crate::store::{self, Conn, StoreError};

/// The tasks open under `rules` (not in one of its terminal stages), with the facts the sweep
/// uses: busy (an active job) and awaiting an answer. Three reads, whatever the number of tasks.
pub fn open_tasks(conn: &Conn<'_>, rules: &RuleSet) -> Result<Vec<TaskSnapshot>, StoreError> {
    let terminal: Vec<String> = rules
        .stages()
        .iter()
        .filter(|s| s.terminal)
        .map(|s| s.name.clone())
        .collect();
    let tasks = store::tasks::list_open(conn, &terminal)?;
    let busy = store::jobs::tasks_with_active_jobs(conn)?;
    let awaiting = store::jobs::tasks_awaiting_input(conn)?;
    Ok(tasks
        .into_iter()
        .map(|t| TaskSnapshot {
            has_active_job: busy.contains(&t.id),
            awaiting_input: awaiting.contains(&t.id),
            work_item: t.work_item,
            stage: t.stage,
            labels: t.labels,
            updated_at: t.updated_at,
        })
        .collect())
}

/// The live impact: how many tasks were looked at, and the decisions that change.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Impact {
    pub old_version: String,
    pub new_version: String,
    pub at: Timestamp,
    pub open_tasks: usize,
    pub counts: std::collections::BTreeMap<String, usize>,
    pub changes: Vec<ChangedDecision>,
}

/// [`open_tasks`] of the database at `db` (opened read-only), through `old` and `new` at `now`.
pub fn over_db(
    db: &Path,
    old: &RuleSet,
    new: &RuleSet,
    ov: &Overrides,
    now: Timestamp,
) -> Result<Impact, StoreError> {
    let store = store::open_read_only(db)?;
    let tasks = store.call_sync(|c| open_tasks(c, old))?;
    let changes = impact::changed_decisions(old, new, ov, &tasks, now);
    Ok(Impact {
        old_version: old.version().to_string(),
        new_version: new.version().to_string(),
        at: now,
        open_tasks: tasks.len(),
        counts: impact::counts_by_kind(&changes),
        changes,
    })
}
