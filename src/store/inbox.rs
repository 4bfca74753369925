//! The durable webhook inbox: a delivery is stored before it is acknowledged.

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::db::{Conn, Row};
use super::StoreError;
use crate::clock::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InboxItem {
    pub id: i64,
    pub source: String,
    pub event: String,
    #[serde(skip)]
    pub body: Vec<u8>,
    pub body_hash: String,
    pub received_at: Timestamp,
    pub processed_at: Option<Timestamp>,
    pub error: Option<String>,
    pub attempts: i64,
}

/// Hex SHA-256 of a body. Deduplication is by content because Plane's delivery id changes on
/// every retry and Gitea's "replay" sends a copy under a new id.
pub fn body_hash(source: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(source.as_bytes());
    h.update([0u8]);
    h.update(body);
    hex::encode(h.finalize())
}

/// Stores a delivery unless an identical one is already there. Returns `Some(id)` when stored,
/// `None` for a duplicate.
pub fn insert(
    conn: &Conn<'_>,
    source: &str,
    event: &str,
    body: &[u8],
    now: Timestamp,
) -> Result<Option<i64>, StoreError> {
    let hash = body_hash(source, body);
    conn.query_opt(
        "INSERT INTO inbox (source, event, body, body_hash, received_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(body_hash) DO NOTHING RETURNING id",
        args![source, event, body, hash, now.as_millis()],
        |r| r.get(0),
    )
}

const COLUMNS: &str =
    "id, source, event, body, body_hash, received_at, processed_at, error, attempts";

fn from_row(r: &Row) -> Result<InboxItem, StoreError> {
    Ok(InboxItem {
        id: r.get(0)?,
        source: r.get(1)?,
        event: r.get(2)?,
        body: r.get(3)?,
        body_hash: r.get(4)?,
        received_at: Timestamp::from_millis(r.get(5)?),
        processed_at: r.get::<Option<i64>>(6)?.map(Timestamp::from_millis),
        error: r.get(7)?,
        attempts: r.get(8)?,
    })
}

/// Pending deliveries in arrival order, skipping those that used up `max_attempts`.
/// Deliveries due for an attempt at `now`, in arrival order, after id `after` (a cursor, so
/// a page of failing deliveries never hides the ones behind it).
pub fn pending(
    conn: &Conn<'_>,
    max_attempts: i64,
    after: i64,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<InboxItem>, StoreError> {
    conn.query_map(
        &format!(
            "SELECT {COLUMNS} FROM inbox
             WHERE processed_at IS NULL AND attempts < ?1 AND id > ?2
               AND (retry_at IS NULL OR retry_at <= ?3)
             ORDER BY id LIMIT ?4"
        ),
        args![max_attempts, after, now.as_millis(), limit as i64],
        from_row,
    )
}

pub fn mark_processed(conn: &Conn<'_>, id: i64, now: Timestamp) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE inbox SET processed_at = ?1, attempts = attempts + 1, error = NULL WHERE id = ?2",
        args![now.as_millis(), id],
    )?;
    Ok(())
}

/// Records a failed attempt; the delivery is offered again from `retry_at` until it runs out
/// of attempts.
pub fn mark_failed(
    conn: &Conn<'_>,
    id: i64,
    error: &str,
    retry_at: Timestamp,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE inbox SET attempts = attempts + 1, error = ?1, retry_at = ?2 WHERE id = ?3",
        args![error, retry_at.as_millis(), id],
    )?;
    Ok(())
}

/// Records a failure no retry can fix (the delivery itself is wrong): it is kept, with its
/// error, for an operator, and never offered again.
pub fn mark_dead(
    conn: &Conn<'_>,
    id: i64,
    error: &str,
    max_attempts: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE inbox SET attempts = CASE WHEN attempts + 1 > ?1 THEN attempts + 1 ELSE ?1 END, error = ?2 WHERE id = ?3",
        args![max_attempts, error, id],
    )?;
    Ok(())
}

/// Deliveries given up on (see [`mark_dead`]), oldest first.
pub fn dead(conn: &Conn<'_>, max_attempts: i64) -> Result<Vec<InboxItem>, StoreError> {
    conn.query_map(
        &format!(
            "SELECT {COLUMNS} FROM inbox WHERE processed_at IS NULL AND attempts >= ?1 ORDER BY id"
        ),
        args![max_attempts],
        from_row,
    )
}

/// Offers deliveries given up on to the processor again, with a fresh set of attempts (their
/// last error is kept until an attempt succeeds). `ids = None`: every dead delivery. Returns
/// the ids revived; ids that are not dead are left alone.
pub fn revive(
    conn: &Conn<'_>,
    ids: Option<&[i64]>,
    max_attempts: i64,
) -> Result<Vec<i64>, StoreError> {
    conn.write(|tx| revive_in(tx, ids, max_attempts))
}

fn revive_in(tx: &Conn<'_>, ids: Option<&[i64]>, max_attempts: i64) -> Result<Vec<i64>, StoreError> {
    let targets: Vec<i64> = match ids {
        None => dead(tx, max_attempts)?.into_iter().map(|d| d.id).collect(),
        Some(ids) => {
            let mut found = Vec::new();
            for &id in ids {
                let is_dead: bool = tx.query_row(
                    "SELECT EXISTS(SELECT 1 FROM inbox WHERE id = ?1 AND processed_at IS NULL AND attempts >= ?2)",
                    args![id, max_attempts],
                    |r| r.get(0),
                )?;
                if is_dead {
                    found.push(id);
                }
            }
            found
        }
    };
    for id in &targets {
        tx.execute(
            "UPDATE inbox SET attempts = 0, retry_at = NULL WHERE id = ?1",
            args![id],
        )?;
    }
    Ok(targets)
}

#[cfg_attr(orch_audit, allow(dead_code))]
pub fn get(conn: &Conn<'_>, id: i64) -> Result<Option<InboxItem>, StoreError> {
    conn.query_opt(
        &format!("SELECT {COLUMNS} FROM inbox WHERE id = ?1"),
        args![id],
        from_row,
    )
}

/// The inbox's state for `/queue` and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Backlog {
    /// Not processed yet and still to be attempted.
    pub pending: i64,
    /// Receive time of the oldest pending delivery: the inbox lag.
    pub oldest_received_at: Option<Timestamp>,
    /// Out of attempts (or wrong in themselves): kept with their error for an operator.
    pub dead: i64,
}

pub fn backlog(conn: &Conn<'_>, max_attempts: i64) -> Result<Backlog, StoreError> {
    conn.query_row(
        "SELECT COUNT(*) FILTER (WHERE attempts < ?1),
                MIN(CASE WHEN attempts < ?1 THEN received_at END),
                COUNT(*) FILTER (WHERE attempts >= ?1)
         FROM inbox WHERE processed_at IS NULL",
        args![max_attempts],
        |r| {
            Ok(Backlog {
                pending: r.get(0)?,
                oldest_received_at: r.get::<Option<i64>>(1)?.map(Timestamp::from_millis),
                dead: r.get(2)?,
            })
        },
    )
}

/// Deletes processed deliveries received before `before`; returns how many. Unprocessed ones
/// are kept whatever their age: they are the record of what still needs doing.
pub fn prune_processed(conn: &Conn<'_>, before: Timestamp) -> Result<usize, StoreError> {
    conn.execute(
        "DELETE FROM inbox WHERE processed_at IS NOT NULL AND received_at < ?1",
        args![before.as_millis()],
    )
}

#[cfg_attr(orch_audit, allow(dead_code))]
pub fn count(conn: &Conn<'_>) -> Result<i64, StoreError> {
    conn.query_row("SELECT COUNT(*) FROM inbox", args![], |r| r.get(0))
}
