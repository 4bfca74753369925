//! The reconciler: heals tasks whose webhook was lost.
//!
//! - **F-1, gate side.** Every open task that is quiet for longer than its grace and has no
//!   active job gets its exit gate evaluated (once per sweep); green is advanced through
//!   [`Pipeline::apply_gate`] exactly as a webhook would, with trigger `reconciler`; red is
//!   silence. What is eligible is the policy's decision ([`policy::decide_task`]), so human
//!   gates, grace and kill switches are rules, not code here.
//! - **F-2, Plane side.** Per project, work items are paged newest-updated first down to the
//!   watermark of the previous complete pass, and the states the rules map to start / approve /
//!   reject are replayed through the Plane webhook's own handler when the policy says they have
//!   not happened yet ([`policy::decide_plane_item`]).
//!   A task whose agent asked a question is answered from Plane's comments when the
//!   comment's webhook was lost ([`policy::answer_check_due`] says when to look).
//! - **F-4.** Every unblock logs one line (the rules' `unblock` template), optionally sends it
//!   to Telegram, and is counted for `/queue` and `/metrics`.
//!
//! Never-raise: every task, project and page is its own unit of work; an error is logged and
//! counted and the sweep goes on. All state that matters is in the database, except the
//! per-task error backoff, which restarts empty (a restart is a fresh chance).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::app::ReconcileState;
use crate::clock::Timestamp;
use crate::integrations::plane::PlaneWorkItem;
use crate::pipeline::webhook::PlaneItem;
use crate::pipeline::{Outcome, Pipeline, WorkItem};
use crate::policy::{self, Decision, Outcome as D, Overrides, PlaneOutcome, RuleSet, TaskSnapshot};
use crate::service::Background;
use crate::store::{self, Task, Trigger};

/// After this many consecutive gate errors a task is reported once as needing a human.
pub const GATE_ERROR_CAP: u32 = 5;
const PLANE_PAGE_SIZE: u32 = 100;
/// Safety net against a server that never ends its pages.
const MAX_PAGES_PER_PROJECT: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sides {
    Both,
    Gate,
    Plane,
}

/// One task's line in a sweep report.
#[derive(Debug, Clone, Serialize)]
pub struct TaskReport {
    pub work_item: String,
    pub stage: String,
    pub decision: Decision,
    /// What the pipeline did (absent in dry runs and when nothing was due).
    pub action: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlaneReport {
    pub work_item: String,
    pub state: String,
    pub decision: policy::PlaneDecision,
    pub action: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SweepReport {
    pub at: Option<Timestamp>,
    pub gate_enabled: bool,
    pub plane_enabled: bool,
    pub tasks: Vec<TaskReport>,
    pub plane: Vec<PlaneReport>,
    /// The unblock lines logged in this sweep.
    pub unblocked: Vec<String>,
    /// Answers to agents' questions found in Plane after their comment webhook was lost.
    pub answers: Vec<String>,
    pub replays: u64,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
struct ErrorBackoff {
    failures: u32,
    next_at: Timestamp,
}

pub struct Reconciler {
    pipeline: Pipeline,
    overrides: Overrides,
    interval: Duration,
    state: Arc<Mutex<ReconcileState>>,
    background: Background,
    backoff: Mutex<HashMap<i64, ErrorBackoff>>,
    /// When each task waiting for an answer last had its Plane comments read.
    answer_checks: Mutex<HashMap<i64, Timestamp>>,
    generation: Mutex<u64>,
    /// How many gate checks run at once in a sweep.
    pub concurrency: usize,
}

impl Reconciler {
    pub fn new(pipeline: Pipeline, state: Arc<Mutex<ReconcileState>>) -> Arc<Reconciler> {
        let cfg = &pipeline.config.reconcile;
        let overrides = overrides_from_config(cfg);
        let interval = cfg.interval;
        Arc::new(Reconciler {
            pipeline,
            overrides,
            interval,
            state,
            background: Background::new("reconciler"),
            backoff: Mutex::new(HashMap::new()),
            answer_checks: Mutex::new(HashMap::new()),
            generation: Mutex::new(0),
            concurrency: 4,
        })
    }

    pub fn overrides(&self) -> &Overrides {
        &self.overrides
    }

    /// Starts the sweep loop; a second call while it runs does nothing (returns false).
    pub fn start(self: &Arc<Self>) -> bool {
        let me = Arc::clone(self);
        let started = self
            .background
            .start(move |cancel| async move { me.run(cancel).await });
        if started {
            self.with_state(|s| s.running = true);
        }
        started
    }

    pub fn is_running(&self) -> bool {
        self.background.is_running()
    }

    /// Stops the loop, waiting at most `timeout` (a sweep in progress is abandoned between
    /// units of work; nothing is left half-done because each unit is its own transaction).
    pub async fn stop(&self, timeout: Duration) -> bool {
        let ok = self.background.stop(timeout).await;
        self.with_state(|s| s.running = false);
        ok
    }

    async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let tick = self.interval.min(Duration::from_secs(1));
        let mut last = tokio::time::Instant::now();
        let mut first = true;
        loop {
            let reloaded = self.rules_reloaded();
            if first || reloaded || last.elapsed() >= self.interval {
                first = false;
                last = tokio::time::Instant::now();
                // Not raced against the cancel: a sweep stops between units of work, so an
                // unblock that happened is always logged and counted.
                self.sweep_until(false, &cancel).await;
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(tick) => {}
            }
        }
    }

    /// True (once) after a successful rule reload; clears the error backoff so a policy fix
    /// reaches every stuck task in the next sweep.
    fn rules_reloaded(&self) -> bool {
        let current = self.pipeline.rules.status().generation;
        let mut seen = self.generation.lock().unwrap_or_else(|p| p.into_inner());
        if *seen == current {
            return false;
        }
        let first = *seen == 0;
        *seen = current;
        self.backoff
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        !first
    }

    fn with_state(&self, f: impl FnOnce(&mut ReconcileState)) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
    }

    /// One full pass: F-1 then F-2. `dry_run` decides and reports but changes nothing.
    pub async fn sweep(&self, dry_run: bool) -> SweepReport {
        self.sweep_until(dry_run, &CancellationToken::new()).await
    }

    async fn sweep_until(&self, dry_run: bool, cancel: &CancellationToken) -> SweepReport {
        let report = self.run_sides(Sides::Both, dry_run, cancel).await;
        if !dry_run {
            self.pipeline.metrics.reconcile_sweeps.inc();
            self.with_state(|s| s.last_sweep_at = report.at);
        }
        report
    }

    /// The sides the switches allow, in order; errors are counted unless it is a dry run.
    async fn run_sides(
        &self,
        sides: Sides,
        dry_run: bool,
        cancel: &CancellationToken,
    ) -> SweepReport {
        let rules = self.pipeline.rules.current();
        let switches = self.overrides.effective_switches(&rules);
        let mut report = SweepReport {
            at: Some(self.pipeline.clock.now()),
            gate_enabled: switches.reconcile_enabled && sides != Sides::Plane,
            plane_enabled: switches.reconcile_enabled
                && switches.plane_enabled
                && sides != Sides::Gate,
            ..SweepReport::default()
        };
        if report.gate_enabled {
            self.gate_side(&rules, dry_run, cancel, &mut report).await;
        }
        if report.plane_enabled && !cancel.is_cancelled() {
            self.plane_side(&rules, dry_run, cancel, &mut report).await;
        }
        if !dry_run {
            self.pipeline
                .metrics
                .reconcile_errors
                .inc_by(report.errors.len() as u64);
        }
        report
    }

    // -----------------------------------------------------------------------------------
    // F-1

    /// The gate side alone (the seed's `reconcile_gate_once`).
    pub async fn reconcile_gate_once(&self) -> SweepReport {
        self.run_sides(Sides::Gate, false, &CancellationToken::new())
            .await
    }

    async fn gate_side(
        &self,
        rules: &Arc<RuleSet>,
        dry_run: bool,
        cancel: &CancellationToken,
        report: &mut SweepReport,
    ) {
        let terminal: Vec<String> = rules
            .stages()
            .iter()
            .filter(|s| s.terminal)
            .map(|s| s.name.clone())
            .collect();
        let loaded = self
            .pipeline
            .store
            .call(move |c| {
                Ok((
                    store::tasks::list_open(c, &terminal)?,
                    store::jobs::tasks_with_active_jobs(c)?,
                    store::jobs::tasks_awaiting_input(c)?,
                ))
            })
            .await;
        let (tasks, active, awaiting) = match loaded {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "reconciler: cannot load open tasks");
                report.errors.push(format!("loading tasks: {e}"));
                return;
            }
        };
        let now = self.pipeline.clock.now();
        let semaphore = Arc::new(tokio::sync::Semaphore::new(self.concurrency.max(1)));
        let mut set = tokio::task::JoinSet::new();
        for task in tasks {
            if cancel.is_cancelled() {
                break;
            }
            let snapshot = snapshot_of(
                &task,
                active.contains(&task.id),
                awaiting.contains(&task.id),
            );
            let decision = policy::decide_task(rules, &self.overrides, &snapshot, None, now);
            if !matches!(decision.outcome, D::CheckGate { .. }) || self.backing_off(task.id, now) {
                report.tasks.push(TaskReport {
                    work_item: task.work_item.clone(),
                    stage: task.stage.clone(),
                    decision,
                    action: None,
                });
                continue;
            }
            let pipeline = self.pipeline.clone();
            let rules = Arc::clone(rules);
            let overrides = self.overrides.clone();
            let permit = Arc::clone(&semaphore);
            set.spawn(async move {
                let _permit = permit.acquire_owned().await;
                let gate = pipeline.evaluate_gate(&rules, &task).await;
                let decided = gate.as_ref().ok().map(|g| {
                    policy::decide_task(
                        &rules,
                        &overrides,
                        &snapshot,
                        Some(g),
                        pipeline.clock.now(),
                    )
                });
                let applied = match (&gate, &decided) {
                    (Ok(g), Some(d)) if matches!(d.outcome, D::Advance { .. }) && !dry_run => Some(
                        pipeline
                            .apply_gate(&rules, &task, g, Trigger::Reconciler)
                            .await,
                    ),
                    _ => None,
                };
                (task, decision, gate, decided, applied)
            });
        }
        while let Some(joined) = set.join_next().await {
            let (task, first, gate, decided, applied) = match joined {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!(error = %e, "reconciler: a task check panicked");
                    report.errors.push(format!("task check panicked: {e}"));
                    continue;
                }
            };
            let mut line = TaskReport {
                work_item: task.work_item.clone(),
                stage: task.stage.clone(),
                decision: decided.unwrap_or(first),
                action: None,
            };
            match gate {
                Err(e) => {
                    tracing::warn!(work_item = %task.work_item, stage = %task.stage, error = %e, "reconciler: gate check failed");
                    report.errors.push(format!("{}: {e}", task.work_item));
                    line.action = Some(format!("error: {e}"));
                    if !dry_run {
                        self.gate_error(rules, &task, &e.to_string()).await;
                    }
                }
                Ok(_) => {
                    self.backoff
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&task.id);
                }
            }
            match applied {
                Some(Ok(Outcome::Advanced { from, to, .. })) => {
                    let text = rules.render(
                        "unblock",
                        &[
                            ("work_item", &task.work_item),
                            ("stage", &from),
                            ("to", &to),
                        ],
                    );
                    tracing::info!("{text}");
                    self.pipeline.metrics.reconcile_unblocked.inc();
                    self.with_state(|s| s.last_unblocked = Some(task.work_item.clone()));
                    if self.overrides.effective_switches(rules).notify_unblock {
                        self.pipeline.telegram(&text).await;
                    }
                    line.action = Some(format!("advanced {from} -> {to}"));
                    report.unblocked.push(text);
                }
                Some(Ok(other)) => line.action = Some(format!("{other:?}")),
                Some(Err(e)) => {
                    tracing::warn!(work_item = %task.work_item, error = %e, "reconciler: advance failed");
                    report.errors.push(format!("{}: {e}", task.work_item));
                    line.action = Some(format!("error: {e}"));
                }
                None => {}
            }
            report.tasks.push(line);
        }
        report.tasks.sort_by(|a, b| a.work_item.cmp(&b.work_item));
    }

    fn backing_off(&self, task_id: i64, now: Timestamp) -> bool {
        self.backoff
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&task_id)
            .is_some_and(|b| now < b.next_at)
    }

    /// A gate that errors (not red: could not be evaluated) backs off per task; at the cap it
    /// is reported once as needing a human.
    async fn gate_error(&self, rules: &RuleSet, task: &Task, error: &str) {
        let now = self.pipeline.clock.now();
        let failures = {
            let mut map = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
            let entry = map.entry(task.id).or_insert(ErrorBackoff {
                failures: 0,
                next_at: now,
            });
            entry.failures = entry.failures.saturating_add(1);
            let exp = entry.failures.min(6);
            entry.next_at = now.plus(self.interval.saturating_mul(2u32.pow(exp)));
            entry.failures
        };
        if failures == GATE_ERROR_CAP {
            let (id, key) = (
                task.id,
                format!("{}:{}", task.stage, task.updated_at.as_millis()),
            );
            let claimed = self
                .pipeline
                .store
                .call(move |c| store::verdicts::claim_notice(c, id, "needs_human", &key, now))
                .await
                .unwrap_or(false);
            if claimed {
                let text = rules.render(
                    "needs_human",
                    &[
                        ("work_item", &task.work_item),
                        ("stage", &task.stage),
                        ("reason", error),
                    ],
                );
                let text = if text.is_empty() {
                    format!(
                        "reconciler: {} {}: gate check keeps failing ({error}); needs a human",
                        task.work_item, task.stage
                    )
                } else {
                    text
                };
                tracing::error!("{text}");
                self.pipeline.telegram(&text).await;
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // F-2

    /// The Plane side alone (the seed's `reconcile_plane_once`); muted by the Plane switch.
    pub async fn reconcile_plane_once(&self) -> SweepReport {
        self.run_sides(Sides::Plane, false, &CancellationToken::new())
            .await
    }

    async fn plane_side(
        &self,
        rules: &Arc<RuleSet>,
        dry_run: bool,
        cancel: &CancellationToken,
        report: &mut SweepReport,
    ) {
        let waiting = self.questions_waiting().await;
        for project in self.pipeline.config.projects.clone() {
            if cancel.is_cancelled() {
                break;
            }
            if let Err(e) = self.plane_project(rules, &project, dry_run, report).await {
                tracing::warn!(project = %project.identifier, error = %e, "reconciler: Plane project pass failed");
                report
                    .errors
                    .push(format!("project {}: {e}", project.identifier));
            }
            match &waiting {
                Ok(waiting) => {
                    let mine = waiting.iter().filter(|(t, _)| {
                        t.plane_project_id.as_deref() == Some(project.plane_project_id.as_str())
                    });
                    self.lost_answers(rules, mine, dry_run, cancel, report)
                        .await;
                }
                Err(e) => report
                    .errors
                    .push(format!("project {}: {e}", project.identifier)),
            }
        }
    }

    /// The tasks waiting for a person's answer, with when the question was asked; forgets
    /// the look-ups of tasks that no longer wait.
    async fn questions_waiting(&self) -> Result<Vec<(Task, Timestamp)>, store::StoreError> {
        let waiting = self
            .pipeline
            .store
            .call(|c| store::tasks::awaiting_answer(c))
            .await;
        match &waiting {
            Ok(w) => {
                let ids: std::collections::HashSet<i64> = w.iter().map(|(t, _)| t.id).collect();
                self.answer_checks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|id, _| ids.contains(id));
            }
            Err(e) => {
                tracing::error!(error = %e, "reconciler: cannot load the tasks waiting for an answer")
            }
        }
        waiting
    }

    /// Answers whose comment webhook was lost. For each waiting task whose look-up is due,
    /// the newest comment written after the question by someone other than orch is handed to
    /// [`Pipeline::answer`], exactly as the comment's webhook would have been. A webhook that
    /// arrives as well finds the task no longer waiting and changes nothing. Each task is its
    /// own unit of work.
    async fn lost_answers<'a>(
        &self,
        rules: &Arc<RuleSet>,
        waiting: impl Iterator<Item = &'a (Task, Timestamp)>,
        dry_run: bool,
        cancel: &CancellationToken,
        report: &mut SweepReport,
    ) {
        for (task, asked_at) in waiting {
            if cancel.is_cancelled() {
                break;
            }
            let (Some(project_id), Some(issue_id)) = (&task.plane_project_id, &task.plane_issue_id)
            else {
                continue;
            };
            let now = self.pipeline.clock.now();
            let last = self
                .answer_checks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&task.id)
                .copied();
            let snapshot = snapshot_of(task, false, true);
            if !policy::answer_check_due(rules, &self.overrides, &snapshot, *asked_at, last, now) {
                continue;
            }
            if !dry_run {
                self.answer_checks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(task.id, now);
            }
            let comments = match self
                .pipeline
                .tracker
                .recent_comments(project_id, issue_id)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(work_item = %task.work_item, error = %e, "reconciler: cannot read the work item's comments");
                    report.errors.push(format!("{}: {e}", task.work_item));
                    continue;
                }
            };
            let answer = comments
                .iter()
                .filter(|c| c.created_at > *asked_at)
                .filter(|c| {
                    !self
                        .pipeline
                        .is_own_comment(c.external_source.as_deref(), c.author.as_deref())
                })
                .map(|c| crate::pipeline::webhook::plain_text(&c.html))
                .find(|text| !text.is_empty());
            let Some(answer) = answer else {
                continue;
            };
            if dry_run {
                report.answers.push(format!(
                    "{}: an answer is in Plane; it would be handed to the {} agent",
                    task.work_item, task.stage
                ));
                continue;
            }
            match self
                .pipeline
                // Only comments newer than the question were considered above.
                .answer(task, answer, None, Trigger::Reconciler)
                .await
            {
                Ok(Outcome::Resumed { .. }) => {
                    tracing::info!(work_item = %task.work_item, stage = %task.stage, "reconciler: replayed a person's answer from Plane (lost comment webhook)");
                    self.pipeline.metrics.reconcile_replays.inc();
                    report.replays += 1;
                    report.answers.push(format!(
                        "{}: answer replayed from Plane; the {} agent runs again",
                        task.work_item, task.stage
                    ));
                }
                // Answered meanwhile (the webhook won the race): nothing to count.
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(work_item = %task.work_item, error = %e, "reconciler: replaying an answer failed");
                    report.errors.push(format!("{}: {e}", task.work_item));
                }
            }
        }
    }

    async fn plane_project(
        &self,
        rules: &Arc<RuleSet>,
        project: &crate::config::Project,
        dry_run: bool,
        report: &mut SweepReport,
    ) -> anyhow::Result<()> {
        let key = format!("reconcile.plane.watermark.{}", project.plane_project_id);
        let k = key.clone();
        let watermark = self
            .pipeline
            .store
            .call(move |c| store::kv::get(c, &k))
            .await?
            .and_then(|v| v.parse::<i64>().ok())
            .map(Timestamp::from_millis);
        let mut cursor: Option<String> = None;
        let mut newest: Option<Timestamp> = None;
        // Items we could not act on yet (busy task): the watermark must not pass them.
        let mut oldest_deferred: Option<Timestamp> = None;
        let mut complete = false;
        for _ in 0..MAX_PAGES_PER_PROJECT {
            let page = self
                .pipeline
                .tracker
                .list_work_items_page(
                    &project.plane_project_id,
                    cursor.as_deref(),
                    PLANE_PAGE_SIZE,
                )
                .await?;
            let mut reached_watermark = false;
            for item in page.items {
                if watermark.is_some_and(|w| item.updated_at < w) {
                    reached_watermark = true;
                    break;
                }
                newest = newest.max(Some(item.updated_at));
                match self
                    .plane_item(rules, project, &item, dry_run, report)
                    .await
                {
                    Ok(deferred) => {
                        if deferred {
                            oldest_deferred = Some(
                                oldest_deferred.map_or(item.updated_at, |o| o.min(item.updated_at)),
                            );
                        }
                    }
                    Err(e) => {
                        tracing::warn!(project = %project.identifier, item = %item.sequence_id, error = %e, "reconciler: Plane item replay failed");
                        report
                            .errors
                            .push(format!("{}-{}: {e}", project.identifier, item.sequence_id));
                        oldest_deferred = Some(
                            oldest_deferred.map_or(item.updated_at, |o| o.min(item.updated_at)),
                        );
                    }
                }
            }
            match page.next_cursor {
                Some(next) if !reached_watermark => cursor = Some(next),
                _ => {
                    complete = true;
                    break;
                }
            }
        }
        if complete && !dry_run {
            let mark = match (newest, oldest_deferred) {
                (_, Some(d)) => Some(d),
                (n, None) => n,
            };
            if let Some(mark) = mark.filter(|m| watermark.is_none_or(|w| *m > w)) {
                let v = mark.as_millis().to_string();
                self.pipeline
                    .store
                    .call(move |c| store::kv::set(c, &key, &v))
                    .await?;
            }
        }
        Ok(())
    }

    /// Returns true when the item was deferred (it may need a replay later).
    async fn plane_item(
        &self,
        rules: &Arc<RuleSet>,
        project: &crate::config::Project,
        item: &PlaneWorkItem,
        dry_run: bool,
        report: &mut SweepReport,
    ) -> anyhow::Result<bool> {
        let work_item = format!("{}-{}", project.identifier, item.sequence_id);
        let wi = work_item.clone();
        let (task, busy, awaiting) = self
            .pipeline
            .store
            .call(move |c| {
                let t = store::tasks::get_by_work_item(c, &wi)?;
                let (busy, awaiting) = match &t {
                    Some(t) => (
                        store::jobs::has_active(c, t.id)?,
                        store::jobs::awaiting_input(c, t.id)?,
                    ),
                    None => (false, false),
                };
                Ok((t, busy, awaiting))
            })
            .await?;
        let snapshot = policy::PlaneItemSnapshot {
            work_item: work_item.clone(),
            state_name: item.state_name.clone(),
            state_group: item.state_group.clone(),
            updated_at: item.updated_at,
            task: task.as_ref().map(|t| snapshot_of(t, busy, awaiting)),
        };
        let decision =
            policy::decide_plane_item(rules, &self.overrides, &snapshot, self.pipeline.clock.now());
        // Not acted on yet, but may need a replay later: the watermark must not pass it.
        let deferred = matches!(&decision.outcome, PlaneOutcome::Ignore { why } if why == "busy" || why == "recent");
        let mut action = None;
        if let PlaneOutcome::Replay { .. } = decision.outcome
            && !dry_run
        {
            let plane_item = PlaneItem {
                item: WorkItem {
                    work_item: work_item.clone(),
                    plane_issue_id: Some(item.id.clone()),
                    plane_project_id: project.plane_project_id.clone(),
                    title: item.name.clone(),
                    labels: item.labels.clone(),
                },
                state_name: item.state_name.clone(),
                state_group: item.state_group.clone(),
                actor: None,
                // The policy already compared the item's change with the task's.
                changed_at: None,
            };
            let outcome = self
                .pipeline
                .apply_plane_state(&plane_item, Trigger::Reconciler)
                .await?;
            // Count what the replay changed; a webhook that won the race leaves nothing to count.
            if !matches!(
                outcome,
                Outcome::AlreadyStarted { .. } | Outcome::Ignored { .. } | Outcome::Raced { .. }
            ) {
                tracing::info!(work_item = %work_item, state = %item.state_name, outcome = ?outcome, "reconciler: replayed Plane state (lost webhook)");
                self.pipeline.metrics.reconcile_replays.inc();
                report.replays += 1;
            }
            action = Some(format!("{outcome:?}"));
        }
        report.plane.push(PlaneReport {
            work_item,
            state: item.state_name.clone(),
            decision,
            action,
        });
        Ok(deferred)
    }

    // -----------------------------------------------------------------------------------
    // explain

    /// The current decision for one task, with the facts it used; `None` for an unknown
    /// work item. Evaluates the gate (read-only) when the decision is to check it.
    pub async fn explain(&self, work_item: &str) -> Result<Option<Explanation>, store::StoreError> {
        let wi = work_item.to_string();
        let loaded = self
            .pipeline
            .store
            .call(move |c| {
                let Some(t) = store::tasks::get_by_work_item(c, &wi)? else {
                    return Ok(None);
                };
                let busy = store::jobs::has_active(c, t.id)?;
                let question = store::jobs::open_question(c, t.id)?;
                Ok(Some((t, busy, question)))
            })
            .await?;
        let Some((task, busy, question)) = loaded else {
            return Ok(None);
        };
        let awaiting = question.is_some();
        let rules = self.pipeline.rules.current();
        let now = self.pipeline.clock.now();
        let snapshot = snapshot_of(&task, busy, awaiting);
        let mut decision = policy::decide_task(&rules, &self.overrides, &snapshot, None, now);
        let mut gate = None;
        if matches!(decision.outcome, D::CheckGate { .. }) {
            match self.pipeline.evaluate_gate(&rules, &task).await {
                Ok(g) => {
                    decision =
                        policy::decide_task(&rules, &self.overrides, &snapshot, Some(&g), now);
                    gate = Some(serde_json::to_value(&g).unwrap_or_default());
                }
                Err(e) => gate = Some(serde_json::json!({ "error": e.to_string() })),
            }
        }
        Ok(Some(Explanation {
            work_item: task.work_item.clone(),
            stage: task.stage.clone(),
            grace_left_s: decision.grace_left_s,
            facts: Facts {
                has_active_job: busy,
                awaiting_input: awaiting,
                question: question.map(|(text, asked_at)| Question { text, asked_at }),
                age_s: now.since(task.updated_at).as_secs(),
                updated_at: task.updated_at,
                labels: task.labels.clone(),
                gate,
            },
            decision,
            now,
        }))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub work_item: String,
    pub stage: String,
    pub decision: Decision,
    pub facts: Facts,
    pub grace_left_s: Option<u64>,
    pub now: Timestamp,
}

#[derive(Debug, Clone, Serialize)]
pub struct Facts {
    pub has_active_job: bool,
    pub awaiting_input: bool,
    /// The question the task waits on, when it waits on one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub question: Option<Question>,
    pub age_s: u64,
    pub updated_at: Timestamp,
    pub labels: Vec<String>,
    pub gate: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Question {
    pub text: String,
    pub asked_at: Timestamp,
}

fn snapshot_of(task: &Task, has_active_job: bool, awaiting_input: bool) -> TaskSnapshot {
    TaskSnapshot {
        work_item: task.work_item.clone(),
        stage: task.stage.clone(),
        labels: task.labels.clone(),
        updated_at: task.updated_at,
        has_active_job,
        awaiting_input,
    }
}

/// The operator's `ORCH_RECONCILE_*` overrides as the policy takes them.
pub fn overrides_from_config(cfg: &crate::config::ReconcileConfig) -> Overrides {
    Overrides {
        reconcile_enabled: cfg.enabled,
        plane_enabled: cfg.plane_enabled,
        notify_unblock: cfg.notify_unblock,
        grace_default: cfg.grace_default,
        grace_by_stage: cfg.grace_overrides.clone(),
    }
}
