//! Job claims across replicas (issue 15, plan (e)): which replica runs a job, the claim that
//! fences its run, and what happens to the running jobs of a replica that went silent.
//! Re-exported by [`super::jobs`], whose queue these statements share.

use super::StoreError;
use super::db::Conn;
use super::jobs::CANCELLED;
use crate::clock::Timestamp;

/// Whether the run with `claim` still holds job `id` (running, not claimed again since): the
/// last check before a run does what cannot be undone (the developer's push).
pub fn holds_claim(conn: &Conn<'_>, id: i64, claim: i64) -> Result<bool, StoreError> {
    conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM jobs WHERE id = ?1 AND status = 'running' AND claim = ?2)",
        args![id, claim],
        |r| r.get(0),
    )
}

/// The jobs `replica` claimed that are still running go back to the queue, attempt kept: its
/// worker loop died with them (a panic) and started again. Returns how many.
pub fn requeue_claimed_by(conn: &Conn<'_>, replica: &str) -> Result<usize, StoreError> {
    conn.execute(
        "UPDATE jobs SET status = 'queued', started_at = NULL, not_before = NULL, claimed_by = NULL
         WHERE status = 'running' AND claimed_by = ?1",
        args![replica],
    )
}

/// What [`requeue_expired`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    /// Running jobs of silent replicas put back in the queue.
    pub requeued: usize,
    /// Running jobs of silent replicas that were asked to stop (a cancel), ended `failed`.
    pub ended: usize,
}

/// A running job whose run is gone: claimed by nobody (a row from before claims), or by a
/// replica that stopped or has not heartbeaten for `?1` ms (the database's clock).
fn orphaned(now_ms: &str) -> String {
    format!(
        "(jobs.claimed_by IS NULL OR NOT EXISTS (
             SELECT 1 FROM replicas r
              WHERE r.id = jobs.claimed_by AND r.stopped_at IS NULL AND r.seen_at >= {now_ms} - ?1))"
    )
}

/// The running jobs of replicas silent for longer than `lease_ttl` (or stopped) go back to the
/// queue, attempt kept, claimed by nobody, to be claimed again with the next claim — so the
/// old run's late writes match nothing. Those asked to stop (their task was cancelled) are
/// ended `failed`/`cancelled` instead, at `now`. One transaction; safe on every replica at
/// once (each statement re-checks its rows).
pub fn requeue_expired(
    conn: &Conn<'_>,
    lease_ttl: std::time::Duration,
    now: Timestamp,
) -> Result<Expired, StoreError> {
    let ttl_ms = i64::try_from(lease_ttl.as_millis()).unwrap_or(i64::MAX);
    conn.write(|tx| {
        let orphaned = orphaned(tx.now_ms_sql());
        let ended = tx.execute(
            &format!(
                "UPDATE jobs SET status = 'failed', error = ?2, finished_at = ?3
                 WHERE status = 'running' AND stop_requested_at IS NOT NULL AND {orphaned}"
            ),
            args![ttl_ms, CANCELLED, now.as_millis()],
        )?;
        let requeued = tx.execute(
            &format!(
                "UPDATE jobs SET status = 'queued', started_at = NULL, not_before = NULL, claimed_by = NULL
                 WHERE status = 'running' AND stop_requested_at IS NULL AND {orphaned}"
            ),
            args![ttl_ms],
        )?;
        Ok(Expired { requeued, ended })
    })
}

/// Ends running job `id` as cancelled when its run is gone (see [`requeue_expired`]); a job a
/// live replica runs is left to that replica, which stops it on its stop request. True when
/// it ended here.
pub fn end_cancelled_orphan(
    conn: &Conn<'_>,
    id: i64,
    lease_ttl: std::time::Duration,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let ttl_ms = i64::try_from(lease_ttl.as_millis()).unwrap_or(i64::MAX);
    let orphaned = orphaned(conn.now_ms_sql());
    Ok(conn.execute(
        &format!(
            "UPDATE jobs SET status = 'failed', error = ?2, finished_at = ?3
             WHERE id = ?4 AND status = 'running' AND {orphaned}"
        ),
        args![ttl_ms, CANCELLED, now.as_millis(), id],
    )? == 1)
}

/// The running jobs claimed by `replica` whose task was cancelled: its worker stops their
/// agents.
pub fn stop_requested(conn: &Conn<'_>, replica: &str) -> Result<Vec<i64>, StoreError> {
    conn.query_map(
        "SELECT id FROM jobs WHERE claimed_by = ?1 AND status = 'running' AND stop_requested_at IS NOT NULL
         ORDER BY id",
        args![replica],
        |r| r.get(0),
    )
}

