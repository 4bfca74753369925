//! Gate failures, retries, timeouts and crash recovery in the pipeline.

mod common;

use std::time::Duration;

use common::*;
use orch::pipeline::Outcome;
use orch::store::{self, Trigger};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, ResponseTemplate};

async fn red_ci(peers: &Peers) {
    Mock::given(method("GET"))
        .and(path_regex(r"^/api/v1/repos/acme/widget/branches/.+$"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"name": "b", "commit": {"id": "abc123"}})),
        )
        .mount(&peers.gitea)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(
            r"^/api/v1/repos/acme/widget/commits/abc123/statuses$",
        ))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("X-Total-Count", "1")
                .set_body_json(
                    serde_json::json!([{"id": 1, "status": "failure", "context": "ci/test"}]),
                ),
        )
        .mount(&peers.gitea)
        .await;
}

#[tokio::test]
async fn a_red_gate_is_reported_once_for_webhooks_and_agents_and_never_for_the_reconciler() {
    let peers = Peers::start().await;
    red_ci(&peers).await;
    let app = TestApp::spawn(|c| {
        peers.configure(c, "unused");
        c.reconcile.enabled = Some(false);
    })
    .await;
    let now = app.state.clock.now();
    let loud = insert_task(&app, "ET-1", "development", now).await;
    let quiet = insert_task(&app, "ET-2", "development", now).await;
    let p = &app.state.pipeline;

    for trigger in [Trigger::Webhook, Trigger::AgentFinished, Trigger::Webhook] {
        let out = p.advance(loud.id, trigger).await.unwrap();
        assert!(matches!(out, Outcome::Held { .. }), "{out:?}");
    }
    delivered(&app).await;
    let texts = peers.telegram_texts().await;
    let failures: Vec<_> = texts
        .iter()
        .filter(|t| t.contains("ET-1: the development gate is red"))
        .collect();
    assert_eq!(failures.len(), 1, "{texts:?}");
    assert!(failures[0].contains("CI failure"), "{failures:?}");
    let comments = peers.plane_comments().await;
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert_eq!(comments[0]["external_source"], "orch");

    for _ in 0..5 {
        let out = p.advance(quiet.id, Trigger::Reconciler).await.unwrap();
        assert!(matches!(out, Outcome::Held { .. }));
    }
    delivered(&app).await;
    assert!(
        !peers
            .telegram_texts()
            .await
            .iter()
            .any(|t| t.contains("ET-2"))
    );
    assert_eq!(
        peers.plane_comments().await.len(),
        1,
        "the reconciler never comments on red"
    );
    let t = task_of(&app, "ET-2").await.unwrap();
    assert_eq!(t.stage, "development");
    app.stop().await;
}

/// The task's one job, once it has failed for good (retries used up).
async fn failed_for_good(app: &TestApp, work_item: &str) -> store::Job {
    eventually(
        "the job fails for good",
        Duration::from_secs(20),
        || async {
            let t = task_of(app, work_item).await.unwrap();
            let jobs = task_jobs(app, t.id).await;
            jobs.len() == 1 && jobs[0].status == store::JobStatus::Failed
        },
    )
    .await;
    let t = task_of(app, work_item).await.unwrap();
    task_jobs(app, t.id).await.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_agent_is_killed_with_its_children_retried_then_reported_blocked() {
    let peers = Peers::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bare = bare_repo(dir.path());
    let rules = rules_copy(
        dir.path(),
        &[(
            "pipeline.toml",
            "[agents.analyst]\nmax_attempts = 3\nbackoff = \"30s\"",
            "[agents.analyst]\nmax_attempts = 2\nbackoff = \"0s\"",
        )],
    );
    let pid_file = dir.path().join("children.pid");
    let mut cfg = test_config(dir.path());
    peers.configure(&mut cfg, bare.to_str().unwrap());
    cfg.rules_dir = rules;
    cfg.reconcile.enabled = Some(false);
    cfg.agents.insert(
        "analyst".into(),
        slow_agent(&pid_file, Duration::from_millis(500)),
    );
    let app = TestApp::spawn_in(dir, cfg).await;
    app.state
        .pipeline
        .start(&work_item("ET-9", "Slow"), Trigger::Webhook)
        .await
        .unwrap();

    let job = &failed_for_good(&app, "ET-9").await;
    assert_eq!(job.attempts, 2, "retried once, then given up");
    assert_eq!(job.error.as_deref(), Some("timed out"));

    // Every child the agent started died with it.
    let pids = recorded_pids(&pid_file);
    assert_eq!(pids.len(), 2, "one child per attempt");
    eventually("children are gone", Duration::from_secs(5), || async {
        pids.iter().all(|pid| process_gone(*pid))
    })
    .await;

    eventually("blocked is reported", Duration::from_secs(5), || async {
        peers
            .plane_states_set()
            .await
            .contains(&state_id("Blocked"))
            && peers
                .telegram_texts()
                .await
                .iter()
                .any(|t| t.contains("ET-9: analyst failed 2 times"))
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_left_running_by_a_crash_is_run_to_completion_after_a_restart() {
    let peers = Peers::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bare = bare_repo(dir.path());
    let mut cfg = test_config(dir.path());
    peers.configure(&mut cfg, bare.to_str().unwrap());
    cfg.reconcile.enabled = Some(false);
    cfg.agents.insert("analyst".into(), agent("analyst"));
    // The "crashed" process: a task whose analyst job was claimed (running) when it died.
    {
        let store = open_store(&cfg);
        let now = orch::clock::Timestamp::from_millis(1_795_000_000_000);
        let new = store::NewTask {
            work_item: "ET-5".into(),
            plane_project_id: Some(PROJECT_ID.into()),
            title: "Crash".into(),
            repo: REPO.into(),
            branch: "feature/ET-5-crash".into(),
            stage: "analysis".into(),
            ..Default::default()
        };
        store
            .call_sync(|c| {
                store::tasks::create_atomic(c, &new, Some("analyst"), "v0", Trigger::Webhook, now)
            })
            .unwrap();
        let claimed = store
            .call_sync(|c| store::jobs::claim_next(c, "crashed-process", now))
            .unwrap()
            .unwrap();
        assert_eq!(claimed.status, store::JobStatus::Running);
    }
    let app = TestApp::spawn_in(dir, cfg).await;
    eventually(
        "the interrupted job completes",
        Duration::from_secs(20),
        || async {
            let t = task_of(&app, "ET-5").await.unwrap();
            let jobs = task_jobs(&app, t.id).await;
            jobs.len() == 1 && jobs[0].status == store::JobStatus::Done
        },
    )
    .await;
    let t = task_of(&app, "ET-5").await.unwrap();
    assert!(
        app.state
            .pipeline
            .git
            .worktree_path(&t.branch)
            .join("ANALYSIS.md")
            .exists()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_kills_a_running_agent_and_queues_its_job_again_without_spending_an_attempt() {
    let peers = Peers::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bare = bare_repo(dir.path());
    let pid_file = dir.path().join("children.pid");
    let mut cfg = test_config(dir.path());
    peers.configure(&mut cfg, bare.to_str().unwrap());
    cfg.reconcile.enabled = Some(false);
    cfg.agents.insert(
        "analyst".into(),
        slow_agent(&pid_file, Duration::from_secs(600)),
    );
    let app = TestApp::spawn_in(dir, cfg.clone()).await;
    app.state
        .pipeline
        .start(&work_item("ET-8", "Deploy"), Trigger::Webhook)
        .await
        .unwrap();
    eventually("the agent is running", Duration::from_secs(20), || async {
        !recorded_pids(&pid_file).is_empty()
    })
    .await;
    let child = recorded_pids(&pid_file)[0];

    // A deploy: the service stops while the agent runs.
    let dir = app.stop_keeping_dir().await;
    eventually(
        "the agent's child is gone",
        Duration::from_secs(5),
        || async { process_gone(child) },
    )
    .await;
    let store = open_store(&cfg);
    let jobs = store
        .call_sync(|c| {
            let t = store::tasks::get_by_work_item(c, "ET-8")?.expect("the task");
            store::jobs::for_task(c, t.id)
        })
        .unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].status, store::JobStatus::Queued, "{jobs:?}");
    assert_eq!(jobs[0].attempts, 0, "the interrupted run is not counted");
    drop(store);

    // After the restart the job runs again, as its first attempt.
    cfg.agents.insert("analyst".into(), agent("analyst"));
    let app = TestApp::spawn_in(dir, cfg).await;
    eventually("the job completes", Duration::from_secs(20), || async {
        let t = task_of(&app, "ET-8").await.unwrap();
        let jobs = task_jobs(&app, t.id).await;
        jobs.len() == 1 && jobs[0].status == store::JobStatus::Done && jobs[0].attempts == 1
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_for_a_stage_its_task_has_left_is_not_run() {
    let peers = Peers::start().await;
    let app = spawn_with_agents(&peers, vec![("developer", agent("developer"))]).await;
    let now = app.state.clock.now();
    // A developer retry was waiting when the task moved on to review.
    let task = insert_task(&app, "ET-7", "review", now).await;
    let id = task.id;
    app.state
        .store
        .call(move |c| store::jobs::enqueue(c, id, "developer", "development", now))
        .await
        .unwrap();
    app.state.pipeline.job_wakeup.notify_one();
    eventually("the job is settled", Duration::from_secs(20), || async {
        task_jobs(&app, id)
            .await
            .iter()
            .all(|j| j.status == store::JobStatus::Failed)
    })
    .await;
    let jobs = task_jobs(&app, id).await;
    assert_eq!(
        jobs[0].error.as_deref(),
        Some("the task left development (now in review)")
    );
    assert!(
        !app.state.pipeline.git.worktree_path(&task.branch).exists(),
        "the agent never ran"
    );
    assert_eq!(task_of(&app, "ET-7").await.unwrap().stage, "review");
    app.stop().await;
}

/// The git remote is unreachable: every run fails before its agent starts. Those runs count
/// against `start_attempts` (3 here), not `max_attempts` (1): the job is tried three times,
/// then the task is reported blocked with git's error, and the agent never ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_worktree_cannot_be_prepared_has_its_own_budget_of_runs() {
    let peers = Peers::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_copy(
        dir.path(),
        &[(
            "pipeline.toml",
            "[agents.analyst]\nmax_attempts = 3\nbackoff = \"30s\"",
            "[agents.analyst]\nmax_attempts = 1\nstart_attempts = 3\nbackoff = \"0s\"",
        )],
    );
    let ran = dir.path().join("ran");
    let mut cfg = test_config(dir.path());
    peers.configure(&mut cfg, "/nonexistent/remote.git");
    cfg.rules_dir = rules;
    cfg.reconcile.enabled = Some(false);
    cfg.agents.insert(
        "analyst".into(),
        orch::config::AgentConfig {
            command: vec!["touch".into(), ran.display().to_string()],
            timeout: Duration::from_secs(30),
            push: false,
        },
    );
    let app = TestApp::spawn_in(dir, cfg).await;
    app.state
        .pipeline
        .start(&work_item("ET-11", "Remote down"), Trigger::Webhook)
        .await
        .unwrap();

    let job = &failed_for_good(&app, "ET-11").await;
    assert_eq!(job.attempts, 3, "start_attempts, not max_attempts");
    let error = job.error.as_deref().unwrap_or_default();
    assert!(
        error.starts_with("could not start: worktree for"),
        "{error}"
    );
    assert!(!ran.exists(), "the agent never ran");
    eventually("blocked is reported", Duration::from_secs(5), || async {
        peers
            .plane_states_set()
            .await
            .contains(&state_id("Blocked"))
    })
    .await;
    app.stop().await;
}
