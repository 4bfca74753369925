//! A serving replica among replicas (issue 15): it registers and heartbeats, `/queue` lists the
//! replicas, a graceful stop marks it stopped, and a replica that fences itself (no heartbeat
//! in time) stops its agents and claims nothing until a heartbeat succeeds again.

mod common;
use common::backends;

use std::time::Duration;

use common::*;

/// A pipeline with a slow analyst and a long lease time, so the heartbeat
/// loop (every third of it) stays out of the way of a test that moves the fence by hand.
async fn spawn_slow(peers: &Peers, pid_file: &std::path::Path) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let bare = bare_repo(dir.path());
    spawn_replica(dir, peers, &bare, pid_file, None).await
}

/// A replica with its own directory (repos), on `db_url` when given.
async fn spawn_replica(
    dir: tempfile::TempDir,
    peers: &Peers,
    bare: &std::path::Path,
    pid_file: &std::path::Path,
    db_url: Option<&str>,
) -> TestApp {
    let mut cfg = test_config(dir.path());
    peers.configure(&mut cfg, bare.to_str().unwrap());
    cfg.db_url = db_url.map(str::to_string);
    cfg.reconcile.enabled = Some(false);
    cfg.replicas.lease_ttl = Duration::from_secs(600);
    cfg.replicas.name = Some("orch-test".into());
    cfg.agents.insert(
        "analyst".into(),
        slow_agent(pid_file, Duration::from_secs(600)),
    );
    TestApp::spawn_in(dir, cfg).await
}

/// ET-42 started, and its slow analyst running (its pid recorded).
async fn analyst_running(app: &TestApp, pid_file: &std::path::Path) {
    post_plane(app, plane_webhook("In Progress", "started")).await;
    eventually(
        "the analyst is running",
        Duration::from_secs(20),
        || async { !recorded_pids(pid_file).is_empty() },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_lists_this_replica_alive_with_its_running_jobs_and_a_stop_marks_it_stopped() {
    let peers = Peers::start().await;
    let pids = tempfile::tempdir().unwrap();
    let pid_file = pids.path().join("children.pid");
    let app = spawn_slow(&peers, &pid_file).await;
    analyst_running(&app, &pid_file).await;
    let q = get_json(&app, "/queue").await;
    let me = app.state.replica.to_string();
    assert!(me.starts_with("orch-test:"), "{me}");
    let replicas = q["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 1, "{q}");
    let r = &replicas[0];
    assert_eq!(r["id"], me.as_str());
    assert_eq!(r["self"], true);
    assert_eq!(r["alive"], true);
    assert_eq!(r["running_jobs"], 1);
    assert_eq!(r["pid"], std::process::id());
    assert_eq!(r["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        r["listen"].as_str().map(|l| format!("http://{l}")),
        Some(app.url("")),
        "{r}"
    );
    assert!(
        r["started_at"].is_string() && r["seen_at"].is_string(),
        "{r}"
    );
    let metrics = get_text(&app, "/metrics").await;
    assert!(metrics.contains("orch_replicas_alive 1"), "{metrics}");
    assert!(
        metrics.contains("orch_jobs_requeued_expired_total 0"),
        "{metrics}"
    );

    let store = app.state.store.clone();
    let ttl = app.state.config.replicas.lease_ttl;
    app.stop().await;
    let after = store
        .call(move |c| orch::store::replicas::list(c, ttl))
        .await
        .unwrap();
    assert_eq!(after.len(), 1);
    assert!(
        !after[0].alive && after[0].stopped_at.is_some(),
        "{after:?}"
    );
    assert_eq!(after[0].running_jobs, 0, "the interrupted job was released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_replica_stops_its_agents_and_claims_nothing_until_a_heartbeat_succeeds() {
    let peers = Peers::start().await;
    let pids = tempfile::tempdir().unwrap();
    let pid_file = pids.path().join("children.pid");
    let app = spawn_slow(&peers, &pid_file).await;
    analyst_running(&app, &pid_file).await;
    let child = recorded_pids(&pid_file)[0];
    let task = task_of(&app, "ET-42").await.unwrap();

    // No heartbeat in time: the agent is killed and its job queued again, attempt given back.
    assert!(app.state.liveness.fence());
    eventually(
        "the agent's child is gone",
        Duration::from_secs(10),
        || async { process_gone(child) },
    )
    .await;
    eventually(
        "the job is queued again",
        Duration::from_secs(10),
        || async {
            let jobs = task_jobs(&app, task.id).await;
            jobs.len() == 1
                && jobs[0].status == orch::store::JobStatus::Queued
                && jobs[0].attempts == 0
        },
    )
    .await;
    // While fenced nothing is claimed, however often the worker is woken (it polls every 1 s).
    let until = tokio::time::Instant::now() + Duration::from_millis(2500);
    while tokio::time::Instant::now() < until {
        app.state.pipeline.job_wakeup.notify_one();
        let jobs = task_jobs(&app, task.id).await;
        assert_eq!(
            jobs[0].status,
            orch::store::JobStatus::Queued,
            "claimed while fenced"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A heartbeat succeeds: the fence comes down and the job runs again, under a new claim.
    assert!(app.state.liveness.heartbeat_ok(tokio::time::Instant::now()));
    app.state.pipeline.job_wakeup.notify_one();
    eventually(
        "the analyst runs again",
        Duration::from_secs(20),
        || async { recorded_pids(&pid_file).len() == 2 },
    )
    .await;
    let jobs = task_jobs(&app, task.id).await;
    assert_eq!(jobs[0].status, orch::store::JobStatus::Running);
    assert_eq!(jobs[0].claim, 2);
    app.stop().await;
}

/// Two replicas on one PostgreSQL database: B runs the analyst; A starts (and, on PostgreSQL,
/// does not take B's running job at startup); a cancel handled by A reaches B, which stops
/// its agent; the job ends cancelled and A sees B's heartbeat in `/queue`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_handled_by_one_replica_stops_the_agent_another_replica_runs() {
    let Some((_schema, url)) = backends::pg_schema() else {
        return;
    };
    let peers = Peers::start().await;
    let shared = tempfile::tempdir().unwrap();
    let bare = bare_repo(shared.path());
    let (pid_a, pid_b) = (shared.path().join("a.pid"), shared.path().join("b.pid"));
    let b = spawn_replica(
        tempfile::tempdir().unwrap(),
        &peers,
        &bare,
        &pid_b,
        Some(&url),
    )
    .await;
    post_plane(&b, plane_webhook("In Progress", "started")).await;
    eventually("B runs the analyst", Duration::from_secs(30), || async {
        !recorded_pids(&pid_b).is_empty()
    })
    .await;
    let child = recorded_pids(&pid_b)[0];
    let task = task_of(&b, "ET-42").await.unwrap();

    let a = spawn_replica(
        tempfile::tempdir().unwrap(),
        &peers,
        &bare,
        &pid_a,
        Some(&url),
    )
    .await;
    let job = &task_jobs(&a, task.id).await[0];
    assert_eq!(
        (job.status, job.claim),
        (orch::store::JobStatus::Running, 1),
        "A's start left B's job alone"
    );
    let q = get_json(&a, "/queue").await;
    let replicas = q["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 2, "{q}");
    assert!(replicas.iter().all(|r| r["alive"] == true), "{q}");
    let b_row = replicas
        .iter()
        .find(|r| r["id"] == b.state.replica.as_str())
        .unwrap();
    assert_eq!(
        (b_row["self"].clone(), b_row["running_jobs"].clone()),
        (false.into(), 1.into())
    );

    // Only A processes deliveries from here on.
    assert!(b.state.loops.inbox.stop(Duration::from_secs(5)).await);
    post_plane(&a, plane_webhook("Cancelled", "cancelled")).await;
    eventually("the task is cancelled", Duration::from_secs(20), || async {
        task_of(&a, "ET-42").await.unwrap().stage == "cancelled"
    })
    .await;
    eventually(
        "B's agent child is gone",
        Duration::from_secs(10),
        || async { process_gone(child) },
    )
    .await;
    eventually(
        "the job ended cancelled",
        Duration::from_secs(10),
        || async {
            let jobs = task_jobs(&a, task.id).await;
            jobs[0].status == orch::store::JobStatus::Failed
                && jobs[0].error.as_deref() == Some("cancelled")
        },
    )
    .await;
    assert!(recorded_pids(&pid_a).is_empty(), "A never ran the analyst");
    a.stop().await;
    b.stop().await;
}

/// The run of a job that was taken over (another replica claimed it while this one was taken
/// for dead) does not push, and its end writes nothing: the claim fences both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_lost_its_claim_neither_pushes_nor_records_its_end() {
    let peers = Peers::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bare = bare_repo(dir.path());
    let go = dir.path().join("go");
    let mut cfg = test_config(dir.path());
    peers.configure(&mut cfg, bare.to_str().unwrap());
    cfg.reconcile.enabled = Some(false);
    cfg.worker.concurrency = 1;
    // The developer commits, then waits for the test before it ends (and orch pushes).
    let developer = format!(
        "{}/tests/agents/developer.sh && while [ ! -e \"$GO_FILE\" ]; do sleep 0.05; done",
        env!("CARGO_MANIFEST_DIR")
    );
    cfg.agents.insert(
        "developer".into(),
        orch::config::AgentConfig {
            command: vec![
                "/usr/bin/env".into(),
                format!("GO_FILE={}", go.display()),
                "/bin/sh".into(),
                "-c".into(),
                developer,
            ],
            timeout: Duration::from_secs(60),
            push: true,
        },
    );
    cfg.agents.insert("analyst".into(), agent("analyst"));
    let app = TestApp::spawn_in(dir, cfg).await;
    let now = app.state.clock.now();
    let (dev_task, next_task) = (
        insert_task(&app, "ET-1", "development", now).await,
        insert_task(&app, "ET-2", "analysis", now).await,
    );
    let enqueue = |task_id: i64, agent: &'static str, stage: &'static str| {
        let store = app.state.store.clone();
        async move {
            store
                .call(move |c| orch::store::jobs::enqueue(c, task_id, agent, stage, now))
                .await
                .unwrap()
                .0
        }
    };
    let job = enqueue(dev_task.id, "developer", "development").await;
    app.state.pipeline.job_wakeup.notify_one();
    eventually("the developer runs", Duration::from_secs(20), || async {
        task_jobs(&app, dev_task.id).await[0].status == orch::store::JobStatus::Running
    })
    .await;
    // Another (live) replica takes the job over meanwhile.
    app.state
        .store
        .call(move |c| {
            let other = orch::store::replicas::ReplicaInfo {
                id: "other".into(),
                host: "elsewhere".into(),
                pid: 1,
                version: "0".into(),
                listen: None,
            };
            orch::store::replicas::heartbeat(c, &other)?;
            c.execute(
                "UPDATE jobs SET claim = claim + 1, claimed_by = 'other' WHERE id = ?1",
                orch::args![job.id],
            )
        })
        .await
        .unwrap();
    // The one worker slot frees only when the developer's run has ended: the next job runs.
    enqueue(next_task.id, "analyst", "analysis").await;
    std::fs::write(&go, "").unwrap();
    eventually("the next job ran", Duration::from_secs(30), || async {
        task_jobs(&app, next_task.id).await[0].status != orch::store::JobStatus::Queued
    })
    .await;
    assert_eq!(
        common::git_head(&bare, &dev_task.branch),
        None,
        "not pushed"
    );
    let after = &task_jobs(&app, dev_task.id).await[0];
    assert_eq!(
        (after.status, after.claim, after.finished_at),
        (orch::store::JobStatus::Running, 2, None),
        "the old run wrote nothing"
    );
    assert_eq!(task_of(&app, "ET-1").await.unwrap().stage, "development");
    app.stop().await;
}
