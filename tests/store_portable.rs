//! The statements rewritten into the SQL that SQLite and PostgreSQL share (plan
//! docs/design/postgres-replicas.md (c): T9, J11, I5, I10, B1, B3, D1, D3, T22 and the board's
//! change stamp), each checked for what it computes. X4 (`sim` duplicates) is checked by
//! `tests/simulate.rs` (`duplicates == 0`). Each runs on SQLite and on PostgreSQL
//! (`ORCH_TEST_PG_URL`; see `backends`).

use orch::clock::Timestamp;
use orch::store::{Store, decisions, gate_backoff, inbox, jobs, kv, plane_seen, stamp, tasks};

#[macro_use]
#[path = "store_portable/backends.rs"]
mod backends;

use backends::{T0, task};

/// Leases and heartbeats compare times across hosts by the database's clock (`now_ms_sql`).
fn the_database_clock_reads_epoch_milliseconds(s: &Store) {
    let wall = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let before = wall();
    let db: i64 = s
        .call_sync(|c| c.query_row(&format!("SELECT {}", c.now_ms_sql()), &[], |r| r.get(0)))
        .unwrap();
    let after = wall();
    assert!(
        (before - 1_000..=after + 1_000).contains(&db),
        "{db} not within a second of [{before}, {after}]"
    );
}

fn plane_applied_keeps_the_newest_stamp(s: &Store) {
    let id = task(s, "ET-1", "analysis", None);
    let at = |ms: i64| Timestamp::from_millis(ms);
    let read = || s.call_sync(|c| tasks::plane_applied_at(c, id)).unwrap();
    assert_eq!(read(), None);
    s.call_sync(|c| tasks::record_plane_applied(c, "ET-1", at(500)))
        .unwrap();
    assert_eq!(read(), Some(at(500)), "the first stamp is taken");
    s.call_sync(|c| tasks::record_plane_applied(c, "ET-1", at(300)))
        .unwrap();
    assert_eq!(read(), Some(at(500)), "an older stamp does not go back");
    s.call_sync(|c| tasks::record_plane_applied(c, "ET-1", at(900)))
        .unwrap();
    assert_eq!(read(), Some(at(900)), "a newer one moves it");
}

fn an_interrupted_job_gives_its_attempt_back_but_never_below_zero(s: &Store) {
    let id = task(s, "ET-1", "development", Some("developer"));
    let job = s
        .call_sync(|c| jobs::claim_next(c, "r1", T0))
        .unwrap()
        .unwrap();
    assert_eq!(job.attempts, 1);
    assert!(
        s.call_sync(|c| jobs::release_interrupted(c, job.id, job.claim))
            .unwrap()
    );
    let attempts = |s: &Store| {
        s.call_sync(|c| {
            c.query_row(
                "SELECT attempts FROM jobs WHERE task_id = ?1",
                orch::args![id],
                |r| r.get::<i64>(0),
            )
        })
        .unwrap()
    };
    assert_eq!(attempts(s), 0);
    // A running job with no attempt counted (written by hand, as after a repair).
    s.call_sync(|c| {
        c.execute(
            "UPDATE jobs SET status = 'running', attempts = 0 WHERE task_id = ?1",
            orch::args![id],
        )
    })
    .unwrap();
    assert!(
        s.call_sync(|c| jobs::release_interrupted(c, job.id, job.claim))
            .unwrap()
    );
    assert_eq!(attempts(s), 0, "not -1");
}

fn a_dead_delivery_uses_up_its_attempts_and_the_backlog_counts_it(s: &Store) {
    let insert = |body: &'static [u8]| {
        s.call_sync(|c| inbox::insert(c, "plane", "issue", body, T0))
            .unwrap()
            .unwrap()
    };
    let (a, b, c3) = (insert(b"a"), insert(b"b"), insert(b"c"));
    let backlog = s.call_sync(|c| inbox::backlog(c, 5)).unwrap();
    assert_eq!((backlog.pending, backlog.dead), (3, 0));
    assert_eq!(backlog.oldest_received_at, Some(T0));
    s.call_sync(|c| inbox::mark_dead(c, a, "bad body", 5))
        .unwrap();
    assert_eq!(
        s.call_sync(|c| inbox::get(c, a)).unwrap().unwrap().attempts,
        5,
        "raised to the maximum"
    );
    // Already past the maximum: one more, not back down to it.
    for _ in 0..7 {
        s.call_sync(|c| inbox::mark_failed(c, b, "down", T0))
            .unwrap();
    }
    s.call_sync(|c| inbox::mark_dead(c, b, "bad body", 5))
        .unwrap();
    assert_eq!(
        s.call_sync(|c| inbox::get(c, b)).unwrap().unwrap().attempts,
        8
    );
    let backlog = s.call_sync(|c| inbox::backlog(c, 5)).unwrap();
    assert_eq!((backlog.pending, backlog.dead), (1, 2));
    s.call_sync(|c| inbox::mark_processed(c, c3, T0)).unwrap();
    let backlog = s.call_sync(|c| inbox::backlog(c, 5)).unwrap();
    assert_eq!((backlog.pending, backlog.dead), (0, 2));
    assert_eq!(backlog.oldest_received_at, None);
}

fn a_red_streak_counts_per_stage_and_gate_and_news_resets_it(s: &Store) {
    let id = task(s, "ET-1", "review", None);
    let red = |gate: &str| gate_backoff::Red {
        task_id: id,
        stage: "review".into(),
        gate: gate.into(),
        reason: "ci red".into(),
    };
    let reds = || {
        s.call_sync(|c| gate_backoff::get(c, id))
            .unwrap()
            .map(|r| r.reds)
    };
    s.call_sync(|c| gate_backoff::record_reds(c, &[red("ci_green")], T0))
        .unwrap();
    s.call_sync(|c| gate_backoff::record_reds(c, &[red("ci_green")], T0))
        .unwrap();
    assert_eq!(reds(), Some(2), "same stage and gate: one more");
    s.call_sync(|c| gate_backoff::record_reds(c, &[red("tests_passed")], T0))
        .unwrap();
    assert_eq!(reds(), Some(1), "another gate starts again");
    s.call_sync(|c| gate_backoff::news(c, id, Timestamp::from_millis(7)))
        .unwrap();
    let streak = s.call_sync(|c| gate_backoff::get(c, id)).unwrap().unwrap();
    assert_eq!(
        (streak.reds, streak.last_at),
        (0, Timestamp::from_millis(7))
    );
    s.call_sync(|c| gate_backoff::news(c, 999, T0)).unwrap();
    assert_eq!(
        s.call_sync(|c| gate_backoff::get(c, 999)).unwrap(),
        None,
        "no task, no row"
    );
}

fn decisions_get_their_ids_and_filter_by_work_item_or_not(s: &Store) {
    let decision = |wi: &str| decisions::NewDecision {
        work_item: wi.into(),
        task_id: None,
        stage: "review".into(),
        trigger: "sweep".into(),
        rules_version: "v1".into(),
        rule: "r".into(),
        outcome: "hold".into(),
        reason: "why".into(),
        facts: serde_json::json!({}),
    };
    let first = s
        .call_sync(|c| decisions::record(c, &decision("ET-1"), T0, None))
        .unwrap();
    let second = s
        .call_sync(|c| decisions::record(c, &decision("ET-2"), T0, None))
        .unwrap();
    assert!(second > first, "{first} then {second}");
    let all = s.call_sync(|c| decisions::list(c, None, None, 10)).unwrap();
    assert_eq!(
        all.iter().map(|d| d.id).collect::<Vec<_>>(),
        [first, second]
    );
    let one = s
        .call_sync(|c| decisions::list(c, Some("ET-2"), None, 10))
        .unwrap();
    assert_eq!(one.iter().map(|d| d.id).collect::<Vec<_>>(), [second]);
}

fn a_rename_writes_history_only_for_the_tasks_it_moved(s: &Store) {
    let a = task(s, "ET-1", "qa", Some("tester"));
    let b = task(s, "ET-2", "qa", None);
    let moved = s
        .call_sync(|c| tasks::rename_stage(c, "qa", "testing", "v2", T0))
        .unwrap();
    assert_eq!(moved, 2);
    for id in [a, b] {
        let history = s.call_sync(|c| tasks::history(c, id)).unwrap();
        assert_eq!(history.len(), 2, "{history:?}");
        assert_eq!(history[1].to_stage, "testing");
    }
    let job_stage: String = s
        .call_sync(|c| {
            c.query_row(
                "SELECT stage FROM jobs WHERE task_id = ?1",
                orch::args![a],
                |r| r.get(0),
            )
        })
        .unwrap();
    assert_eq!(job_stage, "testing");
    assert_eq!(
        s.call_sync(|c| tasks::rename_stage(c, "qa", "testing", "v2", T0))
            .unwrap(),
        0
    );
}

fn the_change_stamp_moves_with_the_latest_job_time(s: &Store) {
    let empty = s.call_sync(stamp::changes).unwrap();
    assert_eq!(empty, vec![0; 12], "an empty database stamps zeros");
    let id = task(s, "ET-1", "development", Some("developer"));
    let before = s.call_sync(stamp::changes).unwrap();
    assert_eq!(before[4], 0, "queued, never started");
    s.call_sync(|c| {
        c.execute(
            "UPDATE jobs SET not_before = 50, started_at = 70 WHERE task_id = ?1",
            orch::args![id],
        )
    })
    .unwrap();
    assert_eq!(
        s.call_sync(stamp::changes).unwrap()[4],
        70,
        "the largest of the three"
    );
    s.call_sync(|c| c.execute("UPDATE jobs SET not_before = 90", orch::args![]))
        .unwrap();
    assert_eq!(s.call_sync(stamp::changes).unwrap()[4], 90);
    s.call_sync(|c| inbox::insert(c, "plane", "issue", b"x", T0))
        .unwrap();
    s.call_sync(|c| {
        let id: i64 = c.query_row("SELECT id FROM inbox", orch::args![], |r| r.get(0))?;
        inbox::mark_failed(c, id, "down", T0)
    })
    .unwrap();
    assert_eq!(
        s.call_sync(stamp::changes).unwrap()[8],
        1,
        "pending attempts summed"
    );
}

/// The Plane items kept for `rules diff --db`: one per work item, the latest sight wins, and
/// nothing else in `kv` (a watermark, `plane.seen` without its dot) is taken for one.
fn the_plane_items_seen_are_kept_per_work_item(s: &Store) {
    let seen = |wi: &str, state: &str, ms: i64| plane_seen::SeenItem {
        work_item: wi.into(),
        state_name: state.into(),
        state_group: None,
        updated_at: Timestamp::from_millis(ms),
        first_seen_at: Some(Timestamp::from_millis(ms + 1)),
    };
    for item in [
        seen("ET-2", "Backlog", 100),
        seen("ET-1", "Ready", 200),
        seen("ET-2", "In Progress", 300),
    ] {
        s.call_sync(move |c| plane_seen::record(c, &item)).unwrap();
    }
    s.call_sync(|c| kv::set(c, "plane.seen", "not an item"))
        .unwrap();
    s.call_sync(|c| kv::set(c, "plane.watermark.x", "1"))
        .unwrap();
    let all = s.call_sync(plane_seen::all).unwrap();
    assert_eq!(
        all,
        vec![seen("ET-1", "Ready", 200), seen("ET-2", "In Progress", 300)]
    );
}

both_backends!(plane_applied_keeps_the_newest_stamp);
both_backends!(the_database_clock_reads_epoch_milliseconds);
both_backends!(the_plane_items_seen_are_kept_per_work_item);
both_backends!(an_interrupted_job_gives_its_attempt_back_but_never_below_zero);
both_backends!(a_dead_delivery_uses_up_its_attempts_and_the_backlog_counts_it);
both_backends!(a_red_streak_counts_per_stage_and_gate_and_news_resets_it);
both_backends!(decisions_get_their_ids_and_filter_by_work_item_or_not);
both_backends!(a_rename_writes_history_only_for_the_tasks_it_moved);
both_backends!(the_change_stamp_moves_with_the_latest_job_time);

/// PostgreSQL only (SQLite's `BEGIN IMMEDIATE` excludes every other writer): a transaction
/// that locked a task's row, or an outbox subject, holds it against another connection
/// until it ends.
#[test]
fn task_and_subject_locks_hold_against_another_connection_until_commit() {
    let Some(db) = backends::postgres() else {
        return;
    };
    let s = &db.store;
    let id = task(s, "ET-1", "analysis", None);
    let held = s
        .call_sync(|c| {
            c.write(|tx| {
                tx.lock_task(id)?;
                tx.lock_subject("plane:1")?;
                // Another pooled connection, outside this transaction.
                let other = s.call_sync(|o| {
                    let row = o.execute(
                        "SELECT 1 FROM tasks WHERE id = ?1 FOR UPDATE NOWAIT",
                        orch::args![id],
                    );
                    let subject: bool = o.query_row(
                        "SELECT pg_try_advisory_xact_lock(hashtextextended('outbox:' || ?1, 0))",
                        orch::args!["plane:1"],
                        |r| r.get(0),
                    )?;
                    Ok((row.is_err(), subject))
                })?;
                Ok(other)
            })
        })
        .unwrap();
    assert_eq!(
        held,
        (true, false),
        "row locked (NOWAIT fails), subject taken"
    );
    let free = s
        .call_sync(|o| {
            o.execute(
                "SELECT 1 FROM tasks WHERE id = ?1 FOR UPDATE NOWAIT",
                orch::args![id],
            )
        })
        .unwrap();
    assert_eq!(free, 1, "released at commit");
}

/// PostgreSQL's twin of `tests/store.rs`'s SQLite `user_version` check: a schema migrated by a
/// newer orch (`orch_schema.version` above `LATEST`) is refused, naming the version.
#[test]
fn a_postgres_schema_from_a_newer_orch_is_refused() {
    let Some((_schema, url)) = backends::pg_schema() else {
        return;
    };
    let store = Store::open_url(&url).unwrap();
    store
        .call_sync(|c| c.execute("UPDATE orch_schema SET version = 99", orch::args![]))
        .unwrap();
    drop(store);
    let err = Store::open_url(&url).unwrap_err().to_string();
    assert!(err.contains("99"), "{err}");
}

/// A parameter is bound as the type the statement gives it: an integer where the statement
/// wants a float or text keeps its value (PostgreSQL used to get an INT8's bytes in that
/// slot: a float 1.5e-323 for 3, or text with NUL bytes).
fn an_integer_parameter_binds_as_float_or_text(store: &Store) {
    let (float, text) = store
        .call_sync(|c| {
            let float: i64 = c.query_row(
                "SELECT CAST(CAST(?1 AS DOUBLE PRECISION) * 2 AS BIGINT)",
                orch::args![3],
                |r| r.get(0),
            )?;
            let text: String =
                c.query_row("SELECT CAST(?1 AS TEXT) || 'x'", orch::args![7], |r| {
                    r.get(0)
                })?;
            Ok((float, text))
        })
        .unwrap();
    assert_eq!((float, text.as_str()), (6, "7x"));
}
both_backends!(an_integer_parameter_binds_as_float_or_text);

/// On PostgreSQL a value of another kind than the parameter's type is refused before it is
/// sent, naming the type, instead of reaching the server as bytes of the wrong type; errors
/// carry the server's message.
#[test]
fn a_parameter_of_the_wrong_kind_is_refused_naming_its_type() {
    let Some(db) = backends::postgres() else {
        return;
    };
    let err = db
        .store
        .call_sync(|c| {
            c.query_row("SELECT CAST(?1 AS BIGINT)", orch::args!["5"], |r| {
                r.get::<i64>(0)
            })
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("int8"), "{err}");
    // And the server's own message reaches the error's text (tokio-postgres alone says "db
    // error").
    let err = db
        .store
        .call_sync(|c| c.execute("UPDATE no_such_table SET x = 1", orch::args![]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no_such_table"), "{err}");
}

/// Every PostgreSQL session ends a transaction left idle for 15 s (a paused replica would
/// otherwise hold a lease row against every takeover), names itself, and keeps the URL's own
/// options (the tests' `search_path`).
#[test]
fn postgres_sessions_end_idle_transactions_and_keep_the_urls_options() {
    let Some(db) = backends::postgres() else {
        return;
    };
    let show = |name: &str| -> String {
        db.store
            .call_sync(|c| c.query_row(&format!("SHOW {name}"), &[], |r| r.get(0)))
            .unwrap()
    };
    assert_eq!(show("idle_in_transaction_session_timeout"), "15s");
    assert_eq!(show("application_name"), "orch");
    assert!(
        show("search_path").starts_with('t'),
        "the URL's options still apply"
    );
}
