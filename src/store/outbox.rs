//! The outbox: what orch owes its peers, written in the same transaction as the change that
//! owes it, delivered afterwards by the dispatchers (`crate::outbox`).
//!
//! An effect is plain data. It is queued per peer and per *subject* (the work item it is
//! about); a subject's effects are delivered in the order they were written, so the head of
//! each subject's queue is the only one due. A Plane state effect with a newer state effect
//! behind it for the same subject is superseded (only the newest owed state is sent). A
//! comment carries Plane's `external_id` and every effect may carry an idempotency key: an
//! effect whose key is already in the outbox is not written twice, so a replayed transition
//! does not owe its comment again.
//!
//! Status: `pending` (due at `due_at`) → `sending` (claimed; committed before the call, so
//! a crash mid-call is visible at the next start) → `sent` | `skipped` | `dead` (out of
//! attempts or refused for good; kept with its last error until an operator retries it).

use serde::{Deserialize, Serialize};

use super::db::{Conn, Param, Row};
use super::StoreError;
use crate::clock::Timestamp;

/// Something orch tells a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Effect {
    /// Set a work item's state (by name).
    PlaneState {
        project: String,
        issue: String,
        state: String,
    },
    /// Comment on a work item; `external_id` makes a repeated send a no-op in Plane.
    PlaneComment {
        project: String,
        issue: String,
        html: String,
        external_id: String,
    },
    /// A Telegram message to the configured chat.
    Telegram { text: String },
}

/// The peers effects are delivered to, one dispatcher each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Peer {
    Plane,
    Telegram,
}

impl Peer {
    pub const ALL: [Peer; 2] = [Peer::Plane, Peer::Telegram];

    pub fn as_str(self) -> &'static str {
        match self {
            Peer::Plane => "plane",
            Peer::Telegram => "telegram",
        }
    }
}

impl Effect {
    pub fn peer(&self) -> Peer {
        match self {
            Effect::PlaneState { .. } | Effect::PlaneComment { .. } => Peer::Plane,
            Effect::Telegram { .. } => Peer::Telegram,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Effect::PlaneState { .. } => "plane_state",
            Effect::PlaneComment { .. } => "plane_comment",
            Effect::Telegram { .. } => "telegram",
        }
    }
}

/// An effect about to be owed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEffect {
    /// The work item it is about (the ordering key); empty for messages about no item.
    pub subject: String,
    pub effect: Effect,
    /// At most one effect per key is ever written. Comments default to their external id.
    pub key: Option<String>,
}

impl NewEffect {
    pub fn new(subject: &str, effect: Effect) -> NewEffect {
        let key = match &effect {
            Effect::PlaneComment { external_id, .. } => {
                Some(format!("comment:{subject}:{external_id}"))
            }
            _ => None,
        };
        NewEffect {
            subject: subject.to_string(),
            effect,
            key,
        }
    }

}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EffectStatus {
    Pending,
    Sending,
    Sent,
    Skipped,
    Dead,
}

impl EffectStatus {
    pub const ALL: [EffectStatus; 5] = [
        EffectStatus::Pending,
        EffectStatus::Sending,
        EffectStatus::Sent,
        EffectStatus::Skipped,
        EffectStatus::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EffectStatus::Pending => "pending",
            EffectStatus::Sending => "sending",
            EffectStatus::Sent => "sent",
            EffectStatus::Skipped => "skipped",
            EffectStatus::Dead => "dead",
        }
    }

    fn parse(s: &str) -> Result<EffectStatus, StoreError> {
        Ok(match s {
            "pending" => EffectStatus::Pending,
            "sending" => EffectStatus::Sending,
            "sent" => EffectStatus::Sent,
            "skipped" => EffectStatus::Skipped,
            "dead" => EffectStatus::Dead,
            other => {
                return Err(StoreError::Corrupt(format!(
                    "unknown effect status {other:?}"
                )));
            }
        })
    }
}

/// One row of the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outbound {
    pub id: i64,
    pub peer: Peer,
    pub subject: String,
    pub task_id: Option<i64>,
    pub effect: Effect,
    pub status: EffectStatus,
    pub attempts: i64,
    pub due_at: Timestamp,
    pub error: Option<String>,
    pub created_at: Timestamp,
    pub done_at: Option<Timestamp>,
}

const COLUMNS: &str =
    "id, subject, task_id, payload, status, attempts, due_at, error, created_at, done_at";

fn from_row(r: &Row) -> Result<(Outbound, String, String), StoreError> {
    let payload: String = r.get(3)?;
    let status: String = r.get(4)?;
    Ok((
        Outbound {
            id: r.get(0)?,
            peer: Peer::Plane,
            subject: r.get(1)?,
            task_id: r.get(2)?,
            effect: Effect::Telegram {
                text: String::new(),
            },
            status: EffectStatus::Pending,
            attempts: r.get(5)?,
            due_at: Timestamp::from_millis(r.get(6)?),
            error: r.get(7)?,
            created_at: Timestamp::from_millis(r.get(8)?),
            done_at: r.get::<Option<i64>>(9)?.map(Timestamp::from_millis),
        },
        payload,
        status,
    ))
}

fn finish_row(
    (mut row, payload, status): (Outbound, String, String),
) -> Result<Outbound, StoreError> {
    row.effect = serde_json::from_str(&payload).map_err(|e| {
        StoreError::Corrupt(format!(
            "outbox effect {} has an unreadable payload: {e}",
            row.id
        ))
    })?;
    row.peer = row.effect.peer();
    row.status = EffectStatus::parse(&status)?;
    Ok(row)
}

fn query_all(
    conn: &Conn<'_>,
    sql: &str,
    p: &[Param<'_>],
) -> Result<Vec<Outbound>, StoreError> {
    let rows = conn.query_map(sql, p, from_row)?;
    rows.into_iter().map(finish_row).collect()
}

/// Owes `effect`, inside the caller's transaction. False when an effect with the same key is
/// already owed (or was delivered): it is not owed twice.
pub fn push(
    conn: &Conn<'_>,
    task_id: Option<i64>,
    effect: &NewEffect,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let payload = serde_json::to_string(&effect.effect)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode an effect: {e}")))?;
    conn.lock_subject(&effect.subject)?;
    let n = conn.execute(
        "INSERT INTO outbox (peer, kind, subject, task_id, payload, idem_key, status, due_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?7)
         ON CONFLICT(idem_key) DO NOTHING",
        args![
            effect.effect.peer().as_str(),
            effect.effect.kind(),
            effect.subject,
            task_id,
            payload,
            effect.key,
            now.as_millis()
        ],
    )?;
    Ok(n == 1)
}

/// [`push`] for each effect.
pub fn push_all(
    conn: &Conn<'_>,
    task_id: Option<i64>,
    effects: &[NewEffect],
    now: Timestamp,
) -> Result<(), StoreError> {
    for e in effects {
        push(conn, task_id, e, now)?;
    }
    Ok(())
}

/// Owes `effects` in a transaction of their own (for changes that have no other write).
pub fn owe(
    conn: &Conn<'_>,
    task_id: Option<i64>,
    effects: &[NewEffect],
    now: Timestamp,
) -> Result<(), StoreError> {
    conn.write(|tx| {
        push_all(tx, task_id, effects, now)?;
        Ok(())
    })
}

/// The effects of `peer` due now: the oldest pending effect of each subject whose earlier
/// effects are all delivered (in order per work item), oldest first.
pub fn due(
    conn: &Conn<'_>,
    peer: Peer,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<Outbound>, StoreError> {
    query_all(
        conn,
        &format!(
            "SELECT {COLUMNS} FROM outbox o
             WHERE o.peer = ?1 AND o.status = 'pending' AND o.due_at <= ?2
               AND NOT EXISTS (SELECT 1 FROM outbox p
                               WHERE p.peer = o.peer AND p.subject = o.subject
                                 AND p.status IN ('pending', 'sending') AND p.id < o.id)
             ORDER BY o.id LIMIT ?3"
        ),
        args![peer.as_str(), now.as_millis(), limit as i64],
    )
}

/// The id of a newer Plane state effect owed for the same subject, which supersedes `row`.
pub fn superseded_by(conn: &Conn<'_>, row: &Outbound) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .query_opt(
            "SELECT MAX(id) FROM outbox WHERE subject = ?1 AND kind = 'plane_state'
             AND status = 'pending' AND id > ?2",
            args![row.subject, row.id],
            |r| r.get::<Option<i64>>(0),
        )?
        .flatten())
}

/// The state orch last set on `subject`'s work item (the newest delivered state effect).
pub fn last_state_sent(conn: &Conn<'_>, subject: &str) -> Result<Option<String>, StoreError> {
    let payload: Option<String> = conn
        .query_opt(
            "SELECT payload FROM outbox WHERE subject = ?1 AND kind = 'plane_state'
             AND status = 'sent' ORDER BY id DESC LIMIT 1",
            args![subject],
            |r| r.get(0),
        )?;
    Ok(payload.and_then(|p| match serde_json::from_str(&p) {
        Ok(Effect::PlaneState { state, .. }) => Some(state),
        _ => None,
    }))
}

/// The newest Plane state owed for a task, whatever became of it; the level sync compares it
/// with the item's actual state.
pub fn newest_state_effect(
    conn: &Conn<'_>,
    task_id: i64,
) -> Result<Option<Outbound>, StoreError> {
    Ok(query_all(
        conn,
        &format!(
            "SELECT {COLUMNS} FROM outbox WHERE task_id = ?1 AND kind = 'plane_state'
             ORDER BY id DESC LIMIT 1"
        ),
        args![task_id],
    )?
    .pop())
}

/// Claims a pending effect for delivery (commits before the peer is called). False when it
/// is no longer pending.
pub fn begin(conn: &Conn<'_>, id: i64) -> Result<bool, StoreError> {
    Ok(conn.execute(
        "UPDATE outbox SET status = 'sending', attempts = attempts + 1
         WHERE id = ?1 AND status = 'pending'",
        args![id],
    )? == 1)
}

/// Ends an effect: delivered (`Sent`) or not needed (`Skipped`, with why).
pub fn end(
    conn: &Conn<'_>,
    id: i64,
    status: EffectStatus,
    note: Option<&str>,
    now: Timestamp,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE outbox SET status = ?1, error = ?2, done_at = ?3 WHERE id = ?4",
        args![status.as_str(), note, now.as_millis(), id],
    )?;
    Ok(())
}

/// A failed attempt that may pass: pending again, due at `retry_at`.
pub fn retry_at(
    conn: &Conn<'_>,
    id: i64,
    error: &str,
    retry_at: Timestamp,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE outbox SET status = 'pending', error = ?1, due_at = ?2 WHERE id = ?3",
        args![error, retry_at.as_millis(), id],
    )?;
    Ok(())
}

/// `peer`'s effects a crash left `sending`, run by the dispatcher when it takes the peer's
/// lease (no other dispatcher of the peer can be sending then). Plane effects are safe to
/// send again (a state write is idempotent, a comment carries its external id) and go back to
/// the queue; a Telegram message may have been sent, so it is skipped rather than risk
/// sending it twice. Returns (requeued, skipped).
pub fn recover_peer(
    conn: &Conn<'_>,
    peer: Peer,
    now: Timestamp,
) -> Result<(usize, usize), StoreError> {
    match peer {
        Peer::Plane => {
            let requeued = conn.execute(
                "UPDATE outbox SET status = 'pending', due_at = ?1
                 WHERE status = 'sending' AND peer = 'plane'",
                args![now.as_millis()],
            )?;
            Ok((requeued, 0))
        }
        Peer::Telegram => {
            let skipped = conn.execute(
                "UPDATE outbox SET status = 'skipped', done_at = ?1,
                        error = 'interrupted by a restart while sending; not sent again (at most once)'
                 WHERE status = 'sending' AND peer = 'telegram'",
                args![now.as_millis()],
            )?;
            Ok((0, skipped))
        }
    }
}

/// Effects given up on, oldest first.
pub fn dead(conn: &Conn<'_>) -> Result<Vec<Outbound>, StoreError> {
    query_all(
        conn,
        &format!("SELECT {COLUMNS} FROM outbox WHERE status = 'dead' ORDER BY id"),
        args![],
    )
}

/// Gives dead effects a fresh set of attempts, due now. Returns the ids that were dead.
pub fn retry_dead(
    conn: &Conn<'_>,
    ids: Option<&[i64]>,
    now: Timestamp,
) -> Result<Vec<i64>, StoreError> {
    conn.write(|tx| {
        let dead: Vec<i64> = {
            let rows = tx.query_map("SELECT id FROM outbox WHERE status = 'dead' ORDER BY id", args![], |r| r.get(0))?;
            rows.into_iter().collect()
        };
        let chosen: Vec<i64> = match ids {
            None => dead,
            Some(ids) => ids.iter().copied().filter(|i| dead.contains(i)).collect(),
        };
        for id in &chosen {
            tx.execute(
                "UPDATE outbox SET status = 'pending', attempts = 0, due_at = ?1, done_at = NULL
                 WHERE id = ?2",
                args![now.as_millis(), id],
            )?;
        }
        Ok(chosen)
    })
}

/// `(peer, status, count)` for every combination present.
pub fn counts(conn: &Conn<'_>) -> Result<Vec<(Peer, EffectStatus, i64)>, StoreError> {
    let rows = conn.query_map("SELECT peer, status, COUNT(*) FROM outbox GROUP BY peer, status", args![], |r| {
        Ok((
            r.get::<String>(0)?,
            r.get::<String>(1)?,
            r.get::<i64>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (peer, status, n) = row;
        let peer = match peer.as_str() {
            "plane" => Peer::Plane,
            "telegram" => Peer::Telegram,
            other => return Err(StoreError::Corrupt(format!("unknown peer {other:?}"))),
        };
        out.push((peer, EffectStatus::parse(&status)?, n));
    }
    Ok(out)
}

/// Every effect about one task, oldest first (for tests, `explain` and forensics).
#[cfg_attr(orch_audit, allow(dead_code))]
pub fn for_task(conn: &Conn<'_>, task_id: i64) -> Result<Vec<Outbound>, StoreError> {
    query_all(
        conn,
        &format!("SELECT {COLUMNS} FROM outbox WHERE task_id = ?1 ORDER BY id"),
        args![task_id],
    )
}

/// Whether anything is still owed (pending or sending) for `peer`.
#[cfg_attr(orch_audit, allow(dead_code))]
pub fn owed(conn: &Conn<'_>, peer: Peer) -> Result<i64, StoreError> {
    conn.query_row(
        "SELECT COUNT(*) FROM outbox WHERE peer = ?1 AND status IN ('pending', 'sending')",
        args![peer.as_str()],
        |r| r.get(0),
    )
}

/// Deletes delivered and skipped effects that ended before `before`. Dead ones stay.
pub fn prune(conn: &Conn<'_>, before: Timestamp) -> Result<usize, StoreError> {
    conn.execute(
        "DELETE FROM outbox WHERE status IN ('sent', 'skipped') AND done_at < ?1",
        args![before.as_millis()],
    )
}
