//! A human gate is left only through a person's verdict, whatever its gate expression says:
//! with `analysis_approved || ci_green` and CI green, no agent, push, CI status, sweep or
//! manual advance moves the task out of analysis; a person's approval in Plane does.

mod common;

use std::time::Duration;

use common::*;
use orch::reconciler::Mode;
use orch::store::Trigger;

async fn post_gitea(app: &TestApp, event: &str, body: Vec<u8>) {
    let r = client()
        .post(app.url("/webhooks/gitea"))
        .header("X-Gitea-Event-Type", event)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_persons_verdict_leaves_a_human_gate_whatever_its_expression() {
    let peers = Peers::start().await;
    let sha = "bffeb74224043ba2feb48d137756c8a9331c449a";
    peers.gitea_every_branch_at(sha, "success").await;
    let dir = tempfile::tempdir().unwrap();
    let bare = bare_repo(dir.path());
    let rules = rules_copy(
        dir.path(),
        &[(
            "pipeline.toml",
            "gate = \"analysis_approved\"\nhuman_gate = true",
            "gate = \"analysis_approved || ci_green\"\nhuman_gate = true",
        )],
    );
    let mut cfg = test_config(dir.path());
    peers.configure(&mut cfg, bare.to_str().unwrap());
    cfg.rules_dir = rules;
    cfg.reconcile.enabled = Some(false);
    cfg.agents.insert("analyst".into(), agent("analyst"));
    let app = TestApp::spawn_in(dir, cfg).await;

    // The agent finishes: the gate is green through CI, but the task waits for a person.
    post_plane(&app, plane_webhook("In Progress", "started")).await;
    eventually(
        "the analysis awaits review",
        Duration::from_secs(20),
        || async {
            peers
                .plane_states_set()
                .await
                .contains(&state_id("In Review"))
        },
    )
    .await;
    let task = task_of(&app, "ET-42").await.unwrap();
    assert_eq!(task.stage, "analysis");

    // A push and a CI status for its branch.
    let mut push: serde_json::Value = serde_json::from_slice(&fixture("gitea_push.json")).unwrap();
    push["ref"] = serde_json::json!(format!("refs/heads/{}", task.branch));
    post_gitea(&app, "push", serde_json::to_vec(&push).unwrap()).await;
    post_gitea(&app, "status", fixture("gitea_status.json")).await;
    processed(&app).await;
    assert_eq!(task_of(&app, "ET-42").await.unwrap().stage, "analysis");

    // The sweep, and a direct advance from any non-person trigger.
    let state = &app.state;
    state.reconciler.sweep(Mode::Apply).await;
    for trigger in [
        Trigger::Webhook,
        Trigger::AgentFinished,
        Trigger::Reconciler,
        Trigger::Manual,
    ] {
        let out = state.pipeline.advance(task.id, trigger).await.unwrap();
        assert!(
            matches!(&out, orch::pipeline::Outcome::Held { reason, .. } if reason.contains("human gate")),
            "{trigger:?}: {out:?}"
        );
    }
    assert_eq!(task_of(&app, "ET-42").await.unwrap().stage, "analysis");
    // Held, but announced once: one review request in Plane.
    delivered(&app).await;
    let asks = peers
        .plane_comments()
        .await
        .iter()
        .filter(|c| {
            c["comment_html"]
                .as_str()
                .is_some_and(|h| h.contains("ready for your review"))
        })
        .count();
    assert_eq!(asks, 1);

    // A person approves in Plane: now it moves.
    post_plane(&app, plane_webhook("Approved", "started")).await;
    processed(&app).await;
    assert_eq!(task_of(&app, "ET-42").await.unwrap().stage, "development");
    app.stop().await;
}
