//! The decision log and the shadow rule set: what the pipeline and the sweep decided, and what
//! a candidate rule set would have decided instead.
//!
//! Each entry point is one call at the place a decision is made or acted on: the stage change
//! every trigger ends in (`leave_if`), the sweep's decision per task, the Plane side's
//! decision per item. The log keeps the decisions that acted (an advance, a hold, a replay,
//! an error) with the facts they used; the shadow set decides over the same facts and never
//! acts — a divergence is logged, counted (`orch_shadow_divergences_total{rule}`) and kept
//! once per situation.
//!
//! Never-raise: an audit record that cannot be written is logged and counted
//! (`orch_decision_log_errors_total`); the decision it describes has already happened and
//! must not be undone or failed because its record could not be kept.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::clock::Timestamp;
use crate::metrics::RuleLabels;
use crate::policy::shadow::{self as compare, action, plane_action};
use crate::policy::{
    self, Decision, GateOutcome, Overrides, PlaneDecision, PlaneItemSnapshot, RuleSet, RulesHandle,
    TaskSnapshot,
};
use crate::store::decisions::NewDecision;
use crate::store::shadow::{NewDivergence, Side};
use crate::store::{self, Task, Trigger};

use super::{Outcome, Pipeline};

/// How many divergence situations are remembered in memory, so a sweep does not write the same
/// one again every interval; past this the memory restarts (the store still keeps each once).
const SEEN_LIMIT: usize = 100_000;

/// The shadow rule set (hot-reloaded like the live one) and the divergences already kept.
pub struct Shadow {
    pub rules: RulesHandle,
    seen: Mutex<HashSet<String>>,
}

impl Shadow {
    pub fn new(rules: RulesHandle) -> Arc<Shadow> {
        Arc::new(Shadow {
            rules,
            seen: Mutex::new(HashSet::new()),
        })
    }

    /// True the first time `situation` is seen (since the memory last restarted).
    fn first_time(&self, situation: &str) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= SEEN_LIMIT {
            seen.clear();
        }
        seen.insert(situation.to_string())
    }
}

impl std::fmt::Debug for Shadow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shadow")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

fn side(version: &str, rule: &str, action: String, reason: &str) -> Side {
    Side {
        version: version.to_string(),
        rule: rule.to_string(),
        outcome: action,
        reason: reason.to_string(),
    }
}

impl Pipeline {
    /// A trigger asked `task` to leave its stage and the pipeline acted (`outcome`): log the
    /// advance or hold, and compare the shadow set's decision.
    pub(crate) async fn observe_leave(
        &self,
        rules: &RuleSet,
        task: &Task,
        gate: &GateOutcome,
        trigger: Trigger,
        by_person: bool,
        outcome: &Outcome,
    ) {
        let live = compare::decide_leave(rules, &task.stage, gate, by_person);
        let facts = json!({
            "task": {
                "work_item": task.work_item,
                "stage": task.stage,
                "labels": task.labels,
                "updated_at": task.updated_at,
            },
            "gate": gate,
            "by": if by_person { "person" } else { "event" },
        });
        if matches!(outcome, Outcome::Advanced { .. } | Outcome::Held { .. }) {
            self.log_decision(task_decision(task, trigger, &live, facts.clone()))
                .await;
        }
        let Some(shadow) = &self.shadow else { return };
        let theirs = shadow.rules.current();
        if let Some(d) = compare::diverge_leave(&theirs, &task.stage, gate, by_person, &live) {
            let key = task.updated_at;
            self.keep_divergence(
                shadow,
                &task.work_item,
                &task.stage,
                trigger,
                key,
                &live,
                &d,
                facts,
            )
            .await;
        }
    }

    /// The sweep decided `live` for `task` (before reading its gate): compare the shadow set,
    /// and log a decision that failed (once per rule-set version and reason).
    pub async fn observe_sweep(
        &self,
        ov: &Overrides,
        task: &TaskSnapshot,
        task_id: i64,
        live: &Decision,
        now: Timestamp,
    ) {
        // Built only when something is kept: the sweep calls this for every open task.
        let facts = || json!({ "task": task, "now": now });
        if matches!(live.outcome, policy::Outcome::Error { .. }) {
            let d = NewDecision {
                task_id: Some(task_id),
                ..task_decision_of(task, Trigger::Reconciler, live, facts())
            };
            self.log_decision_once(d).await;
        }
        let Some(shadow) = &self.shadow else { return };
        let theirs = shadow.rules.current();
        if let Some(d) = compare::diverge_task(&theirs, ov, task, live, now) {
            let (wi, stage, key) = (&task.work_item, &task.stage, task.updated_at);
            self.keep_divergence(
                shadow,
                wi,
                stage,
                Trigger::Reconciler,
                key,
                live,
                &d,
                facts(),
            )
            .await;
        }
    }

    /// The Plane side decided `live` for `item` and replayed it when `replayed` is set: log
    /// the replay and compare the shadow set.
    pub async fn observe_plane(
        &self,
        ov: &Overrides,
        item: &PlaneItemSnapshot,
        live: &PlaneDecision,
        replayed: Option<&Outcome>,
        now: Timestamp,
    ) {
        let facts = || json!({ "item": item, "now": now });
        if let Some(outcome) = replayed {
            self.log_decision(NewDecision {
                work_item: item.work_item.clone(),
                task_id: None,
                stage: item
                    .task
                    .as_ref()
                    .map(|t| t.stage.clone())
                    .unwrap_or_default(),
                trigger: Trigger::Reconciler.as_str().to_string(),
                rules_version: live.rules_version.clone(),
                rule: live.rule.clone(),
                outcome: plane_action(&live.outcome),
                reason: format!("{} ({outcome:?})", live.reason),
                facts: facts(),
            })
            .await;
        }
        let Some(shadow) = &self.shadow else { return };
        let theirs = shadow.rules.current();
        let Some(d) = compare::diverge_plane(&theirs, ov, item, live, now) else {
            return;
        };
        let stage = item
            .task
            .as_ref()
            .map(|t| t.stage.clone())
            .unwrap_or_default();
        let situation = format!(
            "{}|{}|{}|plane|{}|{}|{}|{}",
            item.work_item,
            stage,
            item.updated_at.as_millis(),
            live.rules_version,
            plane_action(&live.outcome),
            d.rules_version,
            plane_action(&d.outcome)
        );
        let divergence = NewDivergence {
            work_item: item.work_item.clone(),
            stage,
            trigger: Trigger::Reconciler.as_str().to_string(),
            live: side(
                &live.rules_version,
                &live.rule,
                plane_action(&live.outcome),
                &live.reason,
            ),
            shadow: side(
                &d.rules_version,
                &d.rule,
                plane_action(&d.outcome),
                &d.reason,
            ),
            facts: facts(),
            situation,
        };
        self.store_divergence(shadow, divergence).await;
    }

    #[allow(clippy::too_many_arguments)]
    async fn keep_divergence(
        &self,
        shadow: &Shadow,
        work_item: &str,
        stage: &str,
        trigger: Trigger,
        visit: Timestamp,
        live: &Decision,
        theirs: &Decision,
        facts: serde_json::Value,
    ) {
        let (ours, other) = (action(&live.outcome), action(&theirs.outcome));
        let situation = format!(
            "{work_item}|{stage}|{}|{}|{}|{ours}|{}|{other}",
            visit.as_millis(),
            trigger.as_str(),
            live.rules_version,
            theirs.rules_version
        );
        let divergence = NewDivergence {
            work_item: work_item.to_string(),
            stage: stage.to_string(),
            trigger: trigger.as_str().to_string(),
            live: side(&live.rules_version, &live.rule, ours, &live.reason),
            shadow: side(&theirs.rules_version, &theirs.rule, other, &theirs.reason),
            facts,
            situation,
        };
        self.store_divergence(shadow, divergence).await;
    }

    async fn store_divergence(&self, shadow: &Shadow, d: NewDivergence) {
        if !shadow.first_time(&d.situation) {
            return;
        }
        let (now, keep) = (self.clock.now(), self.config.decision_retention);
        let rule = d.shadow.rule.clone();
        let line = format!(
            "shadow rules: {} {} ({}): live {} [{}], shadow {} [{}]",
            d.work_item,
            d.stage,
            d.trigger,
            d.live.outcome,
            d.live.rule,
            d.shadow.outcome,
            d.shadow.rule
        );
        match self
            .store
            .call(move |c| store::shadow::record(c, &d, now, Some(keep)))
            .await
        {
            Ok(true) => {
                tracing::info!("{line}");
                self.metrics
                    .shadow_divergences
                    .get_or_create(&RuleLabels { rule })
                    .inc();
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot keep a shadow divergence: {line}");
                self.metrics.decision_log_errors.inc();
            }
        }
    }

    async fn log_decision(&self, d: NewDecision) {
        let (now, keep) = (self.clock.now(), self.config.decision_retention);
        let wi = d.work_item.clone();
        if let Err(e) = self
            .store
            .call(move |c| store::decisions::record(c, &d, now, Some(keep)).map(|_| ()))
            .await
        {
            tracing::warn!(work_item = %wi, error = %e, "cannot write the decision log");
            self.metrics.decision_log_errors.inc();
        }
    }

    /// Logs `d` unless the work item's last logged decision is the same one (a decision that
    /// fails fails again on every sweep until the rules are fixed).
    async fn log_decision_once(&self, d: NewDecision) {
        let wi = d.work_item.clone();
        let last = self
            .store
            .call(move |c| store::decisions::list(c, Some(&wi), None, 1))
            .await;
        let same = last.as_ref().ok().and_then(|l| l.last()).is_some_and(|l| {
            let l = &l.decision;
            l.rules_version == d.rules_version && l.rule == d.rule && l.reason == d.reason
        });
        if !same {
            self.log_decision(d).await;
        }
    }
}

fn task_decision(
    task: &Task,
    trigger: Trigger,
    d: &Decision,
    facts: serde_json::Value,
) -> NewDecision {
    NewDecision {
        work_item: task.work_item.clone(),
        task_id: Some(task.id),
        stage: task.stage.clone(),
        trigger: trigger.as_str().to_string(),
        rules_version: d.rules_version.clone(),
        rule: d.rule.clone(),
        outcome: action(&d.outcome),
        reason: d.reason.clone(),
        facts,
    }
}

fn task_decision_of(
    task: &TaskSnapshot,
    trigger: Trigger,
    d: &Decision,
    facts: serde_json::Value,
) -> NewDecision {
    NewDecision {
        work_item: task.work_item.clone(),
        task_id: None,
        stage: task.stage.clone(),
        trigger: trigger.as_str().to_string(),
        rules_version: d.rules_version.clone(),
        rule: d.rule.clone(),
        outcome: action(&d.outcome),
        reason: d.reason.clone(),
        facts,
    }
}
