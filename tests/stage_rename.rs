//! A reload that drops a stage while tasks are in it is refused, naming the stage and how many
//! tasks are in it; with `renamed_from` on the stage that replaces it, the tasks follow.

mod common;

use common::*;
use orch::store::Trigger;

const REVIEW: &str = "[[stage]]\nname = \"review\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_stage_with_tasks_is_refused_and_a_rename_moves_them() {
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_copy(dir.path(), &[]);
    let mut cfg = test_config(dir.path());
    cfg.rules_dir = rules.clone();
    cfg.reconcile.enabled = Some(false);
    let app = TestApp::spawn_in(dir, cfg).await;
    let now = app.state.clock.now();
    let task = insert_task(&app, "ET-5", "review", now).await;
    let before = app.state.rules.current().version().to_string();

    // The review stage removed outright: refused, the last good set keeps running.
    let pipeline = std::fs::read_to_string(rules.join("pipeline.toml")).unwrap();
    let dropped = pipeline
        .replace("next = \"review\"", "next = \"testing\"")
        .replace(
            &pipeline[pipeline.find(REVIEW).unwrap()
                ..pipeline.find("[[stage]]\nname = \"testing\"").unwrap()],
            "",
        );
    let plane = std::fs::read_to_string(rules.join("plane.toml")).unwrap();
    std::fs::write(
        rules.join("plane.toml"),
        plane.replace("review = \"In Progress\"\n", ""),
    )
    .unwrap();
    std::fs::write(rules.join("pipeline.toml"), &dropped).unwrap();
    let err = app.state.rules.reload().unwrap_err().to_string();
    assert!(
        err.contains("stage review (1 tasks in it)") && err.contains("renamed_from"),
        "{err}"
    );
    assert_eq!(app.state.rules.current().version(), before);
    assert_eq!(task_of(&app, "ET-5").await.unwrap().stage, "review");

    // Renamed instead: the task follows, with a history row.
    let renamed = pipeline
        .replace("next = \"review\"", "next = \"code-review\"")
        .replace(
            REVIEW,
            "[[stage]]\nname = \"code-review\"\nrenamed_from = [\"review\"]\n",
        );
    std::fs::write(
        rules.join("plane.toml"),
        plane.replace("review = \"In Progress\"", "code-review = \"In Progress\""),
    )
    .unwrap();
    std::fs::write(rules.join("pipeline.toml"), &renamed).unwrap();
    let version = app.state.rules.reload().unwrap();
    assert_ne!(version, before);
    assert_eq!(task_of(&app, "ET-5").await.unwrap().stage, "code-review");
    let history = task_history(&app, task.id).await;
    let last = history.last().unwrap();
    assert_eq!(
        (
            last.from_stage.as_deref(),
            last.to_stage.as_str(),
            last.trigger
        ),
        (Some("review"), "code-review", Trigger::Manual)
    );
    // The renamed stage's tasks are decided by the new rules, not reported as errors.
    let explained = get_json(&app, "/explain/ET-5").await;
    assert_eq!(explained["stage"], "code-review", "{explained}");
    assert!(
        !explained["decision"]["rule"]
            .as_str()
            .unwrap_or("")
            .starts_with("stages"),
        "{explained}"
    );
    app.stop().await;
}
