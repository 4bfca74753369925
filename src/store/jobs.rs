//! The job queue: one row per agent run.

use serde::Serialize;

use super::db::{Conn, Param, Row};
use super::StoreError;
use crate::clock::Timestamp;

pub use super::claims::{
    Expired, end_cancelled_orphan, holds_claim, requeue_claimed_by, requeue_expired, stop_requested,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Done,
    Failed,
}

impl JobStatus {
    pub const ALL: [JobStatus; 4] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Done,
        JobStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Done => "done",
            JobStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<JobStatus, StoreError> {
        Ok(match s {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "done" => JobStatus::Done,
            "failed" => JobStatus::Failed,
            other => return Err(StoreError::Corrupt(format!("unknown job status {other:?}"))),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Job {
    pub id: i64,
    pub task_id: i64,
    pub agent: String,
    pub stage: String,
    pub status: JobStatus,
    pub attempts: i64,
    pub exit_code: Option<i64>,
    pub verdict: Option<String>,
    pub summary: Option<String>,
    pub log_excerpt: Option<String>,
    pub error: Option<String>,
    pub not_before: Option<Timestamp>,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    /// How many times the job was claimed: the fencing token of its current run. Every write
    /// about the running job carries it, so a run whose claim was taken over (its replica
    /// went silent and the job was queued again) changes nothing any more.
    pub claim: i64,
}

const COLUMNS: &str = "id, task_id, agent, stage, status, attempts, exit_code, verdict, summary, log_excerpt, error, not_before, created_at, started_at, finished_at, claim";

fn from_row(r: &Row) -> Result<(Job, String), StoreError> {
    let ts = |i: usize| -> Result<Option<Timestamp>, StoreError> {
        Ok(r.get::<Option<i64>>(i)?.map(Timestamp::from_millis))
    };
    let status: String = r.get(4)?;
    Ok((
        Job {
            id: r.get(0)?,
            task_id: r.get(1)?,
            agent: r.get(2)?,
            stage: r.get(3)?,
            status: JobStatus::Queued,
            attempts: r.get(5)?,
            exit_code: r.get(6)?,
            verdict: r.get(7)?,
            summary: r.get(8)?,
            log_excerpt: r.get(9)?,
            error: r.get(10)?,
            not_before: ts(11)?,
            created_at: Timestamp::from_millis(r.get(12)?),
            started_at: ts(13)?,
            finished_at: ts(14)?,
            claim: r.get(15)?,
        },
        status,
    ))
}

fn finish_row((mut job, status): (Job, String)) -> Result<Job, StoreError> {
    job.status = JobStatus::parse(&status)?;
    Ok(job)
}

fn query_one(
    conn: &Conn<'_>,
    sql: &str,
    p: &[Param<'_>],
) -> Result<Option<Job>, StoreError> {
    conn.query_opt(sql, p, from_row)?
        .map(finish_row)
        .transpose()
}

#[cfg_attr(orch_audit, allow(dead_code))]
fn query_all(
    conn: &Conn<'_>,
    sql: &str,
    p: &[Param<'_>],
) -> Result<Vec<Job>, StoreError> {
    let rows = conn.query_map(sql, p, from_row)?;
    rows.into_iter().map(finish_row).collect()
}

/// Queues `agent` for the task unless it already has an active job for that agent.
/// Returns the active job and whether this call created it.
#[cfg_attr(orch_audit, allow(dead_code))]
pub fn enqueue(
    conn: &Conn<'_>,
    task_id: i64,
    agent: &str,
    stage: &str,
    now: Timestamp,
) -> Result<(Job, bool), StoreError> {
    conn.write(|tx| {
        let result = enqueue_in(tx, task_id, agent, stage, now)?;
        Ok(result)
    })
}

pub(super) fn enqueue_in(
    tx: &Conn<'_>,
    task_id: i64,
    agent: &str,
    stage: &str,
    now: Timestamp,
) -> Result<(Job, bool), StoreError> {
    let inserted = query_one(
        tx,
        &format!(
            "INSERT INTO jobs (task_id, agent, stage, status, created_at) VALUES (?1, ?2, ?3, 'queued', ?4)
             ON CONFLICT(task_id, agent) WHERE status IN ('queued', 'running') DO NOTHING
             RETURNING {COLUMNS}"
        ),
        args![task_id, agent, stage, now.as_millis()],
    )?;
    let result = match inserted {
        Some(job) => (job, true),
        None => {
            let job = query_one(
                tx,
                &format!(
                    "SELECT {COLUMNS} FROM jobs WHERE task_id = ?1 AND agent = ?2 AND status IN ('queued', 'running')"
                ),
                args![task_id, agent],
            )?
            .ok_or_else(|| StoreError::Corrupt("enqueue conflicted but found no active job".into()))?;
            (job, false)
        }
    };
    Ok(result)
}

/// Answers a task that waits for input: stores the answer as the task's feedback (when there
/// is one) and queues `agent` again, in one transaction. `None` when the task is not waiting
/// (already answered, or it moved on), so a second answer changes nothing, and when the answer
/// was given (`said_at`, when known) before the question was asked: a delivery that waited in
/// the inbox while the agent asked is old news, not an answer.
pub fn resume_after_input(
    conn: &Conn<'_>,
    task_id: i64,
    agent: &str,
    answer: Option<&str>,
    said_at: Option<Timestamp>,
    now: Timestamp,
    effects: &[super::outbox::NewEffect],
) -> Result<Option<Job>, StoreError> {
    conn.write(|tx| {
        // Two answers at once: the second waits here, then finds the question answered.
        tx.lock_task(task_id)?;
        let Some((_, asked_at)) = open_question(tx, task_id)? else {
            return Ok(None);
        };
        if said_at.is_some_and(|said| said <= asked_at) {
            return Ok(None);
        }
        let stage: String = tx.query_row("SELECT stage FROM tasks WHERE id = ?1", args![task_id], |r| {
            r.get(0)
        })?;
        tx.execute(
            "UPDATE tasks SET feedback = COALESCE(?1, feedback), updated_at = ?2 WHERE id = ?3",
            args![answer, now.as_millis(), task_id],
        )?;
        let (job, _) = enqueue_in(tx, task_id, agent, &stage, now)?;
        super::outbox::push_all(tx, Some(task_id), effects, now)?;
        Ok(Some(job))
    })
}

/// Atomically takes the oldest due queued job for `replica`: marks it running, claimed by
/// `replica`, with the next claim (the run's fencing token). On PostgreSQL concurrent claims
/// skip the rows another claim holds (`FOR UPDATE SKIP LOCKED`) instead of waiting, so each
/// job is taken once; on SQLite one writer at a time does the same.
pub fn claim_next(
    conn: &Conn<'_>,
    replica: &str,
    now: Timestamp,
) -> Result<Option<Job>, StoreError> {
    query_one(
        conn,
        &format!(
            "UPDATE jobs SET status = 'running', started_at = ?1, attempts = attempts + 1,
                             claimed_by = ?2, claim = claim + 1
             WHERE id = (SELECT id FROM jobs WHERE status = 'queued' AND (not_before IS NULL OR not_before <= ?1)
                         ORDER BY id LIMIT 1 {})
               AND status = 'queued'
             RETURNING {COLUMNS}",
            conn.skip_locked_sql()
        ),
        args![now.as_millis(), replica],
    )
}

/// The result of one agent run, as recorded on the job.
#[derive(Debug, Clone, Default)]
pub struct JobResult {
    pub exit_code: Option<i64>,
    pub verdict: Option<String>,
    pub summary: Option<String>,
    pub log_excerpt: Option<String>,
    pub error: Option<String>,
}

/// Records the end of a running job (`done` or `failed`) by the run holding `claim`; `None`
/// when the job is not running under that claim (it ended, or another run took it over).
pub fn finish(
    conn: &Conn<'_>,
    job_id: i64,
    claim: i64,
    ok: bool,
    result: &JobResult,
    now: Timestamp,
) -> Result<Option<Job>, StoreError> {
    query_one(
        conn,
        &format!(
            "UPDATE jobs SET status = ?1, exit_code = ?2, verdict = ?3, summary = ?4, log_excerpt = ?5, error = ?6, finished_at = ?7
             WHERE id = ?8 AND status = 'running' AND claim = ?9
             RETURNING {COLUMNS}"
        ),
        args![
            if ok { "done" } else { "failed" },
            result.exit_code,
            result.verdict,
            result.summary,
            result.log_excerpt,
            result.error,
            now.as_millis(),
            job_id,
            claim
        ],
    )
}

/// Ends a running job (`done` or `failed`) and restarts its task's grace, in one
/// transaction with what the end owes: `effects` are owed only while the task is still in
/// `stage` (a result for a visit that is over owes nothing), and, with `notice`, only when
/// that notice (`(kind, key)`) was not given before. Returns the job (`None` when it was
/// not running under `claim`: the run lost its claim, and nothing was written) and whether
/// the effects were owed.
#[allow(clippy::too_many_arguments)]
pub fn finish_owing(
    conn: &Conn<'_>,
    job_id: i64,
    claim: i64,
    ok: bool,
    result: &JobResult,
    stage: &str,
    notice: Option<(&str, &str)>,
    effects: &[super::outbox::NewEffect],
    now: Timestamp,
) -> Result<(Option<Job>, bool), StoreError> {
    conn.write(|tx| {
        let Some(job) = finish(tx, job_id, claim, ok, result, now)? else {
            return Ok((None, false));
        };
        // The stage read below and the effects it decides must not straddle a stage change.
        tx.lock_task(job.task_id)?;
        super::tasks::touch(tx, job.task_id, now)?;
        let in_stage: bool = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM tasks WHERE id = ?1 AND stage = ?2)",
            args![job.task_id, stage],
            |r| r.get(0),
        )?;
        let mut owed = false;
        if in_stage && !effects.is_empty() {
            let fresh = match notice {
                Some((kind, key)) => super::verdicts::claim_notice(tx, job.task_id, kind, key, now)?,
                None => true,
            };
            if fresh {
                super::outbox::push_all(tx, Some(job.task_id), effects, now)?;
                owed = true;
            }
        }
        Ok((Some(job), owed))
    })
}

/// Puts a running job back in the queue, due at `not_before` (retry with backoff), but only
/// while its task is still in the job's stage: a task cancelled or moved on while its agent
/// ran owes no retry. False when the job was not requeued (see [`abandon`]), or when the run
/// no longer holds `claim`.
pub fn retry_later(
    conn: &Conn<'_>,
    job_id: i64,
    claim: i64,
    result: &JobResult,
    not_before: Timestamp,
) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE jobs SET status = 'queued', not_before = ?1, exit_code = ?2, log_excerpt = ?3, error = ?4, started_at = NULL,
                         claimed_by = NULL
         WHERE id = ?5 AND status = 'running' AND claim = ?6
           AND EXISTS (SELECT 1 FROM tasks t WHERE t.id = jobs.task_id AND t.stage = jobs.stage)",
        args![
            not_before.as_millis(),
            result.exit_code,
            result.log_excerpt,
            result.error,
            job_id,
            claim
        ],
    )?;
    Ok(n == 1)
}

/// At startup of the one serving process (SQLite): jobs left `running` by a crash go back to
/// the queue. Returns how many. Not for PostgreSQL, where the running jobs may be other
/// replicas' (theirs come back through [`requeue_expired`]).
pub fn requeue_running(conn: &Conn<'_>) -> Result<usize, StoreError> {
    conn.execute(
        "UPDATE jobs SET status = 'queued', started_at = NULL, not_before = NULL, claimed_by = NULL
         WHERE status = 'running'",
        args![],
    )
}

/// The error of a job ended because its task was cancelled.
pub const CANCELLED: &str = "cancelled";

/// Ends a running job without running (or without finishing) its agent: failed, with
/// `error`, and never retried; only while the run holds `claim`.
pub fn abandon(
    conn: &Conn<'_>,
    id: i64,
    claim: i64,
    error: &str,
    now: Timestamp,
) -> Result<bool, StoreError> {
    Ok(conn.execute(
        "UPDATE jobs SET status = 'failed', error = ?1, finished_at = ?2
         WHERE id = ?3 AND status = 'running' AND claim = ?4",
        args![error, now.as_millis(), id, claim],
    )? == 1)
}

/// Puts a job its worker gave up on at shutdown back in the queue and gives back the attempt
/// its claim counted: an interrupted run is not a failed one. Only a job still `running`
/// changes (one that finished meanwhile keeps its result), and only while the run holds
/// `claim`; true when it did.
pub fn release_interrupted(conn: &Conn<'_>, id: i64, claim: i64) -> Result<bool, StoreError> {
    Ok(conn.execute(
        "UPDATE jobs SET status = 'queued', started_at = NULL, claimed_by = NULL,
                         attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END
         WHERE id = ?1 AND status = 'running' AND claim = ?2",
        args![id, claim],
    )? == 1)
}


pub fn has_active(conn: &Conn<'_>, task_id: i64) -> Result<bool, StoreError> {
    conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM jobs WHERE task_id = ?1 AND status IN ('queued', 'running'))",
        args![task_id],
        |r| r.get(0),
    )
}

/// Ids of tasks that have an active job; one query for a whole sweep.
pub fn tasks_with_active_jobs(
    conn: &Conn<'_>,
) -> Result<std::collections::HashSet<i64>, StoreError> {
    let rows = conn.query_map("SELECT DISTINCT task_id FROM jobs WHERE status IN ('queued', 'running')", args![], |r| r.get(0))?;
    Ok(rows.into_iter().collect())
}

/// The tasks waiting for a person's answer: the task's latest job ran in the task's current
/// stage and finished asking a question (`needs_input`). One definition for every query below.
pub(super) const OPEN_QUESTIONS: &str = "FROM tasks t
     JOIN jobs j ON j.id = (SELECT MAX(id) FROM jobs WHERE task_id = t.id)
     WHERE j.status = 'done' AND j.verdict = 'needs_input' AND j.stage = t.stage";

/// Ids of tasks waiting for a person's answer; one query for a whole sweep.
pub fn tasks_awaiting_input(
    conn: &Conn<'_>,
) -> Result<std::collections::HashSet<i64>, StoreError> {
    let rows = conn.query_map(&format!("SELECT t.id {OPEN_QUESTIONS}"), args![], |r| r.get(0))?;
    Ok(rows.into_iter().collect())
}

/// The question a task waits on (the asking job's summary) and when it was asked; `None`
/// when the task is not waiting for an answer.
pub fn open_question(
    conn: &Conn<'_>,
    task_id: i64,
) -> Result<Option<(String, Timestamp)>, StoreError> {
    Ok(conn
        .query_opt(
            &format!(
                "SELECT COALESCE(j.summary, ''), j.finished_at {OPEN_QUESTIONS} AND t.id = ?1"
            ),
            args![task_id],
            |r| Ok((r.get::<String>(0)?, r.get::<Option<i64>>(1)?)),
        )?
        .map(|(q, at)| (q, Timestamp::from_millis(at.unwrap_or(0)))))
}

/// Whether one task waits for a person's answer.
pub fn awaiting_input(conn: &Conn<'_>, task_id: i64) -> Result<bool, StoreError> {
    Ok(open_question(conn, task_id)?.is_some())
}

/// The most recent finished (`done`) job of `agent` for the task.
pub fn latest_done(
    conn: &Conn<'_>,
    task_id: i64,
    agent: &str,
) -> Result<Option<Job>, StoreError> {
    query_one(
        conn,
        &format!(
            "SELECT {COLUMNS} FROM jobs WHERE task_id = ?1 AND agent = ?2 AND status = 'done' ORDER BY finished_at DESC, id DESC LIMIT 1"
        ),
        args![task_id, agent],
    )
}

#[cfg_attr(orch_audit, allow(dead_code))]
pub fn for_task(conn: &Conn<'_>, task_id: i64) -> Result<Vec<Job>, StoreError> {
    query_all(
        conn,
        &format!("SELECT {COLUMNS} FROM jobs WHERE task_id = ?1 ORDER BY id"),
        args![task_id],
    )
}

pub fn counts_by_status(conn: &Conn<'_>) -> Result<Vec<(JobStatus, i64)>, StoreError> {
    let rows = conn.query_map("SELECT status, COUNT(*) FROM jobs GROUP BY status", args![], |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (s, n) = row;
        out.push((JobStatus::parse(&s)?, n));
    }
    Ok(out)
}

/// Each task's newest job, by task id; one query for the whole board.
pub fn latest_per_task(
    conn: &Conn<'_>,
) -> Result<std::collections::HashMap<i64, Job>, StoreError> {
    let jobs = query_all(
        conn,
        &format!(
            "SELECT {COLUMNS} FROM jobs WHERE id IN (SELECT MAX(id) FROM jobs GROUP BY task_id)"
        ),
        args![],
    )?;
    Ok(jobs.into_iter().map(|j| (j.task_id, j)).collect())
}
