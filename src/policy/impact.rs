//! The impact of a rule edit on live work: two rule sets over the same task facts at the same
//! `now`, and only the decisions that differ. Pure, like the evaluator: `orch rules diff --db`
//! feeds it the open tasks of a database, and a shadow rule set's divergences can be checked
//! against what it predicts.

use std::collections::BTreeMap;

use serde::Serialize;

use super::scenario::{describe, describe_plane};
use super::{
    Decision, Outcome, Overrides, PlaneDecision, PlaneItemSnapshot, PlaneOutcome, RuleSet,
    TaskSnapshot, decide_plane_item, decide_task,
};
use crate::clock::Timestamp;

/// One task whose decision differs between the old and the new rule set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangedDecision {
    pub work_item: String,
    pub stage: String,
    /// `old kind -> new kind`, e.g. `check gate -> wait` (see [`kind_of`]).
    pub kind: String,
    pub old: Decision,
    pub new: Decision,
}

impl ChangedDecision {
    /// The old decision in one line (`wait 570s`).
    pub fn old_text(&self) -> String {
        describe(&self.old.outcome)
    }

    /// The new decision in one line.
    pub fn new_text(&self) -> String {
        describe(&self.new.outcome)
    }
}

/// The kind of a decision, without its details: `skip`, `wait`, `check gate`, `advance`,
/// `hold` or `error`.
pub fn kind_of(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Skip { .. } => "skip",
        Outcome::Wait { .. } => "wait",
        Outcome::CheckGate { .. } => "check gate",
        Outcome::Advance { .. } => "advance",
        Outcome::Hold { .. } => "hold",
        Outcome::Error { .. } => "error",
    }
}

/// Whether two decisions for the same task differ: another outcome, or the same one reached by
/// another rule. The reason's wording and the version alone are no change.
pub fn differs(old: &Decision, new: &Decision) -> bool {
    old.outcome != new.outcome || old.rule != new.rule
}

/// Every task of `tasks` whose decision under `new` differs from its decision under `old`, in
/// the order of `tasks`. Neither set's gate is evaluated (that would ask the forge): a task
/// whose gate is due shows as `check gate` under both.
pub fn changed_decisions(
    old: &RuleSet,
    new: &RuleSet,
    ov: &Overrides,
    tasks: &[TaskSnapshot],
    now: Timestamp,
) -> Vec<ChangedDecision> {
    tasks
        .iter()
        .filter_map(|task| {
            let a = decide_task(old, ov, task, None, now);
            let b = decide_task(new, ov, task, None, now);
            differs(&a, &b).then(|| ChangedDecision {
                work_item: task.work_item.clone(),
                stage: task.stage.clone(),
                kind: format!("{} -> {}", kind_of(&a.outcome), kind_of(&b.outcome)),
                old: a,
                new: b,
            })
        })
        .collect()
}

/// How many changes there are of each kind, by kind (`kinds`: each change's `kind`).
pub fn counts_by_kind<'a>(kinds: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for kind in kinds {
        *out.entry(kind.to_string()).or_insert(0) += 1;
    }
    out
}

/// One Plane work item whose Plane-side decision differs between the old and the new set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangedPlaneDecision {
    pub work_item: String,
    pub state: String,
    /// `old kind -> new kind`, e.g. `replay approve -> in sync` (see [`plane_kind_of`]).
    pub kind: String,
    pub old: PlaneDecision,
    pub new: PlaneDecision,
}

impl ChangedPlaneDecision {
    pub fn old_text(&self) -> String {
        describe_plane(&self.old.outcome)
    }

    pub fn new_text(&self) -> String {
        describe_plane(&self.new.outcome)
    }
}

/// The kind of a Plane-side decision: `in sync`, `replay <action>` or `ignore`.
pub fn plane_kind_of(outcome: &PlaneOutcome) -> String {
    match outcome {
        PlaneOutcome::InSync => "in sync".into(),
        PlaneOutcome::Replay { action } => format!("replay {}", action.as_str()),
        PlaneOutcome::Ignore { .. } => "ignore".into(),
    }
}

/// Every item of `items` whose Plane-side decision under `new` differs from the one under
/// `old` (another outcome, or another rule), in the order of `items`.
pub fn changed_plane_decisions(
    old: &RuleSet,
    new: &RuleSet,
    ov: &Overrides,
    items: &[PlaneItemSnapshot],
    now: Timestamp,
) -> Vec<ChangedPlaneDecision> {
    items
        .iter()
        .filter_map(|item| {
            let a = decide_plane_item(old, ov, item, now);
            let b = decide_plane_item(new, ov, item, now);
            (a.outcome != b.outcome || a.rule != b.rule).then(|| ChangedPlaneDecision {
                work_item: item.work_item.clone(),
                state: item.state_name.clone(),
                kind: format!(
                    "{} -> {}",
                    plane_kind_of(&a.outcome),
                    plane_kind_of(&b.outcome)
                ),
                old: a,
                new: b,
            })
        })
        .collect()
}
