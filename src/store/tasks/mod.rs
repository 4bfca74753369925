//! Tasks and their append-only stage history.

use serde::Serialize;

use super::db::{Conn, Param, Row};
use super::StoreError;
use crate::clock::Timestamp;

mod change;

pub use change::{
    StageChange, StageChanged, change_stage, compare_and_set_stage, create_atomic, create_owing,
    rename_stage,
};

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

fn from_row(r: &Row) -> Result<Task, StoreError> {
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

pub fn get(conn: &Conn<'_>, id: i64) -> Result<Option<Task>, StoreError> {
    conn
        .query_opt(
            &format!("SELECT {COLUMNS} FROM tasks WHERE id = ?1"),
            args![id],
            from_row,
        )
}

pub fn get_by_work_item(conn: &Conn<'_>, work_item: &str) -> Result<Option<Task>, StoreError> {
    conn
        .query_opt(
            &format!("SELECT {COLUMNS} FROM tasks WHERE work_item = ?1"),
            args![work_item],
            from_row,
        )
}

pub fn get_by_plane_issue(
    conn: &Conn<'_>,
    plane_issue_id: &str,
) -> Result<Option<Task>, StoreError> {
    conn
        .query_opt(
            &format!("SELECT {COLUMNS} FROM tasks WHERE plane_issue_id = ?1"),
            args![plane_issue_id],
            from_row,
        )
}

pub fn get_by_branch(
    conn: &Conn<'_>,
    repo: &str,
    branch: &str,
) -> Result<Option<Task>, StoreError> {
    conn
        .query_opt(
            &format!("SELECT {COLUMNS} FROM tasks WHERE repo = ?1 AND branch = ?2"),
            args![repo, branch],
            from_row,
        )
}

/// Tasks of `repo` currently in `stage`; the F-3 fallback for a status event without a branch.
pub fn in_stage_of_repo(
    conn: &Conn<'_>,
    repo: &str,
    stage: &str,
) -> Result<Vec<Task>, StoreError> {
    let rows = conn.query_map(&format!(
        "SELECT {COLUMNS} FROM tasks WHERE repo = ?1 AND stage = ?2 ORDER BY id"
    ), args![repo, stage], from_row)?;
    Ok(rows.into_iter().collect())
}

/// Every task whose stage is not one of `terminal`, oldest update first.
pub fn list_open(conn: &Conn<'_>, terminal: &[String]) -> Result<Vec<Task>, StoreError> {
    let rows = conn.query_map(&format!(
        "SELECT {COLUMNS} FROM tasks ORDER BY updated_at, id"
    ), args![], from_row)?;
    let mut out = Vec::new();
    for t in rows {
        if !terminal.contains(&t.stage) {
            out.push(t);
        }
    }
    Ok(out)
}

/// The distinct stages tasks are in (from the stage index, without reading the tasks).
pub fn stages_in_use(conn: &Conn<'_>) -> Result<Vec<String>, StoreError> {
    let rows = conn.query_map("SELECT DISTINCT stage FROM tasks ORDER BY stage", args![], |r| r.get(0))?;
    Ok(rows.into_iter().collect())
}

/// What the sweep's pass reads of an open task: what deciding it needs and nothing else. The
/// pass decides every open task on every sweep, but checks at most `reconcile.max_gate_checks`
/// of them, and reads those in full ([`get_many`]); decoding the other columns of 80,000
/// tasks only to drop them was most of a sweep's time.
#[derive(Debug, Clone)]
pub struct OpenTask {
    pub id: i64,
    pub work_item: String,
    pub labels: Vec<String>,
    pub updated_at: Timestamp,
}

/// One page of the tasks in `stage` with an id above `after`, by id, each with its red-gate
/// backoff: the sweep streams the open stages through this, so it never holds more than a
/// page, and never reads a finished task.
pub fn open_page(
    conn: &Conn<'_>,
    stage: &str,
    after: i64,
    limit: usize,
) -> Result<Vec<(OpenTask, Option<super::gate_backoff::RedStreak>)>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    conn.query_map(
        &format!(
            "SELECT t.id, t.work_item, t.labels, t.updated_at, {} FROM tasks t
             LEFT JOIN gate_backoff b ON b.task_id = t.id
             WHERE t.stage = ?1 AND t.id > ?2 ORDER BY t.id LIMIT ?3",
            super::gate_backoff::SWEEP_COLUMNS
        ),
        args![stage, after, limit],
        |r| {
            let task = OpenTask {
                id: r.get(0)?,
                work_item: r.get(1)?,
                labels: serde_json::from_str(r.text(2)?).unwrap_or_default(),
                updated_at: Timestamp::from_millis(r.get(3)?),
            };
            Ok((task, super::gate_backoff::from_sweep_row(r, 4)?))
        },
    )
}

/// The tasks with these ids (those that still exist), by id.
pub fn get_many(conn: &Conn<'_>, ids: &[i64]) -> Result<Vec<Task>, StoreError> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let marks = (1..=chunk.len())
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let params: Vec<Param<'_>> = chunk.iter().map(|id| Param::Int(*id)).collect();
        out.extend(conn.query_map(
            &format!("SELECT {COLUMNS} FROM tasks WHERE id IN ({marks}) ORDER BY id"),
            &params,
            from_row,
        )?);
    }
    Ok(out)
}

/// The ids of the tasks that deliveries about these Plane items, repositories or branches
/// may concern (see `pipeline::subjects`): one query for the whole set, none when it is empty.
pub fn concerned_by(
    conn: &Conn<'_>,
    issues: &[&str],
    repos: &[&str],
    branches: &[(&str, &str)],
) -> Result<Vec<i64>, StoreError> {
    let mut clauses = Vec::new();
    let mut params: Vec<Param<'_>> = Vec::new();
    for id in issues {
        params.push(Param::Text(id));
        clauses.push(format!("plane_issue_id = ?{}", params.len()));
    }
    for repo in repos {
        params.push(Param::Text(repo));
        clauses.push(format!("repo = ?{}", params.len()));
    }
    for (repo, branch) in branches {
        params.push(Param::Text(repo));
        params.push(Param::Text(branch));
        let n = params.len();
        clauses.push(format!("(repo = ?{} AND branch = ?{n})", n - 1));
    }
    if clauses.is_empty() {
        return Ok(Vec::new());
    }
    conn.query_map(
        &format!("SELECT id FROM tasks WHERE {}", clauses.join(" OR ")),
        &params,
        |r| r.get(0),
    )
}

/// The tasks of a Plane project whose Plane state orch keeps in sync: open ones, and those
/// that finished (a `terminal` stage) at or after `finished_since`.
pub fn for_plane_sync(
    conn: &Conn<'_>,
    plane_project_id: &str,
    terminal: &[String],
    finished_since: Timestamp,
) -> Result<Vec<Task>, StoreError> {
    let rows = conn.query_map(&format!(
        "SELECT {COLUMNS} FROM tasks WHERE plane_project_id = ?1 AND plane_issue_id IS NOT NULL
         ORDER BY updated_at DESC, id"
    ), args![plane_project_id], from_row)?;
    let mut out = Vec::new();
    for t in rows {
        if !terminal.contains(&t.stage) || t.updated_at >= finished_since {
            out.push(t);
        }
    }
    Ok(out)
}

/// The tasks waiting for a person's answer, each with the time its question was asked (the
/// asking job's finish), oldest question first: the reconciler looks for lost answers.
pub fn awaiting_answer(conn: &Conn<'_>) -> Result<Vec<(Task, Timestamp)>, StoreError> {
    let columns = COLUMNS
        .split(", ")
        .map(|c| format!("t.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let rows = conn.query_map(&format!(
        "SELECT {columns}, j.finished_at {} ORDER BY j.finished_at, t.id",
        super::jobs::OPEN_QUESTIONS
    ), args![], |r| {
        let asked = r.get::<Option<i64>>(12)?.unwrap_or(0);
        Ok((from_row(r)?, Timestamp::from_millis(asked)))
    })?;
    Ok(rows.into_iter().collect())
}

/// Records that orch applied a change of `work_item`'s Plane item stamped `at` by Plane (its
/// `updated_at`); kept as the newest such stamp. Plane's clock, never compared with orch's.
pub fn record_plane_applied(
    conn: &Conn<'_>,
    work_item: &str,
    at: Timestamp,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE tasks SET plane_applied_at = CASE WHEN COALESCE(plane_applied_at, 0) > ?1 THEN plane_applied_at ELSE ?1 END
         WHERE work_item = ?2",
        args![at.as_millis(), work_item],
    )?;
    Ok(())
}

/// The Plane stamp of the last change orch applied from the task's item, if recorded.
pub fn plane_applied_at(conn: &Conn<'_>, task_id: i64) -> Result<Option<Timestamp>, StoreError> {
    Ok(conn
        .query_opt(
            "SELECT plane_applied_at FROM tasks WHERE id = ?1",
            args![task_id],
            |r| r.get::<Option<i64>>(0),
        )?
        .flatten()
        .map(Timestamp::from_millis))
}

/// Marks the task as having seen activity, restarting its grace period.
pub fn touch(conn: &Conn<'_>, task_id: i64, now: Timestamp) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE tasks SET updated_at = ?1 WHERE id = ?2",
        args![now.as_millis(), task_id],
    )?;
    Ok(())
}

pub fn history(conn: &Conn<'_>, task_id: i64) -> Result<Vec<HistoryRow>, StoreError> {
    let rows = conn.query_map("SELECT task_id, from_stage, to_stage, trigger, rules_version, at FROM task_history WHERE task_id = ?1 ORDER BY id", args![task_id], |r| {
        Ok((
            r.get::<i64>(0)?,
            r.get::<Option<String>>(1)?,
            r.get::<String>(2)?,
            r.get::<String>(3)?,
            r.get::<String>(4)?,
            r.get::<i64>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (task_id, from_stage, to_stage, trigger, rules_version, at) = row;
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
pub fn counts_by_stage(conn: &Conn<'_>) -> Result<Vec<(String, i64)>, StoreError> {
    let rows = conn.query_map("SELECT stage, COUNT(*) FROM tasks GROUP BY stage ORDER BY stage", args![], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.into_iter().collect())
}

/// Every task, oldest update first: the board reads them all at once.
pub fn list_all(conn: &Conn<'_>) -> Result<Vec<Task>, StoreError> {
    let rows = conn.query_map(&format!(
        "SELECT {COLUMNS} FROM tasks ORDER BY updated_at, id"
    ), args![], from_row)?;
    Ok(rows.into_iter().collect())
}

/// When each task last entered its current stage (its newest history row into that stage);
/// one query for the whole board.
pub fn entered_current_stage(
    conn: &Conn<'_>,
) -> Result<std::collections::HashMap<i64, Timestamp>, StoreError> {
    let rows = conn.query_map("SELECT h.task_id, MAX(h.at) FROM task_history h
         JOIN tasks t ON t.id = h.task_id AND h.to_stage = t.stage
         GROUP BY h.task_id", args![], |r| {
        Ok((r.get::<i64>(0)?, Timestamp::from_millis(r.get(1)?)))
    })?;
    Ok(rows.into_iter().collect())
}

/// How many stage changes `trigger` made at or after `since` (the reconciler's unblocks of
/// the day, for the board's health strip).
pub fn moves_since(
    conn: &Conn<'_>,
    trigger: Trigger,
    since: Timestamp,
) -> Result<i64, StoreError> {
    conn.query_row(
        "SELECT COUNT(*) FROM task_history WHERE trigger = ?1 AND at >= ?2 AND from_stage IS NOT NULL",
        args![trigger.as_str(), since.as_millis()],
        |r| r.get(0),
    )
}
