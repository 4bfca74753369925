//! An agent that needs an answer: Plane shows Needs Input with the question, nothing advances
//! the task, and a person's comment (or moving the item back to start) runs the agent again
//! with the answer in `ORCH_FEEDBACK`.

mod common;

use std::time::Duration;

use common::*;
use orch::clock::{ManualClock, Timestamp};
use orch::reconciler::Mode;
use orch::store::{self, Trigger};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, ResponseTemplate};

async fn post_comment(app: &TestApp, body: Vec<u8>) {
    let r = client()
        .post(app.url("/webhooks/plane"))
        .header("X-Plane-Event", "issue_comment")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
}

fn comment(edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut v: serde_json::Value =
        serde_json::from_slice(&fixture("plane_comment_created.json")).unwrap();
    edit(&mut v);
    serde_json::to_vec(&v).unwrap()
}

/// Records that `agent` ran in `stage` (queued at `queued`) and asked a question at `asked`.
async fn ask(
    app: &TestApp,
    task_id: i64,
    agent: &'static str,
    stage: &'static str,
    queued: Timestamp,
    asked: Timestamp,
) {
    let me = app.state.replica.to_string();
    app.state
        .store
        // One transaction: the app's own worker (polling) must not claim the job in between.
        .call(move |c| {
            c.write(|c| {
                store::jobs::enqueue(c, task_id, agent, stage, queued)?;
                let job = store::jobs::claim_next(c, &me, queued)?.expect("the job just queued");
                store::jobs::finish(
                    c,
                    job.id,
                    job.claim,
                    true,
                    &store::jobs::JobResult {
                        exit_code: Some(0),
                        verdict: Some("needs_input".into()),
                        summary: Some(format!("{agent} asks: which way?")),
                        log_excerpt: None,
                        error: None,
                    },
                    asked,
                )
            })
        })
        .await
        .unwrap();
}

/// The question's state, comment and message go out one after another: waits for the last.
async fn question_sent(peers: &Peers) {
    eventually(
        "Telegram carries the question",
        Duration::from_secs(20),
        || async {
            peers
                .telegram_texts()
                .await
                .iter()
                .any(|t| t.contains("ET-42: analyst needs an answer in analysis"))
        },
    )
    .await;
}

/// The curious analyst ran again with the fixture comment's text as `ORCH_FEEDBACK`.
async fn ran_with_the_answer(app: &TestApp, task: &store::Task) {
    let worktree = app.state.pipeline.git.worktree_path(&task.branch);
    eventually(
        "the analyst ran with the answer",
        Duration::from_secs(20),
        || async {
            std::fs::read_to_string(worktree.join("ANALYSIS.md")).is_ok_and(|t| {
                t.contains("with the answer: Use GitHub & Google.\nKeep the old session cookie.")
            })
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_shows_in_plane_and_a_comment_answers_it() {
    let peers = Peers::start().await;
    let app = spawn_with_agents(&peers, vec![("analyst", agent("curious"))]).await;

    post_plane(&app, plane_webhook("In Progress", "started")).await;
    eventually(
        "Plane shows Needs Input",
        Duration::from_secs(20),
        || async {
            peers
                .plane_states_set()
                .await
                .contains(&state_id("Needs Input"))
        },
    )
    .await;
    let task = task_of(&app, "ET-42").await.unwrap();
    question_sent(&peers).await;
    delivered(&app).await;
    let comments = peers.plane_comments().await;
    assert!(
        comments.iter().any(|c| c["comment_html"]
            .as_str()
            .is_some_and(|h| h.contains("Which OAuth providers should login support?"))
            && c["external_source"] == "orch"),
        "{comments:?}"
    );
    let explained = get_json(&app, "/explain/ET-42").await;
    assert_eq!(explained["facts"]["awaiting_input"], true, "{explained}");
    assert_eq!(
        explained["facts"]["question"]["text"], "Which OAuth providers should login support?",
        "{explained}"
    );
    let queue = get_json(&app, "/queue").await;
    assert_eq!(queue["awaiting_input"], 1, "{queue}");
    let metrics = get_text(&app, "/metrics").await;
    assert!(metrics.contains("orch_tasks_awaiting_input 1"), "{metrics}");

    // orch's own comment (the question) coming back as a webhook is not an answer.
    post_comment(
        &app,
        comment(|v| {
            v["data"]["external_source"] = "orch".into();
            v["data"]["comment_html"] = "<p>the question</p>".into();
        }),
    )
    .await;
    processed(&app).await;
    assert_eq!(task_jobs(&app, task.id).await.len(), 1);

    // A person answers in a comment: the analyst runs again with the answer.
    post_comment(&app, fixture("plane_comment_created.json")).await;
    ran_with_the_answer(&app, &task).await;
    eventually("Plane shows In Review", Duration::from_secs(20), || async {
        peers.plane_states_set().await.last() == Some(&state_id("In Review"))
    })
    .await;
    let t = task_of(&app, "ET-42").await.unwrap();
    assert_eq!(t.stage, "analysis");
    let queue = get_json(&app, "/queue").await;
    assert_eq!(queue["awaiting_input"], 0, "answered: {queue}");

    // A second comment is conversation, not another answer: nothing runs again.
    post_comment(
        &app,
        comment(|v| v["data"]["comment_html"] = "<p>thanks!</p>".into()),
    )
    .await;
    processed(&app).await;
    let jobs = task_jobs(&app, task.id).await;
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    assert_eq!(jobs[0].verdict.as_deref(), Some("needs_input"));
    app.stop().await;
}

#[tokio::test]
async fn a_waiting_task_is_held_by_webhooks_and_the_sweep_and_resumed_by_start() {
    let peers = Peers::start().await;
    let app = TestApp::spawn(|c| {
        peers.configure(c, "unused");
        c.reconcile.enabled = Some(true);
    })
    .await;
    // CI is green for every branch: only the question holds the task.
    peers.gitea_every_branch_at("abc", "success").await;
    let now = app.state.clock.now();
    // Fresh, so a background sweep before the question is recorded only waits; the awaiting
    // check comes before the grace, so the sweep below names it whatever the task's age.
    let task = insert_task(&app, "ET-42", "development", now).await;
    let id = task.id;
    // The developer ran and asked a question.
    ask(&app, id, "developer", "development", now, now).await;

    let held = app
        .state
        .pipeline
        .advance(task.id, Trigger::Webhook)
        .await
        .unwrap();
    assert!(
        matches!(held, orch::pipeline::Outcome::Held { .. }),
        "{held:?}"
    );
    let report = app.state.reconciler.reconcile_gate_once().await;
    let decided = &report.tasks[0].decision;
    assert_eq!(decided.rule, "awaiting_input", "{decided:?}");
    assert_eq!(task_of(&app, "ET-42").await.unwrap().stage, "development");

    // Moving the item back to In Progress is "go on": the developer is queued again.
    let mut body: serde_json::Value =
        serde_json::from_slice(&plane_webhook("In Progress", "started")).unwrap();
    body["data"]["id"] = "issue-ET-42".into();
    post_plane(&app, serde_json::to_vec(&body).unwrap()).await;
    eventually(
        "developer queued again",
        Duration::from_secs(10),
        || async { task_jobs(&app, id).await.len() == 2 },
    )
    .await;
    // Replaying the same state (the reconciler's Plane side, or a retry) changes nothing more.
    post_plane(&app, plane_webhook("In Progress", "started")).await;
    processed(&app).await;
    assert_eq!(task_jobs(&app, id).await.len(), 2);
    app.stop().await;
}

/// Plane's answer to `GET .../comments/`: the cursor envelope around `results`.
fn comments_page(results: Vec<serde_json::Value>) -> serde_json::Value {
    serde_json::json!({
        "grouped_by": null, "sub_grouped_by": null, "total_count": results.len(),
        "next_cursor": "100:1:0", "prev_cursor": "100:-1:1", "next_page_results": false,
        "prev_page_results": false, "count": results.len(), "total_pages": 1,
        "total_results": results.len(), "extra_stats": null, "results": results
    })
}

fn plane_comment(id: &str, html: &str, at: Timestamp, source: Option<&str>) -> serde_json::Value {
    serde_json::json!({
        "id": id, "comment_html": html, "access": "INTERNAL", "issue": ISSUE_ID,
        "project": PROJECT_ID, "actor": "754009ab-3fb5-424e-909a-b46e9c9d0c4f",
        "external_source": source, "external_id": null,
        "created_at": at.to_rfc3339(), "updated_at": at.to_rfc3339(),
        "created_by": "754009ab-3fb5-424e-909a-b46e9c9d0c4f"
    })
}

async fn comment_reads(peers: &Peers) -> usize {
    peers
        .plane
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.method.as_str() == "GET" && r.url.path().ends_with("/comments/"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_finds_an_answer_whose_comment_webhook_was_lost() {
    let peers = Peers::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bare = bare_repo(dir.path());
    let mut cfg = test_config(dir.path());
    peers.configure(&mut cfg, bare.to_str().unwrap());
    cfg.reconcile.enabled = Some(true);
    // Sweeps are run by the test; the loop's own first sweep finds nothing to do.
    cfg.reconcile.interval = Duration::from_secs(3600);
    cfg.agents.insert("analyst".into(), agent("curious"));
    let t0 = Timestamp::from_millis(1_800_000_000_000);
    let clock = std::sync::Arc::new(ManualClock::new(t0));
    let app = TestApp::spawn_with_clock(dir, cfg, clock.clone()).await;

    // Plane lists no changed items (nothing to replay) and holds the item's comments: one
    // from before the question, orch's question, the answer whose webhook never came, and a
    // later comment of orch's own.
    Mock::given(method("GET"))
        .and(path(format!(
            "/api/v1/workspaces/{WORKSPACE}/projects/{PROJECT_ID}/work-items/"
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(comments_page(vec![])))
        .mount(&peers.plane)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(
            r"^/api/v1/workspaces/acme/projects/[^/]+/work-items/[^/]+/comments/$",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(comments_page(vec![
            // orch's own later comment is never taken for the answer.
            plane_comment(
                "c-orch-later",
                "<p>ET-42: status</p>",
                t0.plus(Duration::from_secs(400)),
                Some("orch"),
            ),
            plane_comment(
                "c-answer",
                "<p>Use GitHub &amp; Google.</p><p>Keep the old session cookie.</p>",
                t0.plus(Duration::from_secs(300)),
                None,
            ),
            plane_comment(
                "c-question",
                "<p>Which OAuth providers should login support?</p>",
                t0.plus(Duration::from_secs(1)),
                Some("orch"),
            ),
            plane_comment(
                "c-old",
                "<p>Please keep this small.</p>",
                t0.minus(Duration::from_secs(3600)),
                None,
            ),
        ])))
        .mount(&peers.plane)
        .await;

    post_plane(&app, plane_webhook("In Progress", "started")).await;
    question_sent(&peers).await;
    let task = task_of(&app, "ET-42").await.unwrap();

    // Within the grace the answer's own webhook may still come: Plane is not asked.
    let early = app.state.reconciler.reconcile_plane_once().await;
    assert!(early.answers.is_empty(), "{early:?}");
    assert_eq!(comment_reads(&peers).await, 0);

    // Past the grace a dry run finds the answer and changes nothing.
    clock.advance(Duration::from_secs(601));
    let dry = app.state.reconciler.sweep(Mode::DryRun).await;
    assert_eq!(dry.answers.len(), 1, "{dry:?}");
    assert_eq!(task_jobs(&app, task.id).await.len(), 1);

    let report = app.state.reconciler.reconcile_plane_once().await;
    assert_eq!(report.replays, 1, "{report:?}");
    assert_eq!(
        report.answers,
        vec!["ET-42: answer replayed from Plane; the analysis agent runs again".to_string()]
    );
    ran_with_the_answer(&app, &task).await;
    let jobs = task_jobs(&app, task.id).await;
    assert_eq!(jobs.len(), 2, "{jobs:?}");

    // The next sweep has nothing to answer, and the lost webhook turning up late changes
    // nothing either.
    let after = app.state.reconciler.reconcile_plane_once().await;
    assert!(after.answers.is_empty(), "{after:?}");
    assert_eq!(after.replays, 0);
    post_comment(&app, fixture("plane_comment_created.json")).await;
    processed(&app).await;
    assert_eq!(task_jobs(&app, task.id).await.len(), 2);
    app.stop().await;
}

/// A start or a comment delivery that waited in the inbox while the agent asked its question
/// is old news: it was made before the question, so it is not the person's answer.
#[tokio::test]
async fn a_start_or_comment_received_before_the_question_does_not_resume_the_task() {
    let peers = Peers::start().await;
    let app = TestApp::spawn(|c| {
        peers.configure(c, "unused");
        c.reconcile.enabled = Some(false);
    })
    .await;
    let now = app.state.clock.now();
    let task = insert_task(&app, "ET-42", "analysis", now).await;
    let id = task.id;
    // The analyst's question is recorded as asked after the delivery below is received.
    let asked = now.plus(Duration::from_secs(600));
    ask(&app, id, "analyst", "analysis", now, asked).await;
    post_plane(&app, plane_webhook("In Progress", "started")).await;
    // Nor is a comment that was written before the question.
    post_comment(&app, comment(|v| v["data"]["issue"] = "issue-ET-42".into())).await;
    processed(&app).await;
    let jobs = task_jobs(&app, id).await;
    assert_eq!(jobs.len(), 1, "not resumed: {jobs:?}");
    let awaiting = app
        .state
        .store
        .call(move |c| store::jobs::awaiting_input(c, id))
        .await
        .unwrap();
    assert!(awaiting, "still waiting for the person's answer");
    app.stop().await;
}
