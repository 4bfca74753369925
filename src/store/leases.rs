//! Leases with fencing tokens (issue 15; `docs/design/postgres-replicas.md` (f)): work that
//! one replica at a time may do (the sweep, a peer's dispatcher) runs while its replica holds
//! the lease, and every write it causes checks the token it acquired.
//!
//! Times are the database's clock ([`Conn::now_ms_sql`]), the one clock every replica
//! shares: the documented exception to "the store never reads a clock". Every acquisition
//! bumps the token, so a holder that lost its lease (paused, cut off) can never write under a
//! token that is still current.
//!
//! The fence ([`check`]) is the first statement of every write transaction of a fenced store
//! ([`Store::fenced`](super::Store::fenced)). On PostgreSQL it takes `FOR SHARE` on the lease
//! row: a takeover's upsert waits for the old holder's fenced transaction in progress, and
//! every transaction the old holder starts afterwards fails the token check. On SQLite
//! `BEGIN IMMEDIATE` already excludes the acquirer.

use tokio_util::sync::CancellationToken;

use super::{Conn, StoreError};
use crate::clock::Timestamp;

/// What a fenced store checks before each write: this holder still holds `name` with
/// `token`, and the lease has not expired by the database's clock.
#[derive(Debug)]
pub struct Fence {
    pub name: String,
    pub holder: String,
    pub token: i64,
    /// Cancelled by the first fence check that fails, so the work the lease covers stops.
    pub lost: CancellationToken,
}

impl Fence {
    pub fn new(name: &str, holder: &str, token: i64) -> Fence {
        Fence {
            name: name.to_string(),
            holder: holder.to_string(),
            token,
            lost: CancellationToken::new(),
        }
    }
}

/// One lease as `/queue` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeaseRow {
    pub name: String,
    /// `None` once released.
    pub holder: Option<String>,
    pub token: i64,
    /// When this holder acquired it (renewals do not move it).
    pub since: Timestamp,
    pub expires_at: Timestamp,
    /// Held and not expired by the database's clock.
    pub valid: bool,
}

/// Acquires `name` for `holder` for `ttl_ms` if it is free or expired (or, with `take_over`,
/// whoever holds it: a SQLite database serves one process, whose previous incarnation's
/// leases are void at its start). Every acquisition bumps the token. `None`: someone else
/// holds it; else the new token.
pub fn acquire(
    c: &Conn<'_>,
    name: &str,
    holder: &str,
    ttl_ms: i64,
    take_over: bool,
) -> Result<Option<i64>, StoreError> {
    let now = c.now_ms_sql();
    c.write(|tx| {
        tx.query_opt(
            &format!(
                "INSERT INTO leases AS l (name, holder, token, acquired_at, renewed_at, expires_at)
                 VALUES (?1, ?2, 1, {now}, {now}, {now} + ?3)
                 ON CONFLICT (name) DO UPDATE
                    SET holder = excluded.holder, token = l.token + 1,
                        acquired_at = excluded.acquired_at, renewed_at = excluded.renewed_at,
                        expires_at = excluded.expires_at
                  WHERE l.holder IS NULL OR l.expires_at <= excluded.acquired_at OR ?4 = 1
                 RETURNING token"
            ),
            args![name, holder, ttl_ms, take_over],
            |r| r.get(0),
        )
    })
}

/// Extends the lease by `ttl_ms` from now. `None`: it is lost (expired, taken over or
/// released).
pub fn renew(
    c: &Conn<'_>,
    name: &str,
    holder: &str,
    token: i64,
    ttl_ms: i64,
) -> Result<Option<Timestamp>, StoreError> {
    let now = c.now_ms_sql();
    c.write(|tx| {
        tx.query_opt(
            &format!(
                "UPDATE leases SET renewed_at = {now}, expires_at = {now} + ?4
                  WHERE name = ?1 AND holder = ?2 AND token = ?3 AND expires_at > {now}
                 RETURNING expires_at"
            ),
            args![name, holder, token, ttl_ms],
            |r| Ok(Timestamp::from_millis(r.get(0)?)),
        )
    })
}

/// Gives the lease up at once, so another replica can take it without waiting for it to
/// expire. False when it was not held with this token any more.
pub fn release(c: &Conn<'_>, name: &str, holder: &str, token: i64) -> Result<bool, StoreError> {
    let n = c.execute(
        "UPDATE leases SET holder = NULL, expires_at = 0
          WHERE name = ?1 AND holder = ?2 AND token = ?3",
        args![name, holder, token],
    )?;
    Ok(n > 0)
}

/// The fence check: the first statement of a fenced write transaction. A failed check
/// cancels `fence.lost` and is [`StoreError::Fenced`]; the transaction then rolls back.
pub fn check(c: &Conn<'_>, fence: &Fence) -> Result<(), StoreError> {
    let held = c
        .query_opt(
            &format!(
                "SELECT 1 FROM leases
                  WHERE name = ?1 AND holder = ?2 AND token = ?3 AND expires_at > {}{}",
                c.now_ms_sql(),
                c.share_lock_sql()
            ),
            args![&fence.name, &fence.holder, fence.token],
            |_| Ok(()),
        )?
        .is_some();
    if held {
        return Ok(());
    }
    fence.lost.cancel();
    Err(StoreError::Fenced {
        lease: fence.name.clone(),
        token: fence.token,
    })
}

/// Every lease but the inbox lanes (`inbox:…`: many and short-lived), by name.
pub fn list(c: &Conn<'_>) -> Result<Vec<LeaseRow>, StoreError> {
    c.query_map(
        &format!(
            "SELECT name, holder, token, acquired_at, expires_at,
                    CASE WHEN holder IS NOT NULL AND expires_at > {} THEN 1 ELSE 0 END
               FROM leases WHERE name NOT LIKE 'inbox:%' ORDER BY name",
            c.now_ms_sql()
        ),
        args![],
        |r| {
            Ok(LeaseRow {
                name: r.get(0)?,
                holder: r.get(1)?,
                token: r.get(2)?,
                since: Timestamp::from_millis(r.get(3)?),
                expires_at: Timestamp::from_millis(r.get(4)?),
                valid: r.get(5)?,
            })
        },
    )
}

/// Who holds `name` now (valid by the database's clock), with the token.
pub fn holder(c: &Conn<'_>, name: &str) -> Result<Option<(String, i64)>, StoreError> {
    c.query_opt(
        &format!(
            "SELECT holder, token FROM leases
              WHERE name = ?1 AND holder IS NOT NULL AND expires_at > {}",
            c.now_ms_sql()
        ),
        args![name],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// Deletes the inbox lanes' lease rows released, or expired, more than `older_than_ms` ago
/// (database time). Returns how many.
pub fn prune_lanes(c: &Conn<'_>, older_than_ms: i64) -> Result<usize, StoreError> {
    c.execute(
        &format!(
            "DELETE FROM leases
              WHERE name LIKE 'inbox:%' AND (holder IS NULL OR expires_at <= {now})
                AND renewed_at < {now} - ?1",
            now = c.now_ms_sql()
        ),
        args![older_than_ms],
    )
}
