//! Every write that moves a task: creation with its first job, the compare-and-set stage
//! change with its history row, job and effects, and a rename by the rules. Each is one
//! IMMEDIATE transaction, so what a change causes exists exactly when the change does.


use super::{COLUMNS, NewTask, Task, Trigger, from_row};
use crate::store::db::Conn;
use crate::clock::Timestamp;
use crate::store::StoreError;
use crate::store::outbox::NewEffect;

/// Returns the task of `new.work_item`, creating it (with its first history row and, when
/// `first_agent` is given, its first job) if it does not exist. The boolean is true when this
/// call created it.
///
/// Atomic against any concurrency, in this process or another: the inserts share one
/// IMMEDIATE transaction, and the unique work item makes a racing insert a no-op that then
/// reads the winner's row. A task therefore never exists without its first job.
#[cfg_attr(orch_audit, allow(dead_code))]
pub fn create_atomic(
    conn: &Conn<'_>,
    new: &NewTask,
    first_agent: Option<&str>,
    rules_version: &str,
    trigger: Trigger,
    now: Timestamp,
) -> Result<(Task, bool), StoreError> {
    create_owing(conn, new, first_agent, rules_version, trigger, now, &[])
}

/// [`create_atomic`] that also owes `effects` (the first stage's announcements) when, and
/// only when, it creates the task: all in one transaction.
pub fn create_owing(
    conn: &Conn<'_>,
    new: &NewTask,
    first_agent: Option<&str>,
    rules_version: &str,
    trigger: Trigger,
    now: Timestamp,
    effects: &[NewEffect],
) -> Result<(Task, bool), StoreError> {
    conn.write(|tx| {
        let labels = serde_json::to_string(&new.labels).unwrap_or_else(|_| "[]".into());
        let inserted = tx
            .query_opt(
                &format!(
                    "INSERT INTO tasks (work_item, plane_issue_id, plane_project_id, title, repo, branch, stage, labels, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)
                     ON CONFLICT(work_item) DO NOTHING
                     RETURNING {COLUMNS}"
                ),
                args![
                    new.work_item,
                    new.plane_issue_id,
                    new.plane_project_id,
                    new.title,
                    new.repo,
                    new.branch,
                    new.stage,
                    labels,
                    now.as_millis()
                ],
                from_row,
            )?;
        let result = match inserted {
            Some(task) => {
                insert_history(tx, task.id, None, &task.stage, trigger, rules_version, now)?;
                if let Some(agent) = first_agent {
                    tx.execute(
                        "INSERT INTO jobs (task_id, agent, stage, status, created_at) VALUES (?1, ?2, ?3, 'queued', ?4)",
                        args![task.id, agent, task.stage, now.as_millis()],
                    )?;
                }
                crate::store::outbox::push_all(tx, Some(task.id), effects, now)?;
                (task, true)
            }
            None => {
                let task = tx.query_row(
                    &format!("SELECT {COLUMNS} FROM tasks WHERE work_item = ?1"),
                    args![new.work_item],
                    from_row,
                )?;
                (task, false)
            }
        };
        Ok(result)
    })
}

/// Moves a task from `expected` to `to` only if it is still in `expected`; writes the history
/// row in the same transaction. Returns false (and changes nothing) when another trigger got
/// there first. `feedback` replaces the stored feedback when `Some`; a forward move with `None`
/// clears it.
#[allow(clippy::too_many_arguments)]
#[cfg_attr(orch_audit, allow(dead_code))]
pub fn compare_and_set_stage(
    conn: &Conn<'_>,
    task_id: i64,
    expected: &str,
    to: &str,
    feedback: Option<&str>,
    trigger: Trigger,
    rules_version: &str,
    now: Timestamp,
) -> Result<bool, StoreError> {
    conn.write(|tx| {
        let won = move_in(
            tx,
            task_id,
            expected,
            to,
            feedback,
            trigger,
            rules_version,
            now,
        )?;
        Ok(won)
    })
}

/// The compare-and-set of a stage change with its history row, inside a transaction.
#[allow(clippy::too_many_arguments)]
fn move_in(
    tx: &Conn<'_>,
    task_id: i64,
    expected: &str,
    to: &str,
    feedback: Option<&str>,
    trigger: Trigger,
    rules_version: &str,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let changed = tx.execute(
        "UPDATE tasks SET stage = ?1, feedback = ?2, updated_at = ?3 WHERE id = ?4 AND stage = ?5",
        args![to, feedback, now.as_millis(), task_id, expected],
    )?;
    if changed == 1 {
        insert_history(tx, task_id, Some(expected), to, trigger, rules_version, now)?;
    }
    Ok(changed == 1)
}

/// A stage change and everything it causes, committed together or not at all.
#[derive(Debug, Clone)]
pub struct StageChange {
    pub task_id: i64,
    /// The stage the caller saw; the change happens only if the task is still there.
    pub from: String,
    pub to: String,
    /// Replaces the stored feedback when `Some`; `None` clears it.
    pub feedback: Option<String>,
    pub trigger: Trigger,
    pub rules_version: String,
    /// The new stage's agent, queued in the same transaction.
    pub agent: Option<String>,
    /// The task ends (cancel): its queued jobs fail; its running ones are returned.
    pub end_jobs: bool,
    /// What the change owes the peers.
    pub effects: Vec<NewEffect>,
}

/// What [`change_stage`] did.
#[derive(Debug, Clone)]
pub struct StageChanged {
    /// The new stage's job and whether this change queued it (false: one was active).
    pub job: Option<(crate::store::Job, bool)>,
    /// With `end_jobs`: the jobs still running, now asked to stop (`stop_requested_at`); the
    /// caller stops those whose agents run in its process.
    pub running: Vec<i64>,
}

/// Carries out `change` in one IMMEDIATE transaction: the compare-and-set with its history
/// row, the new stage's job, the end of the old jobs (cancel) and every effect it owes.
/// `None` (and nothing written) when another trigger moved the task first.
pub fn change_stage(
    conn: &Conn<'_>,
    change: &StageChange,
    now: Timestamp,
) -> Result<Option<StageChanged>, StoreError> {
    conn.write(|tx| {
        if !move_in(
            tx,
            change.task_id,
            &change.from,
            &change.to,
            change.feedback.as_deref(),
            change.trigger,
            &change.rules_version,
            now,
        )? {
            return Ok(None);
        }
        // A red gate's backoff was for the stage the task just left.
        tx.execute(
            "DELETE FROM gate_backoff WHERE task_id = ?1",
            args![change.task_id],
        )?;
        let mut running = Vec::new();
        if change.end_jobs {
            tx.execute(
                "UPDATE jobs SET status = 'failed', error = ?1, finished_at = ?2
                 WHERE task_id = ?3 AND status = 'queued'",
                args![
                    crate::store::jobs::CANCELLED,
                    now.as_millis(),
                    change.task_id
                ],
            )?;
            // The running ones are asked to stop: the replica running each agent (maybe not
            // this one) sees the request and stops it; the job then ends cancelled.
            running = tx.query_map(
                "UPDATE jobs SET stop_requested_at = ?1 WHERE task_id = ?2 AND status = 'running'
                 RETURNING id",
                args![now.as_millis(), change.task_id],
                |r| r.get(0),
            )?;
            running.sort_unstable();
        }
        let job = match &change.agent {
            Some(agent) => Some(crate::store::jobs::enqueue_in(
                tx,
                change.task_id,
                agent,
                &change.to,
                now,
            )?),
            None => None,
        };
        crate::store::outbox::push_all(tx, Some(change.task_id), &change.effects, now)?;
        Ok(Some(StageChanged { job, running }))
    })
}

/// A stage renamed by the rules: every task in `from` moves to `to` (with its history row,
/// trigger manual) and their active jobs with them, in one transaction. Returns how many
/// tasks moved.
pub fn rename_stage(
    conn: &Conn<'_>,
    from: &str,
    to: &str,
    rules_version: &str,
    now: Timestamp,
) -> Result<usize, StoreError> {
    conn.write(|tx| {
        let ids: Vec<i64> = tx.query_map(
            "SELECT id FROM tasks WHERE stage = ?1 ORDER BY id",
            args![from],
            |r| r.get(0),
        )?;
        let mut moved = 0;
        for id in &ids {
            // Not `move_in`: a rename keeps the task's feedback. A task another writer moved
            // since the SELECT (possible where a transaction does not lock the whole
            // database) is left alone, without a history row.
            let changed = tx.execute(
                "UPDATE tasks SET stage = ?1, updated_at = ?2 WHERE id = ?3 AND stage = ?4",
                args![to, now.as_millis(), id, from],
            )?;
            if changed == 0 {
                continue;
            }
            moved += 1;
            insert_history(
                tx,
                *id,
                Some(from),
                to,
                Trigger::Manual,
                rules_version,
                now,
            )?;
            tx.execute(
                "UPDATE jobs SET stage = ?1 WHERE task_id = ?2 AND stage = ?3
                 AND status IN ('queued', 'running')",
                args![to, id, from],
            )?;
        }
        Ok(moved)
    })
}

pub(super) fn insert_history(
    conn: &Conn<'_>,
    task_id: i64,
    from: Option<&str>,
    to: &str,
    trigger: Trigger,
    rules_version: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO task_history (task_id, from_stage, to_stage, trigger, rules_version, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        args![
            task_id,
            from,
            to,
            trigger.as_str(),
            rules_version,
            now.as_millis()
        ],
    )?;
    Ok(())
}
