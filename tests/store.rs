//! The store against a real SQLite file in a tempdir (or, under `ORCH_TEST_DB=postgres`, a
//! PostgreSQL schema of its own; the file-format tests are SQLite only).

mod common;

use std::sync::Arc;

use orch::clock::Timestamp;
use orch::store::{self, NewTask, Store, Trigger, jobs, migrations, tasks};
use rusqlite::Connection;

const T0: Timestamp = Timestamp::from_millis(1_795_000_000_000);

fn new_task(wi: &str) -> NewTask {
    NewTask {
        work_item: wi.into(),
        plane_issue_id: Some(format!("uuid-{wi}")),
        plane_project_id: Some("proj".into()),
        title: "Add login".into(),
        repo: "acme/widget".into(),
        branch: format!("feature/{wi}-add-login"),
        stage: "analysis".into(),
        labels: vec!["urgent".into()],
    }
}

fn user_version(path: &std::path::Path) -> i64 {
    let c = Connection::open(path).unwrap();
    c.pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

#[test]
fn empty_database_migrates_to_latest_with_wal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/orch.db");
    let store = Store::open(&path).unwrap();
    assert_eq!(user_version(&path), migrations::LATEST);
    let mode: String = store
        .call_sync(|c| c.query_row("PRAGMA journal_mode", orch::args![], |r| r.get(0)))
        .unwrap();
    assert_eq!(mode, "wal");
    let fk: i64 = store
        .call_sync(|c| c.query_row("PRAGMA foreign_keys", orch::args![], |r| r.get(0)))
        .unwrap();
    assert_eq!(fk, 1);
}

#[test]
fn database_at_an_older_version_upgrades_in_place_and_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orch.db");
    {
        // A database written by the first release: schema version 1 with one task.
        let c = Connection::open(&path).unwrap();
        c.execute_batch(migrations::MIGRATIONS[0]).unwrap();
        c.pragma_update(None, "user_version", 1).unwrap();
        c.execute(
            "INSERT INTO tasks (work_item, repo, branch, stage, created_at, updated_at) VALUES ('ET-1', 'acme/widget', 'feature/ET-1-x', 'development', 1, 1)",
            [],
        )
        .unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(user_version(&path), migrations::LATEST);
    let t = store
        .call_sync(|c| tasks::get_by_work_item(c, "ET-1"))
        .unwrap()
        .expect("task survives the upgrade");
    assert_eq!(t.stage, "development");
    assert!(t.labels.is_empty(), "new column gets its default");
    // Tables of version 2 exist and work.
    store
        .call_sync(|c| store::verdicts::record(c, t.id, "development", "approve", "test", None, T0))
        .unwrap();
}

#[test]
fn a_database_from_a_newer_orch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orch.db");
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = Store::open(&path).unwrap_err().to_string();
    assert!(err.contains("99"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_creates_make_one_task() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::test_config(dir.path());
    let store = common::open_store(&cfg);
    // Half through this handle, half through independent connections (as another process would).
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let mut handles = Vec::new();
    for i in 0..50 {
        let barrier = barrier.clone();
        let store = if i % 2 == 0 {
            store.clone()
        } else {
            common::open_store(&cfg)
        };
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .call(|c| {
                    tasks::create_atomic(c, &new_task("ET-42"), None, "v1", Trigger::Webhook, T0)
                })
                .await
                .unwrap()
        }));
    }
    let mut created = 0;
    let mut ids = std::collections::HashSet::new();
    for h in handles {
        let (task, was_created) = h.await.unwrap();
        created += usize::from(was_created);
        ids.insert(task.id);
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1);
    let count: i64 = store
        .call_sync(|c| c.query_row("SELECT COUNT(*) FROM tasks", orch::args![], |r| r.get(0)))
        .unwrap();
    assert_eq!(count, 1);
    let history = store
        .call_sync(|c| tasks::history(c, *ids.iter().next().unwrap()))
        .unwrap();
    assert_eq!(history.len(), 1, "one creation row, not fifty");
}

#[test]
fn stale_compare_and_set_loses_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open_store(&common::test_config(dir.path()));
    let (task, _) = store
        .call_sync(|c| tasks::create_atomic(c, &new_task("ET-7"), None, "v1", Trigger::Webhook, T0))
        .unwrap();
    let later = T0.plus(std::time::Duration::from_secs(5));
    let won = store
        .call_sync(|c| {
            tasks::compare_and_set_stage(
                c,
                task.id,
                "analysis",
                "development",
                None,
                Trigger::Webhook,
                "v1",
                later,
            )
        })
        .unwrap();
    assert!(won);
    // A second trigger that still believes the task is in analysis.
    let stale = store
        .call_sync(|c| {
            tasks::compare_and_set_stage(
                c,
                task.id,
                "analysis",
                "development",
                None,
                Trigger::Reconciler,
                "v1",
                later.plus(std::time::Duration::from_secs(1)),
            )
        })
        .unwrap();
    assert!(!stale);
    let after = store
        .call_sync(|c| tasks::get(c, task.id))
        .unwrap()
        .unwrap();
    assert_eq!(after.stage, "development");
    assert_eq!(after.updated_at, later, "the losing call changed nothing");
    let history = store.call_sync(|c| tasks::history(c, task.id)).unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].trigger, Trigger::Webhook);
    assert_eq!(history[1].from_stage.as_deref(), Some("analysis"));
}

#[test]
fn enqueue_never_makes_a_second_active_job_and_claim_is_fifo() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open_store(&common::test_config(dir.path()));
    let (a, _) = store
        .call_sync(|c| tasks::create_atomic(c, &new_task("ET-1"), None, "v1", Trigger::Webhook, T0))
        .unwrap();
    let (b, _) = store
        .call_sync(|c| tasks::create_atomic(c, &new_task("ET-2"), None, "v1", Trigger::Webhook, T0))
        .unwrap();
    let (j1, created1) = store
        .call_sync(|c| jobs::enqueue(c, a.id, "analyst", "analysis", T0))
        .unwrap();
    let (j1b, created1b) = store
        .call_sync(|c| jobs::enqueue(c, a.id, "analyst", "analysis", T0))
        .unwrap();
    assert!(created1 && !created1b);
    assert_eq!(j1.id, j1b.id);
    let (j2, _) = store
        .call_sync(|c| jobs::enqueue(c, b.id, "analyst", "analysis", T0))
        .unwrap();

    let first = store
        .call_sync(|c| jobs::claim_next(c, "r1", T0))
        .unwrap()
        .unwrap();
    assert_eq!(first.id, j1.id);
    assert_eq!(first.status, jobs::JobStatus::Running);
    assert_eq!(first.attempts, 1);
    // Still active while running: no duplicate.
    let (again, created) = store
        .call_sync(|c| jobs::enqueue(c, a.id, "analyst", "analysis", T0))
        .unwrap();
    assert!(!created);
    assert_eq!(again.id, j1.id);

    let second = store
        .call_sync(|c| jobs::claim_next(c, "r1", T0))
        .unwrap()
        .unwrap();
    assert_eq!(second.id, j2.id);
    assert!(
        store
            .call_sync(|c| jobs::claim_next(c, "r1", T0))
            .unwrap()
            .is_none()
    );

    // Finishing frees the slot for a new job of the same agent.
    store
        .call_sync(|c| jobs::finish(c, j1.id, first.claim, true, &jobs::JobResult::default(), T0))
        .unwrap()
        .unwrap();
    let (_, created) = store
        .call_sync(|c| jobs::enqueue(c, a.id, "analyst", "analysis", T0))
        .unwrap();
    assert!(created);
}

#[test]
fn running_jobs_are_requeued_at_startup_and_backoff_is_respected() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open_store(&common::test_config(dir.path()));
    let (a, _) = store
        .call_sync(|c| tasks::create_atomic(c, &new_task("ET-1"), None, "v1", Trigger::Webhook, T0))
        .unwrap();
    let (j, _) = store
        .call_sync(|c| jobs::enqueue(c, a.id, "analyst", "analysis", T0))
        .unwrap();
    store
        .call_sync(|c| jobs::claim_next(c, "r1", T0))
        .unwrap()
        .unwrap();
    assert_eq!(store.call_sync(jobs::requeue_running).unwrap(), 1);
    let claimed = store
        .call_sync(|c| jobs::claim_next(c, "r1", T0))
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, j.id);
    assert_eq!(claimed.attempts, 2);
    assert_eq!(claimed.claim, 2, "each claim counts");

    let due = T0.plus(std::time::Duration::from_secs(30));
    assert!(
        store
            .call_sync(|c| jobs::retry_later(
                c,
                j.id,
                claimed.claim,
                &jobs::JobResult::default(),
                due
            ))
            .unwrap()
    );
    assert!(
        store
            .call_sync(|c| jobs::claim_next(c, "r1", T0))
            .unwrap()
            .is_none(),
        "not due yet"
    );
    assert!(
        store
            .call_sync(|c| jobs::claim_next(c, "r1", due))
            .unwrap()
            .is_some()
    );
}

#[test]
fn a_failed_job_is_not_queued_again_once_its_task_left_the_jobs_stage() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open_store(&common::test_config(dir.path()));
    let (a, _) = store
        .call_sync(|c| tasks::create_atomic(c, &new_task("ET-1"), None, "v1", Trigger::Webhook, T0))
        .unwrap();
    store
        .call_sync(|c| jobs::enqueue(c, a.id, "analyst", "analysis", T0))
        .unwrap();
    let j = store
        .call_sync(|c| jobs::claim_next(c, "r1", T0))
        .unwrap()
        .unwrap();
    // The task is cancelled while the agent runs.
    assert!(
        store
            .call_sync(|c| tasks::compare_and_set_stage(
                c,
                a.id,
                "analysis",
                "cancelled",
                None,
                Trigger::Webhook,
                "v1",
                T0
            ))
            .unwrap()
    );
    assert!(
        !store
            .call_sync(|c| jobs::retry_later(c, j.id, j.claim, &jobs::JobResult::default(), T0))
            .unwrap(),
        "no retry for a visit that is over"
    );
}

#[test]
fn inbox_deduplicates_by_body_and_tracks_processing() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open_store(&common::test_config(dir.path()));
    let body = br#"{"event":"issue"}"#;
    let id = store
        .call_sync(|c| store::inbox::insert(c, "plane", "issue", body, T0))
        .unwrap();
    assert!(id.is_some());
    let dup = store
        .call_sync(|c| store::inbox::insert(c, "plane", "issue", body, T0))
        .unwrap();
    assert!(dup.is_none());
    // The same bytes from another source are a different delivery.
    assert!(
        store
            .call_sync(|c| store::inbox::insert(c, "gitea", "push", body, T0))
            .unwrap()
            .is_some()
    );

    let pending = store
        .call_sync(|c| store::inbox::pending(c, 5, 0, T0, 10))
        .unwrap();
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[0].body, body);
    // The cursor: only what comes after the id already seen.
    let after_first = pending[0].id;
    let rest = store
        .call_sync(move |c| store::inbox::pending(c, 5, after_first, T0, 10))
        .unwrap();
    assert_eq!(rest.len(), 1);
    let retry_at = T0.plus(std::time::Duration::from_secs(5));
    store
        .call_sync(|c| store::inbox::mark_failed(c, pending[0].id, "boom", retry_at))
        .unwrap();
    store
        .call_sync(|c| store::inbox::mark_processed(c, pending[1].id, T0))
        .unwrap();
    // Not offered again before its retry time, then offered with its error.
    assert!(
        store
            .call_sync(|c| store::inbox::pending(c, 5, 0, T0, 10))
            .unwrap()
            .is_empty()
    );
    let pending = store
        .call_sync(move |c| store::inbox::pending(c, 5, 0, retry_at, 10))
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].attempts, 1);
    assert_eq!(pending[0].error.as_deref(), Some("boom"));
    let backlog = store.call_sync(|c| store::inbox::backlog(c, 5)).unwrap();
    assert_eq!((backlog.pending, backlog.dead), (1, 0));
    // Out of attempts: no longer offered, and counted as dead rather than pending.
    let id = pending[0].id;
    store
        .call_sync(move |c| store::inbox::mark_dead(c, id, "malformed", 5))
        .unwrap();
    assert!(
        store
            .call_sync(move |c| store::inbox::pending(c, 5, 0, retry_at, 10))
            .unwrap()
            .is_empty()
    );
    let backlog = store.call_sync(|c| store::inbox::backlog(c, 5)).unwrap();
    assert_eq!((backlog.pending, backlog.dead), (0, 1));
    assert_eq!(backlog.oldest_received_at, None);
}

#[test]
fn pruning_removes_only_old_processed_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open_store(&common::test_config(dir.path()));
    let old = T0;
    let new = T0.plus(std::time::Duration::from_secs(30 * 24 * 3600));
    let a = store
        .call_sync(|c| store::inbox::insert(c, "plane", "issue", b"{\"a\":1}", old))
        .unwrap()
        .unwrap();
    store
        .call_sync(|c| store::inbox::insert(c, "plane", "issue", b"{\"b\":1}", old))
        .unwrap()
        .unwrap();
    let c_id = store
        .call_sync(|c| store::inbox::insert(c, "plane", "issue", b"{\"c\":1}", new))
        .unwrap()
        .unwrap();
    store
        .call_sync(|c| store::inbox::mark_processed(c, a, old))
        .unwrap();
    store
        .call_sync(|c| store::inbox::mark_processed(c, c_id, new))
        .unwrap();
    let cutoff = new.minus(std::time::Duration::from_secs(7 * 24 * 3600));
    assert_eq!(
        store
            .call_sync(|c| store::inbox::prune_processed(c, cutoff))
            .unwrap(),
        1
    );
    // The old unprocessed one and the recent processed one remain.
    assert_eq!(store.call_sync(store::inbox::count).unwrap(), 2);
    assert!(
        store
            .call_sync(|c| store::inbox::get(c, a))
            .unwrap()
            .is_none()
    );
}

#[test]
fn notices_are_claimed_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open_store(&common::test_config(dir.path()));
    let (a, _) = store
        .call_sync(|c| tasks::create_atomic(c, &new_task("ET-1"), None, "v1", Trigger::Webhook, T0))
        .unwrap();
    let first = store
        .call_sync(|c| {
            store::verdicts::claim_notice(c, a.id, "gate_failed", "development:sha1", T0)
        })
        .unwrap();
    let second = store
        .call_sync(|c| {
            store::verdicts::claim_notice(c, a.id, "gate_failed", "development:sha1", T0)
        })
        .unwrap();
    assert!(first && !second);
}
