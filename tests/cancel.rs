//! A work item cancelled in Plane: the task ends in the rules' cancel stage, its agent is
//! stopped with its children, queued work is dropped and the worktree removed.

mod common;

use std::time::Duration;

use common::*;
use orch::store::{self, Trigger};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_in_plane_stops_the_agent_and_ends_the_task() {
    let peers = Peers::start().await;
    let pids = tempfile::tempdir().unwrap();
    let pid_file = pids.path().join("children.pid");
    let analyst = slow_agent(&pid_file, Duration::from_secs(600));
    let app = spawn_with_agents(&peers, vec![("analyst", analyst)]).await;

    post_plane(&app, plane_webhook("In Progress", "started")).await;
    eventually(
        "the analyst is running",
        Duration::from_secs(20),
        || async { !recorded_pids(&pid_file).is_empty() },
    )
    .await;
    let child = recorded_pids(&pid_file)[0];
    let task = task_of(&app, "ET-42").await.unwrap();
    let worktree = app.state.pipeline.git.worktree_path(&task.branch);
    assert!(worktree.exists());

    // Someone cancels the work item: any state of Plane's "cancelled" group.
    post_plane(&app, plane_webhook("Cancelled", "cancelled")).await;
    eventually("the task is cancelled", Duration::from_secs(20), || async {
        task_of(&app, "ET-42").await.unwrap().stage == "cancelled"
    })
    .await;
    eventually(
        "the agent's child is gone",
        Duration::from_secs(5),
        || async { process_gone(child) },
    )
    .await;
    eventually(
        "the job ended as cancelled",
        Duration::from_secs(5),
        || async {
            let jobs = task_jobs(&app, task.id).await;
            jobs.len() == 1
                && jobs[0].status == store::JobStatus::Failed
                && jobs[0].error.as_deref() == Some("cancelled")
        },
    )
    .await;
    eventually(
        "the worktree is removed",
        Duration::from_secs(5),
        || async { !worktree.exists() },
    )
    .await;
    let history = task_history(&app, task.id).await;
    let last = history.last().unwrap();
    assert_eq!(
        (
            last.from_stage.as_deref(),
            last.to_stage.as_str(),
            last.trigger
        ),
        (Some("analysis"), "cancelled", Trigger::Webhook)
    );

    // The sweep leaves it alone, and a replay of the cancel (or a late start) changes nothing.
    post_plane(&app, plane_webhook("Cancelled", "cancelled")).await;
    post_plane(&app, plane_webhook("In Progress", "started")).await;
    processed(&app).await;
    assert_eq!(task_of(&app, "ET-42").await.unwrap().stage, "cancelled");
    assert_eq!(task_jobs(&app, task.id).await.len(), 1, "no job runs again");
    app.stop().await;
}

/// The person cancelled the item but that webhook was lost; an approval made earlier arrives
/// now and moves the task on. Writing "In Progress" would erase the cancel for good: orch
/// reads the state first, finds it cancelled, and cancels the task instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_whose_webhook_was_lost_is_found_before_orch_overwrites_it() {
    use wiremock::matchers::{method, path_regex};
    use wiremock::{Mock, ResponseTemplate};

    let peers = Peers::start().await;
    let app = TestApp::spawn(|c| {
        peers.configure(c, "unused");
        c.reconcile.enabled = Some(false);
    })
    .await;
    Mock::given(method("GET"))
        .and(path_regex(
            r"^/api/v1/workspaces/acme/projects/[^/]+/work-items/[^/]+/$",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "id": ISSUE_ID,
            "state": {"id": state_id("Cancelled"), "name": "Cancelled", "color": "#000", "group": "cancelled"}
        })))
        .with_priority(1)
        .mount(&peers.plane)
        .await;
    let task = insert_task(&app, "ET-42", "analysis", app.state.clock.now()).await;

    post_plane(&app, plane_webhook("Approved", "started")).await;
    eventually("the task is cancelled", Duration::from_secs(20), || async {
        task_of(&app, "ET-42").await.unwrap().stage == "cancelled"
    })
    .await;
    let history = task_history(&app, task.id).await;
    let moves: Vec<_> = history
        .iter()
        .map(|h| (h.to_stage.as_str(), h.trigger))
        .collect();
    assert_eq!(
        moves[moves.len() - 2..],
        [
            ("development", Trigger::Webhook),
            ("cancelled", Trigger::Reconciler)
        ],
        "{history:?}"
    );
    assert!(
        !peers
            .plane_states_set()
            .await
            .contains(&state_id("In Progress")),
        "the cancelled item's state was not overwritten"
    );
    eventually("no job is left to run", Duration::from_secs(10), || async {
        task_jobs(&app, task.id).await.iter().all(|j| {
            !matches!(
                j.status,
                store::JobStatus::Queued | store::JobStatus::Running
            )
        })
    })
    .await;
    app.stop().await;
}
