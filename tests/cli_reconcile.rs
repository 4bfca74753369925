//! `orch reconcile --once [--dry-run]`, `orch explain` and `GET /explain/{work_item}`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use orch::reconciler::Mode;
use orch::store::{self, Trigger};

const SHA: &str = "cafebabecafebabecafebabecafebabecafebabe";

async fn green(peers: &Peers, wi: &str) {
    peers
        .gitea_branch_at(&format!("feature/{wi}-work"), SHA)
        .await;
    peers.gitea_ci(SHA, "success").await;
}

/// The config file for the binary, and the `Config` whose database it names.
fn write_config(
    dir: &std::path::Path,
    peers: &Peers,
) -> (std::path::PathBuf, orch::config::Config) {
    let cfg = test_config(dir);
    let text = format!(
        r#"
{db}
repos_dir = "{repos}"
rules_dir = "{rules}"

[plane]
url = "{plane}"
api_token = "plane_api_test"
workspace = "{WORKSPACE}"

[gitea]
url = "{gitea}"
token = "gitea-token"

[reconcile]
plane_enabled = false

[http]
retries = 0

[[projects]]
plane_project_id = "{PROJECT_ID}"
identifier = "ET"
repo = "{REPO}"
"#,
        db = db_toml(&cfg),
        repos = dir.join("repos").display(),
        rules = concat!(env!("CARGO_MANIFEST_DIR"), "/rules"),
        plane = peers.plane.uri(),
        gitea = peers.gitea.uri(),
    );
    let p = dir.join("orch.toml");
    std::fs::write(&p, text).unwrap();
    (p, cfg)
}

fn seed_task(cfg: &orch::config::Config, wi: &str, stage: &str, age: Duration) {
    let store = open_store(cfg);
    let now = orch::clock::SystemClock;
    let at = orch::clock::Clock::now(&now).minus(age);
    let new = store::NewTask {
        work_item: wi.into(),
        plane_issue_id: Some(format!("issue-{wi}")),
        plane_project_id: Some(PROJECT_ID.into()),
        title: "t".into(),
        repo: REPO.into(),
        branch: format!("feature/{wi}-work"),
        stage: stage.into(),
        labels: vec!["urgent".into()],
    };
    store
        .call_sync(|c| store::tasks::create_atomic(c, &new, None, "v", Trigger::Manual, at))
        .unwrap();
}

fn stage_in(cfg: &orch::config::Config, wi: &str) -> String {
    let wi = wi.to_string();
    open_store(cfg)
        .call_sync(move |c| {
            c.query_row(
                "SELECT stage FROM tasks WHERE work_item = ?1",
                orch::args![wi],
                |r| r.get(0),
            )
        })
        .unwrap()
}

fn orch(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_once_dry_run_changes_nothing_and_a_real_run_advances() {
    let peers = Peers::start().await;
    green(&peers, "ET-1").await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, db) = write_config(dir.path(), &peers);
    seed_task(&db, "ET-1", "development", Duration::from_secs(3600));
    seed_task(&db, "ET-2", "analysis", Duration::from_secs(3600));
    let cfg_s = cfg.to_str().unwrap().to_string();

    let (code, out, err) = tokio::task::spawn_blocking({
        let c = cfg_s.clone();
        move || orch(&["reconcile", "--once", "--dry-run", "--config", &c])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("dry run: nothing changed"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("ET-1") && l.contains("advance")),
        "{out}"
    );
    // Without --all: the counts, and only the lines worth reading (ET-1 would advance).
    assert!(
        out.lines().any(|l| l.starts_with("analysis")
            && l.contains("skip:human_gate")
            && l.trim_end().ends_with(" 1")),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("development")
            && l.contains("advance")
            && l.trim_end().ends_with(" 1")),
        "{out}"
    );
    assert!(!out.lines().any(|l| l.starts_with("ET-2")), "{out}");
    let (code, out, err) = tokio::task::spawn_blocking({
        let c = cfg_s.clone();
        move || orch(&["reconcile", "--once", "--dry-run", "--all", "--config", &c])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("ET-2") && l.contains("stage.analysis.human_gate")),
        "{out}"
    );
    assert_eq!(
        stage_in(&db, "ET-1"),
        "development",
        "the dry run changed nothing"
    );
    assert!(
        peers.plane.received_requests().await.unwrap().is_empty(),
        "nor anything in Plane"
    );

    let (code, out, err) = tokio::task::spawn_blocking({
        let c = cfg_s.clone();
        move || orch(&["reconcile", "--once", "--config", &c, "--format", "json"])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report["tasks"].as_array().unwrap().len(),
        2,
        "JSON has every line"
    );
    assert_eq!(report["summary"]["analysis"]["skip:human_gate"], 1);
    assert_eq!(report["gate_checks"], 1);
    assert_eq!(
        report["unblocked"][0],
        "reconciler: ET-1 development unblocked (lost webhook)"
    );
    assert_eq!(stage_in(&db, "ET-1"), "review");
    assert_eq!(stage_in(&db, "ET-2"), "analysis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_on_the_command_line() {
    let peers = Peers::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, db) = write_config(dir.path(), &peers);
    seed_task(&db, "ET-3", "review", Duration::from_secs(100));
    let c = cfg.to_str().unwrap().to_string();
    let (code, out, err) =
        tokio::task::spawn_blocking(move || orch(&["explain", "ET-3", "--config", &c]))
            .await
            .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("stage       review"), "{out}");
    assert!(out.contains("decision    wait (grace.default)"), "{out}");
    // 600 s of grace, 100 s quiet when seeded; the binary starts (and, on PostgreSQL,
    // connects) a moment later.
    let left: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("grace left  "))
        .and_then(|l| l.trim().strip_suffix('s'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!((480..=500).contains(&left), "{out}");
    assert!(out.contains("labels      urgent"), "{out}");
    let c = cfg.to_str().unwrap().to_string();
    let (code, _, err) =
        tokio::task::spawn_blocking(move || orch(&["explain", "ET-404", "--config", &c]))
            .await
            .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("no task for work item ET-404"), "{err}");
}

#[tokio::test]
async fn explain_over_http_and_the_reconcile_block_in_queue_and_metrics() {
    let peers = Peers::start().await;
    green(&peers, "ET-4").await;
    let app = TestApp::spawn(|c| {
        peers.configure(c, "unused");
        c.reconcile.interval = Duration::from_secs(3600);
        c.reconcile.plane_enabled = Some(false);
    })
    .await;
    let now = app.state.clock.now();
    insert_task(
        &app,
        "ET-4",
        "development",
        now.minus(Duration::from_secs(3600)),
    )
    .await;
    let http = client();
    let x: serde_json::Value = http
        .get(app.url("/explain/ET-4"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(x["stage"], "development");
    // Over HTTP the gate is never evaluated: not read yet, so the decision is to check it.
    assert_eq!(x["decision"]["outcome"]["kind"], "check_gate", "{x}");
    assert!(x["facts"]["gate"].is_null(), "{x}");
    assert_eq!(x["grace_left_s"], 0);
    assert_eq!(x["facts"]["has_active_job"], false);
    let r = http.get(app.url("/explain/ET-404")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let e: serde_json::Value = r.json().await.unwrap();
    assert!(e["error"].as_str().unwrap().contains("ET-404"));

    // One sweep through the app's reconciler (its loop stopped, so the count is exact).
    assert!(app.state.reconciler.stop(Duration::from_secs(5)).await);
    app.state.reconciler.sweep(Mode::Apply).await;
    let q: serde_json::Value = http
        .get(app.url("/queue"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(q["reconcile"]["unblocked_total"], 1, "{q}");
    assert_eq!(q["reconcile"]["last_unblocked"], "ET-4");
    assert_eq!(q["reconcile"]["plane_enabled"], false);
    assert!(q["reconcile"]["sweeps"].as_u64().unwrap() >= 1);
    assert!(q["reconcile"]["last_sweep_at"].is_string());
    assert_eq!(q["rules"]["version"], app.state.rules.current().version());
    assert_eq!(q["tasks"]["review"], 1);
    assert_eq!(
        q["replica"],
        app.state.replica.as_str(),
        "this process's replica id"
    );
    let pid = format!(":{}:", std::process::id());
    assert!(q["replica"].as_str().unwrap().contains(&pid), "{q}");
    let m = http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("orch_reconcile_unblocked_total 1"), "{m}");
    assert!(m.contains("orch_tasks{stage=\"review\"} 1"), "{m}");
    assert!(
        m.contains(&format!(
            "orch_rules_info{{version=\"{}\"}} 1",
            app.state.rules.current().version()
        )),
        "{m}"
    );
    assert!(
        m.contains("orch_gate_evaluations_total{check=\"ci_green\",result=\"green\"}"),
        "{m}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_rule_reload_reaches_stuck_tasks_in_the_next_sweep() {
    let peers = Peers::start().await;
    green(&peers, "ET-5").await;
    let dir = tempfile::tempdir().unwrap();
    // The sweep is paused in the rules while the task gets stuck.
    let rules = rules_copy(
        dir.path(),
        &[("reconcile.toml", "enabled = true", "enabled = false")],
    );
    let mut cfg = test_config(dir.path());
    peers.configure(&mut cfg, "unused");
    cfg.rules_dir = rules.clone();
    cfg.reconcile.interval = Duration::from_secs(3600); // only a reload can trigger a sweep soon
    cfg.reconcile.plane_enabled = Some(false);
    let app = TestApp::spawn_in(dir, cfg).await;
    let now = app.state.clock.now();
    let t = insert_task(
        &app,
        "ET-5",
        "development",
        now.minus(Duration::from_secs(3600)),
    )
    .await;
    eventually("first sweep ran", Duration::from_secs(10), || async {
        app.state.metrics.reconcile_sweeps.get() >= 1
    })
    .await;
    assert_eq!(task_of(&app, "ET-5").await.unwrap().stage, "development");
    // The operator switches the sweep back on by editing the rules: no restart.
    let file = rules.join("reconcile.toml");
    std::fs::write(
        &file,
        std::fs::read_to_string(&file)
            .unwrap()
            .replace("enabled = false", "enabled = true"),
    )
    .unwrap();
    eventually(
        "the stuck task moves after the reload",
        Duration::from_secs(10),
        || async { task_of(&app, "ET-5").await.unwrap().stage == "review" },
    )
    .await;
    let history = task_history(&app, t.id).await;
    let last = history.last().unwrap();
    assert_eq!(last.trigger, Trigger::Reconciler);
    assert_eq!(
        last.rules_version,
        app.state.rules.current().version(),
        "the new version is recorded"
    );
    let m = get_text(&app, "/metrics").await;
    assert!(
        m.contains("orch_rules_reloads_total{result=\"ok\"} 1"),
        "{m}"
    );
    app.stop().await;
}

#[test]
fn one_shot_commands_refuse_a_missing_database_and_create_none() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("typo.db");
    for args in [
        &["reconcile", "--once"][..],
        &["explain", "ET-42"][..],
        &["inbox", "dead"][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_orch"))
            .args(args)
            .current_dir(dir.path())
            .env("ORCH_DB_PATH", &db)
            .env(
                "ORCH_RULES_DIR",
                concat!(env!("CARGO_MANIFEST_DIR"), "/rules"),
            )
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("no database at {}", db.display())),
            "{args:?}: {stderr}"
        );
        assert!(!db.exists(), "{args:?} created the database");
    }
}
