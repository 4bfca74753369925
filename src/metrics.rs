//! Process-wide counters, exposed at `GET /metrics` in the Prometheus text format.
//!
//! Counters are incremented where things happen; levels that live in the database (jobs by
//! status, tasks by stage, inbox backlog) are read at scrape time instead of being mirrored,
//! so they can never drift from the truth.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub source: String,
    /// accepted | duplicate | bad_signature | malformed | too_large
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerResultLabels {
    pub peer: String,
    /// sent | skipped | dead | error (an attempt that will be retried)
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerStatusLabels {
    pub peer: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GateLabels {
    pub check: String,
    /// green | red | error
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    /// The shadow decision's rule, e.g. `grace.stages.review`.
    pub rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoopLabels {
    /// reconciler | inbox | worker | outbox-plane | outbox-telegram
    pub r#loop: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LeaseLabels {
    /// sweep | dispatch:plane | dispatch:telegram
    pub lease: String,
}

/// Every metric orch exports. Cheap to clone (the families share their storage).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub deliveries: Family<DeliveryLabels, Counter>,
    pub inbox_processed: Family<ResultLabels, Counter>,
    pub inbox_pending: Gauge,
    pub inbox_dead: Gauge,
    pub inbox_lag_seconds: Gauge<f64, AtomicU64>,
    pub jobs: Family<StatusLabels, Gauge>,
    pub tasks: Family<StageLabels, Gauge>,
    pub tasks_awaiting_input: Gauge,
    pub gate_evaluations: Family<GateLabels, Counter>,
    pub notifications_failed: Family<KindLabels, Counter>,
    pub outbox_processed: Family<PeerResultLabels, Counter>,
    pub outbox: Family<PeerStatusLabels, Gauge>,
    pub reconcile_late: Counter,
    pub plane_sync_owed: Counter,
    pub reconcile_sweeps: Counter,
    pub reconcile_unblocked: Counter,
    pub reconcile_replays: Counter,
    pub reconcile_errors: Counter,
    /// Tasks the policy could not decide (a failing grace expression, a stage the rules no
    /// longer have), once per task and rule-set version.
    pub decision_errors: Counter,
    pub rules_reloads: Family<ResultLabels, Counter>,
    pub rules_info: Family<VersionLabels, Gauge>,
    pub background_restarts: Family<LoopLabels, Counter>,
    /// Situations where the shadow rule set would act otherwise than the live one.
    pub shadow_divergences: Family<RuleLabels, Counter>,
    /// Decisions that could not be written to the decision log (or a divergence to the store).
    pub decision_log_errors: Counter,
    /// Running jobs of silent replicas put back in the queue (issue 15).
    pub jobs_requeued_expired: Counter,
    /// Replicas heartbeaten within the lease time, as of the last scrape.
    pub replicas_alive: Gauge,
    /// 1 while this process holds the lease, else 0.
    pub lease_held: Family<LeaseLabels, Gauge>,
    pub lease_acquired: Family<LeaseLabels, Counter>,
    /// Leases lost while held (expired, taken over, or a fenced write refused), not released.
    pub lease_lost: Family<LeaseLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    pub fn delivery(&self, source: &str, outcome: &str) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                source: source.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn gate(&self, check: &str, result: &str) {
        self.gate_evaluations
            .get_or_create(&GateLabels {
                check: check.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// The restart counter of background loop `name` (a handle sharing the family's storage).
    pub fn background_restarts(&self, name: &str) -> Counter {
        self.background_restarts
            .get_or_create(&LoopLabels {
                r#loop: name.to_string(),
            })
            .clone()
    }

    /// Marks `version` as the active rule set (exactly one series is 1).
    pub fn set_rules_version(&self, version: &str) {
        self.rules_info.clear();
        self.rules_info
            .get_or_create(&VersionLabels {
                version: version.to_string(),
            })
            .set(1);
    }

    fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("orch");
        r.register(
            "webhook_deliveries",
            "Webhook deliveries by source and outcome",
            self.deliveries.clone(),
        );
        r.register(
            "inbox_processed",
            "Inbox deliveries processed, by result",
            self.inbox_processed.clone(),
        );
        r.register(
            "inbox_pending",
            "Deliveries stored but not yet processed",
            self.inbox_pending.clone(),
        );
        r.register(
            "tasks_awaiting_input",
            "Tasks held until a person answers their agent's question",
            self.tasks_awaiting_input.clone(),
        );
        r.register(
            "inbox_dead",
            "Deliveries given up on (out of attempts, or malformed), kept for an operator",
            self.inbox_dead.clone(),
        );
        r.register(
            "inbox_lag_seconds",
            "Age of the oldest unprocessed delivery",
            self.inbox_lag_seconds.clone(),
        );
        r.register("jobs", "Jobs by status", self.jobs.clone());
        r.register("tasks", "Tasks by stage", self.tasks.clone());
        r.register(
            "gate_evaluations",
            "Gate check evaluations by result",
            self.gate_evaluations.clone(),
        );
        r.register(
            "notifications_failed",
            "Local side effects that could not be carried out (kind=git: a finished task's worktree); effects owed to peers are counted in orch_outbox_processed",
            self.notifications_failed.clone(),
        );
        r.register(
            "outbox_processed",
            "Effect deliveries by peer and result (error: an attempt that will be retried)",
            self.outbox_processed.clone(),
        );
        r.register(
            "outbox",
            "Effects owed to peers, by peer and status (dead: given up on, kept for an operator)",
            self.outbox.clone(),
        );
        r.register(
            "reconcile_late",
            "Tasks the sweep found stuck while a delivery about them still waited in the inbox (late, not lost)",
            self.reconcile_late.clone(),
        );
        r.register(
            "plane_sync_owed",
            "Plane states the level-triggered sync found wrong and owed again",
            self.plane_sync_owed.clone(),
        );
        r.register(
            "reconcile_sweeps",
            "Reconciler sweeps completed",
            self.reconcile_sweeps.clone(),
        );
        r.register(
            "reconcile_unblocked",
            "Tasks the reconciler moved on after a lost event",
            self.reconcile_unblocked.clone(),
        );
        r.register(
            "reconcile_replays",
            "Plane states replayed by the reconciler",
            self.reconcile_replays.clone(),
        );
        r.register(
            "reconcile_errors",
            "Units of reconciler work that failed",
            self.reconcile_errors.clone(),
        );
        r.register(
            "decision_errors",
            "Tasks the rules could not decide, once per task and rule-set version",
            self.decision_errors.clone(),
        );
        r.register(
            "rules_reloads",
            "Rule-set reloads by result",
            self.rules_reloads.clone(),
        );
        r.register(
            "rules_info",
            "The active rule-set version",
            self.rules_info.clone(),
        );
        r.register(
            "shadow_divergences",
            "Situations where the shadow rule set would act otherwise than the live one, by the shadow decision's rule",
            self.shadow_divergences.clone(),
        );
        r.register(
            "decision_log_errors",
            "Decisions or shadow divergences that could not be stored",
            self.decision_log_errors.clone(),
        );
        self.register_replicas(&mut r);
        r.register(
            "background_restarts",
            "Background loops started again after a panic or an unexpected end, by loop",
            self.background_restarts.clone(),
        );
        r
    }

    /// The replicas' metrics: heartbeats, job expiry and leases (issue 15).
    fn register_replicas(&self, r: &mut Registry) {
        r.register(
            "jobs_requeued_expired",
            "Running jobs of replicas silent for the lease time, put back in the queue",
            self.jobs_requeued_expired.clone(),
        );
        r.register(
            "replicas_alive",
            "Replicas sharing the database that heartbeated within the lease time",
            self.replicas_alive.clone(),
        );
        r.register(
            "lease_held",
            "1 while this process holds the lease (sweep, dispatch:plane, dispatch:telegram)",
            self.lease_held.clone(),
        );
        r.register(
            "lease_acquired",
            "Times this process acquired the lease",
            self.lease_acquired.clone(),
        );
        r.register(
            "lease_lost",
            "Times this process lost the lease while holding it (expired, taken over, or a fenced write refused)",
            self.lease_lost.clone(),
        );
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry()).is_err() {
            out.clear();
        }
        out
    }
}
