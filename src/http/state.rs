//! What a request handler may touch: the service's parts, built by `app` and owned here, so
//! the HTTP layer depends on nothing above it.

use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::outbox::Dispatcher;
use crate::pipeline::Pipeline;
use crate::policy::RulesHandle;
use crate::reconciler::{ReconcileState, Reconciler};
use crate::service::{Background, LoopState, LoopStatus, RestartPolicy};
use crate::store::Store;
use crate::store::outbox::Peer;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Everything a request handler may touch. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub rules: RulesHandle,
    pub pipeline: Pipeline,
    pub reconciler: Arc<Reconciler>,
    /// Wakes the inbox processor as soon as a delivery is stored.
    pub inbox_wakeup: Arc<Notify>,
    /// Where Telegram effects are delivered (Plane's client is the pipeline's tracker).
    pub notifier: Arc<dyn crate::integrations::Notifier>,
    pub reconcile: Arc<Mutex<ReconcileState>>,
    /// The supervised loops `run_until` starts (the reconciler owns its own).
    pub loops: Arc<Loops>,
    /// This process among the replicas sharing the database (`jobs.claimed_by`, lease holder).
    pub replica: crate::replica::ReplicaId,
    /// Whether this replica may run agents (self-fencing when its heartbeat fails).
    pub liveness: Arc<crate::replica::Liveness>,
    /// The leases this process contends for (`sweep`, `dispatch:<peer>`).
    pub leases: Arc<crate::lease::Leases>,
}

/// The supervised background loops besides the reconciler's, created with the state so
/// `/queue`, `/ready` and the watchdog can read their real state; started by
/// [`Application::run_until`].
#[derive(Debug)]
pub struct Loops {
    pub outbox_plane: Background,
    pub outbox_telegram: Background,
    pub worker: Background,
    pub inbox: Background,
    /// This replica's heartbeat, and the take-over of silent replicas' jobs.
    pub heartbeat: Background,
}

impl Loops {
    pub(crate) fn new(metrics: &Metrics) -> Loops {
        Loops {
            outbox_plane: Background::new("outbox-plane", metrics),
            outbox_telegram: Background::new("outbox-telegram", metrics),
            worker: Background::new("worker", metrics),
            inbox: Background::new("inbox", metrics),
            heartbeat: Background::new("heartbeat", metrics),
        }
    }

    pub(crate) fn dispatcher(&self, peer: Peer) -> &Background {
        match peer {
            Peer::Plane => &self.outbox_plane,
            Peer::Telegram => &self.outbox_telegram,
        }
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// The dispatcher of `peer`'s effects.
    pub fn dispatcher(&self, peer: Peer) -> Dispatcher {
        Dispatcher {
            peer,
            store: self.store.clone(),
            clock: Arc::clone(&self.clock),
            metrics: Arc::clone(&self.metrics),
            tracker: Arc::clone(&self.pipeline.tracker),
            notifier: Arc::clone(&self.notifier),
            pipeline: self.pipeline.clone(),
            wakeup: Arc::clone(&self.pipeline.outbox_wakeup),
            poll: Duration::from_secs(1),
            failpoint: None,
            lease: None,
        }
    }

    /// Delivers every effect that is due now, to every peer; for one-shot commands and tests
    /// that run without the background dispatchers. Returns how many were handled.
    pub async fn drain_outbox(&self) -> Result<usize, crate::store::StoreError> {
        let cancel = tokio_util::sync::CancellationToken::new();
        let mut handled = 0;
        for peer in Peer::ALL {
            handled += self.dispatcher(peer).drain(&cancel).await?;
        }
        Ok(handled)
    }

    /// Every supervised loop in start order, with its state.
    pub fn loops(&self) -> Vec<&Background> {
        vec![
            &self.loops.heartbeat,
            &self.loops.outbox_plane,
            &self.loops.outbox_telegram,
            &self.loops.worker,
            &self.loops.inbox,
            self.reconciler.background(),
        ]
    }

    /// The loops that are not running (restarting or stopped), with their state.
    pub fn loops_down(&self) -> Vec<(&'static str, LoopStatus)> {
        self.loops()
            .into_iter()
            .map(|b| (b.name(), b.status()))
            .filter(|(_, s)| s.state != LoopState::Running)
            .collect()
    }

    /// Sets every loop's restart delays (tests shorten or lengthen them).
    #[cfg_attr(orch_audit, allow(dead_code))]
    pub fn set_restart_policy(&self, policy: RestartPolicy) {
        for b in self.loops() {
            b.set_policy(policy);
        }
    }

    /// The `loops` block of `GET /queue`: name → state, restarts, last error.
    pub fn loops_status(&self) -> serde_json::Value {
        let map: serde_json::Map<String, serde_json::Value> = self
            .loops()
            .into_iter()
            .map(|b| {
                (
                    b.name().to_string(),
                    serde_json::to_value(b.status()).unwrap_or_default(),
                )
            })
            .collect();
        serde_json::Value::Object(map)
    }

    /// The `reconcile` block of `GET /queue`.
    pub fn reconcile_status(&self) -> serde_json::Value {
        let s = self.reconcile.lock().map(|g| g.clone()).unwrap_or_default();
        let m = &self.metrics;
        let switches = self
            .reconciler
            .overrides()
            .effective_switches(&self.rules.current());
        serde_json::json!({
            // The supervised loop's real state: false while it waits to be restarted.
            "running": self.reconciler.is_running(),
            "enabled": switches.reconcile_enabled,
            "plane_enabled": switches.reconcile_enabled && switches.plane_enabled,
            "notify_unblock": switches.notify_unblock,
            "interval_s": self.config.reconcile.interval.as_secs(),
            "last_sweep_at": s.last_sweep_at,
            "sweeps": m.reconcile_sweeps.get(),
            "unblocked_total": m.reconcile_unblocked.get(),
            "last_unblocked": s.last_unblocked,
            "replays": m.reconcile_replays.get(),
            "errors": m.reconcile_errors.get(),
            "decision_errors": m.decision_errors.get(),
        })
    }

    /// The `decision_errors` list of `GET /queue`: the tasks the last sweep could not decide.
    pub fn decision_errors(&self) -> Vec<crate::reconciler::DecisionError> {
        self.reconcile
            .lock()
            .map(|g| g.decision_errors.clone())
            .unwrap_or_default()
    }

    /// The `rules` block of `GET /queue`.
    pub fn rules_status(&self) -> serde_json::Value {
        serde_json::to_value(self.rules.status()).unwrap_or_default()
    }
}
