//! Shadow rules and the decision log, black-box: the real server on port 0 with an injected
//! clock, a shadow set that differs from the live one only in review grace, and the `orch`
//! binary for `rules shadow-report`, `rules promote` and `decisions`.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use orch::clock::{Clock, ManualClock, Timestamp};
use orch::config::Config;
use orch::policy::{self, Overrides, TaskSnapshot, shadow};

const T0: Timestamp = Timestamp::from_millis(1_800_000_000_000);
const REVIEW_GRACE: (&str, &str, &str) = ("reconcile.toml", "# review = \"2h\"", "review = \"2h\"");

/// The live rules (a copy of the shipped ones) and a shadow copy whose only difference is a
/// two-hour review grace; the server on a manual clock with Gitea, Plane and Telegram faked.
struct H {
    app: TestApp,
    peers: Peers,
    clock: Arc<ManualClock>,
    live: PathBuf,
    shadow: PathBuf,
}

async fn harness() -> H {
    harness_with(&[REVIEW_GRACE]).await
}

async fn harness_with(shadow_edits: &[(&str, &str, &str)]) -> H {
    let peers = Peers::start().await;
    let dir = tempfile::tempdir().unwrap();
    let live = rules_copy(&dir.path().join("live"), &[]);
    let shadow = rules_copy(&dir.path().join("candidate"), shadow_edits);
    let mut cfg = test_config(dir.path());
    peers.configure(&mut cfg, "unused");
    cfg.rules_dir = live.clone();
    cfg.shadow_rules_dir = Some(shadow.clone());
    let clock = Arc::new(ManualClock::new(T0));
    let app = TestApp::spawn_with_clock(dir, cfg, clock.clone()).await;
    // The background sweep runs once at startup; the tests' tasks come after it (the clock
    // stands still, so it does not run again by itself).
    eventually("the startup sweep", Duration::from_secs(10), || async {
        app.state.metrics.reconcile_sweeps.get() >= 1
    })
    .await;
    H {
        app,
        peers,
        clock,
        live,
        shadow,
    }
}

impl H {
    async fn task(&self, wi: &str, stage: &str, age: Duration) -> orch::store::Task {
        insert_task(&self.app, wi, stage, self.clock.now().minus(age)).await
    }

    /// An `orch.toml` for the binary: this server's database and rule directories.
    fn config_file(&self) -> PathBuf {
        let path = self.app.dir.path().join("orch.toml");
        std::fs::write(
            &path,
            format!(
                "{}rules_dir = {:?}\n[rules]\nshadow_dir = {:?}\n",
                db_toml(&self.app.state.config),
                self.live,
                self.shadow
            ),
        )
        .unwrap();
        path
    }
}

fn min(m: u64) -> Duration {
    Duration::from_secs(60 * m)
}

/// What the pure evaluator predicts: the tasks whose sweep decision differs between the two
/// sets over the same facts, with both actions and the shadow's rule.
fn predicted(
    live: &Path,
    candidate: &Path,
    tasks: &[TaskSnapshot],
    now: Timestamp,
) -> BTreeSet<(String, String, String, String)> {
    let (a, b) = (
        policy::load_dir(live).unwrap(),
        policy::load_dir(candidate).unwrap(),
    );
    let ov = Overrides::default();
    tasks
        .iter()
        .filter_map(|t| {
            let (x, y) = (
                policy::decide_task(&a, &ov, t, None, now),
                policy::decide_task(&b, &ov, t, None, now),
            );
            let (x_act, y_act) = (shadow::action(&x.outcome), shadow::action(&y.outcome));
            (x_act != y_act).then(|| (t.work_item.clone(), x_act, y_act, y.rule))
        })
        .collect()
}

fn reported(body: &serde_json::Value) -> BTreeSet<(String, String, String, String)> {
    body["divergences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["work_item"].as_str().unwrap().to_string(),
                d["live"]["outcome"].as_str().unwrap().to_string(),
                d["shadow"]["outcome"].as_str().unwrap().to_string(),
                d["shadow"]["rule"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_set_differing_in_review_grace_reports_exactly_the_predicted_divergences() {
    let h = harness().await;
    let tasks = [
        h.task("ET-1", "review", min(30)).await, // live checks, shadow waits
        h.task("ET-2", "review", min(5)).await,  // both wait
        h.task("ET-3", "development", min(30)).await, // both check
        h.task("ET-4", "review", min(180)).await, // both check
        h.task("ET-5", "analysis", min(30)).await, // a human gate for both
    ];
    let now = h.clock.now();
    let snapshots: Vec<TaskSnapshot> = tasks
        .iter()
        .map(|t| TaskSnapshot {
            work_item: t.work_item.clone(),
            stage: t.stage.clone(),
            labels: t.labels.clone(),
            updated_at: t.updated_at,
            has_active_job: false,
            awaiting_input: false,
        })
        .collect();
    let expected = predicted(&h.live, &h.shadow, &snapshots, now);
    assert_eq!(
        expected.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
        ["ET-1"],
        "the prediction itself: {expected:?}"
    );

    h.app.state.reconciler.reconcile_gate_once().await;
    // A second sweep over the same facts keeps the same divergence once.
    h.app.state.reconciler.reconcile_gate_once().await;

    let body = get_json(&h.app, "/shadow").await;
    assert_eq!(body["enabled"], true, "{body}");
    assert_eq!(reported(&body), expected, "{body}");
    let d = &body["divergences"][0];
    assert_eq!(d["trigger"], "reconciler");
    assert_eq!(d["stage"], "review");
    assert_eq!(d["live"]["rule"], "stage.review.gate");
    assert_eq!(
        d["facts"]["now"],
        serde_json::json!(now),
        "the facts it was decided on"
    );
    assert_eq!(
        body["rules"]["version"],
        policy::load_dir(&h.shadow).unwrap().version()
    );
    let metrics = get_text(&h.app, "/metrics").await;
    assert!(
        metrics.contains(r#"orch_shadow_divergences_total{rule="grace.stages.review"} 1"#),
        "{metrics}"
    );
    // The shadow never acts: the task it would have left waiting was checked by the live set
    // (red: no reviewer verdict) and is still in review; nothing moved because of it.
    let t1 = task_of(&h.app, "ET-1").await.unwrap();
    assert_eq!(t1.stage, "review");

    // The command line reads the same divergences from the database.
    let config = h.config_file();
    let cfg = config.to_str().unwrap();
    let (code, out, err) = run_orch(&[
        "rules",
        "shadow-report",
        "--config",
        cfg,
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(reported(&json), expected, "{out}");
    assert_eq!(json["by_rule"]["grace.stages.review"], 1, "{out}");
    let (code, out, err) = run_orch(&["rules", "shadow-report", "--config", cfg]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("ET-1") && out.contains("grace.stages.review"),
        "{out}"
    );
    assert!(!out.contains("ET-2"), "{out}");
    h.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_shows_the_report_then_swaps_the_shadow_set_in_and_hot_reload_picks_it_up() {
    let h = harness().await;
    h.task("ET-1", "review", min(30)).await;
    h.app.state.reconciler.reconcile_gate_once().await;
    let shadow_version = policy::load_dir(&h.shadow).unwrap().version().to_string();
    assert_ne!(h.app.state.rules.current().version(), shadow_version);

    let config = h.config_file();
    let cfg = config.to_string_lossy().to_string();
    let (code, out, err) =
        tokio::task::spawn_blocking(move || run_orch(&["rules", "promote", "--config", &cfg]))
            .await
            .unwrap();
    assert_eq!(code, 0, "{err}");
    let report_at = out.find("ET-1").expect("the report first");
    let promoted_at = out.find("promoted").expect("then the promotion");
    assert!(report_at < promoted_at, "{out}");
    assert!(out.contains(&shadow_version), "{out}");
    assert_eq!(
        policy::load_dir(&h.live).unwrap().version(),
        shadow_version,
        "the live directory holds the shadow set"
    );
    eventually(
        "the server reloads the promoted set",
        Duration::from_secs(15),
        || async { h.app.state.rules.current().version() == shadow_version },
    )
    .await;
    h.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shadow_set_is_hot_reloaded_and_an_invalid_edit_keeps_the_last_good_one() {
    let h = harness().await;
    let first = policy::load_dir(&h.shadow).unwrap().version().to_string();
    let file = h.shadow.join("reconcile.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("review = \"2h\"", "review = \"3h\"")).unwrap();
    let edited = policy::load_dir(&h.shadow).unwrap().version().to_string();
    assert_ne!(first, edited);
    eventually(
        "the shadow set reloads",
        Duration::from_secs(15),
        || async { get_json(&h.app, "/shadow").await["rules"]["version"] == edited.as_str() },
    )
    .await;
    std::fs::write(&file, "[grace]\ndefault = \"soon\"\n").unwrap();
    eventually(
        "the bad edit is reported",
        Duration::from_secs(15),
        || async { !get_json(&h.app, "/shadow").await["rules"]["last_reload_error"].is_null() },
    )
    .await;
    let body = get_json(&h.app, "/shadow").await;
    assert_eq!(body["rules"]["version"], edited.as_str(), "{body}");
    assert_ne!(
        body["live_version"],
        edited.as_str(),
        "the live set is untouched by the shadow's reloads"
    );
    h.app.stop().await;
}

#[test]
fn promote_refuses_an_invalid_shadow_set_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let live = rules_copy(&dir.path().join("live"), &[]);
    let bad = rules_copy(
        &dir.path().join("candidate"),
        &[("pipeline.toml", "next = \"review\"", "next = \"nowhere\"")],
    );
    let before = policy::load_dir(&live).unwrap().version().to_string();
    let config = dir.path().join("orch.toml");
    std::fs::write(
        &config,
        format!(
            "db_path = {:?}\nrules_dir = {:?}\n",
            dir.path().join("orch.db"),
            live
        ),
    )
    .unwrap();
    let (code, _, err) = run_orch(&[
        "rules",
        "promote",
        bad.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("pipeline.toml") && err.contains("nothing promoted"),
        "{err}"
    );
    assert_eq!(policy::load_dir(&live).unwrap().version(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_decision_that_acted_is_logged_with_its_facts_and_explain_shows_it() {
    let h = harness().await;
    let t = h.task("ET-7", "development", min(30)).await;
    h.peers.gitea_branch_at(&t.branch, "sha7").await;
    h.peers.gitea_ci("sha7", "success").await;
    h.app.state.reconciler.reconcile_gate_once().await;
    assert_eq!(task_of(&h.app, "ET-7").await.unwrap().stage, "review");

    let x = get_json(&h.app, "/explain/ET-7").await;
    let last = &x["last_decisions"][0];
    assert_eq!(last["outcome"], "advance development -> review", "{x}");
    assert_eq!(last["trigger"], "reconciler");
    assert_eq!(last["rule"], "stage.development.gate");
    assert_eq!(last["rules_version"], h.app.state.rules.current().version());
    assert_eq!(last["facts"]["gate"]["green"], true, "{x}");
    assert_eq!(last["facts"]["task"]["stage"], "development", "{x}");

    let config = h.config_file();
    let cfg = config.to_str().unwrap();
    let (code, out, err) = run_orch(&["decisions", "ET-7", "--config", cfg, "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{out}");
    assert_eq!(rows[0]["outcome"], "advance development -> review");
    let (code, out, _) = run_orch(&["decisions", "--since", "1h", "--config", cfg]);
    assert_eq!(code, 0);
    // Logged at the server's (manual) time, which is after the binary's now minus an hour.
    assert!(
        out.contains("ET-7") && out.contains("advance development -> review"),
        "{out}"
    );
    let (code, out, _) = run_orch(&["decisions", "ET-999", "--config", cfg]);
    assert_eq!(code, 0);
    assert!(out.contains("no decisions logged for ET-999"), "{out}");
    h.app.stop().await;
}

#[test]
fn the_decision_log_drops_what_is_older_than_its_retention() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&test_config(dir.path()));
    let d = |wi: &str| orch::store::decisions::NewDecision {
        work_item: wi.into(),
        task_id: None,
        stage: "review".into(),
        trigger: "reconciler".into(),
        rules_version: "v".into(),
        rule: "stage.review.gate".into(),
        outcome: "hold".into(),
        reason: "red".into(),
        facts: serde_json::json!({"n": 1}),
    };
    let day = Duration::from_secs(24 * 3600);
    store
        .call_sync(|c| {
            orch::store::decisions::record(c, &d("ET-1"), T0, Some(day))?;
            orch::store::decisions::record(c, &d("ET-2"), T0.plus(day / 2), Some(day))?;
            orch::store::decisions::record(c, &d("ET-3"), T0.plus(day + day / 4), Some(day))
        })
        .unwrap();
    let left: Vec<String> = store
        .call_sync(|c| orch::store::decisions::list(c, None, None, 100))
        .unwrap()
        .into_iter()
        .map(|r| r.decision.work_item)
        .collect();
    assert_eq!(left, ["ET-2", "ET-3"]);
}

#[test]
fn decisions_and_retention_are_configured_and_a_zero_retention_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orch.toml");
    std::fs::write(
        &file,
        "[rules]\nshadow_dir = \"cand\"\n[decisions]\nretention = \"7d\"\n",
    )
    .unwrap();
    let cfg = Config::load_from(Some(&file), &|_| None).unwrap();
    assert_eq!(cfg.shadow_rules_dir.as_deref(), Some(Path::new("cand")));
    assert_eq!(cfg.decision_retention, Duration::from_secs(7 * 24 * 3600));
    let env = |k: &str| match k {
        "ORCH_RULES_SHADOW_DIR" => Some("other".to_string()),
        "ORCH_DECISIONS_RETENTION" => Some("1h".to_string()),
        _ => None,
    };
    let cfg = Config::load_from(Some(&file), &env).unwrap();
    assert_eq!(cfg.shadow_rules_dir.as_deref(), Some(Path::new("other")));
    assert_eq!(cfg.decision_retention, Duration::from_secs(3600));
    std::fs::write(&file, "[decisions]\nretention = \"0s\"\n").unwrap();
    let err = Config::load_from(Some(&file), &|_| None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("decisions.retention"), "{err}");
}

#[tokio::test]
async fn serve_refuses_a_shadow_set_that_does_not_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.shadow_rules_dir = Some(dir.path().join("missing"));
    let err = orch::app::Application::build(cfg)
        .await
        .err()
        .expect("a missing shadow set is an error")
        .to_string();
    assert!(err.contains("shadow rule set"), "{err}");
}

/// An event is compared too: a green CI webhook advances a development task under the live
/// rules; a shadow set that makes development a human gate would have held it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_shadow_set_would_hold_is_a_divergence_and_the_live_advance_is_logged() {
    let h = harness_with(&[(
        "pipeline.toml",
        "name = \"development\"\nagent = \"developer\"\ngate = \"ci_green\"",
        "name = \"development\"\nagent = \"developer\"\ngate = \"ci_green && analysis_approved\"\nhuman_gate = true",
    )])
    .await;
    let t = h.task("ET-8", "development", min(1)).await;
    h.peers.gitea_branch_at(&t.branch, "sha8").await;
    h.peers.gitea_ci("sha8", "success").await;
    let outcome = h
        .app
        .state
        .pipeline
        .advance(t.id, orch::store::Trigger::Webhook)
        .await
        .unwrap();
    assert!(
        matches!(outcome, orch::pipeline::Outcome::Advanced { .. }),
        "the live rules act: {outcome:?}"
    );
    let body = get_json(&h.app, "/shadow").await;
    // The sweep, which runs at startup too, may also have compared the task (a wait against a
    // human gate); the event's divergence is the webhook's.
    let events: Vec<&serde_json::Value> = body["divergences"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["trigger"] != "reconciler")
        .collect();
    assert_eq!(events.len(), 1, "{body}");
    let d = events[0];
    assert_eq!(d["work_item"], "ET-8");
    assert_eq!(d["trigger"], "webhook");
    assert_eq!(d["live"]["outcome"], "advance development -> review");
    assert_eq!(d["shadow"]["outcome"], "hold");
    assert_eq!(d["shadow"]["rule"], "stage.development.human_gate");
    let x = get_json(&h.app, "/explain/ET-8").await;
    assert_eq!(x["last_decisions"][0]["trigger"], "webhook", "{x}");
    assert_eq!(
        x["last_decisions"][0]["outcome"],
        "advance development -> review"
    );
    h.app.stop().await;
}

/// The done-when case under `orch simulate`: the shadow set is the simulation's own live rules
/// (grace in the rules, as the simulation writes them with a shadow) plus a one-hour review
/// grace. It never acts (every item ends done), and every divergence it reports is the one
/// the pure evaluator predicts over the facts it was decided on. (In the simulated pipeline a
/// review task always has its reviewer queued or running until it advances, so a review-grace
/// difference rarely shows there; the exact count is pinned by the first test above, on a
/// manual clock.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_simulate_a_review_grace_shadow_never_acts_and_reports_only_predicted_divergences() {
    let dir = tempfile::tempdir().unwrap();
    let candidate = dir.path().join("candidate");
    std::fs::create_dir_all(&candidate).unwrap();
    let grace = Duration::from_secs(2);
    for (name, text) in policy::EMBEDDED {
        let text = if *name == "reconcile.toml" {
            assert!(text.contains("default = \"10m\"") && text.contains("# review = \"2h\""));
            text.replace("default = \"10m\"", "default = \"2000ms\"")
                .replace("# review = \"2h\"", "review = \"1h\"")
        } else {
            text.to_string()
        };
        std::fs::write(candidate.join(name), text).unwrap();
    }
    let report = orch::sim::run(&orch::sim::SimOptions {
        items: 8,
        drop_rate: 0.3,
        seed: 5,
        grace,
        shadow_rules: Some(candidate.clone()),
        ..orch::sim::SimOptions::default()
    })
    .await
    .unwrap();
    assert_eq!(report.done, 8, "the shadow set never acts: {report:#?}");
    assert_eq!(report.duplicates, 0, "{report:#?}");
    let divergences = report
        .shadow_divergences
        .clone()
        .expect("a shadow run reports");

    // The live rules as the simulation wrote them: the shipped ones with the grace inside.
    let live = dir.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    for (name, text) in policy::EMBEDDED {
        let text = if *name == "reconcile.toml" {
            text.replace("default = \"10m\"", "default = \"2000ms\"")
        } else {
            text.to_string()
        };
        std::fs::write(live.join(name), text).unwrap();
    }
    let (a, b) = (
        policy::load_dir(&live).unwrap(),
        policy::load_dir(&candidate).unwrap(),
    );
    // The simulation's environment overrides: switches on, no grace (it is in the rules).
    let ov = Overrides {
        reconcile_enabled: Some(true),
        plane_enabled: Some(true),
        notify_unblock: Some(false),
        ..Overrides::default()
    };
    for row in &divergences {
        let d = &row.divergence;
        assert_eq!(
            d.trigger, "reconciler",
            "grace only matters to the sweep: {d:#?}"
        );
        let task: TaskSnapshot = serde_json::from_value(d.facts["task"].clone()).unwrap();
        let now: Timestamp = serde_json::from_value(d.facts["now"].clone()).unwrap();
        let (x, y) = (
            policy::decide_task(&a, &ov, &task, None, now),
            policy::decide_task(&b, &ov, &task, None, now),
        );
        assert_eq!(shadow::action(&x.outcome), d.live.outcome, "{d:#?}");
        assert_eq!(shadow::action(&y.outcome), d.shadow.outcome, "{d:#?}");
        assert_ne!(d.live.outcome, d.shadow.outcome);
        assert_eq!(d.stage, "review", "{d:#?}");
        assert_eq!(d.shadow.rule, "grace.stages.review", "{d:#?}");
    }
}
