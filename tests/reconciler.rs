//! The reconciler against real HTTP peers and a SQLite file, with an injected clock: the
//! seed's TC-01 … TC-21 and the Plane-side cases.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use orch::app::{AppState, Components};
use orch::clock::{Clock, ManualClock, Timestamp};
use orch::config::Config;
use orch::reconciler::Mode;
use orch::store::{self, Trigger};
use wiremock::matchers::{method, path, path_regex, query_param};
use wiremock::{Mock, ResponseTemplate};

const T0: Timestamp = Timestamp::from_millis(1_800_000_000_000);

struct H {
    peers: Peers,
    state: AppState,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

async fn harness(configure: impl FnOnce(&mut Config, &std::path::Path)) -> H {
    let peers = Peers::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    peers.configure(&mut cfg, "unused");
    // The Plane items below changed long before T0: a database already in service then.
    cfg.reconcile.plane_since = Some(orch::config::PlaneSince::At(
        Timestamp::parse_rfc3339("2026-01-01T00:00:00Z").unwrap(),
    ));
    configure(&mut cfg, dir.path());
    let clock = Arc::new(ManualClock::new(T0));
    let parts = Components::build(cfg, clock.clone()).unwrap();
    H {
        peers,
        state: parts.state,
        clock,
        _dir: dir,
    }
}

impl H {
    async fn task(&self, wi: &str, stage: &str, age_s: u64) -> store::Task {
        let new = store::NewTask {
            work_item: wi.into(),
            plane_issue_id: Some(format!("issue-{wi}")),
            plane_project_id: Some(PROJECT_ID.into()),
            title: format!("Work item {wi}"),
            repo: REPO.into(),
            branch: format!("feature/{wi}-x"),
            stage: stage.into(),
            labels: vec![],
        };
        let at = self.clock.now().minus(Duration::from_secs(age_s));
        self.state
            .store
            .call(move |c| store::tasks::create_atomic(c, &new, None, "test", Trigger::Manual, at))
            .await
            .unwrap()
            .0
    }

    /// The task of Plane item `seq` (as `item(seq, …)` lists it), in `stage` since before the
    /// items' Plane changes, with `first_agent` queued.
    async fn plane_item_task(
        &self,
        seq: i64,
        stage: &str,
        first_agent: Option<&'static str>,
    ) -> store::Task {
        let new = store::NewTask {
            work_item: format!("ET-{seq}"),
            plane_issue_id: Some(format!("issue-{seq}")),
            plane_project_id: Some(PROJECT_ID.into()),
            title: format!("Item {seq}"),
            repo: REPO.into(),
            branch: format!("feature/ET-{seq}-item-{seq}"),
            stage: stage.into(),
            labels: vec![],
        };
        let created = Timestamp::parse_rfc3339("2026-11-21T08:00:00Z").unwrap();
        self.state
            .store
            .call(move |c| {
                store::tasks::create_atomic(c, &new, first_agent, "test", Trigger::Manual, created)
            })
            .await
            .unwrap()
            .0
    }

    async fn stage_of(&self, id: i64) -> String {
        self.state
            .store
            .call(move |c| store::tasks::get(c, id))
            .await
            .unwrap()
            .unwrap()
            .stage
    }

    async fn jobs_of(&self, id: i64, agent: &str) -> Vec<store::Job> {
        let agent = agent.to_string();
        self.state
            .store
            .call(move |c| {
                Ok(store::jobs::for_task(c, id)?
                    .into_iter()
                    .filter(|j| j.agent == agent)
                    .collect())
            })
            .await
            .unwrap()
    }

    /// Gitea reports `status` for the head of `wi`'s branch.
    async fn ci(&self, wi: &str, status: &str) {
        let sha = format!("sha{}", wi.replace('-', ""));
        Mock::given(method("GET"))
            .and(path(format!(
                "/api/v1/repos/{REPO}/branches/feature/{wi}-x"
            )))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(serde_json::json!({"name": "b", "commit": {"id": sha}})),
            )
            .mount(&self.peers.gitea)
            .await;
        Mock::given(method("GET"))
            .and(path(format!("/api/v1/repos/{REPO}/commits/{sha}/statuses")))
            .respond_with(
                ResponseTemplate::new(200)
                    .insert_header("X-Total-Count", "1")
                    .set_body_json(
                        serde_json::json!([{"id": 1, "status": status, "context": "ci/build"}]),
                    ),
            )
            .mount(&self.peers.gitea)
            .await;
    }

    async fn gitea_calls_for(&self, wi: &str) -> usize {
        let needle = format!("feature/{wi}-x");
        self.peers
            .gitea
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.url.path().contains(&needle))
            .count()
    }
}

// TC-01: a stuck development task is advanced to review, with exactly one reviewer job.
#[tokio::test]
async fn tc01_advances_stuck_development_task() {
    let h = harness(|_, _| {}).await;
    let t = h.task("ET-1", "development", 3600).await;
    h.ci("ET-1", "success").await;
    let report = h.state.reconciler.reconcile_gate_once().await;
    assert_eq!(h.stage_of(t.id).await, "review");
    assert_eq!(h.jobs_of(t.id, "reviewer").await.len(), 1);
    assert_eq!(report.unblocked.len(), 1);
    // A second sweep finds the reviewer busy: still one job.
    h.state.reconciler.reconcile_gate_once().await;
    assert_eq!(h.jobs_of(t.id, "reviewer").await.len(), 1);
}

// TC-02: the advance goes through the pipeline, recorded with trigger = reconciler.
#[tokio::test]
async fn tc02_advance_goes_through_the_pipeline_with_trigger_reconciler() {
    let h = harness(|_, _| {}).await;
    let t = h.task("ET-2", "development", 3600).await;
    h.ci("ET-2", "success").await;
    h.state.reconciler.reconcile_gate_once().await;
    let history = h
        .state
        .store
        .call(move |c| store::tasks::history(c, t.id))
        .await
        .unwrap();
    let last = history.last().unwrap();
    assert_eq!(
        (last.from_stage.as_deref(), last.to_stage.as_str()),
        (Some("development"), "review")
    );
    assert_eq!(last.trigger, Trigger::Reconciler);
    assert_eq!(last.rules_version, h.state.rules.current().version());
    // The same side effects as the webhook path: Plane state for entering review.
    h.state.drain_outbox().await.unwrap();
    assert!(
        h.peers
            .plane_states_set()
            .await
            .contains(&state_id("In Progress"))
    );
}

// TC-03: a task with an active job is skipped; its gate is not evaluated.
#[tokio::test]
async fn tc03_busy_task_is_skipped_without_evaluating_its_gate() {
    let h = harness(|_, _| {}).await;
    let t = h.task("ET-3", "development", 3600).await;
    h.ci("ET-3", "success").await;
    h.state
        .store
        .call(move |c| store::jobs::enqueue(c, t.id, "developer", "development", T0))
        .await
        .unwrap();
    let report = h.state.reconciler.reconcile_gate_once().await;
    assert_eq!(h.stage_of(t.id).await, "development");
    assert_eq!(h.gitea_calls_for("ET-3").await, 0, "gate not evaluated");
    assert_eq!(report.tasks[0].decision.rule, "busy");
}

// TC-04: the grace boundary: younger than grace waits, at or past grace is eligible.
#[tokio::test]
async fn tc04_grace_boundary() {
    let h = harness(|c, _| c.reconcile.grace_default = Some(Duration::from_secs(600))).await;
    let fresh = h.task("ET-40", "development", 10).await;
    let almost = h.task("ET-41", "development", 599).await;
    let exactly = h.task("ET-42", "development", 600).await;
    let stuck = h.task("ET-43", "development", 3600).await;
    for wi in ["ET-40", "ET-41", "ET-42", "ET-43"] {
        h.ci(wi, "success").await;
    }
    h.state.reconciler.reconcile_gate_once().await;
    assert_eq!(h.stage_of(fresh.id).await, "development");
    assert_eq!(h.stage_of(almost.id).await, "development");
    assert_eq!(h.stage_of(exactly.id).await, "review");
    assert_eq!(h.stage_of(stuck.id).await, "review");
    assert_eq!(
        h.gitea_calls_for("ET-40").await + h.gitea_calls_for("ET-41").await,
        0
    );
}

// TC-05: per-stage grace overrides from ORCH_RECONCILE_GRACE_OVERRIDES_JSON; invalid JSON
// falls back to the default grace.
#[tokio::test]
async fn tc05_grace_overrides_and_invalid_json_fallback() {
    let env = |json: &'static str| {
        move |k: &str| match k {
            "ORCH_RECONCILE_GRACE_DEFAULT_S" => Some("600".to_string()),
            "ORCH_RECONCILE_GRACE_OVERRIDES_JSON" => Some(json.to_string()),
            _ => None,
        }
    };
    let good = Config::load_from(None, &env(r#"{"development": 30, "review": 7200}"#)).unwrap();
    let h = harness(|c, _| c.reconcile = good.reconcile.clone()).await;
    let dev = h.task("ET-50", "development", 60).await;
    let rev = h.task("ET-51", "review", 3600).await;
    let test = h.task("ET-52", "testing", 601).await;
    h.ci("ET-50", "success").await;
    let report = h.state.reconciler.reconcile_gate_once().await;
    assert_eq!(
        h.stage_of(dev.id).await,
        "review",
        "30 s grace for development"
    );
    assert_eq!(h.stage_of(rev.id).await, "review");
    let by_wi = |wi: &str| {
        report
            .tasks
            .iter()
            .find(|t| t.work_item == wi)
            .unwrap()
            .decision
            .clone()
    };
    assert_eq!(by_wi("ET-51").rule, "env.grace_overrides.review");
    assert_eq!(by_wi("ET-51").grace_left_s, Some(3600));
    assert_eq!(
        by_wi("ET-52").rule,
        "stage.testing.gate",
        "testing falls back to the 600 s default"
    );
    let _ = test;

    let bad = Config::load_from(None, &env("{not valid json")).unwrap();
    assert_eq!(bad.warnings.len(), 1);
    assert!(bad.reconcile.grace_overrides.is_empty());
    let h = harness(|c, _| c.reconcile = bad.reconcile.clone()).await;
    let dev = h.task("ET-53", "development", 60).await;
    h.ci("ET-53", "success").await;
    h.state.reconciler.reconcile_gate_once().await;
    assert_eq!(
        h.stage_of(dev.id).await,
        "development",
        "default 600 s grace applies"
    );
}

// TC-06: a red gate over many sweeps: no advance, no notification, no unblock.
#[tokio::test]
async fn tc06_red_gate_never_advances_and_never_notifies() {
    let h = harness(|c, _| c.reconcile.notify_unblock = Some(true)).await;
    let t = h.task("ET-6", "development", 3600).await;
    h.ci("ET-6", "failure").await;
    for _ in 0..5 {
        h.clock.advance(Duration::from_secs(60));
        h.state.reconciler.reconcile_gate_once().await;
    }
    assert_eq!(h.stage_of(t.id).await, "development");
    h.state.drain_outbox().await.unwrap();
    assert!(h.peers.telegram_texts().await.is_empty());
    assert!(h.peers.plane_comments().await.is_empty());
    assert!(h.peers.plane_states_set().await.is_empty());
    assert_eq!(h.state.metrics.reconcile_unblocked.get(), 0);
    assert_eq!(
        h.gitea_calls_for("ET-6").await,
        3,
        "at most one gate evaluation per sweep, and fewer as the red gate backs off \
         (sweeps 1, 2 and 4 of 5)"
    );
}

// TC-07: silence when in sync: done, fresh and busy tasks are left alone.
#[tokio::test]
async fn tc07_silence_when_in_sync() {
    let h = harness(|_, _| {}).await;
    let done = h.task("ET-70", "done", 3600).await;
    let fresh = h.task("ET-71", "development", 5).await;
    let busy = h.task("ET-72", "development", 3600).await;
    h.state
        .store
        .call(move |c| store::jobs::enqueue(c, busy.id, "developer", "development", T0))
        .await
        .unwrap();
    let report = h.state.reconciler.reconcile_gate_once().await;
    assert!(report.unblocked.is_empty());
    assert_eq!(h.stage_of(done.id).await, "done");
    assert_eq!(h.stage_of(fresh.id).await, "development");
    assert!(
        h.peers
            .gitea
            .received_requests()
            .await
            .unwrap_or_default()
            .is_empty()
    );
    assert_eq!(report.tasks.len(), 2, "done is not an open task");
}

// TC-08 (AC-16): the sweep never advances the human analysis gate, even when it would pass.
#[tokio::test]
async fn tc08_analysis_is_never_advanced_by_the_sweep() {
    let h = harness(|_, _| {}).await;
    let t = h.task("ET-8", "analysis", 3600).await;
    let id = t.id;
    h.state
        .store
        .call(move |c| store::verdicts::record(c, id, "analysis", "approve", "plane", None, T0))
        .await
        .unwrap();
    let report = h.state.reconciler.reconcile_gate_once().await;
    assert_eq!(h.stage_of(t.id).await, "analysis");
    assert_eq!(report.tasks[0].decision.rule, "stage.analysis.human_gate");
    assert!(report.unblocked.is_empty());
}

// TC-09: never-raise: one task failing does not stop the others.
#[tokio::test]
async fn tc09_one_failing_task_does_not_stop_the_others() {
    let h = harness(|_, _| {}).await;
    let broken = h.task("ET-90", "development", 3600).await;
    let fine = h.task("ET-91", "development", 3600).await;
    Mock::given(method("GET"))
        .and(path(format!(
            "/api/v1/repos/{REPO}/branches/feature/ET-90-x"
        )))
        .respond_with(ResponseTemplate::new(500).set_body_string("boom"))
        .mount(&h.peers.gitea)
        .await;
    h.ci("ET-91", "success").await;
    let report = h.state.reconciler.reconcile_gate_once().await;
    assert_eq!(h.stage_of(broken.id).await, "development");
    assert_eq!(h.stage_of(fine.id).await, "review");
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert!(report.errors[0].contains("ET-90"));
    assert_eq!(h.state.metrics.reconcile_errors.get(), 1);
}

// TC-10: kill switches. The environment's false wins; the rules' switch pauses without a
// restart; the Plane switch mutes only the Plane side.
#[tokio::test]
async fn tc10_environment_kill_switch_disables_the_sweep() {
    let h = harness(|c, _| c.reconcile.enabled = Some(false)).await;
    let t = h.task("ET-10", "development", 3600).await;
    h.ci("ET-10", "success").await;
    let report = h.state.reconciler.sweep(Mode::Apply).await;
    assert!(!report.gate_enabled && !report.plane_enabled);
    assert_eq!(h.stage_of(t.id).await, "development");
    assert!(
        h.peers
            .gitea
            .received_requests()
            .await
            .unwrap_or_default()
            .is_empty()
    );
}

#[tokio::test]
async fn tc10_rules_kill_switch_pauses_and_resumes_on_reload() {
    let h = harness(|c, dir| {
        c.rules_dir = rules_copy(
            dir,
            &[("reconcile.toml", "enabled = true", "enabled = false")],
        );
    })
    .await;
    let t = h.task("ET-11", "development", 3600).await;
    h.ci("ET-11", "success").await;
    h.state.reconciler.reconcile_gate_once().await;
    assert_eq!(h.stage_of(t.id).await, "development");
    // Switch it back on in the rules: no restart needed.
    let file = h.state.rules.dir().join("reconcile.toml");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("enabled = false", "enabled = true");
    std::fs::write(&file, text).unwrap();
    h.state.rules.reload().unwrap();
    h.state.reconciler.reconcile_gate_once().await;
    assert_eq!(h.stage_of(t.id).await, "review");
}

#[tokio::test]
async fn tc10_plane_switch_mutes_only_the_plane_side() {
    let h = harness(|c, _| c.reconcile.plane_enabled = Some(false)).await;
    Mock::given(method("GET"))
        .and(path_regex(r"/work-items/$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(vec![], None)))
        .expect(0)
        .mount(&h.peers.plane)
        .await;
    let t = h.task("ET-12", "development", 3600).await;
    h.ci("ET-12", "success").await;
    let report = h.state.reconciler.sweep(Mode::Apply).await;
    assert!(report.gate_enabled && !report.plane_enabled);
    assert_eq!(h.stage_of(t.id).await, "review", "F-1 still runs");
    h.peers.plane.verify().await;
}

// TC-20: every unblock sends the line to Telegram when notify-unblock is on and counts it.
// (The log line itself is asserted in tests/unblock_log.rs, which owns its process's global
// subscriber: a scoped subscriber is not reliable while other tests log in parallel.)
#[tokio::test]
async fn tc20_unblock_notifies_and_counts() {
    let h = harness(|c, _| c.reconcile.notify_unblock = Some(true)).await;
    h.task("ET-042", "development", 3600).await;
    h.ci("ET-042", "success").await;
    let report = h.state.reconciler.reconcile_gate_once().await;
    let line = "reconciler: ET-042 development unblocked (lost webhook)";
    assert_eq!(report.unblocked, [line]);
    assert_eq!(h.state.metrics.reconcile_unblocked.get(), 1);
    h.state.drain_outbox().await.unwrap();
    assert_eq!(
        h.state.reconcile.lock().unwrap().last_unblocked.as_deref(),
        Some("ET-042")
    );
    let texts = h.peers.telegram_texts().await;
    assert_eq!(
        texts.iter().filter(|t| t.as_str() == line).count(),
        1,
        "{texts:?}"
    );
    let queue = h.state.reconcile_status();
    assert_eq!(queue["unblocked_total"], 1);
    assert_eq!(queue["last_unblocked"], "ET-042");
}

#[tokio::test]
async fn tc20_no_telegram_when_notify_unblock_is_off() {
    let h = harness(|c, _| c.reconcile.notify_unblock = Some(false)).await;
    let t = h.task("ET-043", "development", 3600).await;
    h.ci("ET-043", "success").await;
    h.state.reconciler.reconcile_gate_once().await;
    assert_eq!(h.stage_of(t.id).await, "review");
    h.state.drain_outbox().await.unwrap();
    assert!(
        !h.peers
            .telegram_texts()
            .await
            .iter()
            .any(|t| t.contains("unblocked"))
    );
}

// TC-21: start, idempotent start, prompt stop.
#[tokio::test]
async fn tc21_start_is_idempotent_and_stop_is_prompt() {
    let h = harness(|c, _| {
        c.reconcile.enabled = Some(false);
        c.reconcile.interval = Duration::from_secs(3600);
    })
    .await;
    let r = &h.state.reconciler;
    assert!(r.start());
    assert!(r.is_running());
    assert!(!r.start(), "a second start does not spawn a second loop");
    let before = std::time::Instant::now();
    assert!(r.stop(Duration::from_secs(5)).await);
    assert!(before.elapsed() < Duration::from_secs(2));
    assert!(!r.is_running());
    assert!(r.start(), "restartable after stop");
    assert!(r.stop(Duration::from_secs(5)).await);
}

// A gate that errors (not red) backs off per task and is reported once as needing a human.
#[tokio::test]
async fn gate_errors_back_off_and_are_reported_once() {
    let h = harness(|c, _| c.reconcile.interval = Duration::from_secs(60)).await;
    let t = h.task("ET-95", "development", 3600).await;
    Mock::given(method("GET"))
        .and(path(format!(
            "/api/v1/repos/{REPO}/branches/feature/ET-95-x"
        )))
        .respond_with(ResponseTemplate::new(500))
        .mount(&h.peers.gitea)
        .await;
    let mut evaluated = 0;
    for _ in 0..40 {
        let report = h.state.reconciler.reconcile_gate_once().await;
        evaluated += report.errors.len();
        h.clock.advance(Duration::from_secs(600));
    }
    assert!(
        evaluated >= orch::reconciler::GATE_ERROR_CAP as usize,
        "{evaluated}"
    );
    assert!(
        evaluated < 40,
        "backs off instead of hammering Gitea: {evaluated}"
    );
    h.state.drain_outbox().await.unwrap();
    let texts = h.peers.telegram_texts().await;
    assert_eq!(
        texts.iter().filter(|t| t.contains("needs a human")).count(),
        1,
        "{texts:?}"
    );
    assert_eq!(h.stage_of(t.id).await, "development");
}

// ---------------------------------------------------------------------------------------------
// F-2: the Plane side.

fn item(seq: i64, state: &str, updated: &str) -> serde_json::Value {
    let group = STATES
        .iter()
        .find(|(n, _)| *n == state)
        .map(|(_, g)| *g)
        .unwrap_or("started");
    serde_json::json!({
        "id": format!("issue-{seq}"), "name": format!("Item {seq}"), "sequence_id": seq,
        "state": {"id": state_id(state), "name": state, "color": "#000", "group": group},
        "labels": [], "project": PROJECT_ID, "updated_at": updated
    })
}

fn page(results: Vec<serde_json::Value>, next: Option<&str>) -> serde_json::Value {
    serde_json::json!({
        "grouped_by": null, "sub_grouped_by": null, "total_count": 5,
        "next_cursor": next.unwrap_or("100:9:0"), "prev_cursor": "100:-1:1",
        "next_page_results": next.is_some(), "prev_page_results": false,
        "count": results.len(), "total_pages": 3, "total_results": 5, "extra_stats": null,
        "results": results
    })
}

const LIST: &str =
    "/api/v1/workspaces/acme/projects/59e3be42-87ec-4950-99a3-ae639cf2b089/work-items/";

async fn three_pages(h: &H) {
    Mock::given(method("GET"))
        .and(path(LIST))
        .and(query_param("cursor", "100:1:0"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(
            vec![
                item(3, "Backlog", "2026-11-20T10:00:00Z"),
                item(2, "In Progress", "2026-11-20T09:00:00Z"),
            ],
            Some("100:2:0"),
        )))
        .mount(&h.peers.plane)
        .await;
    Mock::given(method("GET"))
        .and(path(LIST))
        .and(query_param("cursor", "100:2:0"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(page(vec![item(1, "Done", "2026-11-19T09:00:00Z")], None)),
        )
        .mount(&h.peers.plane)
        .await;
    Mock::given(method("GET"))
        .and(path(LIST))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(
            vec![
                item(5, "In Progress", "2026-11-21T10:00:00Z"),
                item(4, "Todo", "2026-11-21T09:00:00Z"),
            ],
            Some("100:1:0"),
        )))
        .mount(&h.peers.plane)
        .await;
}

fn list_requests(reqs: &[wiremock::Request]) -> usize {
    reqs.iter().filter(|r| r.url.path() == LIST).count()
}

#[tokio::test]
async fn plane_side_pages_through_every_page_and_replays_lost_starts_once() {
    let h = harness(|_, _| {}).await;
    three_pages(&h).await;
    let report = h.state.reconciler.reconcile_plane_once().await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let reqs = h.peers.plane.received_requests().await.unwrap();
    assert_eq!(list_requests(&reqs), 3);
    assert!(
        reqs.iter().filter(|r| r.url.path() == LIST).all(|r| r
            .url
            .query()
            .unwrap_or("")
            .contains("per_page=100"))
    );
    assert_eq!(
        report.replays, 2,
        "ET-5 and ET-2 were In Progress without a task"
    );
    for wi in ["ET-5", "ET-2"] {
        let w = wi.to_string();
        let t = h
            .state
            .store
            .call(move |c| store::tasks::get_by_work_item(c, &w))
            .await
            .unwrap();
        let t = t.unwrap_or_else(|| panic!("{wi} started"));
        assert_eq!(t.stage, "analysis");
        assert_eq!(h.jobs_of(t.id, "analyst").await.len(), 1);
    }
    let history_trigger = h
        .state
        .store
        .call(|c| {
            c.query_row(
                "SELECT trigger FROM task_history LIMIT 1",
                orch::args![],
                |r| r.get::<String>(0),
            )
        })
        .await
        .unwrap();
    assert_eq!(history_trigger, "reconciler");

    // Replaying again changes nothing: no new tasks, jobs or replays.
    h.clock.advance(Duration::from_secs(60));
    let again = h.state.reconciler.reconcile_plane_once().await;
    assert_eq!(again.replays, 0);
    let counts: (i64, i64) = h
        .state
        .store
        .call(|c| {
            Ok((
                c.query_row("SELECT COUNT(*) FROM tasks", orch::args![], |r| r.get(0))?,
                c.query_row("SELECT COUNT(*) FROM jobs", orch::args![], |r| r.get(0))?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(counts, (2, 2));
    // The second pass stopped at the watermark of the first: it did not read the old pages.
    let reqs = h.peers.plane.received_requests().await.unwrap();
    assert_eq!(
        list_requests(&reqs),
        4,
        "one page suffices once the watermark is known"
    );
}

#[tokio::test]
async fn plane_side_honours_429_retry_after() {
    let h = harness(|_, _| {}).await;
    Mock::given(method("GET"))
        .and(path(LIST))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "1")
                .set_body_json(
                    serde_json::json!({"error_code": 5900, "error_message": "RATE_LIMIT_EXCEEDED"}),
                ),
        )
        .up_to_n_times(1)
        .mount(&h.peers.plane)
        .await;
    Mock::given(method("GET"))
        .and(path(LIST))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(
            vec![item(7, "In Progress", "2026-11-21T10:00:00Z")],
            None,
        )))
        .mount(&h.peers.plane)
        .await;
    let started = std::time::Instant::now();
    let report = h.state.reconciler.reconcile_plane_once().await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.replays, 1);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "waited for Retry-After"
    );
    assert_eq!(
        list_requests(&h.peers.plane.received_requests().await.unwrap()),
        2
    );
}

#[tokio::test]
async fn plane_side_one_project_failing_does_not_stop_another() {
    const OTHER: &str = "11111111-2222-4333-8444-555555555555";
    let h = harness(|c, _| {
        c.projects.insert(
            0,
            orch::config::Project {
                plane_project_id: OTHER.into(),
                identifier: "OPS".into(),
                repo: "acme/ops".into(),
                clone_url: None,
            },
        );
    })
    .await;
    Mock::given(method("GET"))
        .and(path(format!(
            "/api/v1/workspaces/acme/projects/{OTHER}/work-items/"
        )))
        .respond_with(ResponseTemplate::new(500).set_body_string("database is down"))
        .mount(&h.peers.plane)
        .await;
    Mock::given(method("GET"))
        .and(path(LIST))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(
            vec![item(8, "In Progress", "2026-11-21T10:00:00Z")],
            None,
        )))
        .mount(&h.peers.plane)
        .await;
    let report = h.state.reconciler.reconcile_plane_once().await;
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert!(report.errors[0].contains("OPS"));
    assert_eq!(report.replays, 1);
    let t = h
        .state
        .store
        .call(|c| store::tasks::get_by_work_item(c, "ET-8"))
        .await
        .unwrap();
    assert!(t.is_some());
}

#[tokio::test]
async fn plane_side_replays_a_lost_approval_once() {
    let h = harness(|_, _| {}).await;
    // ET-9 sits in analysis since before the person approved it in Plane.
    let t = h.plane_item_task(9, "analysis", None).await;
    Mock::given(method("GET"))
        .and(path(LIST))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(
            vec![item(9, "Approved", "2026-11-21T10:00:00Z")],
            None,
        )))
        .mount(&h.peers.plane)
        .await;
    let report = h.state.reconciler.reconcile_plane_once().await;
    assert_eq!(report.replays, 1, "{:?}", report.plane);
    assert_eq!(h.stage_of(t.id).await, "development");
    assert_eq!(h.jobs_of(t.id, "developer").await.len(), 1);
    h.clock.advance(Duration::from_secs(60));
    let again = h.state.reconciler.reconcile_plane_once().await;
    assert_eq!(again.replays, 0);
    assert_eq!(h.stage_of(t.id).await, "development");
    // The sweep keeps what it saw, for `orch rules diff --db`.
    let seen = h.state.store.call(store::plane_seen::all).await.unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        (seen[0].work_item.as_str(), seen[0].state_name.as_str()),
        ("ET-9", "Approved")
    );
    assert_eq!(
        seen[0].updated_at,
        Timestamp::parse_rfc3339("2026-11-21T10:00:00Z").unwrap()
    );
}

#[tokio::test]
async fn plane_side_replays_a_lost_cancel_once() {
    let h = harness(|_, _| {}).await;
    // ET-9 has a developer job queued when the person cancels the item in Plane.
    let t = h.plane_item_task(9, "development", Some("developer")).await;
    Mock::given(method("GET"))
        .and(path(LIST))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(
            vec![item(9, "Cancelled", "2026-11-21T10:00:00Z")],
            None,
        )))
        .mount(&h.peers.plane)
        .await;
    let report = h.state.reconciler.reconcile_plane_once().await;
    assert_eq!(report.replays, 1, "{:?}", report.plane);
    assert_eq!(h.stage_of(t.id).await, "cancelled");
    let jobs = h.jobs_of(t.id, "developer").await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].status, store::JobStatus::Failed);
    assert_eq!(jobs[0].error.as_deref(), Some("cancelled"));
    h.clock.advance(Duration::from_secs(60));
    let again = h.state.reconciler.reconcile_plane_once().await;
    assert_eq!(again.replays, 0, "{:?}", again.plane);
    assert_eq!(h.stage_of(t.id).await, "cancelled");
}

// Level-triggered sync: a Plane state orch never managed to write (a database from before
// the outbox, an effect that died) is owed again; a person's newer change is left alone.
#[tokio::test]
async fn plane_sync_owes_a_lost_state_again_but_never_overwrites_a_newer_human_change() {
    let h = harness(|_, _| {}).await;
    let lost = h.plane_item_task(1, "development", None).await;
    let human = h.plane_item_task(2, "development", None).await;
    Mock::given(method("GET"))
        .and(path(LIST))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(
            vec![
                // Changed by a person after orch moved the task: an input, not drift.
                item(2, "Backlog", "2026-11-22T09:00:00Z"),
                // Last changed before orch moved the task: orch's write was lost.
                item(1, "Backlog", "2026-11-20T09:00:00Z"),
            ],
            None,
        )))
        .mount(&h.peers.plane)
        .await;
    let report = h.state.reconciler.sweep(Mode::Apply).await;
    assert_eq!(report.synced.len(), 1, "{report:#?}");
    assert!(report.synced[0].starts_with("ET-1:"), "{report:#?}");
    h.state.drain_outbox().await.unwrap();
    let patched: Vec<String> = h
        .peers
        .plane
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "PATCH")
        .map(|r| r.url.path().to_string())
        .collect();
    assert_eq!(patched.len(), 1, "{patched:?}");
    assert!(patched[0].contains(lost.plane_issue_id.as_deref().unwrap()));
    assert!(!patched[0].contains(human.plane_issue_id.as_deref().unwrap()));
    assert_eq!(h.peers.plane_states_set().await, [state_id("In Progress")]);
    assert_eq!(h.state.metrics.plane_sync_owed.get(), 1);

    // Once said, it is not said again while Plane agrees (the next sync, a grace later).
    Mock::given(method("GET"))
        .and(path(LIST))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(
            vec![
                item(1, "In Progress", "2026-11-23T09:00:00Z"),
                item(2, "Backlog", "2026-11-22T09:00:00Z"),
            ],
            None,
        )))
        .with_priority(1)
        .mount(&h.peers.plane)
        .await;
    h.clock.advance(Duration::from_secs(3600));
    let again = h.state.reconciler.sweep(Mode::Apply).await;
    assert!(again.synced.is_empty(), "{again:#?}");
    assert_eq!(h.state.metrics.plane_sync_owed.get(), 1);
}

// A new install: the first sweep replays only what changed after orch was installed, not
// the whole backlog of In Progress items; the report says what a wider window would start.
#[tokio::test]
async fn a_new_install_does_not_start_the_backlog() {
    let h = harness(|c, _| c.reconcile.plane_since = None).await;
    Mock::given(method("GET"))
        .and(path(LIST))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(
            vec![item(5, "In Progress", "2026-11-20T09:00:00Z")],
            None,
        )))
        .mount(&h.peers.plane)
        .await;
    let report = h.state.reconciler.sweep(Mode::Apply).await;
    assert_eq!(report.replays, 0, "{report:#?}");
    let line = report.plane.iter().find(|p| p.work_item == "ET-5").unwrap();
    assert!(
        line.action
            .as_deref()
            .is_some_and(|a| a.contains("before plane_since")),
        "{line:#?}"
    );
    let task = h
        .state
        .store
        .call(|c| store::tasks::get_by_work_item(c, "ET-5"))
        .await
        .unwrap();
    assert!(task.is_none(), "no agent starts on the backlog");

    // Widened explicitly (RFC 3339), the same item is started.
    let wide = harness(|c, _| {
        c.reconcile.plane_since = Some(orch::config::PlaneSince::At(
            Timestamp::parse_rfc3339("2026-11-01T00:00:00Z").unwrap(),
        ))
    })
    .await;
    Mock::given(method("GET"))
        .and(path(LIST))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(
            vec![item(5, "In Progress", "2026-11-20T09:00:00Z")],
            None,
        )))
        .mount(&wide.peers.plane)
        .await;
    let report = wide.state.reconciler.sweep(Mode::Apply).await;
    assert_eq!(report.replays, 1, "{report:#?}");
}

/// Plane's stamp for a change made at `at` on orch's clock, with Plane's clock `skew_s` off.
fn plane_stamp(at: Timestamp, skew_s: i64) -> String {
    let t = Timestamp::from_millis(at.as_millis() + skew_s * 1000);
    serde_json::to_value(t)
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

/// F-2 compares Plane's clock with Plane's clock: with Plane 10 minutes ahead an applied
/// rejection is not replayed again (another analysis round), and with Plane 10 minutes behind
/// a lost approval is still replayed.
#[tokio::test]
async fn plane_side_loses_nothing_and_repeats_nothing_with_plane_ten_minutes_off() {
    use orch::agent::{AgentOutcome, AgentStatus, Verdict};
    use orch::pipeline::webhook::PlaneItem;
    let h = harness(|_, _| {}).await;
    let ahead = h.plane_item_task(7, "analysis", None).await;
    let behind = h.plane_item_task(8, "analysis", None).await;
    let plane_item = |seq: i64, state: &str, stamp: &str| PlaneItem {
        item: orch::pipeline::WorkItem {
            work_item: format!("ET-{seq}"),
            plane_issue_id: Some(format!("issue-{seq}")),
            plane_project_id: PROJECT_ID.into(),
            title: format!("Item {seq}"),
            labels: vec![],
        },
        state_name: state.into(),
        state_group: Some("started".into()),
        actor: None,
        changed_at: None,
        plane_updated_at: Some(Timestamp::parse_rfc3339(stamp).unwrap()),
    };
    let p = &h.state.pipeline;
    // ET-7: a person rejects (Plane 10 min ahead); the webhook arrives and is applied.
    let rejected_at = plane_stamp(h.clock.now(), 600);
    p.apply_plane_state(&plane_item(7, "Rejected", &rejected_at), Trigger::Webhook)
        .await
        .unwrap();
    // ET-8: its start was applied an hour ago (Plane 10 min behind).
    let started_at = plane_stamp(h.clock.now().minus(Duration::from_secs(3600)), -600);
    p.apply_plane_state(&plane_item(8, "In Progress", &started_at), Trigger::Webhook)
        .await
        .unwrap();
    // The re-analysis of ET-7 finishes two minutes later (orch's clock); ET-8's analysis too.
    h.clock.advance(Duration::from_secs(120));
    for t in [&ahead, &behind] {
        let (id, now) = (t.id, h.clock.now());
        h.state
            .store
            .call(move |c| {
                store::jobs::enqueue(c, id, "analyst", "analysis", now)?;
                Ok(())
            })
            .await
            .unwrap();
    }
    while let Some(job) = h
        .state
        .store
        .call({
            let (now, me) = (h.clock.now(), h.state.replica.to_string());
            move |c| store::jobs::claim_next(c, &me, now)
        })
        .await
        .unwrap()
    {
        let done = AgentOutcome {
            status: AgentStatus::Succeeded,
            verdict: Some(Verdict::Approve),
            summary: None,
            output_excerpt: String::new(),
            result_error: None,
        };
        p.job_finished(&job, done).await.unwrap();
    }
    let analyses = h.jobs_of(ahead.id, "analyst").await.len();
    // ET-8: a person approves now; Plane stamps it 10 minutes behind; the webhook is lost.
    let approved_at = plane_stamp(h.clock.now(), -600);
    Mock::given(method("GET"))
        .and(path(LIST))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(
            vec![
                item(7, "Rejected", &rejected_at),
                item(8, "Approved", &approved_at),
            ],
            None,
        )))
        .mount(&h.peers.plane)
        .await;
    // Two sweeps, a grace apart: nothing is too recent the second time.
    h.state.reconciler.sweep(Mode::Apply).await;
    h.clock.advance(Duration::from_secs(2 * 3600));
    let report = h.state.reconciler.sweep(Mode::Apply).await;
    assert_eq!(
        h.jobs_of(ahead.id, "analyst").await.len(),
        analyses,
        "the applied rejection was not replayed: {report:#?}"
    );
    assert_eq!(h.stage_of(ahead.id).await, "analysis");
    assert_eq!(
        h.stage_of(behind.id).await,
        "development",
        "the lost approval was replayed: {report:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The red-gate backoff and the budget per sweep (issue 16).

/// Gitea now reports CI `status` for `wi`'s head, over what `H::ci` mounted before.
async fn ci_now(h: &H, wi: &str, status: &str) {
    let sha = format!("sha{}", wi.replace('-', ""));
    Mock::given(method("GET"))
        .and(path(format!("/api/v1/repos/{REPO}/commits/{sha}/statuses")))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("X-Total-Count", "1")
                .set_body_json(
                    serde_json::json!([{"id": 2, "status": status, "context": "ci/build"}]),
                ),
        )
        .with_priority(1)
        .mount(&h.peers.gitea)
        .await;
}

/// The push webhook of `wi`'s branch, as the inbox hands it to the pipeline.
fn push_of(wi: &str) -> store::InboxItem {
    let body = serde_json::json!({
        "ref": format!("refs/heads/feature/{wi}-x"),
        "repository": {"full_name": REPO},
    });
    store::InboxItem {
        id: 1,
        source: "gitea".into(),
        event: "push".into(),
        body: serde_json::to_vec(&body).unwrap(),
        body_hash: "push".into(),
        received_at: T0,
        processed_at: None,
        error: None,
        attempts: 0,
    }
}

#[tokio::test]
async fn a_red_gate_is_read_on_the_backoff_schedule_and_at_once_after_an_event() {
    let h = harness(|c, _| c.reconcile.interval = Duration::from_secs(60)).await;
    let t = h.task("ET-7", "development", 3600).await;
    h.ci("ET-7", "failure").await;
    let mut read_on = Vec::new();
    for sweep in 1..=20 {
        let before = h.gitea_calls_for("ET-7").await;
        let report = h.state.reconciler.reconcile_gate_once().await;
        if h.gitea_calls_for("ET-7").await > before {
            read_on.push(sweep);
            assert_eq!(report.gate_checks, 1);
        } else {
            assert_eq!(report.backing_off, 1, "sweep {sweep}");
            assert_eq!(report.summary["development"]["backoff"], 1);
        }
        h.clock.advance(Duration::from_secs(60));
    }
    // Red after 1, 2, 4, 8 … intervals.
    assert_eq!(read_on, [1, 2, 4, 8, 16]);
    assert_eq!(h.stage_of(t.id).await, "development");

    // `explain` says when the next read is due, and why.
    let x = h
        .state
        .reconciler
        .explain_with("ET-7", orch::reconciler::GateView::LastKnown)
        .await
        .unwrap()
        .unwrap();
    let next = x.next_check.expect("a next check");
    // The fifth red (sweep 16, at T0 + 15 min) waits 16 intervals.
    assert_eq!(next.at, T0.plus(Duration::from_secs(15 * 60 + 16 * 60)));
    assert!(next.why.contains("red 5 time(s) in a row"), "{}", next.why);

    // A push to the branch is news: its own advance reads the gate (still red), and the very
    // next sweep reads it again instead of waiting out the backoff.
    let before = h.gitea_calls_for("ET-7").await;
    let outcome = h.state.pipeline.handle_delivery(&push_of("ET-7")).await;
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(h.gitea_calls_for("ET-7").await, before + 1);
    let x = h
        .state
        .reconciler
        .explain_with("ET-7", orch::reconciler::GateView::LastKnown)
        .await
        .unwrap()
        .unwrap();
    let next = x.next_check.expect("a next check");
    assert!(next.why.contains("an event about the task"), "{}", next.why);
    h.clock.advance(Duration::from_secs(60));
    h.state.reconciler.reconcile_gate_once().await;
    assert_eq!(
        h.gitea_calls_for("ET-7").await,
        before + 2,
        "read right after the event"
    );
    // CI finishes green and its status webhook is lost: one interval later the sweep reads
    // it (a fresh streak of one red) and advances the task.
    ci_now(&h, "ET-7", "success").await;
    h.clock.advance(Duration::from_secs(60));
    let report = h.state.reconciler.reconcile_gate_once().await;
    assert_eq!(h.stage_of(t.id).await, "review", "{report:?}");
    assert_eq!(report.unblocked.len(), 1);
}

#[tokio::test]
async fn a_rule_change_to_the_gate_ends_its_backoff() {
    let h = harness(|c, _| c.reconcile.interval = Duration::from_secs(60)).await;
    let t = h.task("ET-8", "development", 3600).await;
    h.ci("ET-8", "failure").await;
    for _ in 0..2 {
        h.state.reconciler.reconcile_gate_once().await;
        h.clock.advance(Duration::from_secs(60));
    }
    // Red on sweeps 1 and 2; the third waits (two intervals after the second red).
    let waits = h.state.reconciler.reconcile_gate_once().await;
    assert_eq!((waits.gate_checks, waits.backing_off), (0, 1));
    let streak = h
        .state
        .store
        .call(move |c| store::gate_backoff::get(c, t.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((streak.reds, streak.gate.as_str()), (2, "ci_green"));
    // The stored gate is not the one the rules now write: due at once.
    let changed = "ci_green || tests_passed".to_string();
    h.state
        .store
        .call(move |c| {
            c.execute("UPDATE gate_backoff SET gate = ?1", orch::args![changed])?;
            Ok(())
        })
        .await
        .unwrap();
    let report = h.state.reconciler.reconcile_gate_once().await;
    assert_eq!(report.gate_checks, 1, "{report:?}");
}

#[tokio::test]
async fn the_budget_reads_the_oldest_due_first_and_leaves_no_task_behind() {
    let h = harness(|c, _| {
        c.reconcile.interval = Duration::from_secs(60);
        c.reconcile.max_gate_checks = 2;
    })
    .await;
    // Five red tasks, ET-11 stuck longest.
    for (i, age) in [(11, 5000), (12, 4000), (13, 3000), (14, 2000), (15, 1000)] {
        let wi = format!("ET-{i}");
        h.task(&wi, "development", age).await;
        h.ci(&wi, "failure").await;
    }
    let checked = |r: &orch::reconciler::SweepReport| {
        let mut v: Vec<String> = r
            .tasks
            .iter()
            .filter(|t| matches!(t.decision.outcome, orch::policy::Outcome::Hold { .. }))
            .map(|t| t.work_item.clone())
            .collect();
        v.sort();
        v
    };
    let r1 = h.state.reconciler.reconcile_gate_once().await;
    assert_eq!((r1.gate_checks, r1.over_budget), (2, 3));
    assert_eq!(checked(&r1), ["ET-11", "ET-12"]);
    assert_eq!(r1.summary["development"]["hold"], 2);
    assert_eq!(r1.summary["development"]["over_budget"], 3);
    assert!(
        r1.tasks
            .iter()
            .filter(|t| t.action.as_deref().is_some_and(|a| a.contains("budget")))
            .count()
            == 3
    );
    h.clock.advance(Duration::from_secs(60));
    let r2 = h.state.reconciler.reconcile_gate_once().await;
    // ET-11 and ET-12 are due again, but ET-13 and ET-14 have been due for longer.
    assert_eq!(checked(&r2), ["ET-13", "ET-14"]);
    h.clock.advance(Duration::from_secs(60));
    let r3 = h.state.reconciler.reconcile_gate_once().await;
    assert_eq!(checked(&r3), ["ET-11", "ET-15"]);
    // A push to ET-14's branch is news: read in the next sweep ahead of ET-13, which has
    // waited as long.
    let pushed = h.state.pipeline.handle_delivery(&push_of("ET-14")).await;
    assert!(pushed.is_ok(), "{pushed:?}");
    h.clock.advance(Duration::from_secs(60));
    let r4 = h.state.reconciler.reconcile_gate_once().await;
    assert_eq!(checked(&r4), ["ET-12", "ET-14"]);

    // The background loop keeps the counts but not the lines of tasks that only hold.
    h.clock.advance(Duration::from_secs(600));
    let quiet = h
        .state
        .reconciler
        .sweep_rows(Mode::DryRun, orch::reconciler::Rows::Notable)
        .await;
    assert_eq!(quiet.gate_checks, 2);
    assert!(quiet.tasks.is_empty(), "{:?}", quiet.tasks);
    let counted: u64 = quiet.summary["development"].values().sum();
    assert_eq!(counted, 5);
}

// Late is not lost: a task that a delivery still waiting in the inbox may move is left to that
// delivery (Plane item, branch, or a whole repository for a CI status, which names no
// branch); the others are read and advanced. The pass finds them by id, with one query.
#[tokio::test]
async fn tasks_a_waiting_delivery_concerns_are_left_to_it() {
    let h = harness(|_, _| {}).await;
    let by_plane = h.task("ET-1", "development", 3600).await;
    let by_branch = h.task("ET-2", "development", 3600).await;
    let free = h.task("ET-3", "development", 3600).await;
    for wi in ["ET-1", "ET-2", "ET-3"] {
        h.ci(wi, "success").await;
    }
    let waiting = [
        (
            "plane",
            "issue",
            serde_json::json!({"event": "issue", "action": "updated", "data": {"id": "issue-ET-1"}}),
        ),
        (
            "gitea",
            "push",
            serde_json::json!({"ref": "refs/heads/feature/ET-2-x", "repository": {"full_name": REPO}}),
        ),
        // Another repository's CI status: concerns none of these tasks.
        (
            "gitea",
            "status",
            serde_json::json!({"sha": "abc", "state": "success", "repository": {"full_name": "acme/other"}}),
        ),
    ];
    for (source, event, body) in waiting {
        let body = serde_json::to_vec(&body).unwrap();
        let now = h.clock.now();
        h.state
            .store
            .call(move |c| store::inbox::insert(c, source, event, &body, now))
            .await
            .unwrap()
            .unwrap();
    }
    let report = h.state.reconciler.sweep(Mode::Apply).await;
    assert_eq!(report.summary["development"]["late"], 2, "{report:#?}");
    assert_eq!(h.stage_of(by_plane.id).await, "development");
    assert_eq!(h.stage_of(by_branch.id).await, "development");
    assert_eq!(h.stage_of(free.id).await, "review", "{report:#?}");
    assert_eq!(
        h.gitea_calls_for("ET-1").await,
        0,
        "late tasks are not read"
    );

    // A CI status of their repository may concern any of them: all are late.
    let other = h.task("ET-4", "development", 3600).await;
    h.ci("ET-4", "success").await;
    let body = serde_json::to_vec(
        &serde_json::json!({"sha": "def", "state": "success", "repository": {"full_name": REPO}}),
    )
    .unwrap();
    let now = h.clock.now();
    h.state
        .store
        .call(move |c| store::inbox::insert(c, "gitea", "status", &body, now))
        .await
        .unwrap()
        .unwrap();
    let report = h.state.reconciler.sweep(Mode::Apply).await;
    assert_eq!(report.summary["development"]["late"], 3, "{report:#?}");
    assert_eq!(h.stage_of(other.id).await, "development");
}

// Plane's budget shared fairly (issue 16): while effects owed to Plane wait in the outbox,
// the sweep's Plane reads take at most every other slot of the Plane client, leaving the rest
// to the dispatcher. At 120 requests a minute a slot is 0.5 s, so the sweep's three page reads
// are at least a second apart with effects waiting: 2 s at the least (a lower bound, which
// load cannot break). With nothing owed the reads run at the client's pace, one per slot.
#[tokio::test]
async fn with_plane_effects_waiting_the_sweep_reads_plane_at_most_every_other_slot() {
    let h = harness(|c, _| c.plane.requests_per_minute = 120).await;
    three_pages(&h).await;
    let effect = orch::store::outbox::NewEffect::new(
        "ET-9",
        orch::store::outbox::Effect::PlaneState {
            project: PROJECT_ID.into(),
            issue: "issue-9".into(),
            state: "In Progress".into(),
        },
    );
    let now = h.clock.now();
    h.state
        .store
        .call(move |c| orch::store::outbox::push(c, None, &effect, now))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let report = h.state.reconciler.reconcile_plane_once().await;
    let took = started.elapsed();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let reqs = h.peers.plane.received_requests().await.unwrap();
    assert_eq!(list_requests(&reqs), 3);
    assert!(
        took >= Duration::from_millis(1_950),
        "three reads with effects waiting took {took:?}: the sweep took the dispatcher's slots"
    );
}
