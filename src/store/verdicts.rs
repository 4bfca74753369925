//! Verdicts (approve / reject / pass / fail) and once-only notices.

use serde::Serialize;

use super::db::Conn;
use super::StoreError;
use crate::clock::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerdictRow {
    pub task_id: i64,
    pub stage: String,
    pub verdict: String,
    pub source: String,
    pub feedback: Option<String>,
    pub at: Timestamp,
}

pub fn record(
    conn: &Conn<'_>,
    task_id: i64,
    stage: &str,
    verdict: &str,
    source: &str,
    feedback: Option<&str>,
    now: Timestamp,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO verdicts (task_id, stage, verdict, source, feedback, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        args![task_id, stage, verdict, source, feedback, now.as_millis()],
    )?;
    Ok(())
}

/// The latest verdict given for the task in `stage`.
pub fn latest(
    conn: &Conn<'_>,
    task_id: i64,
    stage: &str,
) -> Result<Option<VerdictRow>, StoreError> {
    conn
        .query_opt(
            "SELECT task_id, stage, verdict, source, feedback, at FROM verdicts
             WHERE task_id = ?1 AND stage = ?2 ORDER BY id DESC LIMIT 1",
            args![task_id, stage],
            |r| {
                Ok(VerdictRow {
                    task_id: r.get(0)?,
                    stage: r.get(1)?,
                    verdict: r.get(2)?,
                    source: r.get(3)?,
                    feedback: r.get(4)?,
                    at: Timestamp::from_millis(r.get(5)?),
                })
            },
        )
}

/// Claims the right to send notice `(kind, key)` for a task. True exactly once.
pub fn claim_notice(
    conn: &Conn<'_>,
    task_id: i64,
    kind: &str,
    key: &str,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let n = conn.execute(
        "INSERT INTO notices (task_id, kind, key, at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
        args![task_id, kind, key, now.as_millis()],
    )?;
    Ok(n == 1)
}

/// Whether notice `(kind, key)` was given for the task.
pub fn notice_given(
    conn: &Conn<'_>,
    task_id: i64,
    kind: &str,
    key: &str,
) -> Result<bool, StoreError> {
    conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM notices WHERE task_id = ?1 AND kind = ?2 AND key = ?3)",
        args![task_id, kind, key],
        |r| r.get(0),
    )
}

/// Claims notice `(kind, key)` and owes its `effects` in one transaction: a notice is either
/// given, with everything it says, or not at all. True exactly once.
pub fn claim_notice_owing(
    conn: &Conn<'_>,
    task_id: i64,
    kind: &str,
    key: &str,
    effects: &[super::outbox::NewEffect],
    now: Timestamp,
) -> Result<bool, StoreError> {
    conn.write(|tx| {
        let claimed = claim_notice(tx, task_id, kind, key, now)?;
        if claimed {
            super::outbox::push_all(tx, Some(task_id), effects, now)?;
        }
        Ok(claimed)
    })
}

/// Every verdict given for the task, oldest first (the board's task page).
pub fn for_task(conn: &Conn<'_>, task_id: i64) -> Result<Vec<VerdictRow>, StoreError> {
    let rows = conn.query_map("SELECT task_id, stage, verdict, source, feedback, at FROM verdicts
         WHERE task_id = ?1 ORDER BY id", args![task_id], |r| {
        Ok(VerdictRow {
            task_id: r.get(0)?,
            stage: r.get(1)?,
            verdict: r.get(2)?,
            source: r.get(3)?,
            feedback: r.get(4)?,
            at: Timestamp::from_millis(r.get(5)?),
        })
    })?;
    Ok(rows.into_iter().collect())
}
