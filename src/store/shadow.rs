//! The shadow rule set's divergences from the live one: where the candidate would have
//! decided otherwise (`GET /shadow`, `orch rules shadow-report`).
//!
//! A divergence is kept once per situation (the `situation` key the caller builds: the task,
//! the visit of its stage, the trigger, the two rule-set versions and the two decisions), so a
//! task that diverges on every sweep of a long grace is one row, not one per sweep. Pruned with
//! the decision log's retention as new ones are written.

use std::time::Duration;

use serde::Serialize;

use super::db::{Conn, Row};
use super::StoreError;
use crate::clock::Timestamp;

/// One decision as the divergence shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Side {
    pub version: String,
    pub rule: String,
    /// `check gate`, `wait`, `advance review -> testing`, …
    pub outcome: String,
    pub reason: String,
}

/// A divergence to keep.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewDivergence {
    pub work_item: String,
    pub stage: String,
    pub trigger: String,
    pub live: Side,
    pub shadow: Side,
    /// The facts both sets decided over (task snapshot, gate, `now`).
    pub facts: serde_json::Value,
    #[serde(skip)]
    pub situation: String,
}

/// One kept divergence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DivergenceRow {
    pub id: i64,
    pub at: Timestamp,
    #[serde(flatten)]
    pub divergence: NewDivergence,
}

/// Keeps `d` unless its situation is already kept; true when it is new.
pub fn record(
    conn: &Conn<'_>,
    d: &NewDivergence,
    now: Timestamp,
    retention: Option<Duration>,
) -> Result<bool, StoreError> {
    let inserted = conn.execute(
        "INSERT INTO shadow_divergences (at, work_item, stage, trigger, live_version, live_rule,
             live_outcome, live_reason, shadow_version, shadow_rule, shadow_outcome, shadow_reason,
             facts, situation)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
         ON CONFLICT(situation) DO NOTHING",
        args![
            now.as_millis(),
            d.work_item,
            d.stage,
            d.trigger,
            d.live.version,
            d.live.rule,
            d.live.outcome,
            d.live.reason,
            d.shadow.version,
            d.shadow.rule,
            d.shadow.outcome,
            d.shadow.reason,
            d.facts.to_string(),
            d.situation,
        ],
    )?;
    if let Some(keep) = retention {
        conn.execute(
            "DELETE FROM shadow_divergences WHERE at < ?1",
            args![now.minus(keep).as_millis()],
        )?;
    }
    Ok(inserted == 1)
}

/// The latest `limit` divergences kept at or after `since`, oldest first.
pub fn list(
    conn: &Conn<'_>,
    since: Option<Timestamp>,
    limit: usize,
) -> Result<Vec<DivergenceRow>, StoreError> {
    let since = since.map_or(i64::MIN, Timestamp::as_millis);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut out = conn.query_map(
        "SELECT id, at, work_item, stage, trigger, live_version, live_rule, live_outcome,
                live_reason, shadow_version, shadow_rule, shadow_outcome, shadow_reason, facts,
                situation
         FROM shadow_divergences WHERE at >= ?1 ORDER BY at DESC, id DESC LIMIT ?2",
        args![since, limit],
        row,
    )?;
    out.reverse();
    Ok(out)
}

fn row(r: &Row) -> Result<DivergenceRow, StoreError> {
    let id: i64 = r.get(0)?;
    let facts: String = r.get(13)?;
    let facts = match serde_json::from_str(&facts) {
        Ok(f) => f,
        Err(e) => {
            return Err(StoreError::Corrupt(format!(
                "facts of shadow divergence {id}: {e}"
            )));
        }
    };
    let side = |v: usize| -> Result<Side, StoreError> {
        Ok(Side {
            version: r.get(v)?,
            rule: r.get(v + 1)?,
            outcome: r.get(v + 2)?,
            reason: r.get(v + 3)?,
        })
    };
    Ok(DivergenceRow {
        id,
        at: Timestamp::from_millis(r.get(1)?),
        divergence: NewDivergence {
            work_item: r.get(2)?,
            stage: r.get(3)?,
            trigger: r.get(4)?,
            live: side(5)?,
            shadow: side(9)?,
            facts,
            situation: r.get(14)?,
        },
    })
}
