//! The evaluator: facts in, decisions out. Pure — no I/O, no clock.

use std::collections::BTreeMap;
use std::time::Duration;

use rhai::{Array, Dynamic, Map, Scope};

use super::ruleset::Gate;
use super::{
    CheckResult, Decision, GateOutcome, Outcome, Overrides, PolicyError, RuleSet, SkipReason,
    TaskSnapshot,
};
use crate::clock::Timestamp;

mod plane;

pub use plane::decide_plane_item;

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

/// When the sweep reads a gate again after `reds` red readings in a row (the last at
/// `last_red_at`): one `interval` after the first, two after the second, four after the
/// third …, never more than the rules' `reconcile.red_backoff_cap`. A red gate cannot turn
/// green without an event (a push, a CI status, a verdict, a job ending), and every such
/// event clears the streak, so the wait only spares the forge questions whose answer is
/// known.
pub fn next_gate_check(
    rules: &RuleSet,
    last_red_at: Timestamp,
    reds: u32,
    interval: Duration,
) -> Timestamp {
    let wait = crate::duration::doubled(
        interval,
        reds.saturating_sub(1),
        rules.red_backoff_cap().max(interval),
    );
    last_red_at.plus(wait)
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
