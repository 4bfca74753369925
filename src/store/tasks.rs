//! Tasks and their append-only stage history.

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use serde::Serialize;

use super::StoreError;
use super::outbox::NewEffect;
use crate::clock::Timestamp;

/// Our record of one Plane work item in the pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Task {
    pub id: i64,
    pub work_item: String,
    pub plane_issue_id: Option<String>,
    pub plane_project_id: Option<String>,
    pub title: String,
    pub repo: String,
    pub branch: String,
    pub stage: String,
    pub labels: Vec<String>,
    /// The reason of the last rejection, handed to the next agent as `ORCH_FEEDBACK`.
    pub feedback: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, Default)]
pub struct NewTask {
    pub work_item: String,
    pub plane_issue_id: Option<String>,
    pub plane_project_id: Option<String>,
    pub title: String,
    pub repo: String,
    pub branch: String,
    pub stage: String,
    pub labels: Vec<String>,
}

/// What caused a stage change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Webhook,
    AgentFinished,
    Reconciler,
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Webhook => "webhook",
            Trigger::AgentFinished => "agent_finished",
            Trigger::Reconciler => "reconciler",
            Trigger::Manual => "manual",
        }
    }

    fn parse(s: &str) -> Result<Trigger, StoreError> {
        Ok(match s {
            "webhook" => Trigger::Webhook,
            "agent_finished" => Trigger::AgentFinished,
            "reconciler" => Trigger::Reconciler,
            "manual" => Trigger::Manual,
            other => return Err(StoreError::Corrupt(format!("unknown trigger {other:?}"))),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryRow {
    pub task_id: i64,
    pub from_stage: Option<String>,
    pub to_stage: String,
    pub trigger: Trigger,
    pub rules_version: String,
    pub at: Timestamp,
}

const COLUMNS: &str = "id, work_item, plane_issue_id, plane_project_id, title, repo, branch, stage, labels, feedback, created_at, updated_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Task> {
    let labels: String = r.get(8)?;
    Ok(Task {
        id: r.get(0)?,
        work_item: r.get(1)?,
        plane_issue_id: r.get(2)?,
        plane_project_id: r.get(3)?,
        title: r.get(4)?,
        repo: r.get(5)?,
        branch: r.get(6)?,
        stage: r.get(7)?,
        // Labels are written only by this module as a JSON array; anything else reads as none.
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        feedback: r.get(9)?,
        created_at: Timestamp::from_millis(r.get(10)?),
        updated_at: Timestamp::from_millis(r.get(11)?),
    })
}

/// Returns the task of `new.work_item`, creating it (with its first history row and, when
/// `first_agent` is given, its first job) if it does not exist. The boolean is true when this
/// call created it.
///
/// Atomic against any concurrency, in this process or another: the inserts share one
/// IMMEDIATE transaction, and the unique work item makes a racing insert a no-op that then
/// reads the winner's row. A task therefore never exists without its first job.
pub fn create_atomic(
    conn: &mut Connection,
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
    conn: &mut Connection,
    new: &NewTask,
    first_agent: Option<&str>,
    rules_version: &str,
    trigger: Trigger,
    now: Timestamp,
    effects: &[NewEffect],
) -> Result<(Task, bool), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let labels = serde_json::to_string(&new.labels).unwrap_or_else(|_| "[]".into());
    let inserted = tx
        .query_row(
            &format!(
                "INSERT INTO tasks (work_item, plane_issue_id, plane_project_id, title, repo, branch, stage, labels, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)
                 ON CONFLICT(work_item) DO NOTHING
                 RETURNING {COLUMNS}"
            ),
            params![
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
        )
        .optional()?;
    let result = match inserted {
        Some(task) => {
            insert_history(&tx, task.id, None, &task.stage, trigger, rules_version, now)?;
            if let Some(agent) = first_agent {
                tx.execute(
                    "INSERT INTO jobs (task_id, agent, stage, status, created_at) VALUES (?1, ?2, ?3, 'queued', ?4)",
                    params![task.id, agent, task.stage, now.as_millis()],
                )?;
            }
            super::outbox::push_all(&tx, Some(task.id), effects, now)?;
            (task, true)
        }
        None => {
            let task = tx.query_row(
                &format!("SELECT {COLUMNS} FROM tasks WHERE work_item = ?1"),
                [&new.work_item],
                from_row,
            )?;
            (task, false)
        }
    };
    tx.commit()?;
    Ok(result)
}

pub fn get(conn: &Connection, id: i64) -> Result<Option<Task>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM tasks WHERE id = ?1"),
            [id],
            from_row,
        )
        .optional()?)
}

pub fn get_by_work_item(conn: &Connection, work_item: &str) -> Result<Option<Task>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM tasks WHERE work_item = ?1"),
            [work_item],
            from_row,
        )
        .optional()?)
}

pub fn get_by_plane_issue(
    conn: &Connection,
    plane_issue_id: &str,
) -> Result<Option<Task>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM tasks WHERE plane_issue_id = ?1"),
            [plane_issue_id],
            from_row,
        )
        .optional()?)
}

pub fn get_by_branch(
    conn: &Connection,
    repo: &str,
    branch: &str,
) -> Result<Option<Task>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM tasks WHERE repo = ?1 AND branch = ?2"),
            [repo, branch],
            from_row,
        )
        .optional()?)
}

/// Tasks of `repo` currently in `stage`; the F-3 fallback for a status event without a branch.
pub fn in_stage_of_repo(
    conn: &Connection,
    repo: &str,
    stage: &str,
) -> Result<Vec<Task>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM tasks WHERE repo = ?1 AND stage = ?2 ORDER BY id"
    ))?;
    let rows = stmt.query_map([repo, stage], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every task whose stage is not one of `terminal`, oldest update first.
pub fn list_open(conn: &Connection, terminal: &[String]) -> Result<Vec<Task>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM tasks ORDER BY updated_at, id"
    ))?;
    let rows = stmt.query_map([], from_row)?;
    let mut out = Vec::new();
    for t in rows {
        let t = t?;
        if !terminal.contains(&t.stage) {
            out.push(t);
        }
    }
    Ok(out)
}

/// The tasks of a Plane project whose Plane state orch keeps in sync: open ones, and those
/// that finished (a `terminal` stage) at or after `finished_since`.
pub fn for_plane_sync(
    conn: &Connection,
    plane_project_id: &str,
    terminal: &[String],
    finished_since: Timestamp,
) -> Result<Vec<Task>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM tasks WHERE plane_project_id = ?1 AND plane_issue_id IS NOT NULL
         ORDER BY updated_at DESC, id"
    ))?;
    let rows = stmt.query_map([plane_project_id], from_row)?;
    let mut out = Vec::new();
    for t in rows {
        let t = t?;
        if !terminal.contains(&t.stage) || t.updated_at >= finished_since {
            out.push(t);
        }
    }
    Ok(out)
}

/// The tasks waiting for a person's answer, each with the time its question was asked (the
/// asking job's finish), oldest question first: the reconciler looks for lost answers.
pub fn awaiting_answer(conn: &Connection) -> Result<Vec<(Task, Timestamp)>, StoreError> {
    let columns = COLUMNS
        .split(", ")
        .map(|c| format!("t.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {columns}, j.finished_at {} ORDER BY j.finished_at, t.id",
        super::jobs::OPEN_QUESTIONS
    ))?;
    let rows = stmt.query_map([], |r| {
        let asked = r.get::<_, Option<i64>>(12)?.unwrap_or(0);
        Ok((from_row(r)?, Timestamp::from_millis(asked)))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Moves a task from `expected` to `to` only if it is still in `expected`; writes the history
/// row in the same transaction. Returns false (and changes nothing) when another trigger got
/// there first. `feedback` replaces the stored feedback when `Some`; a forward move with `None`
/// clears it.
#[allow(clippy::too_many_arguments)]
pub fn compare_and_set_stage(
    conn: &mut Connection,
    task_id: i64,
    expected: &str,
    to: &str,
    feedback: Option<&str>,
    trigger: Trigger,
    rules_version: &str,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let won = move_in(
        &tx,
        task_id,
        expected,
        to,
        feedback,
        trigger,
        rules_version,
        now,
    )?;
    tx.commit()?;
    Ok(won)
}

/// The compare-and-set of a stage change with its history row, inside a transaction.
#[allow(clippy::too_many_arguments)]
fn move_in(
    tx: &rusqlite::Transaction<'_>,
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
        params![to, feedback, now.as_millis(), task_id, expected],
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
    pub job: Option<(super::Job, bool)>,
    /// With `end_jobs`: the jobs still running, whose agents the caller stops.
    pub running: Vec<i64>,
}

/// Carries out `change` in one IMMEDIATE transaction: the compare-and-set with its history
/// row, the new stage's job, the end of the old jobs (cancel) and every effect it owes.
/// `None` (and nothing written) when another trigger moved the task first.
pub fn change_stage(
    conn: &mut Connection,
    change: &StageChange,
    now: Timestamp,
) -> Result<Option<StageChanged>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if !move_in(
        &tx,
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
    let mut running = Vec::new();
    if change.end_jobs {
        tx.execute(
            "UPDATE jobs SET status = 'failed', error = ?1, finished_at = ?2
             WHERE task_id = ?3 AND status = 'queued'",
            params![super::jobs::CANCELLED, now.as_millis(), change.task_id],
        )?;
        let mut stmt = tx
            .prepare("SELECT id FROM jobs WHERE task_id = ?1 AND status = 'running' ORDER BY id")?;
        let rows = stmt.query_map([change.task_id], |r| r.get(0))?;
        running = rows.collect::<Result<Vec<i64>, _>>()?;
    }
    let job = match &change.agent {
        Some(agent) => Some(super::jobs::enqueue_in(
            &tx,
            change.task_id,
            agent,
            &change.to,
            now,
        )?),
        None => None,
    };
    super::outbox::push_all(&tx, Some(change.task_id), &change.effects, now)?;
    tx.commit()?;
    Ok(Some(StageChanged { job, running }))
}

/// Records that orch applied a change of `work_item`'s Plane item stamped `at` by Plane (its
/// `updated_at`); kept as the newest such stamp. Plane's clock, never compared with orch's.
pub fn record_plane_applied(
    conn: &Connection,
    work_item: &str,
    at: Timestamp,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE tasks SET plane_applied_at = MAX(COALESCE(plane_applied_at, 0), ?1)
         WHERE work_item = ?2",
        params![at.as_millis(), work_item],
    )?;
    Ok(())
}

/// The Plane stamp of the last change orch applied from the task's item, if recorded.
pub fn plane_applied_at(conn: &Connection, task_id: i64) -> Result<Option<Timestamp>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT plane_applied_at FROM tasks WHERE id = ?1",
            [task_id],
            |r| r.get::<_, Option<i64>>(0),
        )
        .optional()?
        .flatten()
        .map(Timestamp::from_millis))
}

/// A stage renamed by the rules: every task in `from` moves to `to` (with its history row,
/// trigger manual) and their active jobs with them, in one transaction. Returns how many
/// tasks moved.
pub fn rename_stage(
    conn: &mut Connection,
    from: &str,
    to: &str,
    rules_version: &str,
    now: Timestamp,
) -> Result<usize, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let ids: Vec<i64> = {
        let mut stmt = tx.prepare("SELECT id FROM tasks WHERE stage = ?1 ORDER BY id")?;
        let rows = stmt.query_map([from], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    for id in &ids {
        // Not `move_in`: a rename keeps the task's feedback.
        tx.execute(
            "UPDATE tasks SET stage = ?1, updated_at = ?2 WHERE id = ?3 AND stage = ?4",
            params![to, now.as_millis(), id, from],
        )?;
        insert_history(
            &tx,
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
            params![to, id, from],
        )?;
    }
    tx.commit()?;
    Ok(ids.len())
}

/// Marks the task as having seen activity, restarting its grace period.
pub fn touch(conn: &Connection, task_id: i64, now: Timestamp) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE tasks SET updated_at = ?1 WHERE id = ?2",
        params![now.as_millis(), task_id],
    )?;
    Ok(())
}

fn insert_history(
    conn: &Connection,
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
        params![
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

pub fn history(conn: &Connection, task_id: i64) -> Result<Vec<HistoryRow>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT task_id, from_stage, to_stage, trigger, rules_version, at FROM task_history WHERE task_id = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([task_id], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, i64>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (task_id, from_stage, to_stage, trigger, rules_version, at) = row?;
        out.push(HistoryRow {
            task_id,
            from_stage,
            to_stage,
            trigger: Trigger::parse(&trigger)?,
            rules_version,
            at: Timestamp::from_millis(at),
        });
    }
    Ok(out)
}

/// `(stage, count)` for every stage that has tasks.
pub fn counts_by_stage(conn: &Connection) -> Result<Vec<(String, i64)>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT stage, COUNT(*) FROM tasks GROUP BY stage ORDER BY stage")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
