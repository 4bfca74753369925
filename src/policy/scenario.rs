//! Scenario files: named situations run through the evaluator to produce a decision table.
//!
//! A scenario may name `stage = "*"`, which expands to every stage of the rule set under
//! test, so one scenario file covers rule sets with different pipelines. The tables are what
//! `orch rules simulate` prints, what `orch rules diff` compares, and what the snapshot tests
//! pin.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    GateOutcome, Outcome, Overrides, PlaneItemSnapshot, PlaneOutcome, RuleSet, TaskSnapshot,
};
use super::{decide_plane_item, decide_task};
use crate::clock::Timestamp;
use crate::duration::{self, DurationError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// The evaluation time; fixed so tables are reproducible.
    #[serde(default = "default_now")]
    pub now: String,
    #[serde(default)]
    pub overrides: RawOverrides,
    #[serde(default)]
    pub task: Vec<TaskScenario>,
    #[serde(default)]
    pub plane: Vec<PlaneScenario>,
    /// The file it was read from, for errors that name `file:line`.
    #[serde(skip)]
    pub path: String,
}

fn default_now() -> String {
    "2026-01-01T12:00:00Z".into()
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawOverrides {
    pub reconcile_enabled: Option<bool>,
    pub plane_enabled: Option<bool>,
    pub grace_default: Option<String>,
    #[serde(default)]
    pub grace_stages: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskScenario {
    pub name: String,
    /// A stage name, or `*` for every stage of the rule set.
    pub stage: String,
    /// How long the task has been quiet, e.g. `30s`, `2h`.
    pub age: String,
    #[serde(default)]
    pub busy: bool,
    /// The stage's agent asked a question that has not been answered.
    #[serde(default)]
    pub awaiting_input: bool,
    #[serde(default)]
    pub labels: Vec<String>,
    /// `green` or `red`: the gate's result, when the scenario is past the check.
    pub gate: Option<String>,
    /// What the decision must be (see [`Expectation`]); `orch rules verify` asserts it.
    #[serde(default)]
    pub expect: Option<Expectation>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaneScenario {
    pub name: String,
    pub state: String,
    pub group: Option<String>,
    /// The task's stage (`*` for every stage); absent: no task exists.
    pub task_stage: Option<String>,
    #[serde(default)]
    pub task_busy: bool,
    #[serde(default)]
    pub task_awaiting_input: bool,
    /// Was the Plane item changed after the task's last update?
    #[serde(default = "yes")]
    pub changed_after_task: bool,
    /// The Plane change happened seconds ago (its webhook may still be on its way).
    #[serde(default)]
    pub recent: bool,
    /// What the decision must be (see [`Expectation`]); `orch rules verify` asserts it.
    #[serde(default)]
    pub expect: Option<Expectation>,
}

/// A subject's expected decision, as written: a decision's leading words (`"skip"`,
/// `"check gate"`, `"wait"`) or the whole of it (`"advance review -> testing"`,
/// `"skip (human_gate)"`). It holds when the decision is the text or starts with it followed by
/// a space, so `"wait"` accepts any wait and `"wait 570s"` only that one.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct Expectation {
    text: toml::Spanned<String>,
    /// The line of `expect` in its file, set by [`read`].
    #[serde(skip)]
    line: usize,
}

impl Expectation {
    pub fn text(&self) -> &str {
        self.text.get_ref()
    }

    pub fn line(&self) -> usize {
        self.line
    }

    fn holds_for(&self, decision: &str) -> bool {
        let want = self.text();
        decision == want
            || decision
                .strip_prefix(want)
                .is_some_and(|rest| rest.starts_with(' '))
    }
}

/// The decisions a task subject can have, by their leading words.
const TASK_DECISIONS: &[&str] = &["skip", "wait", "check gate", "advance", "hold", "error"];
/// The decisions a Plane subject can have.
const PLANE_DECISIONS: &[&str] = &["in sync", "replay", "ignore"];

/// Whether `text` names a decision of `kinds` (alone, or followed by its details).
fn known_expectation(text: &str, kinds: &[&str]) -> bool {
    kinds.iter().any(|k| {
        text == *k
            || text
                .strip_prefix(k)
                .is_some_and(|rest| rest.starts_with(' ') && rest.trim() != "")
    })
}

/// An expectation that did not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unmet {
    /// `file:line` of the `expect`.
    pub at: String,
    pub scenario: String,
    pub subject: String,
    pub expected: String,
    pub decision: String,
    pub rule: String,
}

impl std::fmt::Display for Unmet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: scenario {:?} ({}): expected {:?}, decided {:?} by {}",
            self.at, self.scenario, self.subject, self.expected, self.decision, self.rule
        )
    }
}

fn yes() -> bool {
    true
}

/// One line of a decision table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub scenario: String,
    /// The stage (task scenarios) or the Plane state and task stage (Plane scenarios).
    pub subject: String,
    pub decision: String,
    pub rule: String,
    pub reason: String,
}

impl Row {
    fn key(&self) -> (String, String) {
        (self.scenario.clone(), self.subject.clone())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
}

pub fn read(path: &Path) -> Result<ScenarioFile, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let mut file: ScenarioFile = toml::from_str(&text).map_err(|e| {
        let (line, col) = e
            .span()
            .map(|s| crate::config::line_col(&text, s.start))
            .unwrap_or((0, 0));
        ScenarioError::Parse {
            path: format!("{}:{line}:{col}", path.display()),
            message: e.message().trim().to_string(),
        }
    })?;
    file.path = path.display().to_string();
    let task_expectations = file
        .task
        .iter_mut()
        .filter_map(|t| t.expect.as_mut().map(|e| (e, TASK_DECISIONS)));
    let plane_expectations = file
        .plane
        .iter_mut()
        .filter_map(|p| p.expect.as_mut().map(|e| (e, PLANE_DECISIONS)));
    for (expect, kinds) in task_expectations.chain(plane_expectations) {
        let (line, col) = crate::config::line_col(&text, expect.text.span().start);
        expect.line = line;
        if !known_expectation(expect.text(), kinds) {
            return Err(ScenarioError::Parse {
                path: format!("{}:{line}:{col}", path.display()),
                message: format!(
                    "unknown expectation {:?}: it must start with one of {}",
                    expect.text(),
                    kinds.join(", ")
                ),
            });
        }
    }
    Ok(file)
}

/// A scenario's duration: bare digits are seconds.
fn dur(s: &str) -> Result<Duration, String> {
    duration::parse(s, true).map_err(|e| match e {
        DurationError::Seconds(e) => e.to_string(),
        DurationError::Text(e) => format!("{s:?}: {e}"),
    })
}

/// A task decision in one line, as tables and diffs show it (`wait 570s`, `advance a -> b`).
pub fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Skip { why } => format!(
            "skip ({})",
            serde_json::to_value(why)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        ),
        Outcome::Wait { remaining_s } => format!("wait {remaining_s}s"),
        Outcome::CheckGate { checks } => format!("check gate [{}]", checks.join(", ")),
        Outcome::Advance { from, to } => format!("advance {from} -> {to}"),
        Outcome::Hold { .. } => "hold".into(),
        Outcome::Error { message } => format!("error: {message}"),
    }
}

pub fn describe_plane(outcome: &PlaneOutcome) -> String {
    match outcome {
        PlaneOutcome::InSync => "in sync".into(),
        PlaneOutcome::Replay { action } => format!("replay {}", action.as_str()),
        PlaneOutcome::Ignore { why } => format!("ignore ({why})"),
    }
}

fn stages_for<'a>(rules: &'a RuleSet, spec: &'a str) -> Vec<String> {
    if spec == "*" {
        rules.stages().iter().map(|s| s.name.clone()).collect()
    } else {
        vec![spec.to_string()]
    }
}

/// Runs every scenario against `rules`.
pub fn simulate(rules: &RuleSet, file: &ScenarioFile) -> Result<Vec<Row>, String> {
    Ok(evaluate(rules, file)?.into_iter().map(|(r, _)| r).collect())
}

/// The expectations of `file` that do not hold under `rules`, in file order.
pub fn unmet_expectations(rules: &RuleSet, file: &ScenarioFile) -> Result<Vec<Unmet>, String> {
    Ok(evaluate(rules, file)?
        .into_iter()
        .filter_map(|(row, expect)| {
            let expect = expect?;
            (!expect.holds_for(&row.decision)).then(|| Unmet {
                at: format!("{}:{}", file.path, expect.line()),
                scenario: row.scenario,
                subject: row.subject,
                expected: expect.text().to_string(),
                decision: row.decision,
                rule: row.rule,
            })
        })
        .collect())
}

/// Every scenario's rows, each with the expectation it must meet.
fn evaluate<'f>(
    rules: &RuleSet,
    file: &'f ScenarioFile,
) -> Result<Vec<(Row, Option<&'f Expectation>)>, String> {
    let now =
        Timestamp::parse_rfc3339(&file.now).map_err(|e| format!("now = {:?}: {e}", file.now))?;
    let ov = Overrides {
        reconcile_enabled: file.overrides.reconcile_enabled,
        plane_enabled: file.overrides.plane_enabled,
        notify_unblock: None,
        grace_default: file
            .overrides
            .grace_default
            .as_deref()
            .map(dur)
            .transpose()?,
        grace_by_stage: file
            .overrides
            .grace_stages
            .iter()
            .map(|(k, v)| Ok((k.clone(), dur(v)?)))
            .collect::<Result<_, String>>()?,
    };
    let mut rows = Vec::new();
    for sc in &file.task {
        let age = dur(&sc.age).map_err(|e| format!("scenario {:?}: age {e}", sc.name))?;
        let gate = match sc.gate.as_deref() {
            None => None,
            Some("green") => Some(GateOutcome {
                green: true,
                reason: "green in scenario".into(),
            }),
            Some("red") => Some(GateOutcome {
                green: false,
                reason: "red in scenario".into(),
            }),
            Some(other) => {
                return Err(format!(
                    "scenario {:?}: gate must be green or red, not {other:?}",
                    sc.name
                ));
            }
        };
        for stage in stages_for(rules, &sc.stage) {
            let task = TaskSnapshot {
                work_item: "SIM-1".into(),
                stage: stage.clone(),
                labels: sc.labels.clone(),
                updated_at: now.minus(age),
                has_active_job: sc.busy,
                awaiting_input: sc.awaiting_input,
            };
            let mut d = decide_task(rules, &ov, &task, None, now);
            if let (Outcome::CheckGate { .. }, Some(g)) = (&d.outcome, &gate) {
                d = decide_task(rules, &ov, &task, Some(g), now);
            }
            let row = Row {
                scenario: sc.name.clone(),
                subject: stage,
                decision: describe(&d.outcome),
                rule: d.rule,
                reason: d.reason,
            };
            rows.push((row, sc.expect.as_ref()));
        }
    }
    for sc in &file.plane {
        let stages = match &sc.task_stage {
            None => vec![None],
            Some(spec) => stages_for(rules, spec).into_iter().map(Some).collect(),
        };
        for stage in stages {
            // Both older than any grace, unless the scenario says the change is recent.
            let task_updated = now.minus(Duration::from_secs(4 * 3600));
            let item_updated = match (sc.changed_after_task, sc.recent) {
                (_, true) => now.minus(Duration::from_secs(10)),
                (true, false) => now.minus(Duration::from_secs(2 * 3600)),
                (false, false) => now.minus(Duration::from_secs(8 * 3600)),
            };
            let item = PlaneItemSnapshot {
                work_item: "SIM-1".into(),
                state_name: sc.state.clone(),
                state_group: sc.group.clone(),
                updated_at: item_updated,
                task: stage.as_ref().map(|s| TaskSnapshot {
                    work_item: "SIM-1".into(),
                    stage: s.clone(),
                    labels: Vec::new(),
                    updated_at: task_updated,
                    has_active_job: sc.task_busy,
                    awaiting_input: sc.task_awaiting_input,
                }),
                applied_at: None,
                first_seen_at: None,
            };
            let d = decide_plane_item(rules, &ov, &item, now);
            let row = Row {
                scenario: sc.name.clone(),
                subject: format!("{} / {}", sc.state, stage.as_deref().unwrap_or("no task")),
                decision: describe_plane(&d.outcome),
                rule: d.rule,
                reason: d.reason,
            };
            rows.push((row, sc.expect.as_ref()));
        }
    }
    Ok(rows)
}

/// A decision that differs between two rule sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub scenario: String,
    pub subject: String,
    pub old: Option<String>,
    pub new: Option<String>,
    pub old_rule: Option<String>,
    pub new_rule: Option<String>,
}

/// Only the rows whose decision (or deciding rule) differs.
pub fn diff(old: &[Row], new: &[Row]) -> Vec<Change> {
    let old_map: BTreeMap<_, _> = old.iter().map(|r| (r.key(), r)).collect();
    let new_map: BTreeMap<_, _> = new.iter().map(|r| (r.key(), r)).collect();
    let mut keys: Vec<_> = old_map.keys().chain(new_map.keys()).cloned().collect();
    keys.sort();
    keys.dedup();
    let mut out = Vec::new();
    for k in keys {
        let (o, n) = (old_map.get(&k), new_map.get(&k));
        let same =
            matches!((o, n), (Some(a), Some(b)) if a.decision == b.decision && a.rule == b.rule);
        if !same {
            out.push(Change {
                scenario: k.0.clone(),
                subject: k.1.clone(),
                old: o.map(|r| r.decision.clone()),
                new: n.map(|r| r.decision.clone()),
                old_rule: o.map(|r| r.rule.clone()),
                new_rule: n.map(|r| r.rule.clone()),
            });
        }
    }
    out
}
