//! Shadow comparison, pure: two rule sets decide over the same facts, and a divergence is
//! where they would *act* differently.
//!
//! What a decision would do is its [`action`]: the outcome in the words of scenario
//! expectations, without the seconds a wait has left (those change on every look and say
//! nothing about the policy). A different deciding rule with the same action is not a
//! divergence either: the shadow set would have done the same thing.
//!
//! The sweep compares [`decide_task`] before the gate is read (grace, human gates, kill
//! switches); events compare [`decide_leave`], what the pipeline does when a trigger asks a
//! task to leave its stage; the Plane side compares [`decide_plane_item`].
//!
//! Both sets decide over the same facts, and the gate reading is a fact: an event is compared
//! on the live set's reading of the stage's gate. A shadow set whose gate *expression* for a
//! stage differs is compared on everything else (next stage, human gate, terminal); reading
//! its own checks would be forge traffic the shadow must not cause.

use super::{
    Decision, GateOutcome, Outcome, Overrides, PlaneDecision, PlaneItemSnapshot, PlaneOutcome,
    RuleSet, SkipReason, TaskSnapshot, decide_plane_item, decide_task,
};
use crate::clock::Timestamp;

/// What a task decision would do: `wait`, `check gate [ci_green]`, `advance review ->
/// testing`, `hold`, `skip (human_gate)`, `error`.
pub fn action(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Skip { why } => format!("skip ({})", skip_name(*why)),
        Outcome::Wait { .. } => "wait".into(),
        Outcome::CheckGate { checks } => format!("check gate [{}]", checks.join(", ")),
        Outcome::Advance { from, to } => format!("advance {from} -> {to}"),
        Outcome::Hold { .. } => "hold".into(),
        Outcome::Error { .. } => "error".into(),
    }
}

/// What a Plane item decision would do: `in sync`, `replay approve`, `ignore (busy)`.
pub fn plane_action(outcome: &PlaneOutcome) -> String {
    match outcome {
        PlaneOutcome::InSync => "in sync".into(),
        PlaneOutcome::Replay { action } => format!("replay {}", action.as_str()),
        PlaneOutcome::Ignore { why } => format!("ignore ({why})"),
    }
}

fn skip_name(why: SkipReason) -> &'static str {
    match why {
        SkipReason::Terminal => "terminal",
        SkipReason::HumanGate => "human_gate",
        SkipReason::Busy => "busy",
        SkipReason::AwaitingInput => "awaiting_input",
        SkipReason::Disabled => "disabled",
        SkipReason::UnknownStage => "unknown_stage",
    }
}

/// What the pipeline decides when a trigger asks a task in `stage` to leave it with `gate`
/// read: advance to the next stage when the gate is green (and, at a human gate, a person
/// asked), hold otherwise. `by_person`: the trigger is a person's verdict.
pub fn decide_leave(rules: &RuleSet, stage: &str, gate: &GateOutcome, by_person: bool) -> Decision {
    let d = |rule: String, reason: String, outcome: Outcome| Decision {
        rules_version: rules.version().to_string(),
        rule,
        reason,
        outcome,
        grace_left_s: None,
    };
    let Some(s) = rules.stage(stage) else {
        return d(
            "stages".into(),
            format!("stage {stage:?} is not in the rule set"),
            Outcome::Skip {
                why: SkipReason::UnknownStage,
            },
        );
    };
    let Some(next) = s.next.clone().filter(|_| !s.terminal) else {
        return d(
            format!("stage.{stage}.terminal"),
            format!("{stage} is the end of the pipeline"),
            Outcome::Skip {
                why: SkipReason::Terminal,
            },
        );
    };
    if !gate.green {
        return d(
            format!("stage.{stage}.gate"),
            format!("gate red: {}", gate.reason),
            Outcome::Hold {
                reason: gate.reason.clone(),
            },
        );
    }
    if s.human_gate && !by_person {
        let reason = format!(
            "{}, but {stage} is a human gate: only a person's verdict leaves it",
            gate.reason
        );
        return d(
            format!("stage.{stage}.human_gate"),
            reason.clone(),
            Outcome::Hold { reason },
        );
    }
    d(
        format!("stage.{stage}.gate"),
        format!("gate green ({}): {stage} -> {next}", gate.reason),
        Outcome::Advance {
            from: stage.to_string(),
            to: next,
        },
    )
}

/// The shadow set's sweep decision for `task` beside the live one's, when they act
/// differently.
pub fn diverge_task(
    shadow: &RuleSet,
    ov: &Overrides,
    task: &TaskSnapshot,
    live: &Decision,
    now: Timestamp,
) -> Option<Decision> {
    let theirs = decide_task(shadow, ov, task, None, now);
    (action(&theirs.outcome) != action(&live.outcome)).then_some(theirs)
}

/// The shadow set's leave decision beside the live one's, when they act differently.
pub fn diverge_leave(
    shadow: &RuleSet,
    stage: &str,
    gate: &GateOutcome,
    by_person: bool,
    live: &Decision,
) -> Option<Decision> {
    let theirs = decide_leave(shadow, stage, gate, by_person);
    (action(&theirs.outcome) != action(&live.outcome)).then_some(theirs)
}

/// The shadow set's decision on a Plane item beside the live one's, when they act
/// differently.
pub fn diverge_plane(
    shadow: &RuleSet,
    ov: &Overrides,
    item: &PlaneItemSnapshot,
    live: &PlaneDecision,
    now: Timestamp,
) -> Option<PlaneDecision> {
    let theirs = decide_plane_item(shadow, ov, item, now);
    (plane_action(&theirs.outcome) != plane_action(&live.outcome)).then_some(theirs)
}
