//! F-2's decisions: whether a Plane work item's state still has to be replayed. Pure, and
//! Plane's clock is compared with Plane's clock (see [`changed_since_applied`]).

use std::time::Duration;

use crate::clock::Timestamp;
use crate::policy::{
    Overrides, PlaneAction, PlaneDecision, PlaneItemSnapshot, PlaneOutcome, RuleSet, TaskSnapshot,
};

/// Decides whether a Plane work item's state still has to be replayed (F-2). Replays only
/// what has not happened, so replaying twice changes nothing.
pub fn decide_plane_item(
    rules: &RuleSet,
    ov: &Overrides,
    item: &PlaneItemSnapshot,
    now: Timestamp,
) -> PlaneDecision {
    let d = |rule: String, reason: String, outcome: PlaneOutcome| PlaneDecision {
        rules_version: rules.version.clone(),
        rule,
        reason,
        outcome,
    };
    let switches = ov.effective_switches(rules);
    if !(switches.reconcile_enabled && switches.plane_enabled) {
        return d(
            "reconcile.plane_enabled".into(),
            "the Plane-side replay is switched off".into(),
            PlaneOutcome::Ignore {
                why: "disabled".into(),
            },
        );
    }
    let Some(action) = rules.inbound_plane_action(&item.state_name, item.state_group.as_deref())
    else {
        return d(
            "plane.inbound".into(),
            format!("state {:?} maps to no action", item.state_name),
            PlaneOutcome::Ignore {
                why: "unmapped state".into(),
            },
        );
    };
    let rule = format!("plane.inbound.{}", action.as_str());
    let decided = decide_plane_action(rules, item, action, rule);
    // A change younger than the grace may still have its webhook in flight: replaying it now
    // would race the webhook for nothing. It is looked at again in a later sweep.
    if let PlaneOutcome::Replay { .. } = decided.outcome {
        let grace = ov.grace_default.unwrap_or(rules.grace.default);
        // Plane's stamp against our clock, but never longer than one grace after the sweep
        // first saw the change: a Plane clock ahead of ours delays a replay, never loses it.
        let seen = item.first_seen_at.map_or(Duration::ZERO, |f| now.since(f));
        let age = now.since(item.updated_at).max(seen);
        if age < grace {
            let rule = if ov.grace_default.is_some() {
                "env.grace_default"
            } else {
                "grace.default"
            };
            return d(
                rule.into(),
                format!(
                    "changed {}s ago, within the {}s grace: its webhook may still arrive",
                    age.as_secs(),
                    grace.as_secs()
                ),
                PlaneOutcome::Ignore {
                    why: "recent".into(),
                },
            );
        }
    }
    decided
}

/// Whether the item changed after orch last applied a change from it: Plane's stamp against
/// Plane's stamp when orch recorded one; else (a task from before that was recorded) against
/// the task's own last change.
fn changed_since_applied(item: &PlaneItemSnapshot, task: &TaskSnapshot) -> bool {
    match item.applied_at {
        Some(applied) => item.updated_at > applied,
        None => item.updated_at > task.updated_at,
    }
}

fn decide_plane_action(
    rules: &RuleSet,
    item: &PlaneItemSnapshot,
    action: PlaneAction,
    rule: String,
) -> PlaneDecision {
    let d = |rule: String, reason: String, outcome: PlaneOutcome| PlaneDecision {
        rules_version: rules.version.clone(),
        rule,
        reason,
        outcome,
    };
    match (action, &item.task) {
        (PlaneAction::Start, None) => d(
            rule,
            format!("{:?} but no task exists: start was lost", item.state_name),
            PlaneOutcome::Replay { action },
        ),
        (PlaneAction::Start, Some(t))
            if t.awaiting_input && !t.has_active_job && changed_since_applied(item, t) =>
        {
            d(
                rule,
                format!(
                    "{:?} set after the agent in {} asked a question: the resume was lost",
                    item.state_name, t.stage
                ),
                PlaneOutcome::Replay { action },
            )
        }
        (PlaneAction::Start, Some(t)) => d(
            rule,
            format!("task exists (in {})", t.stage),
            PlaneOutcome::InSync,
        ),
        (PlaneAction::Cancel, Some(t)) => match rules.stage(&t.stage) {
            Some(s) if s.terminal => d(
                rule,
                format!("task already ended in {}", s.name),
                PlaneOutcome::InSync,
            ),
            _ => d(
                rule,
                format!(
                    "{:?} while the task is in {}: the cancel was lost",
                    item.state_name, t.stage
                ),
                PlaneOutcome::Replay { action },
            ),
        },
        (_, None) => d(
            rule,
            format!(
                "{:?} for a work item that was never started",
                item.state_name
            ),
            PlaneOutcome::Ignore {
                why: "no task".into(),
            },
        ),
        (_, Some(t)) => {
            let Some(stage) = rules.stage(&t.stage) else {
                return d(
                    rule,
                    format!("task stage {:?} is not in the rule set", t.stage),
                    PlaneOutcome::Ignore {
                        why: "unknown stage".into(),
                    },
                );
            };
            if !stage.human_gate {
                return d(
                    rule,
                    format!(
                        "task is in {}, which takes no Plane verdict: already past it",
                        stage.name
                    ),
                    PlaneOutcome::InSync,
                );
            }
            if t.has_active_job {
                return d(
                    rule,
                    format!("{}'s agent is still working", stage.name),
                    PlaneOutcome::Ignore { why: "busy".into() },
                );
            }
            if !changed_since_applied(item, t) {
                return d(
                    rule,
                    "the task changed after this Plane state was set: already applied".into(),
                    PlaneOutcome::InSync,
                );
            }
            if action == PlaneAction::Reject && stage.on_reject.is_none() {
                return d(
                    rule,
                    format!("{} has no rejection path", stage.name),
                    PlaneOutcome::Ignore {
                        why: "no on_reject".into(),
                    },
                );
            }
            d(
                rule,
                format!(
                    "{:?} set after the task's last change in {}: verdict was lost",
                    item.state_name, stage.name
                ),
                PlaneOutcome::Replay { action },
            )
        }
    }
}
