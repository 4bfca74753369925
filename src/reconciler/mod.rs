//! The reconciler: heals tasks whose webhook was lost.
//!
//! This file owns the sweep itself: the background loop, the order of the sides and the
//! state the reconciler reports between sweeps. The sides live beside it: `gate.rs` advances
//! quiet tasks whose exit gate is green (F-1, with the unblock line of F-4), `plane.rs`
//! replays Plane states and answers whose webhook was lost (F-2), `explain.rs` shows one
//! task's decision, and `report.rs` is what a sweep hands back.
//!
//! Never-raise: every task, project and page is its own unit of work; an error is logged and
//! counted and the sweep goes on, because one broken work item must not keep every other
//! task stuck. All state that matters is in the database, except the per-task error backoff
//! and the answer look-up times, which restart empty (a restart is a fresh chance).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::clock::Timestamp;
use crate::lease::Lease;
use crate::pipeline::Pipeline;
use crate::policy::{Overrides, TaskSnapshot};
use crate::service::Background;
use crate::store::Task;

mod check;
mod due;
mod explain;
mod gate;
mod plane;
mod report;
mod share;
mod sync;

pub use explain::{Explanation, Facts, GateView, NextCheck, Question};
pub use gate::GATE_ERROR_CAP;
pub use report::{DecisionError, PlaneReport, Rows, SweepReport, TaskReport};

use gate::ErrorBackoff;

/// Whether a sweep acts on what it decides. A dry run takes the same decisions, reads the
/// same peers and fills the same report, so an operator can see what a sweep would do
/// before letting it; it only leaves out the writes, messages and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The background loop and `orch reconcile --once`: healing is the point of a sweep.
    Apply,
    /// `orch reconcile --once --dry-run`, for checking a policy change before it acts:
    /// nothing is written, sent or counted.
    DryRun,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sides {
    Both,
    Gate,
    Plane,
}

/// What the reconciler reports about itself between sweeps, for the `reconcile` block of
/// `GET /queue` (counters live in [`Metrics`](crate::metrics::Metrics)). It is the
/// reconciler's own state, so it is declared here: `app` only creates it and hands it over,
/// and the reconciler needs nothing from `app`.
#[derive(Debug, Default, Clone)]
pub struct ReconcileState {
    pub last_sweep_at: Option<Timestamp>,
    pub last_unblocked: Option<String>,
    /// The tasks the last applied sweep could not decide (`/queue`'s `decision_errors`).
    pub decision_errors: Vec<DecisionError>,
}

/// Why one unit of reconciler work (a project, a page, an item) failed; logged and counted,
/// never fatal to the sweep.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Plane(#[from] crate::integrations::IntegrationError),
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
}

pub struct Reconciler {
    /// The pipeline as built: unfenced (`orch reconcile --once`, tests' one-shot sweeps).
    base: Arc<Pipeline>,
    /// The pipeline sweeps use now: `base`'s, fenced by the `sweep` lease while the loop
    /// holds it.
    pipeline: ArcSwap<Pipeline>,
    overrides: Overrides,
    interval: Duration,
    state: Arc<Mutex<ReconcileState>>,
    background: Background,
    backoff: Mutex<HashMap<i64, ErrorBackoff>>,
    /// When each task waiting for an answer last had its Plane comments read.
    answer_checks: Mutex<HashMap<i64, Timestamp>>,
    generation: Mutex<u64>,
    /// The oldest Plane change F-2 may replay (`reconcile.plane_since`, by default the
    /// database's first start).
    plane_since: Timestamp,
    /// Per Plane item: the change (its `updated_at`) the sweep last saw, and when it first
    /// saw it (orch's clock).
    first_seen: Mutex<HashMap<String, (Timestamp, Timestamp)>>,
    /// The decision errors already logged and counted, by rule-set version, task and stage:
    /// a broken rule is reported once per version, not once per sweep.
    reported_decision_errors: Mutex<HashSet<(String, i64, String)>>,
    /// The human-gate visits (task id, `updated_at`) whose notice was checked (see
    /// `announce_human_gates`).
    announced: Mutex<HashSet<(i64, Timestamp)>>,
    /// When the last level-triggered Plane sync ran (`None`: it is due).
    last_sync: Mutex<Option<Timestamp>>,
    /// How many gate checks run at once in a sweep (`reconcile.gate_concurrency`).
    pub concurrency: usize,
    /// At most this many gate checks per sweep (`reconcile.max_gate_checks`).
    pub max_gate_checks: usize,
    /// The sweep's share of Plane's request budget while effects wait.
    plane_share: share::PlaneShare,
}

impl Reconciler {
    pub fn new(
        pipeline: Pipeline,
        state: Arc<Mutex<ReconcileState>>,
        plane_since: Timestamp,
    ) -> Arc<Reconciler> {
        let cfg = &pipeline.config.reconcile;
        let background = Background::new("reconciler", &pipeline.metrics);
        let overrides = overrides_from_config(cfg);
        let interval = cfg.interval;
        let (concurrency, max_gate_checks) = (cfg.gate_concurrency, cfg.max_gate_checks);
        let plane_share = share::PlaneShare::new(pipeline.config.plane.requests_per_minute);
        let base = Arc::new(pipeline);
        Arc::new(Reconciler {
            pipeline: ArcSwap::new(Arc::clone(&base)),
            base,
            overrides,
            interval,
            state,
            background,
            backoff: Mutex::new(HashMap::new()),
            answer_checks: Mutex::new(HashMap::new()),
            generation: Mutex::new(0),
            plane_since,
            first_seen: Mutex::new(HashMap::new()),
            reported_decision_errors: Mutex::new(HashSet::new()),
            announced: Mutex::new(HashSet::new()),
            last_sync: Mutex::new(None),
            concurrency,
            max_gate_checks,
            plane_share,
        })
    }

    pub fn overrides(&self) -> &Overrides {
        &self.overrides
    }

    /// Starts the supervised sweep loop; a second call while it runs does nothing (returns
    /// false). A sweep that panics is restarted with the reconciler's state intact: the error
    /// backoff and watermarks are not lost with the loop. Unleased: `orch serve` uses
    /// [`Reconciler::start_leased`].
    #[cfg_attr(orch_audit, allow(dead_code))]
    pub fn start(self: &Arc<Self>) -> bool {
        let me = Arc::clone(self);
        self.background.start(move |cancel| {
            let me = Arc::clone(&me);
            async move { me.run(cancel).await }
        })
    }

    /// Starts the supervised sweep loop under `lease` (`sweep`): it sweeps only while this
    /// process holds the lease, with every write fenced by it; another replica's loop waits.
    pub fn start_leased(self: &Arc<Self>, lease: Arc<Lease>) -> bool {
        let me = Arc::clone(self);
        self.background.start(move |cancel| {
            let (me, lease) = (Arc::clone(&me), Arc::clone(&lease));
            async move {
                lease
                    .run(cancel, None, |held| {
                        let me = Arc::clone(&me);
                        async move {
                            let fenced = Pipeline {
                                store: held.fenced(&me.base.store),
                                ..Pipeline::clone(&me.base)
                            };
                            me.pipeline.store(Arc::new(fenced));
                            Arc::clone(&me).run(held.cancel.clone()).await;
                            me.pipeline.store(Arc::clone(&me.base));
                        }
                    })
                    .await;
            }
        })
    }

    /// The pipeline the sweep acts through now (fenced while the loop holds `sweep`).
    fn pipeline(&self) -> Arc<Pipeline> {
        self.pipeline.load_full()
    }

    pub fn is_running(&self) -> bool {
        self.background.is_running()
    }

    /// The supervised loop (for `/queue`, `/ready` and the watchdog).
    pub fn background(&self) -> &Background {
        &self.background
    }

    /// Stops the loop, waiting at most `timeout` (a sweep in progress is abandoned between
    /// units of work; nothing is left half-done because each unit is its own transaction).
    pub async fn stop(&self, timeout: Duration) -> bool {
        self.background.stop(timeout).await
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
                self.sweep_until(Mode::Apply, Rows::Notable, &cancel).await;
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
        let current = self.pipeline().rules.status().generation;
        let mut seen = self.generation.lock().unwrap_or_else(|p| p.into_inner());
        if *seen == current {
            return false;
        }
        let first = *seen == 0;
        *seen = current;
        if !first {
            let unknown = unknown_override_stages(
                &self.overrides.grace_by_stage,
                &self.pipeline().rules.current(),
            );
            if !unknown.is_empty() {
                tracing::warn!(
                    stages = ?unknown,
                    "the reloaded rules have no stage for these grace overrides \
                     (reconcile.grace_overrides / ORCH_RECONCILE_GRACE_OVERRIDES_JSON); they apply to nothing"
                );
            }
        }
        self.backoff
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        !first
    }

    /// Waits for the sweep's turn before a Plane request: at most every other slot of the
    /// Plane client while effects owed to Plane wait in the outbox (see `share.rs`).
    async fn plane_turn(&self) {
        let waiting = self.pipeline()
            .store
            .call(|c| crate::store::outbox::owed(c, crate::store::outbox::Peer::Plane))
            .await
            // Not knowing, leave the dispatcher its half.
            .map_or(true, |n| n > 0);
        self.plane_share.turn(waiting).await;
    }

    fn with_state(&self, f: impl FnOnce(&mut ReconcileState)) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
    }

    /// One full pass: F-1 then F-2, with a line for every open task.
    #[cfg_attr(orch_audit, allow(dead_code))]
    pub async fn sweep(&self, mode: Mode) -> SweepReport {
        self.sweep_rows(mode, Rows::All).await
    }

    /// [`Reconciler::sweep`] keeping only the task lines `rows` asks for (the counts are
    /// always complete).
    pub async fn sweep_rows(&self, mode: Mode, rows: Rows) -> SweepReport {
        self.sweep_until(mode, rows, &CancellationToken::new())
            .await
    }

    async fn sweep_until(&self, mode: Mode, rows: Rows, cancel: &CancellationToken) -> SweepReport {
        let started = std::time::Instant::now();
        let report = self.run_sides(Sides::Both, mode, rows, cancel).await;
        tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, ?mode, "sweep finished");
        if mode == Mode::Apply {
            self.pipeline().metrics.reconcile_sweeps.inc();
            self.with_state(|s| s.last_sweep_at = report.at);
        }
        report
    }

    /// The sides the switches allow, in order; errors are counted unless it is a dry run.
    async fn run_sides(
        &self,
        sides: Sides,
        mode: Mode,
        rows: Rows,
        cancel: &CancellationToken,
    ) -> SweepReport {
        let rules = self.pipeline().rules.current();
        let switches = self.overrides.effective_switches(&rules);
        let mut report = SweepReport {
            at: Some(self.pipeline().clock.now()),
            gate_enabled: switches.reconcile_enabled && sides != Sides::Plane,
            plane_enabled: switches.reconcile_enabled
                && switches.plane_enabled
                && sides != Sides::Gate,
            ..SweepReport::default()
        };
        if report.gate_enabled {
            self.gate_side(&rules, mode, rows, cancel, &mut report)
                .await;
            if mode == Mode::Apply {
                let errors = report.decision_errors.clone();
                self.with_state(|s| s.decision_errors = errors);
            }
        }
        let gate_done = std::time::Instant::now();
        if report.plane_enabled && !cancel.is_cancelled() {
            self.plane_side(&rules, mode, cancel, &mut report).await;
        }
        let plane_done = std::time::Instant::now();
        if report.plane_enabled && sides == Sides::Both && !cancel.is_cancelled() {
            self.plane_sync(&rules, mode, cancel, &mut report).await;
        }
        tracing::debug!(
            plane_ms = (plane_done - gate_done).as_millis() as u64,
            sync_ms = plane_done.elapsed().as_millis() as u64,
            "sweep sides after the gate side"
        );
        if mode == Mode::Apply {
            self.pipeline()
                .metrics
                .reconcile_errors
                .inc_by(report.errors.len() as u64);
        }
        report
    }
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

/// The stages named by grace overrides that `rules` does not have. At startup such a name is
/// an error; after a hot reload it is a warning, because the service is already running on it.
pub fn unknown_override_stages(
    overrides: &BTreeMap<String, Duration>,
    rules: &crate::policy::RuleSet,
) -> Vec<String> {
    overrides
        .keys()
        .filter(|stage| rules.stage(stage).is_none())
        .cloned()
        .collect()
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
