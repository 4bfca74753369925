//! Issue 11: a task the rules cannot decide is loud, and configuration that names a stage the
//! rules do not have is refused. Black-box: the real server on port 0 with its sweep loop, a
//! SQLite file and a rules directory in a tempdir, and the `orch` binary.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;

/// The default rules, with a grace expression that fails for ET-1 only (a number no duration
/// holds: before issue 11 it panicked the sweep and `/explain`).
fn rules_failing_for_et1(dir: &std::path::Path) -> std::path::PathBuf {
    rules_copy(
        dir,
        &[(
            "reconcile.toml",
            "default = \"10m\"",
            "default = \"10m\"\nexpr = '''\nif task.work_item == \"ET-1\" { 1e20 } else { default_s }\n'''",
        )],
    )
}

#[tokio::test]
async fn a_grace_override_for_a_stage_the_rules_lack_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.reconcile
        .grace_overrides
        .insert("reveiw".into(), Duration::from_secs(30));
    cfg.reconcile
        .grace_overrides
        .insert("review".into(), Duration::from_secs(30));
    let err = match orch::app::Components::build(cfg, Arc::new(orch::clock::SystemClock)) {
        Ok(_) => panic!("a grace override for an unknown stage was accepted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("\"reveiw\""), "{err}");
    assert!(!err.contains("\"review\""), "only the unknown stage: {err}");
    assert!(err.contains("ORCH_RECONCILE_GRACE_OVERRIDES_JSON"), "{err}");
    assert!(
        !dir.path().join("orch.db").exists(),
        "refused before the database is created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_errors_are_listed_counted_once_per_rule_set_and_explained() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.rules_dir = rules_failing_for_et1(dir.path());
    cfg.reconcile.interval = Duration::from_millis(20);
    let app = TestApp::spawn_in(dir, cfg).await;
    let old = app.state.clock.now().minus(Duration::from_secs(3600));
    insert_task(&app, "ET-1", "development", old).await;
    insert_task(&app, "ET-2", "staging", old).await;

    eventually("both errors in /queue", Duration::from_secs(10), || async {
        get_json(&app, "/queue").await["decision_errors"]
            .as_array()
            .is_some_and(|a| a.len() == 2)
    })
    .await;
    let q = get_json(&app, "/queue").await;
    let errors = q["decision_errors"].as_array().unwrap();
    let et1 = errors.iter().find(|e| e["work_item"] == "ET-1").unwrap();
    assert_eq!(et1["stage"], "development");
    assert!(
        et1["message"].as_str().unwrap().contains("grace.expr"),
        "{et1}"
    );
    let et2 = errors.iter().find(|e| e["work_item"] == "ET-2").unwrap();
    assert_eq!(et2["stage"], "staging");
    assert!(
        et2["message"]
            .as_str()
            .unwrap()
            .contains("not in the rule set"),
        "{et2}"
    );

    // Many more sweeps of the same rule set: still listed, counted only once each.
    let sweeps = q["reconcile"]["sweeps"].as_u64().unwrap();
    eventually("five more sweeps", Duration::from_secs(10), || async {
        get_json(&app, "/queue").await["reconcile"]["sweeps"]
            .as_u64()
            .unwrap()
            >= sweeps + 5
    })
    .await;
    let q = get_json(&app, "/queue").await;
    assert_eq!(q["decision_errors"].as_array().unwrap().len(), 2);
    assert_eq!(q["reconcile"]["decision_errors"], 2);
    let metrics = get_text(&app, "/metrics").await;
    assert!(
        metrics.contains("orch_decision_errors_total 2\n"),
        "{metrics}"
    );

    // `/explain` shows the failing decision instead of panicking the handler.
    let x = get_json(&app, "/explain/ET-1").await;
    assert_eq!(x["decision"]["rule"], "grace.expr", "{x}");
    assert!(
        x["decision"]["outcome"].to_string().contains("error"),
        "{x}"
    );
    app.stop().await;
}

#[test]
fn reconcile_once_exits_2_when_a_task_cannot_be_decided() {
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_failing_for_et1(dir.path());
    let cfg = test_config(dir.path());
    let config = dir.path().join("orch.toml");
    std::fs::write(
        &config,
        format!(
            "{}repos_dir = {:?}\nrules_dir = {:?}\n",
            db_toml(&cfg),
            dir.path().join("repos").display().to_string(),
            rules.display().to_string(),
        ),
    )
    .unwrap();
    let store = open_store(&cfg);
    let at = orch::clock::Clock::now(&orch::clock::SystemClock).minus(Duration::from_secs(3600));
    for (wi, stage) in [("ET-1", "development"), ("ET-2", "staging")] {
        let new = orch::store::NewTask {
            work_item: wi.into(),
            plane_issue_id: None,
            plane_project_id: None,
            title: "t".into(),
            repo: REPO.into(),
            branch: format!("feature/{wi}-work"),
            stage: stage.into(),
            labels: vec![],
        };
        store
            .call_sync(|c| {
                orch::store::tasks::create_atomic(
                    c,
                    &new,
                    None,
                    "v",
                    orch::store::Trigger::Manual,
                    at,
                )
            })
            .unwrap();
    }
    drop(store);
    let cfg = config.to_str().unwrap();

    let (code, out, err) = run_orch(&["reconcile", "--once", "--config", cfg]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(out.contains("decision error: ET-1 development"), "{out}");
    assert!(out.contains("decision error: ET-2 staging"), "{out}");

    let (code, out, err) = run_orch(&["reconcile", "--once", "--config", cfg, "--format", "json"]);
    assert_eq!(code, 2, "{out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["decision_errors"].as_array().unwrap().len(), 2);

    let (code, out, err) = run_orch(&["explain", "ET-1", "--config", cfg]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("grace.expr"), "{out}");
}
