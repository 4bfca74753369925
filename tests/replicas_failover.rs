//! Two `orch serve` replicas on one PostgreSQL schema: only the `sweep` lease holder sweeps
//! (and dispatches to Plane); when it dies without releasing, the other takes over within
//! `lease_ttl` + 1.5 s; a graceful stop hands over at once. Each replica runs in a runtime of
//! its own, so a kill (`shutdown_background`) drops everything it was doing, like `kill -9`.
//! Skipped without `ORCH_TEST_PG_URL` outside CI (see `store_portable/backends.rs`).

mod common;
use common::backends;

use std::time::{Duration, Instant};

use orch::app::{AppState, Application};
use orch::store::leases;

struct Replica {
    rt: Option<tokio::runtime::Runtime>,
    state: AppState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Replica {
    fn start(name: &str, url: &str, ttl: Duration) -> Replica {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = common::test_config(dir.path());
        cfg.db_url = Some(url.to_string());
        cfg.replicas.name = Some(name.to_string());
        cfg.replicas.lease_ttl = ttl;
        let app = rt.block_on(Application::build(cfg)).unwrap();
        let state = app.state().clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let done = rt.spawn(app.run_until(async move {
            let _ = rx.await;
        }));
        Replica {
            rt: Some(rt),
            state,
            shutdown: Some(tx),
            done: Some(done),
            _dir: dir,
        }
    }

    fn id(&self) -> String {
        self.state.replica.to_string()
    }

    fn sweeps(&self) -> u64 {
        self.state.metrics.reconcile_sweeps.get()
    }

    /// Like `kill -9`: every task of the replica dropped mid-step, no lease released.
    fn kill(mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }

    /// Like SIGTERM: the loops stop and release their leases.
    fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let (Some(rt), Some(done)) = (self.rt.take(), self.done.take()) {
            rt.block_on(done).unwrap().unwrap();
        }
    }
}

fn holder(state: &AppState, name: &str) -> Option<(String, i64)> {
    let name = name.to_string();
    state
        .store
        .call_sync(move |c| leases::holder(c, &name))
        .unwrap()
}

/// Polls `cond` every 20 ms until it holds; panics after `timeout`.
fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts two replicas and waits until one of them holds `sweep` and has swept; returns
/// (holder, other).
fn two_replicas(url: &str, ttl: Duration) -> (Replica, Replica) {
    let a = Replica::start("a", url, ttl);
    let b = Replica::start("b", url, ttl);
    let mut sweeping = None;
    eventually("one replica to hold sweep", Duration::from_secs(10), || {
        sweeping = holder(&a.state, "sweep");
        sweeping.is_some()
    });
    let (id, _) = sweeping.unwrap();
    let (h, o) = if id == a.id() { (a, b) } else { (b, a) };
    assert_eq!(id, h.id());
    eventually("the holder's first sweep", Duration::from_secs(10), || {
        h.sweeps() > 0
    });
    eventually(
        "dispatch:plane to follow sweep",
        Duration::from_secs(5),
        || holder(&h.state, "dispatch:plane").is_some_and(|(id, _)| id == h.id()),
    );
    assert_eq!(o.sweeps(), 0, "only the lease holder sweeps");
    (h, o)
}

#[test]
fn the_other_replica_sweeps_within_ttl_after_the_holder_dies() {
    let Some((_schema, url)) = backends::pg_schema() else {
        return;
    };
    let ttl = Duration::from_secs(1);
    let (h, o) = two_replicas(&url, ttl);
    let (_, token) = holder(&h.state, "sweep").unwrap();
    let queue = o.state.clone();
    let killed = Instant::now();
    h.kill();
    let limit = ttl + Duration::from_millis(1500);
    eventually("the other replica to sweep", limit, || o.sweeps() > 0);
    let taken = killed.elapsed();
    assert!(taken <= limit, "handover took {taken:?}");
    let (id, new_token) = holder(&queue, "sweep").unwrap();
    assert_eq!(id, o.id());
    assert_eq!(new_token, token + 1, "the takeover bumped the token");
    eventually(
        "dispatch:plane to follow sweep",
        Duration::from_secs(5),
        || holder(&queue, "dispatch:plane").is_some_and(|(id, _)| id == o.id()),
    );
    o.stop();
}

#[test]
fn a_graceful_stop_hands_the_sweep_over_at_once() {
    let Some((_schema, url)) = backends::pg_schema() else {
        return;
    };
    // Long enough that a handover by expiry would fail the deadline below.
    let ttl = Duration::from_secs(30);
    let (h, o) = two_replicas(&url, ttl);
    let queue = o.state.clone();
    let stopped_id = h.id();
    h.stop();
    let stopped = Instant::now();
    // Released (the other replica may have taken it already).
    assert_ne!(
        holder(&queue, "sweep").map(|(id, _)| id),
        Some(stopped_id),
        "the stopped replica released sweep"
    );
    eventually("the other replica to sweep", Duration::from_secs(3), || {
        o.sweeps() > 0
    });
    assert!(stopped.elapsed() < ttl);
    assert_eq!(holder(&queue, "sweep").map(|(id, _)| id), Some(o.id()));
    o.stop();
}
