#!/usr/bin/env bash
# Checks the plan in docs/design/postgres-replicas.md against a real PostgreSQL:
#   1. .ci/pg starts a throwaway cluster; SELECT 1;
#   2. the DDL of section (d), extracted from the doc, applied in one transaction;
#   3. every statement of pg-statements.sql PREPAREd (parses and type-checks);
#   4. a lease scenario (acquire, refuse, renew, expire, take over, fence, release);
#   5. SKIP LOCKED: a second claimer is not blocked by a claimed row;
#   6. the fence: a takeover waits for the old holder's fenced transaction (6b: not with KEY SHARE);
#   7. .ci/pg stop.
# Run from the repository root: docs/design/postgres-replicas.checks/run.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
here=docs/design/postgres-replicas.checks
doc=docs/design/postgres-replicas.md

pg_out=$(.ci/pg)
url=$(sed -n 1p <<<"$pg_out")
dir=$(sed -n 2p <<<"$pg_out")
trap '.ci/pg stop "$dir"' EXIT
echo "== 1. cluster: $url ($dir)"
psql "$url" -XAtc "SELECT 1, current_user, current_setting('server_version')"

echo "== 2. DDL of section (d)"
awk '/^<!-- ddl:begin -->$/{f=1;next}/^<!-- ddl:end -->$/{f=0}f' "$doc" | sed '/^```/d' >"$dir/ddl.sql"
psql "$url" -X -q -1 -v ON_ERROR_STOP=1 -f "$dir/ddl.sql"
psql "$url" -XAtc "SELECT 'schema version', version FROM orch_schema" \
  -c "SELECT 'tables', count(*) FROM pg_tables WHERE schemaname = 'public'"

echo "== 3. statements PREPAREd"
psql "$url" -X -q -v ON_ERROR_STOP=1 -f "$here/pg-statements.sql" \
  -c "SELECT 'prepared', count(*) FROM pg_prepared_statements" | grep prepared

echo "== 4. lease scenario"
psql "$url" -XAtq -v ON_ERROR_STOP=1 <<EOF
\i $here/pg-statements.sql
\echo A acquires (token):
EXECUTE l1('sweep', 'A', 15000);
\echo B tries while A holds (no row):
EXECUTE l1('sweep', 'B', 15000);
\echo A renews (new expiry):
EXECUTE l2('sweep', 'A', 1, 15000);
UPDATE leases SET expires_at = 0 WHERE name = 'sweep';
\echo lease of A lapsed, B takes over (token):
EXECUTE l1('sweep', 'B', 15000);
\echo fence of A (no row = fenced):
BEGIN; EXECUTE l4('sweep', 'A', 1); ROLLBACK;
\echo fence of B:
BEGIN; EXECUTE l4('sweep', 'B', 2); ROLLBACK;
\echo A tries to renew (no row):
EXECUTE l2('sweep', 'A', 1, 15000);
EXECUTE l3('sweep', 'B', 2);
\echo B released; A acquires (token):
EXECUTE l1('sweep', 'A', 15000);
EOF

echo "== 5. SKIP LOCKED"
psql "$url" -XAtq -c "INSERT INTO tasks (work_item, repo, branch, stage, created_at, updated_at) VALUES ('SIM-1','r','b','dev',0,0)" \
  -c "INSERT INTO jobs (task_id, agent, stage, status, created_at) VALUES (1,'a','dev','queued',0),(1,'b','dev','queued',0)"
claim="UPDATE jobs SET status = 'running', claimed_by = '%s', claim = claim + 1 WHERE id = (SELECT id FROM jobs WHERE status = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) AND status = 'queued' RETURNING 'claimed job', id, 'by', claimed_by"
(psql "$url" -XAtq -c "BEGIN" -c "$(printf "$claim" A)" -c "SELECT pg_sleep(2)" -c "COMMIT" >"$dir/a.out") &
sleep 0.7
t0=$(date +%s%N)
psql "$url" -XAtq -c "$(printf "$claim" B)"
echo "B's claim took $(( ($(date +%s%N) - t0) / 1000000 )) ms while A held its row"
wait
cat "$dir/a.out"

echo "== 6. a takeover waits for the old holder's fenced transaction"
now="(extract(epoch from clock_timestamp()) * 1000)::BIGINT"
psql "$url" -XAtq -c "UPDATE leases SET holder = 'A', token = 10, expires_at = $now + 1000 WHERE name = 'sweep'"
(psql "$url" -XAtq -c "BEGIN" \
  -c "SELECT 'A fence ok at', clock_timestamp() FROM leases WHERE name = 'sweep' AND holder = 'A' AND token = 10 AND expires_at > $now FOR SHARE" \
  -c "SELECT pg_sleep(2.5)" -c "UPDATE kv SET value = 'x' WHERE key = 'none'" -c "COMMIT" \
  -c "SELECT 'A committed at', clock_timestamp()" >"$dir/a2.out") &
sleep 1.5
psql "$url" -XAtq -c "SELECT 'B tries at', clock_timestamp()" \
  -c "INSERT INTO leases AS l (name, holder, token, acquired_at, renewed_at, expires_at) VALUES ('sweep', 'B', 1, $now, $now, $now + 15000) ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = l.token + 1, acquired_at = excluded.acquired_at, renewed_at = excluded.renewed_at, expires_at = excluded.expires_at WHERE l.holder IS NULL OR l.expires_at <= excluded.acquired_at RETURNING 'B acquired token', token, clock_timestamp()"
wait
grep . "$dir/a2.out"

echo "== 6b. the same with FOR KEY SHARE does not fence (the takeover does not wait)"
psql "$url" -XAtq -c "UPDATE leases SET holder = 'A', token = 20, expires_at = $now + 500 WHERE name = 'sweep'"
(psql "$url" -XAtq -c "BEGIN" \
  -c "SELECT 'A key-share lock at', clock_timestamp() FROM leases WHERE name = 'sweep' FOR KEY SHARE" \
  -c "SELECT pg_sleep(2)" -c "COMMIT" -c "SELECT 'A committed at', clock_timestamp()" >"$dir/a3.out") &
sleep 1
psql "$url" -XAtq -c "SELECT 'B tries at', clock_timestamp()" \
  -c "INSERT INTO leases AS l (name, holder, token, acquired_at, renewed_at, expires_at) VALUES ('sweep', 'B', 1, $now, $now, $now + 15000) ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = l.token + 1, acquired_at = excluded.acquired_at, renewed_at = excluded.renewed_at, expires_at = excluded.expires_at WHERE l.holder IS NULL OR l.expires_at <= excluded.acquired_at RETURNING 'B acquired token', token, clock_timestamp()"
wait
grep . "$dir/a3.out"

echo "== 7. stop"
