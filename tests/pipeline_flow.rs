//! The whole pipeline through the real server: webhooks in, agents as scripts, a bare git
//! remote, Plane/Gitea/Telegram as HTTP servers.

mod common;

use std::time::Duration;

use common::*;
use orch::store::{self, Trigger};

const WI: &str = "ET-42";

async fn wait_stage(app: &TestApp, stage: &str) {
    eventually(
        &format!("{WI} reaches {stage}"),
        Duration::from_secs(30),
        || async { task_of(app, WI).await.is_some_and(|t| t.stage == stage) },
    )
    .await;
}

/// Waits until the task has jobs and none of them is queued or running.
async fn wait_idle(app: &TestApp) {
    eventually("all jobs finished", Duration::from_secs(30), || async {
        let t = task_of(app, WI).await.unwrap();
        let jobs = task_jobs(app, t.id).await;
        !jobs.is_empty()
            && jobs
                .iter()
                .all(|j| matches!(j.status, store::JobStatus::Done | store::JobStatus::Failed))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_work_item_goes_from_in_progress_to_done() {
    let peers = Peers::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bare = bare_repo(dir.path());
    peers.gitea_from_bare(&bare, "success").await;
    let mut cfg = test_config(dir.path());
    peers.configure(&mut cfg, bare.to_str().unwrap());
    cfg.reconcile.enabled = Some(false); // this test is about the webhook path
    cfg.agents.insert("analyst".into(), agent("analyst"));
    cfg.agents.insert(
        "developer".into(),
        orch::config::AgentConfig {
            push: true,
            ..agent("developer")
        },
    );
    cfg.agents.insert("reviewer".into(), agent("reviewer"));
    cfg.agents.insert("tester".into(), agent("tester"));
    let app = TestApp::spawn_in(dir, cfg).await;

    // Plane: the work item moves to In Progress → task, branch, worktree, analyst job.
    post_plane(&app, plane_webhook("In Progress", "started")).await;
    wait_stage(&app, "analysis").await;
    wait_idle(&app).await;
    let task = task_of(&app, WI).await.unwrap();
    assert_eq!(task.branch, "feature/ET-42-login-redirect-loop-on-safari");
    let worktree = app.state.pipeline.git.worktree_path(&task.branch);
    assert!(
        worktree.join("ANALYSIS.md").exists(),
        "the analyst ran in the task's worktree"
    );
    // The analysis waits for a person: Plane shows In Review.
    eventually("Plane shows In Review", Duration::from_secs(10), || async {
        peers
            .plane_states_set()
            .await
            .contains(&state_id("In Review"))
    })
    .await;
    assert_eq!(task_of(&app, WI).await.unwrap().stage, "analysis");

    // A person approves in Plane.
    post_plane(&app, plane_webhook("Approved", "started")).await;
    wait_stage(&app, "development").await;
    // The developer commits; orch pushes the branch; CI (Gitea) is green → review → testing → done.
    wait_stage(&app, "done").await;

    let pushed = git_head(&bare, &task.branch).expect("branch pushed to the remote");
    assert_ne!(
        Some(pushed.clone()),
        git_head(&bare, "main"),
        "the branch carries the developer's commit"
    );
    // A finished task's worktree is removed; its branch stays in the clone.
    eventually("worktree removed", Duration::from_secs(10), || async {
        !worktree.exists()
    })
    .await;
    let clone = app.state.pipeline.git.clone_path(&task.repo).unwrap();
    assert_eq!(
        git_head(&clone, &task.branch),
        Some(pushed.clone()),
        "the branch outlives its worktree"
    );

    let history = task_history(&app, task.id).await;
    let path: Vec<_> = history
        .iter()
        .map(|h| (h.to_stage.as_str(), h.trigger))
        .collect();
    assert_eq!(
        path,
        [
            ("analysis", Trigger::Webhook),
            ("development", Trigger::Webhook),
            ("review", Trigger::AgentFinished),
            ("testing", Trigger::AgentFinished),
            ("done", Trigger::AgentFinished),
        ]
    );
    let version = app.state.rules.current().version().to_string();
    assert!(history.iter().all(|h| h.rules_version == version));

    let jobs = task_jobs(&app, task.id).await;
    let agents: Vec<_> = jobs.iter().map(|j| (j.agent.as_str(), j.status)).collect();
    assert_eq!(
        agents,
        [
            ("analyst", store::JobStatus::Done),
            ("developer", store::JobStatus::Done),
            ("reviewer", store::JobStatus::Done),
            ("tester", store::JobStatus::Done),
        ]
    );

    // Plane is what people watch: the finished task shows Done there.
    eventually("Plane shows Done", Duration::from_secs(10), || async {
        peers.plane_states_set().await.last() == Some(&state_id("Done"))
    })
    .await;
    let states = peers.plane_states_set().await;
    assert!(states.contains(&state_id("In Progress")), "{states:?}");
    delivered(&app).await;
    let texts = peers.telegram_texts().await;
    assert!(
        texts.iter().any(|t| t.contains("ET-42 entered done")),
        "{texts:?}"
    );
    assert!(
        texts.iter().any(|t| t.contains("ready for your review")),
        "{texts:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_twice_and_concurrently_makes_one_task_branch_worktree_and_job() {
    let peers = Peers::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bare = bare_repo(dir.path());
    let mut cfg = test_config(dir.path());
    peers.configure(&mut cfg, bare.to_str().unwrap());
    cfg.reconcile.enabled = Some(false);
    // No analyst command: the job stays queued/fails, which keeps this test about creation.
    let app = TestApp::spawn_in(dir, cfg).await;
    let item = work_item(WI, "Login redirect loop on Safari");
    let mut handles = Vec::new();
    for _ in 0..20 {
        let p = app.state.pipeline.clone();
        let item = item.clone();
        handles.push(tokio::spawn(async move {
            p.start(&item, Trigger::Webhook).await.unwrap()
        }));
    }
    let mut started = 0;
    for h in handles {
        if matches!(h.await.unwrap(), orch::pipeline::Outcome::Started { .. }) {
            started += 1;
        }
    }
    assert_eq!(started, 1);
    let again = app
        .state
        .pipeline
        .start(&item, Trigger::Reconciler)
        .await
        .unwrap();
    assert!(matches!(
        again,
        orch::pipeline::Outcome::AlreadyStarted { .. }
    ));

    let (tasks, jobs): (i64, i64) = app
        .state
        .store
        .call(|c| {
            Ok((
                c.query_row("SELECT COUNT(*) FROM tasks", orch::args![], |r| r.get(0))?,
                c.query_row(
                    "SELECT COUNT(*) FROM jobs WHERE agent = 'analyst'",
                    orch::args![],
                    |r| r.get(0),
                )?,
            ))
        })
        .await
        .unwrap();
    assert_eq!((tasks, jobs), (1, 1));
    let clone = app.state.config.repos_dir.join("acme/widget");
    let branches = std::process::Command::new("git")
        .args(["branch", "--list", "feature/*"])
        .current_dir(&clone)
        .output()
        .unwrap();
    let branches = String::from_utf8_lossy(&branches.stdout);
    assert_eq!(branches.lines().count(), 1, "{branches}");
    let worktrees = std::fs::read_dir(app.state.config.repos_dir.join("worktrees"))
        .unwrap()
        .count();
    assert_eq!(worktrees, 1);
    app.stop().await;
}
