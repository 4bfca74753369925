//! What a rule edit would do to the work in flight: the open tasks of a database as the
//! evaluator sees them, run through the old and the new rule set at one `now`
//! ([`policy::impact`]), and only the decisions that change. Read-only: the database is opened
//! without write access and no gate is evaluated, so nothing anywhere changes.
//!
//! The Plane work items are the ones the Plane-side sweep last saw (`store::plane_seen`): their
//! state then, with their task's facts now.


use crate::clock::Timestamp;
use crate::policy::impact::{self, ChangedDecision, ChangedPlaneDecision};
use crate::policy::{Overrides, PlaneItemSnapshot, RuleSet, TaskSnapshot};
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

/// The Plane items the sweep last saw, each with its task's facts as they are now (busy,
/// awaiting an answer, the Plane time of the last change orch applied).
pub fn seen_plane_items(conn: &Conn) -> Result<Vec<PlaneItemSnapshot>, StoreError> {
    let busy = store::jobs::tasks_with_active_jobs(conn)?;
    let awaiting = store::jobs::tasks_awaiting_input(conn)?;
    let mut out = Vec::new();
    for seen in store::plane_seen::all(conn)? {
        let task = store::tasks::get_by_work_item(conn, &seen.work_item)?;
        let applied_at = match &task {
            Some(t) => store::tasks::plane_applied_at(conn, t.id)?,
            None => None,
        };
        out.push(PlaneItemSnapshot {
            task: task.map(|t| TaskSnapshot {
                has_active_job: busy.contains(&t.id),
                awaiting_input: awaiting.contains(&t.id),
                work_item: t.work_item,
                stage: t.stage,
                labels: t.labels,
                updated_at: t.updated_at,
            }),
            work_item: seen.work_item,
            state_name: seen.state_name,
            state_group: seen.state_group,
            updated_at: seen.updated_at,
            applied_at,
            first_seen_at: seen.first_seen_at,
        });
    }
    Ok(out)
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
    /// The Plane items the sweep last saw.
    pub plane_items: usize,
    /// Counts per change kind of the Plane-side decisions.
    pub plane_counts: std::collections::BTreeMap<String, usize>,
    pub plane_changes: Vec<ChangedPlaneDecision>,
}

/// [`open_tasks`] of `store` (opened read-only: [`store::open_read_only`],
/// [`store::open_url_read_only`]), through `old` and `new` at `now`.
pub fn over_db(
    store: &store::Store,
    old: &RuleSet,
    new: &RuleSet,
    ov: &Overrides,
    now: Timestamp,
) -> Result<Impact, StoreError> {
    let tasks = store.call_sync(|c| open_tasks(c, old))?;
    let changes = impact::changed_decisions(old, new, ov, &tasks, now);
    let items = store.call_sync(seen_plane_items)?;
    let plane_changes = impact::changed_plane_decisions(old, new, ov, &items, now);
    let plane_counts = impact::counts_by_kind(plane_changes.iter().map(|c| c.kind.as_str()));
    Ok(Impact {
        plane_items: items.len(),
        plane_counts,
        plane_changes,
        old_version: old.version().to_string(),
        new_version: new.version().to_string(),
        at: now,
        open_tasks: tasks.len(),
        counts: impact::counts_by_kind(changes.iter().map(|c| c.kind.as_str())),
        changes,
    })
}
