//! The replica registry: one row per `orch serve` process sharing the database, heartbeaten
//! every third of the lease time (issue 15, plan (e)). A replica's heartbeat is its running
//! jobs' heartbeat: when it goes silent for the lease time, its jobs are queued again
//! ([`super::jobs::requeue_expired`]).
//!
//! Times here are the database's clock ([`Conn::now_ms_sql`]), the only clock all hosts
//! share; everything else in the store takes `now` from the caller.

use std::time::Duration;

use serde::Serialize;

use super::StoreError;
use super::db::{Conn, Row};
use crate::clock::Timestamp;

/// What a replica says about itself at each heartbeat.
#[derive(Debug, Clone)]
pub struct ReplicaInfo {
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub version: String,
    /// The address it serves HTTP on.
    pub listen: Option<String>,
}

/// A replica as `/queue` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replica {
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub version: String,
    pub listen: Option<String>,
    pub started_at: Timestamp,
    pub seen_at: Timestamp,
    pub stopped_at: Option<Timestamp>,
    /// Heartbeaten within the lease time and not stopped.
    pub alive: bool,
    /// Its jobs with status `running`.
    pub running_jobs: i64,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Registers the replica (first call) or records that it is alive (every later one).
pub fn heartbeat(conn: &Conn<'_>, info: &ReplicaInfo) -> Result<(), StoreError> {
    let now = conn.now_ms_sql();
    conn.execute(
        &format!(
            "INSERT INTO replicas (id, host, pid, version, listen, started_at, seen_at)
             VALUES (?1, ?2, ?3, ?4, ?5, {now}, {now})
             ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at, listen = excluded.listen"
        ),
        args![info.id, info.host, info.pid, info.version, info.listen],
    )?;
    Ok(())
}

/// A graceful stop: the replica is no longer alive, so its leftovers are taken over at once.
pub fn mark_stopped(conn: &Conn<'_>, id: &str) -> Result<bool, StoreError> {
    let now = conn.now_ms_sql();
    Ok(conn.execute(
        &format!("UPDATE replicas SET stopped_at = {now} WHERE id = ?1 AND stopped_at IS NULL"),
        args![id],
    )? == 1)
}

fn from_row(r: &Row) -> Result<Replica, StoreError> {
    let ts = |i: usize| -> Result<Timestamp, StoreError> { Ok(Timestamp::from_millis(r.get(i)?)) };
    Ok(Replica {
        id: r.get(0)?,
        host: r.get(1)?,
        pid: r.get(2)?,
        version: r.get(3)?,
        listen: r.get(4)?,
        started_at: ts(5)?,
        seen_at: ts(6)?,
        stopped_at: r.get::<Option<i64>>(7)?.map(Timestamp::from_millis),
        alive: r.get(8)?,
        running_jobs: r.get(9)?,
    })
}

/// Every registered replica, alive first, then by id; `alive` means heartbeaten within
/// `lease_ttl` and not stopped.
pub fn list(conn: &Conn<'_>, lease_ttl: Duration) -> Result<Vec<Replica>, StoreError> {
    let now = conn.now_ms_sql();
    let mut rows = conn.query_map(
        &format!(
            "SELECT r.id, r.host, r.pid, r.version, r.listen, r.started_at, r.seen_at, r.stopped_at,
                    CASE WHEN r.stopped_at IS NULL AND r.seen_at > {now} - ?1 THEN 1 ELSE 0 END,
                    (SELECT COUNT(*) FROM jobs j WHERE j.claimed_by = r.id AND j.status = 'running')
             FROM replicas r ORDER BY r.id"
        ),
        args![millis(lease_ttl)],
        from_row,
    )?;
    rows.sort_by_key(|r| !r.alive);
    Ok(rows)
}

/// Deletes the rows of replicas stopped or silent for longer than `older_than` (a day);
/// returns how many. Their jobs, if any were left running, count as orphaned all the same.
pub fn prune(conn: &Conn<'_>, older_than: Duration) -> Result<usize, StoreError> {
    let now = conn.now_ms_sql();
    conn.execute(
        &format!(
            "DELETE FROM replicas
             WHERE (stopped_at IS NOT NULL AND stopped_at < {now} - ?1) OR seen_at < {now} - ?1"
        ),
        args![millis(older_than)],
    )
}
