//! The evaluator: facts in, decisions out. Pure — no I/O, no clock.

use std::collections::BTreeMap;
use std::time::Duration;

use rhai::{Array, Dynamic, Map, Scope};

use super::ruleset::Gate;
use super::{
    CheckResult, Decision, GateOutcome, Outcome, Overrides, PlaneAction, PlaneDecision,
    PlaneItemSnapshot, PlaneOutcome, PolicyError, RuleSet, SkipReason, TaskSnapshot,
};
use crate::clock::Timestamp;

fn decision(
    rules: &RuleSet,
    rule: impl Into<String>,
    reason: impl Into<String>,
    outcome: Outcome,
) -> Decision {
    Decision {
        rules_version: rules.version.clone(),
        rule: rule.into(),
        reason: reason.into(),
        outcome,
        grace_left_s: None,
    }
}

/// The grace before a quiet task in `task.stage` counts as stuck, and the rule that set it.
/// Precedence: environment per stage > environment default > rules' expression > rules'
/// per-stage value > rules' default.
pub fn grace_for(
    rules: &RuleSet,
    ov: &Overrides,
    task: &TaskSnapshot,
    now: Timestamp,
) -> Result<Duration, PolicyError> {
    grace_with_rule(rules, ov, task, now).map(|(d, _)| d)
}

/// Whether the sweep should look in Plane for a lost answer to the question a task's agent
/// asked: once the question is older than the task's grace (the answer's own webhook gets that
/// long), then at most once per grace, so tasks that wait for days cost few Plane requests.
/// A grace expression that fails falls back to the rules' default grace: looking changes
/// nothing unless an answer is found.
pub fn answer_check_due(
    rules: &RuleSet,
    ov: &Overrides,
    task: &TaskSnapshot,
    asked_at: Timestamp,
    last_checked: Option<Timestamp>,
    now: Timestamp,
) -> bool {
    let grace = grace_for(rules, ov, task, now).unwrap_or(rules.grace.default);
    let since = last_checked.map_or(asked_at, |l| l.max(asked_at));
    now.since(since) >= grace
}

fn grace_with_rule(
    rules: &RuleSet,
    ov: &Overrides,
    task: &TaskSnapshot,
    now: Timestamp,
) -> Result<(Duration, String), PolicyError> {
    if let Some(d) = ov.grace_by_stage.get(&task.stage) {
        return Ok((*d, format!("env.grace_overrides.{}", task.stage)));
    }
    if let Some(d) = ov.grace_default {
        return Ok((d, "env.grace_default".into()));
    }
    let (base, base_rule) = match rules.grace.stages.get(&task.stage) {
        Some(d) => (*d, format!("grace.stages.{}", task.stage)),
        None => (rules.grace.default, "grace.default".into()),
    };
    let Some(ast) = &rules.grace.expr else {
        return Ok((base, base_rule));
    };
    let mut t = Map::new();
    t.insert("work_item".into(), task.work_item.clone().into());
    t.insert("stage".into(), task.stage.clone().into());
    let labels: Array = task
        .labels
        .iter()
        .map(|l| Dynamic::from(l.clone()))
        .collect();
    t.insert("labels".into(), labels.into());
    t.insert(
        "age_s".into(),
        Dynamic::from(i64::try_from(now.since(task.updated_at).as_secs()).unwrap_or(i64::MAX)),
    );
    let mut scope = Scope::new();
    scope.push("task", t);
    // A rule file may hold a grace beyond i64 seconds; the script sees it saturated.
    scope.push(
        "default_s",
        i64::try_from(base.as_secs()).unwrap_or(i64::MAX),
    );
    let value = rules
        .engine
        .eval_ast_with_scope::<Dynamic>(&mut scope, ast)
        .map_err(|e| PolicyError::Script {
            rule: "grace.expr".into(),
            message: e.to_string(),
        })?;
    let secs = if let Some(i) = value.clone().try_cast::<i64>() {
        i as f64
    } else if let Some(f) = value.clone().try_cast::<f64>() {
        f
    } else {
        return Err(PolicyError::Script {
            rule: "grace.expr".into(),
            message: format!(
                "must return a number of seconds, returned {}",
                value.type_name()
            ),
        });
    };
    // Checked, never `from_secs_f64`: a script's number is data, and one returning `1e20`
    // must fail its own decision rather than panic the sweep or `/explain`.
    match Duration::try_from_secs_f64(secs) {
        Ok(d) => Ok((d, "grace.expr".into())),
        Err(_) => Err(PolicyError::Script {
            rule: "grace.expr".into(),
            message: format!(
                "returned {secs}, not a non-negative number of seconds that fits a duration"
            ),
        }),
    }
}

/// Decides what the sweep should do with one task. Call with `gate = None` first; on
/// `CheckGate`, evaluate the named checks and call again with the gate's outcome.
pub fn decide_task(
    rules: &RuleSet,
    ov: &Overrides,
    task: &TaskSnapshot,
    gate: Option<&GateOutcome>,
    now: Timestamp,
) -> Decision {
    let Some(stage) = rules.stage(&task.stage) else {
        return decision(
            rules,
            "stages",
            format!("stage {:?} is not in the rule set", task.stage),
            Outcome::Skip {
                why: SkipReason::UnknownStage,
            },
        );
    };
    if stage.terminal {
        return decision(
            rules,
            format!("stage.{}.terminal", stage.name),
            format!("{} is the end of the pipeline", stage.name),
            Outcome::Skip {
                why: SkipReason::Terminal,
            },
        );
    }
    let switches = ov.effective_switches(rules);
    if !switches.reconcile_enabled {
        let rule = if ov.reconcile_enabled == Some(false) {
            "env.ORCH_RECONCILE_ENABLED"
        } else {
            "reconcile.enabled"
        };
        return decision(
            rules,
            rule,
            "the reconciler is switched off",
            Outcome::Skip {
                why: SkipReason::Disabled,
            },
        );
    }
    if stage.human_gate || !stage.sweep {
        return decision(
            rules,
            format!("stage.{}.human_gate", stage.name),
            format!(
                "{} waits for a person; the sweep never advances it",
                stage.name
            ),
            Outcome::Skip {
                why: SkipReason::HumanGate,
            },
        );
    }
    if task.has_active_job {
        return decision(
            rules,
            "busy",
            "an agent job is queued or running",
            Outcome::Skip {
                why: SkipReason::Busy,
            },
        );
    }
    if task.awaiting_input {
        return decision(
            rules,
            "awaiting_input",
            "the agent asked a question; the task waits for a person's answer",
            Outcome::Skip {
                why: SkipReason::AwaitingInput,
            },
        );
    }
    let (grace, grace_rule) = match grace_with_rule(rules, ov, task, now) {
        Ok(g) => g,
        Err(e) => {
            return decision(
                rules,
                "grace.expr",
                e.to_string(),
                Outcome::Error {
                    message: e.to_string(),
                },
            );
        }
    };
    let age = now.since(task.updated_at);
    if age < grace {
        let remaining = (grace - age).as_secs_f64().ceil() as u64;
        let mut d = decision(
            rules,
            grace_rule,
            format!("quiet for {}s of {}s grace", age.as_secs(), grace.as_secs()),
            Outcome::Wait {
                remaining_s: remaining,
            },
        );
        d.grace_left_s = Some(remaining);
        return d;
    }
    gate_decision(rules, stage, gate, age, grace)
}

/// Past its grace: check the gate, or act on what it said.
fn gate_decision(
    rules: &RuleSet,
    stage: &crate::policy::Stage,
    gate: Option<&GateOutcome>,
    age: Duration,
    grace: Duration,
) -> Decision {
    let checks = rules.gate_checks(&stage.name);
    let next = stage.next.clone().unwrap_or_default();
    let gate_rule = format!("stage.{}.gate", stage.name);
    let mut d = match gate {
        None => decision(
            rules,
            gate_rule,
            format!(
                "quiet for {}s (grace {}s): check {}",
                age.as_secs(),
                grace.as_secs(),
                stage.gate.as_deref().unwrap_or("nothing")
            ),
            Outcome::CheckGate { checks },
        ),
        Some(g) if g.green => decision(
            rules,
            gate_rule,
            format!("gate green ({}): {} -> {}", g.reason, stage.name, next),
            Outcome::Advance {
                from: stage.name.clone(),
                to: next,
            },
        ),
        Some(g) => decision(
            rules,
            gate_rule,
            format!("gate red: {}", g.reason),
            Outcome::Hold {
                reason: g.reason.clone(),
            },
        ),
    };
    d.grace_left_s = Some(0);
    d
}

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

pub(crate) fn gate_outcome(
    rules: &RuleSet,
    stage: &str,
    results: &BTreeMap<String, CheckResult>,
) -> Result<GateOutcome, PolicyError> {
    let Some(gate) = rules.gates.get(stage) else {
        if rules.stage(stage).is_none() {
            return Err(PolicyError::UnknownStage(stage.to_string()));
        }
        return Ok(GateOutcome {
            green: true,
            reason: "no gate".into(),
        });
    };
    let reason = || {
        results
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.reason))
            .collect::<Vec<_>>()
            .join("; ")
    };
    match gate {
        Gate::Check(c) => {
            let r = results.get(c).ok_or_else(|| PolicyError::Script {
                rule: format!("stage.{stage}.gate"),
                message: format!("check {c} was not evaluated"),
            })?;
            Ok(GateOutcome {
                green: r.green,
                reason: r.reason.clone(),
            })
        }
        Gate::Expr { ast, checks } => {
            let mut scope = Scope::new();
            for c in checks {
                let r = results.get(c).ok_or_else(|| PolicyError::Script {
                    rule: format!("stage.{stage}.gate"),
                    message: format!("check {c} was not evaluated"),
                })?;
                scope.push(c.clone(), r.green);
            }
            let green = rules
                .engine
                .eval_ast_with_scope::<bool>(&mut scope, ast)
                .map_err(|e| PolicyError::Script {
                    rule: format!("stage.{stage}.gate"),
                    message: e.to_string(),
                })?;
            Ok(GateOutcome {
                green,
                reason: reason(),
            })
        }
    }
}
