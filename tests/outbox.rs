//! Effects survive a crash: a transition is killed at every step boundary (after the job's
//! end, after the stage commit, after each effect is claimed and after each is sent), the
//! process restarts on the same database, and Plane converges: the task's stage, its Plane
//! state, one job per stage visit, no comment twice, no message twice.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use orch::agent::{AgentOutcome, AgentStatus, Verdict};
use orch::app::{AppState, Components};
use orch::clock::{ManualClock, Timestamp};
use orch::config::Config;
use orch::outbox::{Failpoint, Step};
use orch::store::outbox::{EffectStatus, Peer};
use orch::store::{self, Trigger};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

const T0: Timestamp = Timestamp::from_millis(1_800_000_000_000);

/// Plane's comment endpoint as Plane behaves: a second comment with the same external id is
/// refused (409), so the comments that exist are the ones answered 201.
#[derive(Clone, Default)]
struct PlaneComments(Arc<Mutex<Vec<String>>>);

impl Respond for PlaneComments {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
        let id = v["external_id"].as_str().unwrap_or_default().to_string();
        let mut seen = self.0.lock().unwrap();
        if seen.contains(&id) {
            return ResponseTemplate::new(409).set_body_json(serde_json::json!({
                "error": "Comment with the same external id and external source already exists",
            }));
        }
        seen.push(id);
        ResponseTemplate::new(201).set_body_json(serde_json::json!({"id": "c"}))
    }
}

/// Where the process dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Crash {
    /// The job's end is committed; the gate was never evaluated.
    AfterJobEnd,
    /// The stage change (or notice) and its effects are committed; nothing delivered.
    AfterCommit,
    /// The `n`-th effect delivered (0-based, in dispatch order) dies at `step`.
    InEffect(usize, Step),
}

struct World {
    peers: Peers,
    comments: PlaneComments,
    clock: Arc<ManualClock>,
    cfg: Config,
    _dir: tempfile::TempDir,
}

impl World {
    async fn new() -> World {
        let peers = Peers::start().await;
        let comments = PlaneComments::default();
        Mock::given(method("POST"))
            .and(path_regex(r"/comments/$"))
            .respond_with(comments.clone())
            .with_priority(1)
            .mount(&peers.plane)
            .await;
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = test_config(dir.path());
        peers.configure(&mut cfg, "unused");
        cfg.reconcile.interval = Duration::from_secs(60);
        cfg.reconcile.notify_unblock = Some(true);
        World {
            peers,
            comments,
            clock: Arc::new(ManualClock::new(T0)),
            cfg,
            _dir: dir,
        }
    }

    /// A process: the components on the database, as `orch serve` builds them.
    fn process(&self) -> AppState {
        Components::build(self.cfg.clone(), self.clock.clone())
            .unwrap()
            .state
    }

    /// Plane state ids PATCHed, in order.
    async fn plane_states(&self) -> Vec<String> {
        self.peers.plane_states_set().await
    }
}

/// A task in `stage` whose `agent` job is running now.
async fn running_job(state: &AppState, stage: &str, agent: &'static str) -> store::Job {
    let new = store::NewTask {
        work_item: "ET-42".into(),
        plane_issue_id: Some(ISSUE_ID.into()),
        plane_project_id: Some(PROJECT_ID.into()),
        title: "Login redirect loop".into(),
        repo: REPO.into(),
        branch: "feature/ET-42-login".into(),
        stage: stage.into(),
        labels: vec![],
    };
    let (now, me) = (state.clock.now(), state.replica.to_string());
    state
        .store
        .call(move |c| {
            c.write(|c| {
                store::tasks::create_atomic(c, &new, Some(agent), "v", Trigger::Webhook, now)?;
                Ok(store::jobs::claim_next(c, &me, now)?.expect("the job just queued"))
            })
        })
        .await
        .unwrap()
}

/// The one task every test here works on.
async fn et42(state: &AppState) -> store::Task {
    state
        .store
        .call(|c| store::tasks::get_by_work_item(c, "ET-42"))
        .await
        .unwrap()
        .unwrap()
}

fn finished(verdict: Verdict) -> AgentOutcome {
    AgentOutcome {
        status: AgentStatus::Succeeded,
        verdict: Some(verdict),
        summary: Some("looks good".into()),
        output_excerpt: String::new(),
        result_error: None,
    }
}

/// Runs the transition that ends `agent`'s job in `stage` with `verdict`, crashing at `crash`;
/// then restarts, lets the sweep and the dispatchers run, and returns the restarted process.
async fn crash_and_restart(
    w: &World,
    stage: &str,
    agent: &'static str,
    verdict: Verdict,
    crash: Crash,
) -> AppState {
    {
        let before = w.process();
        let job = running_job(&before, stage, agent).await;
        if crash == Crash::AfterJobEnd {
            // Exactly what the job's own transaction writes, and nothing after it.
            let result = store::jobs::JobResult {
                verdict: Some(verdict.as_str().into()),
                ..Default::default()
            };
            let (id, claim, st, now) = (job.id, job.claim, job.stage.clone(), before.clock.now());
            before
                .store
                .call(move |c| {
                    store::jobs::finish_owing(c, id, claim, true, &result, &st, None, &[], now)
                })
                .await
                .unwrap();
        } else {
            before
                .pipeline
                .job_finished(&job, finished(verdict))
                .await
                .unwrap();
        }
        if let Crash::InEffect(n, step) = crash {
            let seen = Arc::new(Mutex::new(Vec::<i64>::new()));
            let fp: Failpoint = Arc::new(move |id, at| {
                let mut seen = seen.lock().unwrap();
                if !seen.contains(&id) {
                    seen.push(id);
                }
                seen.len() == n + 1 && at == step
            });
            let cancel = tokio_util::sync::CancellationToken::new();
            for peer in Peer::ALL {
                let mut d = before.dispatcher(peer);
                d.failpoint = Some(Arc::clone(&fp));
                d.drain(&cancel).await.unwrap();
            }
        }
        // The process dies here: everything it held is dropped.
    }
    w.clock.advance(Duration::from_secs(3600));
    let after = w.process();
    orch::outbox::recover(&after.store, after.clock.as_ref())
        .await
        .unwrap();
    after.reconciler.reconcile_gate_once().await;
    after.drain_outbox().await.unwrap();
    after
}

/// How many effects the transition owes, from an uncrashed run.
async fn effects_owed(stage: &str, agent: &'static str, verdict: Verdict) -> usize {
    let w = World::new().await;
    let state = w.process();
    let job = running_job(&state, stage, agent).await;
    state
        .pipeline
        .job_finished(&job, finished(verdict))
        .await
        .unwrap();
    let task_id = job.task_id;
    state
        .store
        .call(move |c| store::outbox::for_task(c, task_id))
        .await
        .unwrap()
        .len()
}

fn crash_points(effects: usize) -> Vec<Crash> {
    let mut points = vec![Crash::AfterJobEnd, Crash::AfterCommit];
    for n in 0..effects {
        points.push(Crash::InEffect(n, Step::Claimed));
        points.push(Crash::InEffect(n, Step::Called));
    }
    points
}

async fn assert_converged(w: &World, after: &AppState, stage: &str, plane_state: &str, what: &str) {
    let task = et42(after).await;
    assert_eq!(task.stage, stage, "{what}: stage");
    assert_eq!(
        w.plane_states().await.last(),
        Some(&state_id(plane_state)),
        "{what}: Plane shows the stage's state"
    );
    let (id, history_id) = (task.id, task.id);
    let effects = after
        .store
        .call(move |c| store::outbox::for_task(c, id))
        .await
        .unwrap();
    assert!(
        effects
            .iter()
            .all(|e| matches!(e.status, EffectStatus::Sent | EffectStatus::Skipped)),
        "{what}: nothing is left owed or dead: {effects:#?}"
    );
    // One job per agent per stage visit.
    let jobs = after
        .store
        .call(move |c| store::jobs::for_task(c, id))
        .await
        .unwrap();
    let history = after
        .store
        .call(move |c| store::tasks::history(c, history_id))
        .await
        .unwrap();
    let mut runs: HashMap<String, usize> = HashMap::new();
    for j in &jobs {
        *runs.entry(j.stage.clone()).or_default() += 1;
    }
    for (st, n) in runs {
        let visits = history.iter().filter(|h| h.to_stage == st).count();
        assert!(n <= visits, "{what}: {n} jobs for {visits} visits of {st}");
    }
    // Plane holds each comment once; Telegram got each message at most once.
    let accepted = w.comments.0.lock().unwrap().clone();
    let unique: HashSet<_> = accepted.iter().collect();
    assert_eq!(unique.len(), accepted.len(), "{what}: {accepted:?}");
    let texts = w.peers.telegram_texts().await;
    let unique: HashSet<_> = texts.iter().collect();
    assert_eq!(
        unique.len(),
        texts.len(),
        "{what}: messages sent twice: {texts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_reaching_done_converges_after_a_crash_at_every_step() {
    let owed = effects_owed("testing", "tester", Verdict::Pass).await;
    assert_eq!(owed, 2, "Plane Done and the stage message");
    for crash in crash_points(owed) {
        let w = World::new().await;
        let after = crash_and_restart(&w, "testing", "tester", Verdict::Pass, crash).await;
        assert_converged(&w, &after, "done", "Done", &format!("{crash:?}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analysis_awaiting_its_human_converges_after_a_crash_at_every_step() {
    let owed = effects_owed("analysis", "analyst", Verdict::Approve).await;
    assert_eq!(owed, 3, "Plane In Review, the comment and the message");
    for crash in crash_points(owed) {
        let w = World::new().await;
        let after = crash_and_restart(&w, "analysis", "analyst", Verdict::Approve, crash).await;
        assert_converged(&w, &after, "analysis", "In Review", &format!("{crash:?}")).await;
        assert_eq!(
            w.comments.0.lock().unwrap().len(),
            1,
            "{crash:?}: the review request is in Plane once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_plane_states_supersede_older_ones_and_orders_hold_per_work_item() {
    let w = World::new().await;
    let state = w.process();
    let job = running_job(&state, "testing", "tester").await;
    // Blocked, then done, owed before anything is delivered: only Done is sent.
    let task = et42(&state).await;
    let blocked = orch::store::outbox::NewEffect::new(
        "ET-42",
        orch::store::outbox::Effect::PlaneState {
            project: PROJECT_ID.into(),
            issue: ISSUE_ID.into(),
            state: "Blocked".into(),
        },
    );
    let (id, now) = (task.id, state.clock.now());
    state
        .store
        .call(move |c| store::outbox::owe(c, Some(id), &[blocked], now))
        .await
        .unwrap();
    state
        .pipeline
        .job_finished(&job, finished(Verdict::Pass))
        .await
        .unwrap();
    state.drain_outbox().await.unwrap();
    assert_eq!(w.plane_states().await, [state_id("Done")]);
    let effects = state
        .store
        .call(move |c| store::outbox::for_task(c, id))
        .await
        .unwrap();
    assert_eq!(effects[0].status, EffectStatus::Skipped, "{effects:#?}");
    assert!(
        effects[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("superseded")),
        "{effects:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_effect_refused_for_good_is_dead_listed_and_retried_by_the_operator() {
    let w = World::new().await;
    // Plane refuses state writes (e.g. a permission problem): 403 is not worth a retry.
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(403).set_body_string("forbidden"))
        .with_priority(1)
        .up_to_n_times(1)
        .mount(&w.peers.plane)
        .await;
    let state = w.process();
    let job = running_job(&state, "testing", "tester").await;
    state
        .pipeline
        .job_finished(&job, finished(Verdict::Pass))
        .await
        .unwrap();
    state.drain_outbox().await.unwrap();
    let dead = state.store.call(store::outbox::dead).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert!(
        dead[0].error.as_deref().unwrap_or("").contains("403"),
        "{dead:#?}"
    );
    let queue = orch::http::status_json(&state).await.unwrap();
    assert_eq!(queue["outbox"]["plane"]["dead"], 1, "{queue}");

    // The operator fixes the permission and offers it again.
    let now = state.clock.now();
    let ids = state
        .store
        .call(move |c| store::outbox::retry_dead(c, None, now))
        .await
        .unwrap();
    assert_eq!(ids, [dead[0].id]);
    state.drain_outbox().await.unwrap();
    assert_eq!(w.plane_states().await.last(), Some(&state_id("Done")));
    let queue = orch::http::status_json(&state).await.unwrap();
    assert_eq!(queue["outbox"]["plane"]["dead"], 0, "{queue}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_found_where_orch_would_show_done_wins_over_the_finished_task() {
    let w = World::new().await;
    // The person cancelled during the run and the webhook was lost: Plane says Cancelled.
    Mock::given(method("GET"))
        .and(path_regex(r"/work-items/[^/]+/$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "id": ISSUE_ID,
            "state": {"id": state_id("Cancelled"), "name": "Cancelled", "group": "cancelled"}
        })))
        .with_priority(1)
        .mount(&w.peers.plane)
        .await;
    let state = w.process();
    let job = running_job(&state, "testing", "tester").await;
    state
        .pipeline
        .job_finished(&job, finished(Verdict::Pass))
        .await
        .unwrap();
    state.drain_outbox().await.unwrap();
    let task = et42(&state).await;
    assert_eq!(task.stage, "cancelled", "the person's earlier cancel wins");
    assert!(
        w.plane_states().await.is_empty(),
        "orch never overwrote the cancel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_failing_after_its_task_was_cancelled_is_not_retried() {
    let w = World::new().await;
    let state = w.process();
    let job = running_job(&state, "development", "developer").await;
    // The agent runs here: the cancel stops it rather than ending the job itself.
    let _token = state.pipeline.running_jobs.register(job.id);
    state
        .pipeline
        .cancel("ET-42", Trigger::Webhook)
        .await
        .unwrap();
    // The agent's failure (it was killed) arrives after the cancel committed.
    let failed = AgentOutcome {
        status: AgentStatus::Failed {
            exit_code: Some(128),
        },
        verdict: None,
        summary: None,
        output_excerpt: String::new(),
        result_error: None,
    };
    state.pipeline.job_finished(&job, failed).await.unwrap();
    let task_id = job.task_id;
    let active = state
        .store
        .call(move |c| store::jobs::has_active(c, task_id))
        .await
        .unwrap();
    assert!(!active, "a cancelled task's job is not queued again");
}
