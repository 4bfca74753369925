//! Policy is data: the rule set under `rules/` and a pure evaluator over it.
//!
//! Nothing in here does I/O or reads a clock (the watcher in [`watch`] is the one exception,
//! and it only swaps rule sets). Given a rule set, a task snapshot, the facts and `now`, the
//! evaluator returns a [`Decision`] naming the rule that decided and why — data that the
//! snapshot tests pin, so a policy change is reviewed as a diff of decisions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;

mod eval;
pub mod impact;
mod ruleset;
mod sandbox;
pub mod scenario;
mod schema;
pub mod shadow;
pub mod snapfile;
mod watch;

pub use eval::{answer_check_due, decide_plane_item, decide_task, grace_for, next_gate_check};
pub use ruleset::{
    AgentPolicy, DEFAULT_START_ATTEMPTS, EMBEDDED, RuleSet, Stage, Switches, load_sources, read_dir,
};
pub use watch::{
    ReloadGuard, RulesHandle, RulesStatus, RulesWatcher, SETTLE_WINDOW, watch, watch_with_window,
};

/// The gate checks the pipeline implements; rules may use only these names.
pub const KNOWN_CHECKS: &[&str] = &[
    "ci_green",
    "analysis_approved",
    "review_approved",
    "tests_passed",
];

/// One problem in a rule set, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Line 0: the problem is the file (or directory) itself, not a place in it.
        if self.line == 0 {
            return write!(f, "{}: {}", self.file.display(), self.message);
        }
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

/// Every problem found in a rule set, one `file:line:col: message` per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleErrors(pub Vec<RuleError>);

impl std::fmt::Display for RuleErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RuleErrors {}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("stage {0:?} is not in the rule set")]
    UnknownStage(String),
    #[error("rule {rule}: {message}")]
    Script { rule: String, message: String },
    #[error("cannot watch {path}: {message}")]
    Watch { path: PathBuf, message: String },
}

/// Loads and validates the rule set in `dir`.
pub fn load_dir(dir: &Path) -> Result<RuleSet, RuleErrors> {
    load_sources(read_dir(dir)?)
}

/// The default rule set compiled into the binary.
pub fn load_embedded() -> Result<RuleSet, RuleErrors> {
    load_sources(
        EMBEDDED
            .iter()
            .map(|(name, text)| (PathBuf::from("<embedded>").join(name), text.to_string()))
            .collect(),
    )
}

/// The rule set `orch serve` starts with: `dir` when it exists, the embedded defaults
/// otherwise (so the service runs from any directory with nothing configured).
pub fn load_active(dir: &Path) -> Result<RulesHandle, RuleErrors> {
    if dir.exists() {
        Ok(RulesHandle::new(load_dir(dir)?, dir.to_path_buf()))
    } else {
        tracing::info!(dir = %dir.display(), "rules directory not found; using the embedded default rules");
        Ok(RulesHandle::new(load_embedded()?, dir.to_path_buf()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlaneAction {
    Start,
    Approve,
    Reject,
    /// The work item was cancelled: the task goes to the rules' cancel stage.
    Cancel,
}

impl PlaneAction {
    pub fn as_str(self) -> &'static str {
        match self {
            PlaneAction::Start => "start",
            PlaneAction::Approve => "approve",
            PlaneAction::Reject => "reject",
            PlaneAction::Cancel => "cancel",
        }
    }
}

/// Pipeline events that set a Plane state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundEvent {
    Entered { stage: String },
    AwaitingHuman,
    NeedsInput,
    Blocked,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    pub green: bool,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GateOutcome {
    pub green: bool,
    pub reason: String,
}

/// The operator's environment overrides (`ORCH_RECONCILE_*`); they win over the rules.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub reconcile_enabled: Option<bool>,
    pub plane_enabled: Option<bool>,
    pub notify_unblock: Option<bool>,
    pub grace_default: Option<Duration>,
    pub grace_by_stage: BTreeMap<String, Duration>,
}

impl Overrides {
    /// An environment `false` kill switch wins; an environment `true` cannot re-enable what
    /// the rules switched off (the rules' switches are the hot-reloadable pause).
    pub fn effective_switches(&self, rules: &RuleSet) -> Switches {
        let r = rules.switches();
        Switches {
            reconcile_enabled: r.reconcile_enabled && self.reconcile_enabled.unwrap_or(true),
            plane_enabled: r.plane_enabled && self.plane_enabled.unwrap_or(true),
            notify_unblock: self.notify_unblock.unwrap_or(r.notify_unblock),
        }
    }
}

/// What the evaluator knows about a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSnapshot {
    pub work_item: String,
    pub stage: String,
    #[serde(default)]
    pub labels: Vec<String>,
    pub updated_at: Timestamp,
    #[serde(default)]
    pub has_active_job: bool,
    /// The stage's agent asked a question (`needs_input`) and no answer has come yet.
    #[serde(default)]
    pub awaiting_input: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    Terminal,
    HumanGate,
    Busy,
    AwaitingInput,
    Disabled,
    UnknownStage,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    Skip { why: SkipReason },
    Wait { remaining_s: u64 },
    CheckGate { checks: Vec<String> },
    Advance { from: String, to: String },
    Hold { reason: String },
    Error { message: String },
}

/// The evaluator's verdict on one task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub rules_version: String,
    /// The rule that decided, e.g. `stage.analysis.human_gate` or `grace.stages.review`.
    pub rule: String,
    pub reason: String,
    pub outcome: Outcome,
    pub grace_left_s: Option<u64>,
}

/// What the evaluator knows about a Plane work item (F-2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaneItemSnapshot {
    pub work_item: String,
    pub state_name: String,
    pub state_group: Option<String>,
    /// Plane's clock.
    pub updated_at: Timestamp,
    pub task: Option<TaskSnapshot>,
    /// Plane's `updated_at` of the last change orch applied from this item (Plane's clock),
    /// when recorded: "already applied" compares Plane's time with Plane's time, so a Plane
    /// clock ahead of or behind orch's neither replays an old change nor hides a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<Timestamp>,
    /// When the sweep first saw this change (orch's clock), when known: how long a webhook
    /// has had to arrive is measured on one clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PlaneOutcome {
    InSync,
    Replay { action: PlaneAction },
    Ignore { why: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlaneDecision {
    pub rules_version: String,
    pub rule: String,
    pub reason: String,
    pub outcome: PlaneOutcome,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_rules_are_the_shipped_rules_and_valid() {
        let embedded = load_embedded().unwrap();
        let dir = load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")).unwrap();
        assert_eq!(embedded.version(), dir.version());
        let names: Vec<_> = embedded.stages().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "analysis",
                "development",
                "review",
                "testing",
                "done",
                "cancelled"
            ]
        );
        assert_eq!(
            embedded.cancel_stage().map(|s| s.name.as_str()),
            Some("cancelled")
        );
    }
}
