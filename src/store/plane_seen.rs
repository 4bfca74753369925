//! The Plane work items the Plane-side sweep last saw: one per work item (its state, state
//! group and Plane time), kept in `kv` under `plane.seen.<WORK-ITEM>`. `orch rules diff --db`
//! runs the Plane-side decision of both rule sets over them; the sweep itself never reads
//! them back (it asks Plane).

use serde::{Deserialize, Serialize};

use super::db::Conn;
use super::{StoreError, kv};
use crate::clock::Timestamp;

const PREFIX: &str = "plane.seen.";

/// A work item as the sweep last saw it in Plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenItem {
    pub work_item: String,
    pub state_name: String,
    #[serde(default)]
    pub state_group: Option<String>,
    /// Plane's clock.
    pub updated_at: Timestamp,
    /// When the sweep first saw this change (orch's clock).
    #[serde(default)]
    pub first_seen_at: Option<Timestamp>,
}

/// Keeps `item` as the latest sight of its work item.
pub fn record(conn: &Conn<'_>, item: &SeenItem) -> Result<(), StoreError> {
    let value = serde_json::to_string(item)
        .map_err(|e| StoreError::Corrupt(format!("plane item {}: {e}", item.work_item)))?;
    kv::set(conn, &format!("{PREFIX}{}", item.work_item), &value)
}

/// Every item seen, by work item. A row that does not parse is skipped with a warning: it was
/// written by this module, so only a hand edit can break it, and one must not hide the rest.
pub fn all(conn: &Conn<'_>) -> Result<Vec<SeenItem>, StoreError> {
    let rows = conn.query_map(
        // A prefix match that no collation can bend (PostgreSQL's may ignore punctuation).
        "SELECT key, value FROM kv WHERE substr(key, 1, ?1) = ?2 ORDER BY key",
        args![PREFIX.len() as i64, PREFIX],
        |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?)),
    )?;
    let mut out = Vec::new();
    for (key, value) in rows {
        match serde_json::from_str(&value) {
            Ok(item) => out.push(item),
            Err(e) => tracing::warn!(%key, error = %e, "skipping a Plane item that does not parse"),
        }
    }
    Ok(out)
}
