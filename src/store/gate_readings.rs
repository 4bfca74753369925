//! The last gate reading of each task: what its exit gate said, when it was read, and for
//! which stage.
//!
//! `GET /explain` shows this instead of evaluating the gate itself, so reading the API never
//! calls Gitea, never moves the gate metrics, and cannot be used to hammer the forge. The
//! readings are written where the gate is evaluated for real (the pipeline's advance and the
//! sweep when it applies), never by an explanation or a dry run.
//!
//! They live in `kv` under `gate.last.<task id>` rather than in a table of their own: one
//! small overwritten value per task needs no schema change, and what is stored is only a
//! cache of the forge's answer — losing it costs one "not read yet".

use serde::{Deserialize, Serialize};

use super::db::Conn;
use super::{StoreError, kv};
use crate::clock::Timestamp;

/// One evaluation of a task's exit gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateReading {
    /// The stage whose gate was read: a reading from an earlier stage says nothing now.
    pub stage: String,
    /// `None` when the gate could not be evaluated (see `error`).
    pub green: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why the gate could not be evaluated (the forge was down, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub read_at: Timestamp,
}

fn key(task_id: i64) -> String {
    format!("gate.last.{task_id}")
}

/// Replaces the task's last reading.
pub fn record(conn: &Conn<'_>, task_id: i64, reading: &GateReading) -> Result<(), StoreError> {
    let value = serde_json::to_string(reading)
        .map_err(|e| StoreError::Corrupt(format!("gate reading: {e}")))?;
    kv::set(conn, &key(task_id), &value)
}

/// The task's last reading, if its gate was ever read.
pub fn latest(conn: &Conn<'_>, task_id: i64) -> Result<Option<GateReading>, StoreError> {
    kv::get(conn, &key(task_id))?
        .map(|v| {
            serde_json::from_str(&v)
                .map_err(|e| StoreError::Corrupt(format!("gate reading of task {task_id}: {e}")))
        })
        .transpose()
}

/// Every task's last reading, by task id; one query for the whole board. A value that does
/// not parse is left out (it is a cache: the next evaluation overwrites it).
pub fn all(conn: &Conn<'_>) -> Result<std::collections::HashMap<i64, GateReading>, StoreError> {
    let rows = conn.query_map(
        "SELECT key, value FROM kv WHERE key LIKE 'gate.last.%'",
        args![],
        |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?)),
    )?;
    let mut out = std::collections::HashMap::new();
    for (key, value) in rows {
        let id = key
            .strip_prefix("gate.last.")
            .and_then(|id| id.parse().ok());
        if let (Some(id), Ok(reading)) = (id, serde_json::from_str(&value)) {
            out.insert(id, reading);
        }
    }
    Ok(out)
}
