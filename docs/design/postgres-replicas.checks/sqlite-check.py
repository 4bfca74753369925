# The portable statements of docs/design/postgres-replicas.md, run on SQLite (python3 sqlite3):
# migrations 1-5 from src/, 6 from issue 16 (WT16), 7 from issue 12b (WT12B), 8 as proposed.
# Run from the repository root: python3 docs/design/postgres-replicas.checks/sqlite-check.py
import re, sqlite3, sys
def migrations(path):
    src = open(path).read()
    body = src[src.index("pub const MIGRATIONS"):]
    body = body[:body.index("];")]
    return re.findall(r'r#"(.*?)"#', body, re.S)
import os
main = migrations(os.environ.get("MAIN", ".") + "/src/store/migrations.rs")
m16 = migrations(os.environ.get("WT16", "/work/wt-16") + "/src/store/migrations.rs")[5]
m12 = migrations(os.environ.get("WT12B", "/work/wt-12b") + "/src/store/migrations.rs")[6]
m8 = """
CREATE TABLE replicas (
    id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, version TEXT NOT NULL,
    listen TEXT, started_at INTEGER NOT NULL, seen_at INTEGER NOT NULL, stopped_at INTEGER
);
CREATE TABLE leases (
    name TEXT PRIMARY KEY, holder TEXT, token INTEGER NOT NULL,
    acquired_at INTEGER NOT NULL, renewed_at INTEGER NOT NULL, expires_at INTEGER NOT NULL
);
CREATE INDEX leases_holder ON leases(holder);
ALTER TABLE jobs ADD COLUMN claimed_by TEXT;
ALTER TABLE jobs ADD COLUMN claim INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN stop_requested_at INTEGER;
CREATE INDEX jobs_running_by ON jobs(claimed_by) WHERE status = 'running';
"""
# main before the 12b merge has 5 migrations; after it, 7 with 6 a placeholder for issue 16.
steps = main[:5] + [m16, m12 if len(main) < 7 else main[6], m8]
c = sqlite3.connect(":memory:", isolation_level=None)
for i, m in enumerate(steps):
    c.executescript(m)
print("sqlite", sqlite3.sqlite_version, "migrations applied:", len(steps))
NOW = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"
def q(sql, *p):
    sql = sql.replace("NOW_MS", NOW)
    return c.execute(sql, p).fetchall()
q("INSERT INTO tasks (work_item, repo, branch, stage, created_at, updated_at) VALUES ('SIM-1','r','b','dev',0,0)")
# T9 portable
q("UPDATE tasks SET plane_applied_at = CASE WHEN COALESCE(plane_applied_at, 0) > ?1 THEN plane_applied_at ELSE ?1 END WHERE work_item = ?2", 5, "SIM-1")
q("UPDATE tasks SET plane_applied_at = CASE WHEN COALESCE(plane_applied_at, 0) > ?1 THEN plane_applied_at ELSE ?1 END WHERE work_item = ?2", 3, "SIM-1")
assert q("SELECT plane_applied_at FROM tasks")[0][0] == 5
# J5 claim (SQLite form) and J11 portable
q("INSERT INTO jobs (task_id, agent, stage, status, created_at) VALUES (1,'a','dev','queued',0)")
r = q("""UPDATE jobs SET status = 'running', started_at = ?1, attempts = attempts + 1, claimed_by = ?2, claim = claim + 1
 WHERE id = (SELECT id FROM jobs WHERE status = 'queued' AND (not_before IS NULL OR not_before <= ?1) ORDER BY id LIMIT 1)
 RETURNING id, claim""", 10, "A")
assert r == [(1, 1)], r
assert q("UPDATE jobs SET status = 'queued', started_at = NULL, claimed_by = NULL, attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END WHERE id = ?1 AND status = 'running' AND claim = ?2 RETURNING attempts", 1, 2) == []
assert q("UPDATE jobs SET status = 'queued', started_at = NULL, claimed_by = NULL, attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END WHERE id = ?1 AND status = 'running' AND claim = ?2 RETURNING attempts", 1, 1) == [(0,)]
# I5, I10 portable
q("INSERT INTO inbox (source, event, body, body_hash, received_at, attempts) VALUES ('p','e',x'00','h1',7,1),('p','e',x'01','h2',8,6)")
q("UPDATE inbox SET attempts = CASE WHEN attempts + 1 > ?1 THEN attempts + 1 ELSE ?1 END, error = ?2 WHERE id = ?3", 5, "x", 1)
assert q("SELECT attempts FROM inbox WHERE id = 1") == [(5,)]
r = q("SELECT COUNT(*) FILTER (WHERE attempts < ?1), MIN(CASE WHEN attempts < ?1 THEN received_at END), COUNT(*) FILTER (WHERE attempts >= ?1) FROM inbox WHERE processed_at IS NULL", 6)
assert r == [(1, 7, 1)], r
# B1 qualified, B3 cast
for _ in range(2):
    q("""INSERT INTO gate_backoff (task_id, stage, gate, reds, last_at, reason) VALUES (?1, ?2, ?3, 1, ?4, ?5)
 ON CONFLICT(task_id) DO UPDATE SET
   reds = CASE WHEN gate_backoff.stage = excluded.stage AND gate_backoff.gate = excluded.gate THEN gate_backoff.reds + 1 ELSE 1 END,
   stage = excluded.stage, gate = excluded.gate, last_at = excluded.last_at, reason = excluded.reason""", 1, "dev", "g", 1, "red")
assert q("SELECT reds FROM gate_backoff") == [(2,)]
q("""INSERT INTO gate_backoff (task_id, stage, gate, reds, last_at, reason)
 SELECT id, stage, '', 0, CAST(?2 AS BIGINT), 'an event about the task' FROM tasks WHERE id = ?1
 ON CONFLICT(task_id) DO UPDATE SET reds = 0, stage = excluded.stage, gate = excluded.gate, last_at = excluded.last_at, reason = excluded.reason""", 1, 9)
assert q("SELECT reds, last_at FROM gate_backoff") == [(0, 9)]
# D1 RETURNING id, D3 typed optional filter
assert q("INSERT INTO decisions (at, work_item, task_id, stage, trigger, rules_version, rule, outcome, reason, facts) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) RETURNING id", 1, "SIM-1", 1, "dev", "webhook", "v", "r", "hold", "why", "{}") == [(1,)]
assert len(q("SELECT id FROM decisions WHERE at >= ?1 AND (CAST(?2 AS TEXT) IS NULL OR work_item = ?2) LIMIT ?3", 0, None, 10)) == 1
assert len(q("SELECT id FROM decisions WHERE at >= ?1 AND (CAST(?2 AS TEXT) IS NULL OR work_item = ?2) LIMIT ?3", 0, "SIM-2", 10)) == 0
# X4 portable
q("UPDATE jobs SET status='done' WHERE id = 1")
print("X4 =", q("""SELECT CAST(COALESCE(SUM(CASE WHEN done > entered THEN done - entered ELSE 0 END), 0) AS BIGINT) FROM (
   SELECT COUNT(*) AS done,
          (SELECT COUNT(*) FROM task_history h WHERE h.task_id = j.task_id AND h.to_stage = j.stage) AS entered
   FROM jobs j WHERE j.status = 'done' AND COALESCE(j.verdict, '') != 'needs_input'
   GROUP BY j.task_id, j.stage) AS per_stage"""))
# leases on SQLite with the database clock
ACQ = """INSERT INTO leases AS l (name, holder, token, acquired_at, renewed_at, expires_at)
VALUES (?1, ?2, 1, NOW_MS, NOW_MS, NOW_MS + ?3)
ON CONFLICT (name) DO UPDATE
   SET holder = excluded.holder, token = l.token + 1, acquired_at = excluded.acquired_at,
       renewed_at = excluded.renewed_at, expires_at = excluded.expires_at
 WHERE l.holder IS NULL OR l.expires_at <= excluded.acquired_at
RETURNING token, expires_at"""
assert q(ACQ, "sweep", "A", 15000)[0][0] == 1
assert q(ACQ, "sweep", "B", 15000) == []
assert q("UPDATE leases SET renewed_at = NOW_MS, expires_at = NOW_MS + ?4 WHERE name = ?1 AND holder = ?2 AND token = ?3 AND expires_at > NOW_MS RETURNING expires_at", "sweep", "A", 1, 15000)
q("UPDATE leases SET expires_at = 0")
assert q(ACQ, "sweep", "B", 15000)[0][0] == 2
assert q("SELECT 1 FROM leases WHERE name = ?1 AND holder = ?2 AND token = ?3 AND expires_at > NOW_MS", "sweep", "A", 1) == []
assert q("SELECT 1 FROM leases WHERE name = ?1 AND holder = ?2 AND token = ?3 AND expires_at > NOW_MS", "sweep", "B", 2) == [(1,)]
# heartbeat + expiry requeue
q("INSERT INTO replicas (id, host, pid, version, listen, started_at, seen_at) VALUES (?1, ?2, ?3, ?4, ?5, NOW_MS, NOW_MS) ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at", "A", "h", 1, "v", None)
q("INSERT INTO jobs (task_id, agent, stage, status, created_at, claimed_by, claim) VALUES (1,'b','dev','running',0,'A',1)")
assert q("""UPDATE jobs SET status = 'queued', started_at = NULL, not_before = NULL, claimed_by = NULL
 WHERE status = 'running' AND (claimed_by IS NULL OR claimed_by IN (SELECT id FROM replicas WHERE seen_at < NOW_MS - ?1)) RETURNING id""", 15000) == []
q("UPDATE replicas SET seen_at = 0")
assert q("""UPDATE jobs SET status = 'queued', started_at = NULL, not_before = NULL, claimed_by = NULL
 WHERE status = 'running' AND (claimed_by IS NULL OR claimed_by IN (SELECT id FROM replicas WHERE seen_at < NOW_MS - ?1)) RETURNING id""", 15000) == [(2,)]
# T19 as a stop request, the owner's stop query, the twin statement for silent owners
q("INSERT INTO jobs (task_id, agent, stage, status, created_at, claimed_by, claim) VALUES (1,'c','dev','running',0,'A',1)")
assert q("UPDATE jobs SET stop_requested_at = ?2 WHERE task_id = ?1 AND status = 'running' RETURNING id", 1, 50) == [(3,)]
assert q("SELECT id FROM jobs WHERE claimed_by = ?1 AND status = 'running' AND stop_requested_at IS NOT NULL", "A") == [(3,)]
assert q("""UPDATE jobs SET status = 'queued', started_at = NULL, not_before = NULL, claimed_by = NULL
 WHERE status = 'running' AND stop_requested_at IS NULL AND (claimed_by IS NULL OR claimed_by IN (SELECT id FROM replicas WHERE seen_at < NOW_MS - ?1)) RETURNING id""", 15000) == []
assert q("""UPDATE jobs SET status = 'failed', error = 'cancelled', finished_at = ?2
 WHERE status = 'running' AND stop_requested_at IS NOT NULL AND (claimed_by IS NULL OR claimed_by IN (SELECT id FROM replicas WHERE seen_at < NOW_MS - ?1)) RETURNING id""", 15000, 60) == [(3,)]
print("now_ms =", q("SELECT NOW_MS")[0][0])
print("all SQLite checks passed")
