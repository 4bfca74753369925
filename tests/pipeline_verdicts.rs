//! Verdicts from people (Plane states, Gitea reviews) and what the rules do with them.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plane_rejection_reruns_the_analysis_with_the_feedback() {
    let peers = Peers::start().await;
    let app = spawn_with_agents(&peers, vec![("analyst", agent("analyst"))]).await;
    post_plane(&app, plane_webhook("In Progress", "started")).await;
    eventually(
        "analysis awaits review",
        Duration::from_secs(20),
        || async {
            peers
                .plane_states_set()
                .await
                .contains(&state_id("In Review"))
        },
    )
    .await;
    post_plane(&app, plane_webhook("Rejected", "started")).await;
    let task = task_of(&app, "ET-42").await.unwrap();
    let worktree = app.state.pipeline.git.worktree_path(&task.branch);
    eventually(
        "the analyst ran again with the feedback",
        Duration::from_secs(20),
        || async {
            std::fs::read_to_string(worktree.join("ANALYSIS.md"))
                .is_ok_and(|t| t.contains("feedback: rejected in Plane by raj"))
        },
    )
    .await;
    let t = task_of(&app, "ET-42").await.unwrap();
    assert_eq!(t.stage, "analysis");
    assert_eq!(t.feedback.as_deref(), Some("rejected in Plane by raj"));
    let id = t.id;
    let analyst_jobs = task_jobs(&app, id).await.len();
    assert_eq!(analyst_jobs, 2);
    app.stop().await;
}

fn review_event(kind: &str, branch: &str, content: &str) -> Vec<u8> {
    serde_json::to_vec_pretty(&serde_json::json!({
        "action": "reviewed", "number": 12,
        "pull_request": {"id": 1, "number": 12, "title": "t", "state": "open",
                         "head": {"label": branch, "ref": branch, "sha": "abc"}, "base": {"ref": "main"}},
        "repository": {"id": 42, "name": "widget", "full_name": REPO},
        "sender": {"id": 5, "login": "lead"},
        "review": {"type": format!("pull_request_review_{kind}"), "content": content}
    }))
    .unwrap()
}

#[tokio::test]
async fn gitea_reviews_count_as_verdicts_where_the_rules_say_so() {
    let peers = Peers::start().await;
    let app = TestApp::spawn(|c| {
        peers.configure(c, "unused");
        c.reconcile.enabled = Some(false);
    })
    .await;
    let now = app.state.clock.now();
    insert_task(&app, "ET-1", "review", now).await;
    insert_task(&app, "ET-2", "review", now).await;
    insert_task(&app, "ET-3", "development", now).await;
    let http = client();
    for (kind, branch, content) in [
        ("approved", "feature/ET-1-work", "LGTM"),
        ("rejected", "feature/ET-2-work", "needs tests"),
        ("approved", "feature/ET-3-work", "early praise"),
    ] {
        let r = http
            .post(app.url("/webhooks/gitea"))
            .header("X-Gitea-Event-Type", format!("pull_request_review_{kind}"))
            .body(review_event(kind, branch, content))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
    }
    processed(&app).await;
    assert_eq!(
        task_of(&app, "ET-1").await.unwrap().stage,
        "testing",
        "approved review passes the gate"
    );
    let rejected = task_of(&app, "ET-2").await.unwrap();
    assert_eq!(rejected.stage, "development");
    assert_eq!(rejected.feedback.as_deref(), Some("needs tests"));
    assert_eq!(
        task_of(&app, "ET-3").await.unwrap().stage,
        "development",
        "development takes no review verdict"
    );
    app.stop().await;
}

#[tokio::test]
async fn events_caused_by_orch_itself_and_unconfigured_projects_are_ignored() {
    let peers = Peers::start().await;
    let app = TestApp::spawn(|c| {
        peers.configure(c, "unused");
        c.reconcile.enabled = Some(false);
        // The fixture's actor: as if orch's own API key had made the change.
        c.plane.actor_id = Some("88fc36c8-73b0-4547-81c7-96b70f61835e".into());
    })
    .await;
    post_plane(&app, plane_webhook("In Progress", "started")).await;
    let mut other: serde_json::Value =
        serde_json::from_slice(&plane_webhook("In Progress", "started")).unwrap();
    other["activity"]["actor"]["id"] = serde_json::json!("someone-else");
    other["data"]["project"] = serde_json::json!("not-a-configured-project");
    post_plane(&app, serde_json::to_vec(&other).unwrap()).await;
    processed(&app).await;
    let tasks: i64 = app
        .state
        .store
        .call(|c| c.query_row("SELECT COUNT(*) FROM tasks", orch::args![], |r| r.get(0)))
        .await
        .unwrap();
    assert_eq!(tasks, 0);
    let failed: i64 = app
        .state
        .store
        .call(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM inbox WHERE error IS NOT NULL",
                orch::args![],
                |r| r.get(0),
            )
        })
        .await
        .unwrap();
    assert_eq!(failed, 0, "ignored, not failed");
    app.stop().await;
}
