//! Jobs across replicas in the store (issue 15, plan (e) and (h) 4): claims fence their run,
//! the registry says who is alive, the running jobs of a silent replica come back, a cancel
//! leaves a stop request for the replica running the agent. The first tests run on both
//! backends; the concurrency tests need PostgreSQL (`ORCH_TEST_PG_URL`; see `.ci/pg`), where
//! several stores (replicas) really write at once.

use std::collections::HashSet;
use std::time::Duration;

use orch::store::replicas::{self, ReplicaInfo};
use orch::store::tasks::{self, StageChange};
use orch::store::{Store, Trigger, jobs};

#[macro_use]
#[path = "store_portable/backends.rs"]
mod backends;

use backends::{T0, task};

const TTL: Duration = Duration::from_secs(15);

fn info(id: &str) -> ReplicaInfo {
    ReplicaInfo {
        id: id.into(),
        host: "host".into(),
        pid: 42,
        version: "0.0.0".into(),
        listen: Some("127.0.0.1:1".into()),
    }
}

fn beat(s: &Store, id: &str) {
    s.call_sync(|c| replicas::heartbeat(c, &info(id))).unwrap();
}

/// The replica's last heartbeat, `ago` before now (by the database's clock).
fn silent_for(s: &Store, id: &str, ago: Duration) {
    let ms = ago.as_millis() as i64;
    s.call_sync(|c| {
        c.execute(
            "UPDATE replicas SET seen_at = seen_at - ?1 WHERE id = ?2",
            orch::args![ms, id],
        )
    })
    .unwrap();
}

fn job_row(s: &Store, id: i64) -> (String, Option<String>, i64, i64) {
    s.call_sync(|c| {
        c.query_row(
            "SELECT status, claimed_by, claim, attempts FROM jobs WHERE id = ?1",
            orch::args![id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
    })
    .unwrap()
}

fn cancel(s: &Store, task_id: i64) -> Vec<i64> {
    let change = StageChange {
        task_id,
        from: "development".into(),
        to: "cancelled".into(),
        feedback: None,
        trigger: Trigger::Webhook,
        rules_version: "v1".into(),
        agent: None,
        end_jobs: true,
        effects: vec![],
    };
    s.call_sync(|c| tasks::change_stage(c, &change, T0))
        .unwrap()
        .unwrap()
        .running
}

fn a_claim_carries_its_replica_and_a_late_write_of_an_old_claim_changes_nothing(s: &Store) {
    task(s, "ET-1", "development", Some("developer"));
    let first = s
        .call_sync(|c| jobs::claim_next(c, "a", T0))
        .unwrap()
        .unwrap();
    assert_eq!(first.claim, 1);
    assert_eq!(job_row(s, first.id).1.as_deref(), Some("a"));
    assert!(s.call_sync(|c| jobs::holds_claim(c, first.id, 1)).unwrap());
    // The run is taken over: released (as by an expiry) and claimed again by b.
    assert!(
        s.call_sync(|c| jobs::release_interrupted(c, first.id, 1))
            .unwrap()
    );
    assert_eq!(job_row(s, first.id).1, None, "a queued job is nobody's");
    let second = s
        .call_sync(|c| jobs::claim_next(c, "b", T0))
        .unwrap()
        .unwrap();
    assert_eq!((second.id, second.claim), (first.id, 2));
    assert!(!s.call_sync(|c| jobs::holds_claim(c, first.id, 1)).unwrap());
    // a's late writes, with its old claim: every one matches nothing.
    let result = jobs::JobResult::default();
    assert_eq!(
        s.call_sync(|c| jobs::finish(c, first.id, 1, true, &result, T0))
            .unwrap(),
        None
    );
    let (ended, owed) = s
        .call_sync(|c| {
            jobs::finish_owing(c, first.id, 1, true, &result, "development", None, &[], T0)
        })
        .unwrap();
    assert_eq!((ended, owed), (None, false));
    assert!(
        !s.call_sync(|c| jobs::retry_later(c, first.id, 1, &result, T0))
            .unwrap()
    );
    assert!(
        !s.call_sync(|c| jobs::abandon(c, first.id, 1, "late", T0))
            .unwrap()
    );
    assert!(
        !s.call_sync(|c| jobs::release_interrupted(c, first.id, 1))
            .unwrap()
    );
    assert_eq!(
        job_row(s, first.id),
        ("running".into(), Some("b".into()), 2, 1)
    );
    // b's writes, with the current claim, count.
    let done = s
        .call_sync(|c| jobs::finish(c, first.id, 2, true, &result, T0))
        .unwrap()
        .unwrap();
    assert_eq!(done.status, jobs::JobStatus::Done);
    assert_eq!(
        job_row(s, first.id).1.as_deref(),
        Some("b"),
        "kept after the end"
    );
}

fn the_registry_tells_alive_from_silent_and_stopped_and_forgets_old_rows(s: &Store) {
    beat(s, "a");
    beat(s, "b");
    beat(s, "c");
    beat(s, "a"); // a second heartbeat is an update, not a second row
    task(s, "ET-1", "development", Some("developer"));
    s.call_sync(|c| jobs::claim_next(c, "a", T0))
        .unwrap()
        .unwrap();
    silent_for(s, "b", Duration::from_secs(20));
    assert!(s.call_sync(|c| replicas::mark_stopped(c, "c")).unwrap());
    let list = s.call_sync(|c| replicas::list(c, TTL)).unwrap();
    let seen: Vec<(&str, bool, i64)> = list
        .iter()
        .map(|r| (r.id.as_str(), r.alive, r.running_jobs))
        .collect();
    assert_eq!(seen, [("a", true, 1), ("b", false, 0), ("c", false, 0)]);
    let a = &list[0];
    assert_eq!(
        (a.host.as_str(), a.pid, a.listen.as_deref()),
        ("host", 42, Some("127.0.0.1:1"))
    );
    assert!(a.seen_at >= a.started_at && a.stopped_at.is_none());
    assert!(list[2].stopped_at.is_some());
    // Rows silent (or stopped) for longer than a day go.
    silent_for(s, "b", Duration::from_secs(2 * 86_400));
    assert_eq!(
        s.call_sync(|c| replicas::prune(c, Duration::from_secs(86_400)))
            .unwrap(),
        1
    );
    let ids: Vec<String> = s
        .call_sync(|c| replicas::list(c, TTL))
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["a", "c"]);
}

fn the_running_jobs_of_a_silent_replica_come_back_and_cancelled_ones_end(s: &Store) {
    beat(s, "a");
    beat(s, "b");
    let (t1, t2, t3) = (
        task(s, "ET-1", "development", Some("developer")),
        task(s, "ET-2", "development", Some("developer")),
        task(s, "ET-3", "development", Some("developer")),
    );
    let j1 = s
        .call_sync(|c| jobs::claim_next(c, "a", T0))
        .unwrap()
        .unwrap();
    let j2 = s
        .call_sync(|c| jobs::claim_next(c, "a", T0))
        .unwrap()
        .unwrap();
    let j3 = s
        .call_sync(|c| jobs::claim_next(c, "b", T0))
        .unwrap()
        .unwrap();
    assert_eq!((j1.task_id, j2.task_id, j3.task_id), (t1, t2, t3));
    let none = s.call_sync(|c| jobs::requeue_expired(c, TTL, T0)).unwrap();
    assert_eq!(none, jobs::Expired::default(), "everyone is alive");
    // ET-2 is cancelled while a's agent runs: a stop request, not an end.
    assert_eq!(cancel(s, t2), [j2.id]);
    assert_eq!(
        s.call_sync(|c| jobs::stop_requested(c, "a")).unwrap(),
        [j2.id]
    );
    assert!(
        s.call_sync(|c| jobs::stop_requested(c, "b"))
            .unwrap()
            .is_empty()
    );
    // a goes silent for longer than the lease time.
    silent_for(s, "a", TTL + Duration::from_secs(1));
    let expired = s.call_sync(|c| jobs::requeue_expired(c, TTL, T0)).unwrap();
    assert_eq!(
        expired,
        jobs::Expired {
            requeued: 1,
            ended: 1
        }
    );
    assert_eq!(
        job_row(s, j1.id),
        ("queued".into(), None, 1, 1),
        "attempt kept"
    );
    assert_eq!(job_row(s, j2.id).0, "failed");
    assert_eq!(job_row(s, j3.id).0, "running", "b is alive");
    let again = s.call_sync(|c| jobs::requeue_expired(c, TTL, T0)).unwrap();
    assert_eq!(again, jobs::Expired::default(), "once");
    // b takes ET-1 over with the next claim; a's late finish changes nothing.
    let taken = s
        .call_sync(|c| jobs::claim_next(c, "b", T0))
        .unwrap()
        .unwrap();
    assert_eq!((taken.id, taken.claim, taken.attempts), (j1.id, 2, 2));
    let result = jobs::JobResult::default();
    assert_eq!(
        s.call_sync(|c| jobs::finish(c, j1.id, j1.claim, true, &result, T0))
            .unwrap(),
        None
    );
    // A stopped replica's jobs come back at once, and so do claims of nobody (before claims).
    assert!(s.call_sync(|c| replicas::mark_stopped(c, "b")).unwrap());
    s.call_sync(|c| {
        c.execute(
            "UPDATE jobs SET claimed_by = NULL WHERE id = ?1",
            orch::args![j3.id],
        )
    })
    .unwrap();
    let expired = s.call_sync(|c| jobs::requeue_expired(c, TTL, T0)).unwrap();
    assert_eq!(expired.requeued, 2);
}

fn a_cancel_ends_an_orphaned_job_at_once_but_leaves_a_live_replicas_job_to_it(s: &Store) {
    beat(s, "a");
    let (t1, t2) = (
        task(s, "ET-1", "development", Some("developer")),
        task(s, "ET-2", "development", Some("developer")),
    );
    let j1 = s
        .call_sync(|c| jobs::claim_next(c, "a", T0))
        .unwrap()
        .unwrap();
    let j2 = s
        .call_sync(|c| jobs::claim_next(c, "gone", T0))
        .unwrap()
        .unwrap();
    assert_eq!(cancel(s, t1), [j1.id]);
    assert_eq!(cancel(s, t2), [j2.id]);
    assert!(
        !s.call_sync(|c| jobs::end_cancelled_orphan(c, j1.id, TTL, T0))
            .unwrap()
    );
    assert!(
        s.call_sync(|c| jobs::end_cancelled_orphan(c, j2.id, TTL, T0))
            .unwrap()
    );
    assert_eq!(job_row(s, j1.id).0, "running", "a stops it itself");
    assert_eq!(job_row(s, j2.id).0, "failed");
    // a's worker sees the request and its run ends the job, with its claim.
    assert_eq!(
        s.call_sync(|c| jobs::stop_requested(c, "a")).unwrap(),
        [j1.id]
    );
    assert!(
        s.call_sync(|c| jobs::abandon(c, j1.id, j1.claim, jobs::CANCELLED, T0))
            .unwrap()
    );
    assert!(
        s.call_sync(|c| jobs::stop_requested(c, "a"))
            .unwrap()
            .is_empty()
    );
}

both_backends!(a_claim_carries_its_replica_and_a_late_write_of_an_old_claim_changes_nothing);
both_backends!(the_registry_tells_alive_from_silent_and_stopped_and_forgets_old_rows);
both_backends!(the_running_jobs_of_a_silent_replica_come_back_and_cancelled_ones_end);
both_backends!(a_cancel_ends_an_orphaned_job_at_once_but_leaves_a_live_replicas_job_to_it);

/// `n` stores (replicas) on one fresh PostgreSQL schema, or `None` (skipped).
fn replicas_on_postgres(n: usize) -> Option<(backends::Place, Vec<Store>)> {
    let (place, url) = backends::pg_schema()?;
    let stores = (0..n).map(|_| Store::open_url(&url).unwrap()).collect();
    Some((place, stores))
}

/// 8 replicas claim 200 jobs at once: every job is claimed exactly once, and no claim waits
/// for another (SKIP LOCKED).
#[test]
fn concurrent_claims_take_every_job_exactly_once() {
    let Some((_place, stores)) = replicas_on_postgres(8) else {
        return;
    };
    let ids: HashSet<i64> = (0..200)
        .map(|i| {
            let t = task(&stores[0], &format!("ET-{i}"), "development", None);
            stores[0]
                .call_sync(|c| jobs::enqueue(c, t, "developer", "development", T0))
                .unwrap()
                .0
                .id
        })
        .collect();
    let threads: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(n, s)| {
            std::thread::spawn(move || {
                let me = format!("r{n}");
                let mut mine = Vec::new();
                let mut slowest = Duration::ZERO;
                loop {
                    let started = std::time::Instant::now();
                    let job = s.call_sync(|c| jobs::claim_next(c, &me, T0)).unwrap();
                    slowest = slowest.max(started.elapsed());
                    match job {
                        Some(j) => {
                            assert_eq!(j.claim, 1);
                            mine.push(j.id);
                        }
                        None => return (mine, slowest),
                    }
                }
            })
        })
        .collect();
    let mut claimed = Vec::new();
    let mut per_replica = Vec::new();
    for t in threads {
        let (mine, slowest) = t.join().unwrap();
        // Generous for a loaded 2-core machine; a claim waiting on another's lock would
        // take as long as that transaction, and a lost update would show as a duplicate.
        assert!(slowest < Duration::from_secs(2), "a claim took {slowest:?}");
        per_replica.push(mine.len());
        claimed.extend(mine);
    }
    assert_eq!(claimed.len(), 200, "claims per replica: {per_replica:?}");
    assert_eq!(claimed.into_iter().collect::<HashSet<_>>(), ids);
}

/// A claims and goes silent; B's take-over returns the job, A's late finish changes nothing,
/// B claims it with the next claim; and a cancel through A of a job B runs is B's to stop.
#[test]
fn a_silent_replicas_job_is_taken_over_and_a_cancel_reaches_the_replica_running_it() {
    let Some((_place, stores)) = replicas_on_postgres(2) else {
        return;
    };
    let (a, b) = (&stores[0], &stores[1]);
    beat(a, "a");
    beat(b, "b");
    task(a, "ET-1", "development", Some("developer"));
    let job = a
        .call_sync(|c| jobs::claim_next(c, "a", T0))
        .unwrap()
        .unwrap();
    silent_for(b, "a", TTL + Duration::from_secs(1));
    let expired = b.call_sync(|c| jobs::requeue_expired(c, TTL, T0)).unwrap();
    assert_eq!(expired.requeued, 1);
    let result = jobs::JobResult::default();
    assert_eq!(
        a.call_sync(|c| jobs::finish(c, job.id, job.claim, true, &result, T0))
            .unwrap(),
        None
    );
    let taken = b
        .call_sync(|c| jobs::claim_next(c, "b", T0))
        .unwrap()
        .unwrap();
    assert_eq!((taken.id, taken.claim), (job.id, job.claim + 1));

    // Cancelled through A: B is asked to stop it; A does not end it.
    let t2 = task(a, "ET-2", "development", Some("developer"));
    let running = b
        .call_sync(|c| jobs::claim_next(c, "b", T0))
        .unwrap()
        .unwrap();
    assert_eq!(running.task_id, t2);
    assert_eq!(cancel(a, t2), [running.id]);
    assert!(
        !a.call_sync(|c| jobs::end_cancelled_orphan(c, running.id, TTL, T0))
            .unwrap()
    );
    assert_eq!(
        b.call_sync(|c| jobs::stop_requested(c, "b")).unwrap(),
        [running.id]
    );
    assert!(
        a.call_sync(|c| jobs::stop_requested(c, "a"))
            .unwrap()
            .is_empty()
    );
    assert_eq!(job_row(a, running.id).0, "running");
    // B goes silent before stopping it: the take-over ends it instead of queueing it.
    silent_for(a, "b", TTL + Duration::from_secs(1));
    let expired = a.call_sync(|c| jobs::requeue_expired(c, TTL, T0)).unwrap();
    assert_eq!((expired.requeued, expired.ended), (1, 1));
    assert_eq!(job_row(a, running.id).0, "failed");
}
