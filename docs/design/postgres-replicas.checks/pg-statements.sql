-- The PostgreSQL forms of the statements of docs/design/postgres-replicas.md, as PREPAREd
-- against the DDL of section (d) (see run.sh). sN: store statements, lN: leases/replicas.
-- tasks::create_owing
PREPARE s1 AS INSERT INTO tasks (work_item, plane_issue_id, plane_project_id, title, repo, branch, stage, labels, created_at, updated_at)
 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) ON CONFLICT(work_item) DO NOTHING
 RETURNING id, work_item, plane_issue_id, plane_project_id, title, repo, branch, stage, labels, feedback, created_at, updated_at;
-- tasks::record_plane_applied (portable CASE instead of scalar MAX)
PREPARE s2 AS UPDATE tasks SET plane_applied_at = CASE WHEN COALESCE(plane_applied_at, 0) > $1 THEN plane_applied_at ELSE $1 END WHERE work_item = $2;
-- jobs::enqueue_in (partial-index conflict target)
PREPARE s3 AS INSERT INTO jobs (task_id, agent, stage, status, created_at) VALUES ($1, $2, $3, 'queued', $4)
 ON CONFLICT(task_id, agent) WHERE status IN ('queued', 'running') DO NOTHING RETURNING id, status;
-- jobs::claim_next (PG)
PREPARE s4 AS UPDATE jobs SET status = 'running', started_at = $1, attempts = attempts + 1, claimed_by = $2, claim = claim + 1
 WHERE id = (SELECT id FROM jobs WHERE status = 'queued' AND (not_before IS NULL OR not_before <= $1)
             ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
   AND status = 'queued'
 RETURNING id, claim;
-- jobs::release_interrupted (portable)
PREPARE s5 AS UPDATE jobs SET status = 'queued', started_at = NULL, claimed_by = NULL, attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END
 WHERE id = $1 AND status = 'running' AND claim = $2;
-- jobs::finish_owing in_stage / has_active (EXISTS is boolean in PG)
PREPARE s6 AS SELECT EXISTS(SELECT 1 FROM tasks WHERE id = $1 AND stage = $2);
-- inbox::insert
PREPARE s7 AS INSERT INTO inbox (source, event, body, body_hash, received_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT(body_hash) DO NOTHING RETURNING id;
-- inbox::pending
PREPARE s8 AS SELECT id, source, event, body, body_hash, received_at, processed_at, error, attempts FROM inbox
 WHERE processed_at IS NULL AND attempts < $1 AND id > $2 AND (retry_at IS NULL OR retry_at <= $3) ORDER BY id LIMIT $4;
-- inbox::mark_dead (portable)
PREPARE s9 AS UPDATE inbox SET attempts = CASE WHEN attempts + 1 > $1 THEN attempts + 1 ELSE $1 END, error = $2 WHERE id = $3;
-- inbox::backlog (portable FILTER)
PREPARE s10 AS SELECT COUNT(*) FILTER (WHERE attempts < $1), MIN(CASE WHEN attempts < $1 THEN received_at END), COUNT(*) FILTER (WHERE attempts >= $1)
 FROM inbox WHERE processed_at IS NULL;
-- outbox::push
PREPARE s11 AS INSERT INTO outbox (peer, kind, subject, task_id, payload, idem_key, status, due_at, created_at)
 VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7) ON CONFLICT(idem_key) DO NOTHING;
-- outbox::due
PREPARE s12 AS SELECT id, subject, task_id, payload, status, attempts, due_at, error, created_at, done_at FROM outbox o
 WHERE o.peer = $1 AND o.status = 'pending' AND o.due_at <= $2
   AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.peer = o.peer AND p.subject = o.subject AND p.status IN ('pending', 'sending') AND p.id < o.id)
 ORDER BY o.id LIMIT $3;
-- outbox::push_all on PG: per-subject writer order
PREPARE s13 AS SELECT pg_advisory_xact_lock(hashtextextended('outbox:' || $1, 0));
-- verdicts::claim_notice
PREPARE s14 AS INSERT INTO notices (task_id, kind, key, at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING;
-- kv::set
PREPARE s15 AS INSERT INTO kv (key, value) VALUES ($1, $2) ON CONFLICT(key) DO UPDATE SET value = excluded.value;
-- gate_backoff::record_reds (unqualified columns in DO UPDATE SET)
PREPARE s16 AS INSERT INTO gate_backoff (task_id, stage, gate, reds, last_at, reason) VALUES ($1, $2, $3, 1, $4, $5)
 ON CONFLICT(task_id) DO UPDATE SET
   reds = CASE WHEN gate_backoff.stage = excluded.stage AND gate_backoff.gate = excluded.gate THEN gate_backoff.reds + 1 ELSE 1 END,
   stage = excluded.stage, gate = excluded.gate, last_at = excluded.last_at, reason = excluded.reason;
-- gate_backoff::news (INSERT .. SELECT with a parameter: cast it)
PREPARE s17 AS INSERT INTO gate_backoff (task_id, stage, gate, reds, last_at, reason)
 SELECT id, stage, '', 0, CAST($2 AS BIGINT), 'an event about the task' FROM tasks WHERE id = $1
 ON CONFLICT(task_id) DO UPDATE SET reds = 0, stage = excluded.stage, gate = excluded.gate, last_at = excluded.last_at, reason = excluded.reason;
-- decisions::record (RETURNING instead of last_insert_rowid)
PREPARE s18 AS INSERT INTO decisions (at, work_item, task_id, stage, trigger, rules_version, rule, outcome, reason, facts)
 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id;
-- decisions::list (optional filter)
PREPARE s19 AS SELECT id, at, work_item FROM decisions WHERE at >= $1 AND ($2::TEXT IS NULL OR work_item = $2) ORDER BY at DESC, id DESC LIMIT $3;
-- tasks::awaiting_answer / OPEN_QUESTIONS
PREPARE s20 AS SELECT t.id, j.finished_at FROM tasks t JOIN jobs j ON j.id = (SELECT MAX(id) FROM jobs WHERE task_id = t.id)
 WHERE j.status = 'done' AND j.verdict = 'needs_input' AND j.stage = t.stage ORDER BY j.finished_at, t.id;
-- sim/checks::count_duplicates (portable: CASE, alias, cast of SUM)
PREPARE s21 AS SELECT CAST(COALESCE(SUM(CASE WHEN done > entered THEN done - entered ELSE 0 END), 0) AS BIGINT) FROM (
   SELECT COUNT(*) AS done,
          (SELECT COUNT(*) FROM task_history h WHERE h.task_id = j.task_id AND h.to_stage = j.stage) AS entered
   FROM jobs j WHERE j.status = 'done' AND COALESCE(j.verdict, '') != 'needs_input'
   GROUP BY j.task_id, j.stage) AS per_stage;
-- jobs::retry_later (correlated EXISTS on the updated table)
PREPARE s22 AS UPDATE jobs SET status = 'queued', not_before = $1, exit_code = $2, log_excerpt = $3, error = $4, started_at = NULL, claimed_by = NULL
 WHERE id = $5 AND status = 'running' AND claim = $6
   AND EXISTS (SELECT 1 FROM tasks t WHERE t.id = jobs.task_id AND t.stage = jobs.stage);
-- leases: acquire (PG clock)
PREPARE l1 AS INSERT INTO leases AS l (name, holder, token, acquired_at, renewed_at, expires_at)
 VALUES ($1, $2, 1, (extract(epoch from clock_timestamp()) * 1000)::BIGINT, (extract(epoch from clock_timestamp()) * 1000)::BIGINT,
         (extract(epoch from clock_timestamp()) * 1000)::BIGINT + $3)
 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = l.token + 1, acquired_at = excluded.acquired_at,
        renewed_at = excluded.renewed_at, expires_at = excluded.expires_at
 WHERE l.holder IS NULL OR l.expires_at <= excluded.acquired_at
 RETURNING token, expires_at;
-- leases: renew
PREPARE l2 AS UPDATE leases SET renewed_at = (extract(epoch from clock_timestamp()) * 1000)::BIGINT,
        expires_at = (extract(epoch from clock_timestamp()) * 1000)::BIGINT + $4
 WHERE name = $1 AND holder = $2 AND token = $3 AND expires_at > (extract(epoch from clock_timestamp()) * 1000)::BIGINT
 RETURNING expires_at;
-- leases: release
PREPARE l3 AS UPDATE leases SET holder = NULL, expires_at = 0 WHERE name = $1 AND holder = $2 AND token = $3;
-- leases: the fence every fenced write transaction starts with
PREPARE l4 AS SELECT 1 FROM leases WHERE name = $1 AND holder = $2 AND token = $3
 AND expires_at > (extract(epoch from clock_timestamp()) * 1000)::BIGINT FOR SHARE;
-- jobs whose replica stopped heartbeating go back to the queue (run by the sweep holder)
PREPARE l5 AS UPDATE jobs SET status = 'queued', started_at = NULL, not_before = NULL, claimed_by = NULL
 WHERE status = 'running' AND stop_requested_at IS NULL AND (claimed_by IS NULL OR claimed_by IN (SELECT id FROM replicas
       WHERE seen_at < (extract(epoch from clock_timestamp()) * 1000)::BIGINT - $1))
 RETURNING id, task_id, claimed_by;
-- replicas: heartbeat
PREPARE l6 AS INSERT INTO replicas (id, host, pid, version, listen, started_at, seen_at) VALUES ($1, $2, $3, $4, $5,
  (extract(epoch from clock_timestamp()) * 1000)::BIGINT, (extract(epoch from clock_timestamp()) * 1000)::BIGINT)
 ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at;
-- /queue
PREPARE l7 AS SELECT r.id, r.host, r.seen_at, COUNT(j.id) AS running FROM replicas r LEFT JOIN jobs j ON j.claimed_by = r.id AND j.status = 'running'
 WHERE r.stopped_at IS NULL GROUP BY r.id, r.host, r.seen_at ORDER BY r.started_at;
-- cancel across replicas: T19 as a stop request, the owner's poll, silent owners' stop-requested jobs
PREPARE l8 AS UPDATE jobs SET stop_requested_at = $2 WHERE task_id = $1 AND status = 'running' RETURNING id;
PREPARE l9 AS SELECT id FROM jobs WHERE claimed_by = $1 AND status = 'running' AND stop_requested_at IS NOT NULL;
PREPARE l10 AS UPDATE jobs SET status = 'failed', error = 'cancelled', finished_at = $2
 WHERE status = 'running' AND stop_requested_at IS NOT NULL
   AND (claimed_by IS NULL OR claimed_by IN (SELECT id FROM replicas
        WHERE seen_at < (extract(epoch from clock_timestamp()) * 1000)::BIGINT - $1))
 RETURNING id;
