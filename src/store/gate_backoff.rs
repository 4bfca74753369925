//! The sweep's red-gate backoff: per open task, how many times in a row the sweep read its
//! exit gate red, when last, and why.
//!
//! The sweep reads it with the task (`tasks::open_page`) and asks again only when the
//! backoff says so (`policy::next_gate_check`). A row holds only for the stage and gate it
//! was written for: a task that moved on, or whose stage's gate a rule reload changed, is due
//! at once. An event about the task (a delivery, a job ending, a verdict) ends the streak
//! ([`news`]): a red gate that may have turned green is read by the next sweep, ahead of the
//! tasks that only waited.

use serde::Serialize;

use super::db::{Conn, Row};
use super::StoreError;
use crate::clock::Timestamp;

/// How long a task's gate has been red for the sweep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RedStreak {
    pub stage: String,
    /// The stage's gate as written when it was read red.
    pub gate: String,
    /// Consecutive red readings by the sweep; 0 after an event about the task (news: read
    /// first).
    pub reds: u32,
    /// The sweep that read the last red one, or the event.
    pub last_at: Timestamp,
    pub reason: String,
}

/// One red reading to record.
#[derive(Debug, Clone)]
pub struct Red {
    pub task_id: i64,
    pub stage: String,
    pub gate: String,
    pub reason: String,
}

pub(crate) const COLUMNS: &str = "b.stage, b.gate, b.reds, b.last_at, b.reason";

/// What the sweep's pass needs of the streak (no reason: it only decides when to read again).
pub(crate) const SWEEP_COLUMNS: &str = "b.stage, b.gate, b.reds, b.last_at";

/// Reads [`SWEEP_COLUMNS`] starting at `first`; the reason is left empty.
pub(crate) fn from_sweep_row(r: &Row, first: usize) -> Result<Option<RedStreak>, StoreError> {
    read(r, first, |_| Ok(String::new()))
}

/// Reads [`COLUMNS`] starting at `first`; `None` when the task has no row (a left join).
pub(crate) fn from_row(r: &Row, first: usize) -> Result<Option<RedStreak>, StoreError> {
    read(r, first, |r| r.get(first + 4))
}

fn read(
    r: &Row,
    first: usize,
    reason: impl FnOnce(&Row) -> Result<String, StoreError>,
) -> Result<Option<RedStreak>, StoreError> {
    let Some(stage) = r.get::<Option<String>>(first)? else {
        return Ok(None);
    };
    Ok(Some(RedStreak {
        stage,
        gate: r.get(first + 1)?,
        reds: r.get::<i64>(first + 2)?.clamp(0, i64::from(u32::MAX)) as u32,
        last_at: Timestamp::from_millis(r.get(first + 3)?),
        reason: reason(r)?,
    }))
}

/// Records red readings read at `at` (call inside the sweep's transaction): a task red again
/// for the same stage and gate counts one more; anything else starts a new streak at 1.
pub fn record_reds(conn: &Conn<'_>, reds: &[Red], at: Timestamp) -> Result<(), StoreError> {
    for r in reds {
        conn.execute(
            "INSERT INTO gate_backoff (task_id, stage, gate, reds, last_at, reason)
             VALUES (?1, ?2, ?3, 1, ?4, ?5)
             ON CONFLICT(task_id) DO UPDATE SET
                reds = CASE WHEN gate_backoff.stage = excluded.stage
                                 AND gate_backoff.gate = excluded.gate
                            THEN gate_backoff.reds + 1 ELSE 1 END,
                stage = excluded.stage, gate = excluded.gate,
                last_at = excluded.last_at, reason = excluded.reason",
            args![r.task_id, r.stage, r.gate, at.as_millis(), r.reason],
        )?;
    }
    Ok(())
}

/// Forgets the backoff of these tasks (their gate was green); call inside the sweep's
/// transaction.
pub fn clear_many(conn: &Conn<'_>, task_ids: &[i64]) -> Result<(), StoreError> {
    for id in task_ids {
        conn.execute("DELETE FROM gate_backoff WHERE task_id = ?1", args![id])?;
    }
    Ok(())
}

/// An event concerns the task (at `at`): its red streak ends, and the next sweep that finds
/// it due reads its gate before the tasks that only waited (`reds = 0`: news).
pub fn news(conn: &Conn<'_>, task_id: i64, at: Timestamp) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO gate_backoff (task_id, stage, gate, reds, last_at, reason)
         SELECT id, stage, '', 0, CAST(?2 AS BIGINT), 'an event about the task' FROM tasks WHERE id = ?1
         ON CONFLICT(task_id) DO UPDATE SET
            reds = 0, stage = excluded.stage, gate = excluded.gate,
            last_at = excluded.last_at, reason = excluded.reason",
        args![task_id, at.as_millis()],
    )?;
    Ok(())
}

/// The task's red streak, if it has one.
pub fn get(conn: &Conn<'_>, task_id: i64) -> Result<Option<RedStreak>, StoreError> {
    Ok(conn
        .query_opt(
            &format!("SELECT {COLUMNS} FROM gate_backoff b WHERE b.task_id = ?1"),
            args![task_id],
            |r| from_row(r, 0),
        )?
        .flatten())
}
