//! The decision log: every decision that acted (an advance, a replay, a hold, an error), with
//! its time, trigger, rule-set version, rule, reason and the facts it used — the history of
//! *why* a task moved, for audits (`orch decisions`, `GET /explain`).
//!
//! Rows older than the retention (`decisions.retention`) are pruned as new ones are written,
//! so the log needs no loop of its own; the index on `at` keeps the prune a range scan.

use std::time::Duration;

use serde::Serialize;

use super::db::{Conn, Row};
use super::StoreError;
use crate::clock::Timestamp;

/// A decision to log. `facts` is the JSON of what the decision was taken over.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewDecision {
    pub work_item: String,
    pub task_id: Option<i64>,
    pub stage: String,
    pub trigger: String,
    pub rules_version: String,
    pub rule: String,
    /// What was decided, in the words of scenario expectations: `advance review -> testing`,
    /// `hold`, `replay approve`, `error`.
    pub outcome: String,
    pub reason: String,
    pub facts: serde_json::Value,
}

/// One logged decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionRow {
    pub id: i64,
    pub at: Timestamp,
    #[serde(flatten)]
    pub decision: NewDecision,
}

/// Logs `d` at `now` and drops what is older than `retention` (none: keep everything).
pub fn record(
    conn: &Conn<'_>,
    d: &NewDecision,
    now: Timestamp,
    retention: Option<Duration>,
) -> Result<i64, StoreError> {
    let id = conn.query_row(
        "INSERT INTO decisions (at, work_item, task_id, stage, trigger, rules_version, rule, outcome, reason, facts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) RETURNING id",
        args![
            now.as_millis(),
            d.work_item,
            d.task_id,
            d.stage,
            d.trigger,
            d.rules_version,
            d.rule,
            d.outcome,
            d.reason,
            d.facts.to_string()
        ],
        |r| r.get(0),
    )?;
    if let Some(keep) = retention {
        prune(conn, now.minus(keep))?;
    }
    Ok(id)
}

/// Deletes the decisions logged before `before`; how many went.
pub fn prune(conn: &Conn<'_>, before: Timestamp) -> Result<usize, StoreError> {
    conn.execute("DELETE FROM decisions WHERE at < ?1", args![before.as_millis()])
}

/// The latest `limit` decisions (of one work item, when given) logged at or after `since`,
/// oldest first.
pub fn list(
    conn: &Conn<'_>,
    work_item: Option<&str>,
    since: Option<Timestamp>,
    limit: usize,
) -> Result<Vec<DecisionRow>, StoreError> {
    let since = since.map_or(i64::MIN, Timestamp::as_millis);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut out = conn.query_map(
        "SELECT id, at, work_item, task_id, stage, trigger, rules_version, rule, outcome, reason, facts
         FROM decisions
         WHERE at >= ?1 AND (CAST(?2 AS TEXT) IS NULL OR work_item = ?2)
         ORDER BY at DESC, id DESC LIMIT ?3",
        args![since, work_item, limit],
        row,
    )?;
    out.reverse();
    Ok(out)
}

fn row(r: &Row) -> Result<DecisionRow, StoreError> {
    let id: i64 = r.get(0)?;
    let facts: String = r.get(10)?;
    let facts = match serde_json::from_str(&facts) {
        Ok(f) => f,
        Err(e) => {
            return Err(StoreError::Corrupt(format!(
                "facts of decision {id}: {e}"
            )));
        }
    };
    Ok(DecisionRow {
        id,
        at: Timestamp::from_millis(r.get(1)?),
        decision: NewDecision {
            work_item: r.get(2)?,
            task_id: r.get(3)?,
            stage: r.get(4)?,
            trigger: r.get(5)?,
            rules_version: r.get(6)?,
            rule: r.get(7)?,
            outcome: r.get(8)?,
            reason: r.get(9)?,
            facts,
        },
    })
}
