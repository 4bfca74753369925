//! Forward-only schema migrations, versioned by `PRAGMA user_version`.
//!
//! Migration `n` (1-based) upgrades a database at version `n - 1`. A migration is never
//! edited once released: a change of schema is a new entry at the end, so a database of any
//! earlier version upgrades in place.

use rusqlite::{Connection, Transaction};

use super::StoreError;

/// The schema's history, oldest first.
pub const MIGRATIONS: &[&str] = &[
    // 1: the pipeline's core tables.
    r#"
    CREATE TABLE tasks (
        id               INTEGER PRIMARY KEY,
        work_item        TEXT    NOT NULL UNIQUE,
        plane_issue_id   TEXT,
        plane_project_id TEXT,
        title            TEXT    NOT NULL DEFAULT '',
        repo             TEXT    NOT NULL,
        branch           TEXT    NOT NULL,
        stage            TEXT    NOT NULL,
        feedback         TEXT,
        created_at       INTEGER NOT NULL,
        updated_at       INTEGER NOT NULL
    );
    CREATE INDEX tasks_stage ON tasks(stage);

    CREATE TABLE jobs (
        id          INTEGER PRIMARY KEY,
        task_id     INTEGER NOT NULL REFERENCES tasks(id),
        agent       TEXT    NOT NULL,
        stage       TEXT    NOT NULL,
        status      TEXT    NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
        attempts    INTEGER NOT NULL DEFAULT 0,
        exit_code   INTEGER,
        verdict     TEXT,
        summary     TEXT,
        log_excerpt TEXT,
        error       TEXT,
        not_before  INTEGER,
        created_at  INTEGER NOT NULL,
        started_at  INTEGER,
        finished_at INTEGER
    );
    -- At most one active job per task and agent, whatever the concurrency.
    CREATE UNIQUE INDEX jobs_one_active ON jobs(task_id, agent) WHERE status IN ('queued', 'running');
    CREATE INDEX jobs_status ON jobs(status, not_before, id);

    CREATE TABLE inbox (
        id           INTEGER PRIMARY KEY,
        source       TEXT    NOT NULL,
        event        TEXT    NOT NULL,
        body         BLOB    NOT NULL,
        body_hash    TEXT    NOT NULL UNIQUE,
        received_at  INTEGER NOT NULL,
        processed_at INTEGER,
        error        TEXT,
        attempts     INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX inbox_pending ON inbox(processed_at, id);

    CREATE TABLE task_history (
        id            INTEGER PRIMARY KEY,
        task_id       INTEGER NOT NULL REFERENCES tasks(id),
        from_stage    TEXT,
        to_stage      TEXT    NOT NULL,
        trigger       TEXT    NOT NULL CHECK (trigger IN ('webhook', 'agent_finished', 'reconciler', 'manual')),
        rules_version TEXT    NOT NULL,
        at            INTEGER NOT NULL
    );
    CREATE INDEX task_history_task ON task_history(task_id, id);
    "#,
    // 2: verdicts, once-only notices and small durable state for background loops.
    r#"
    ALTER TABLE tasks ADD COLUMN labels TEXT NOT NULL DEFAULT '[]';

    CREATE TABLE verdicts (
        id       INTEGER PRIMARY KEY,
        task_id  INTEGER NOT NULL REFERENCES tasks(id),
        stage    TEXT    NOT NULL,
        verdict  TEXT    NOT NULL CHECK (verdict IN ('approve', 'reject', 'pass', 'fail')),
        source   TEXT    NOT NULL,
        feedback TEXT,
        at       INTEGER NOT NULL
    );
    CREATE INDEX verdicts_task ON verdicts(task_id, stage, id);

    -- A notice is sent at most once per (task, kind, key): "report the gate failure once".
    CREATE TABLE notices (
        task_id INTEGER NOT NULL REFERENCES tasks(id),
        kind    TEXT    NOT NULL,
        key     TEXT    NOT NULL,
        at      INTEGER NOT NULL,
        PRIMARY KEY (task_id, kind, key)
    );

    CREATE TABLE kv (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    "#,
    // 3: a Plane comment names its work item by Plane id; a task's jobs (latest first) are
    // read on every sweep and every finished job.
    r#"
    CREATE INDEX tasks_plane_issue ON tasks(plane_issue_id);
    CREATE INDEX jobs_task ON jobs(task_id, id);

    -- A delivery that failed waits until then before its next attempt.
    ALTER TABLE inbox ADD COLUMN retry_at INTEGER;
    "#,
    // 4: the outbox — what orch owes its peers, written with the change that owes it.
    r#"
    CREATE TABLE outbox (
        id         INTEGER PRIMARY KEY,
        peer       TEXT    NOT NULL CHECK (peer IN ('plane', 'telegram')),
        kind       TEXT    NOT NULL CHECK (kind IN ('plane_state', 'plane_comment', 'telegram')),
        subject    TEXT    NOT NULL,
        task_id    INTEGER REFERENCES tasks(id),
        payload    TEXT    NOT NULL,
        -- An effect with a key is written at most once.
        idem_key   TEXT    UNIQUE,
        status     TEXT    NOT NULL CHECK (status IN ('pending', 'sending', 'sent', 'skipped', 'dead')),
        attempts   INTEGER NOT NULL DEFAULT 0,
        due_at     INTEGER NOT NULL,
        error      TEXT,
        created_at INTEGER NOT NULL,
        done_at    INTEGER
    );
    CREATE INDEX outbox_queue ON outbox(peer, subject, status, id);
    CREATE INDEX outbox_due ON outbox(status, peer, due_at);
    CREATE INDEX outbox_task ON outbox(task_id, kind, id);
    "#,
    // 5: the Plane time (the item's `updated_at`) of the last change orch applied from a
    // task's work item, so the Plane-side sweep compares Plane's clock with Plane's clock.
    r#"
    ALTER TABLE tasks ADD COLUMN plane_applied_at INTEGER;
    "#,
    // 6: the sweep's red-gate backoff: how many times in a row a task's exit gate was read
    // red by the sweep, and when last, so a stuck task is not asked again every sweep.
    r#"
    CREATE TABLE gate_backoff (
        task_id INTEGER PRIMARY KEY REFERENCES tasks(id),
        -- The stage and its gate as written when the gate was red: a task in another stage,
        -- or a stage whose gate the rules changed since, is due at once.
        stage   TEXT    NOT NULL,
        gate    TEXT    NOT NULL,
        reds    INTEGER NOT NULL,
        last_at INTEGER NOT NULL,
        reason  TEXT    NOT NULL
    );
    "#,
    // 7: the decision log (every decision that acted, with the facts it used) and the
    // divergences of the shadow rule set from the live one.
    r#"
    CREATE TABLE decisions (
        id            INTEGER PRIMARY KEY,
        at            INTEGER NOT NULL,
        work_item     TEXT    NOT NULL,
        task_id       INTEGER,
        stage         TEXT    NOT NULL,
        trigger       TEXT    NOT NULL,
        rules_version TEXT    NOT NULL,
        rule          TEXT    NOT NULL,
        outcome       TEXT    NOT NULL,
        reason        TEXT    NOT NULL,
        facts         TEXT    NOT NULL
    );
    CREATE INDEX decisions_item ON decisions(work_item, at);
    CREATE INDEX decisions_at ON decisions(at);

    CREATE TABLE shadow_divergences (
        id             INTEGER PRIMARY KEY,
        at             INTEGER NOT NULL,
        work_item      TEXT    NOT NULL,
        stage          TEXT    NOT NULL,
        trigger        TEXT    NOT NULL,
        live_version   TEXT    NOT NULL,
        live_rule      TEXT    NOT NULL,
        live_outcome   TEXT    NOT NULL,
        live_reason    TEXT    NOT NULL,
        shadow_version TEXT    NOT NULL,
        shadow_rule    TEXT    NOT NULL,
        shadow_outcome TEXT    NOT NULL,
        shadow_reason  TEXT    NOT NULL,
        facts          TEXT    NOT NULL,
        -- One divergence per situation: the same task, in the same visit of its stage (the
        -- time it was last updated), diverging the same way under the same two rule sets.
        situation      TEXT    NOT NULL UNIQUE
    );
    CREATE INDEX shadow_divergences_at ON shadow_divergences(at);
    "#,
    // 8 (issue 15): the replicas that share this database, the leases that give work one
    // owner, and job claims (who runs a job, and the claim number that fences its run).
    r#"
    CREATE TABLE replicas (
        id         TEXT    PRIMARY KEY,
        host       TEXT    NOT NULL,
        pid        INTEGER NOT NULL,
        version    TEXT    NOT NULL,
        listen     TEXT,
        started_at INTEGER NOT NULL,
        seen_at    INTEGER NOT NULL,
        stopped_at INTEGER
    );
    CREATE TABLE leases (
        name        TEXT    PRIMARY KEY,
        holder      TEXT,
        token       INTEGER NOT NULL,
        acquired_at INTEGER NOT NULL,
        renewed_at  INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL
    );
    CREATE INDEX leases_holder ON leases(holder);
    ALTER TABLE jobs ADD COLUMN claimed_by TEXT;
    ALTER TABLE jobs ADD COLUMN claim INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN stop_requested_at INTEGER;
    CREATE INDEX jobs_running_by ON jobs(claimed_by) WHERE status = 'running';
    "#,
];

/// The version a fully migrated database reports.
pub const LATEST: i64 = MIGRATIONS.len() as i64;

/// Brings the database up to [`LATEST`], one transaction per step.
pub fn migrate(conn: &mut Connection) -> Result<i64, StoreError> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current > LATEST {
        return Err(StoreError::TooNew {
            found: current,
            supported: LATEST,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = i as i64 + 1;
        let tx = conn.transaction()?;
        apply(&tx, sql, version)?;
        tx.commit()?;
        tracing::info!(version, "database schema migrated");
    }
    Ok(LATEST)
}

fn apply(tx: &Transaction<'_>, sql: &str, version: i64) -> Result<(), StoreError> {
    tx.execute_batch(sql)
        .map_err(|e| StoreError::Migration { version, source: e })?;
    tx.pragma_update(None, "user_version", version)?;
    Ok(())
}
