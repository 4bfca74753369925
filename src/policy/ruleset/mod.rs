//! A rule set: the validated, compiled form of the files under `rules/`, and what the rest
//! of orch may ask of it.
//!
//! A rule set is valid or it is not loaded: [`load_sources`] reports every problem found
//! (not just the first) as `file:line:col: message`, and nothing partial is ever returned.
//! Loading lives beside this file: `load.rs` the order (parse, merge, sections, finish) and
//! the error collection, `stages.rs` the pipeline and its gates, `sections.rs` the other
//! sections. Here are the types they produce and the accessors the evaluator and the
//! pipeline read through.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rhai::{AST, Engine};
use sha2::{Digest, Sha256};

use super::{
    CheckResult, GateOutcome, OutboundEvent, PlaneAction, PolicyError, RuleError, RuleErrors,
};

mod load;
mod sections;
mod stages;

pub use load::load_sources;

/// An agent's retry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPolicy {
    /// Runs before the task is reported blocked, when the agent itself failed.
    pub max_attempts: u32,
    /// Runs before the task is reported blocked, when the job's worktree could not be
    /// prepared (the git remote down, a fetch failing): the agent never ran, and an outage of
    /// the forge should not block every task that wanted to start in it.
    pub start_attempts: u32,
    pub backoff: Duration,
}

impl AgentPolicy {
    /// The budget a job at `attempts` runs is under, as far as a reader can tell: past
    /// `max_attempts` it can only be retrying start failures (for the board's "attempt n of m").
    pub fn budget_shown(&self, attempts: i64) -> u32 {
        if attempts > i64::from(self.max_attempts) {
            self.start_attempts.max(self.max_attempts)
        } else {
            self.max_attempts
        }
    }
}

/// `start_attempts` when the rules give none: with a 30 s backoff, doubling, about an hour.
pub const DEFAULT_START_ATTEMPTS: u32 = 8;

/// One stage of the pipeline, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub name: String,
    pub agent: Option<String>,
    pub next: Option<String>,
    pub on_reject: Option<String>,
    pub human_gate: bool,
    /// The sweep may advance this stage (never true for a human gate).
    pub sweep: bool,
    pub terminal: bool,
    /// The `cancel` action sends tasks here (a terminal stage).
    pub cancel: bool,
    pub gitea_reviews: bool,
    /// The gate as written, for reports.
    pub gate: Option<String>,
    /// Former names: a reload that drops one of them moves its tasks to this stage.
    pub renamed_from: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) enum Gate {
    Check(String),
    Expr { ast: Arc<AST>, checks: Vec<String> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Switches {
    pub reconcile_enabled: bool,
    pub plane_enabled: bool,
    pub notify_unblock: bool,
}

/// Kept as written, in three parts, because a decision names the part that set its grace
/// (`grace.default`, `grace.stages.<stage>` or `grace.expr`).
#[derive(Debug)]
pub(crate) struct Grace {
    pub(crate) default: Duration,
    pub(crate) stages: BTreeMap<String, Duration>,
    /// Overrides the two above per task; evaluated, so it can fail at decision time.
    pub(crate) expr: Option<Arc<AST>>,
}

/// The `[plane]` section: which Plane states mean which action, and which state each
/// pipeline event shows.
#[derive(Debug, Default)]
pub(crate) struct PlaneMapping {
    /// Keys lower-cased: Plane state names are matched case-insensitively.
    pub(crate) inbound_states: BTreeMap<String, PlaneAction>,
    pub(crate) inbound_groups: BTreeMap<String, PlaneAction>,
    pub(crate) entered: BTreeMap<String, String>,
    pub(crate) awaiting_human: Option<String>,
    pub(crate) needs_input: Option<String>,
    pub(crate) blocked: Option<String>,
}

/// A parsed, validated, compiled rule set. Immutable; shared as `Arc<RuleSet>`.
pub struct RuleSet {
    pub(crate) version: String,
    pub(crate) files: Vec<PathBuf>,
    pub(crate) stages: Vec<Stage>,
    pub(crate) gates: BTreeMap<String, Gate>,
    pub(crate) agents: BTreeMap<String, AgentPolicy>,
    pub(crate) switches: Switches,
    /// `reconcile.red_backoff_cap`: the longest the sweep waits to read a red gate again.
    pub(crate) red_backoff_cap: Duration,
    pub(crate) grace: Grace,
    pub(crate) plane: PlaneMapping,
    pub(crate) templates: BTreeMap<String, String>,
    /// The engine the gates and the grace expression were compiled with: they run in it too,
    /// under its limits.
    pub(crate) engine: Arc<Engine>,
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field("version", &self.version)
            .field(
                "stages",
                &self.stages.iter().map(|s| &s.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl RuleSet {
    /// The content hash recorded with every decision and task-history row.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// The terminal stage the `cancel` action sends tasks to, when the rules have one.
    pub fn cancel_stage(&self) -> Option<&Stage> {
        self.stages.iter().find(|s| s.cancel)
    }

    /// Where a new task starts: the first stage. Validation guarantees there is one.
    pub fn initial_stage(&self) -> &Stage {
        &self.stages[0]
    }

    pub fn switches(&self) -> Switches {
        self.switches
    }

    /// The grace a stage gets as written (`grace.stages.<stage>`, else `grace.default`),
    /// before operator overrides and the grace expression.
    pub fn stage_grace(&self, stage: &str) -> Duration {
        self.grace
            .stages
            .get(stage)
            .copied()
            .unwrap_or(self.grace.default)
    }

    /// Whether a `grace.expr` may set a task's grace instead of its stage's.
    pub fn has_grace_expr(&self) -> bool {
        self.grace.expr.is_some()
    }

    /// The longest the sweep waits before reading a red gate again
    /// (`reconcile.red_backoff_cap`, default one hour).
    pub fn red_backoff_cap(&self) -> Duration {
        self.red_backoff_cap
    }

    pub fn agent_policy(&self, agent: &str) -> Option<&AgentPolicy> {
        self.agents.get(agent)
    }

    /// The action a Plane state means: by name (case-insensitive), else by state group.
    pub fn inbound_plane_action(
        &self,
        state_name: &str,
        state_group: Option<&str>,
    ) -> Option<PlaneAction> {
        self.plane
            .inbound_states
            .get(&state_name.to_lowercase())
            .or_else(|| state_group.and_then(|g| self.plane.inbound_groups.get(&g.to_lowercase())))
            .copied()
    }

    /// The Plane state names (lower-cased, as matched) and the state groups mapped to `action`.
    pub fn inbound_for(&self, action: PlaneAction) -> (Vec<&str>, Vec<&str>) {
        fn of(m: &BTreeMap<String, PlaneAction>, action: PlaneAction) -> Vec<&str> {
            m.iter()
                .filter(|(_, a)| **a == action)
                .map(|(k, _)| k.as_str())
                .collect()
        }
        (
            of(&self.plane.inbound_states, action),
            of(&self.plane.inbound_groups, action),
        )
    }

    /// Every Plane state name orch may set (entered stages, awaiting a person, needs input,
    /// blocked), each once.
    pub fn outbound_states(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.plane.entered.values().map(String::as_str).collect();
        out.extend(
            [
                &self.plane.awaiting_human,
                &self.plane.needs_input,
                &self.plane.blocked,
            ]
            .into_iter()
            .filter_map(|s| s.as_deref()),
        );
        out.sort();
        out.dedup();
        out
    }

    /// A Gitea pull-request review in `stage` as a verdict, when the stage takes them.
    pub fn gitea_review_action(&self, stage: &str, approved: bool) -> Option<PlaneAction> {
        let s = self.stage(stage)?;
        if !s.gitea_reviews {
            return None;
        }
        if approved {
            Some(PlaneAction::Approve)
        } else {
            s.on_reject.as_ref().map(|_| PlaneAction::Reject)
        }
    }

    pub fn outbound_plane_state(&self, event: &OutboundEvent) -> Option<&str> {
        match event {
            OutboundEvent::Entered { stage } => self.plane.entered.get(stage).map(String::as_str),
            OutboundEvent::AwaitingHuman => self.plane.awaiting_human.as_deref(),
            OutboundEvent::NeedsInput => self.plane.needs_input.as_deref(),
            OutboundEvent::Blocked => self.plane.blocked.as_deref(),
        }
    }

    /// Renders a template; `{name}` placeholders are replaced, unknown ones left as written.
    /// An undefined template renders as the empty string (the caller skips sending it).
    pub fn render(&self, template: &str, vars: &[(&str, &str)]) -> String {
        let Some(t) = self.templates.get(template) else {
            return String::new();
        };
        let mut out = t.clone();
        for (k, v) in vars {
            out = out.replace(&format!("{{{k}}}"), v);
        }
        out
    }

    /// The named checks the stage's exit gate needs (empty: no gate).
    pub fn gate_checks(&self, stage: &str) -> Vec<String> {
        match self.gates.get(stage) {
            Some(Gate::Check(c)) => vec![c.clone()],
            Some(Gate::Expr { checks, .. }) => checks.clone(),
            None => Vec::new(),
        }
    }

    /// Combines check results into the gate's outcome.
    pub fn gate_outcome(
        &self,
        stage: &str,
        results: &BTreeMap<String, CheckResult>,
    ) -> Result<GateOutcome, PolicyError> {
        super::eval::gate_outcome(self, stage, results)
    }
}

/// The messages orch renders; a `[templates]` key outside this list is a typo.
pub(crate) const TEMPLATE_NAMES: &[&str] = &[
    "unblock",
    "stage_changed",
    "gate_failed",
    "awaiting_human",
    "blocked",
    "needs_human",
    "needs_input",
];

/// The default rule set, compiled into the binary so `orch serve` works from any directory.
pub const EMBEDDED: &[(&str, &str)] = &[
    (
        "notifications.toml",
        include_str!("../../../rules/notifications.toml"),
    ),
    (
        "pipeline.toml",
        include_str!("../../../rules/pipeline.toml"),
    ),
    ("plane.toml", include_str!("../../../rules/plane.toml")),
    (
        "reconcile.toml",
        include_str!("../../../rules/reconcile.toml"),
    ),
];

/// Reads every `*.toml` at the top level of `dir` (subdirectories are other rule sets).
pub fn read_dir(dir: &Path) -> Result<Vec<(PathBuf, String)>, RuleErrors> {
    let io_err = |path: &Path, e: std::io::Error| {
        RuleErrors(vec![RuleError {
            file: path.to_path_buf(),
            line: 0,
            col: 0,
            message: format!("cannot read: {e}"),
        }])
    };
    let entries = std::fs::read_dir(dir).map_err(|e| io_err(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") || !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
        files.push((path, text));
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    if files.is_empty() {
        return Err(RuleErrors(vec![RuleError {
            file: dir.to_path_buf(),
            line: 0,
            col: 0,
            message: "no *.toml rule files here".into(),
        }]));
    }
    Ok(files)
}

/// A version hash over the files' names and contents.
pub(crate) fn version_of(files: &[(PathBuf, String)]) -> String {
    let mut h = Sha256::new();
    for (path, text) in files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        h.update(name.as_bytes());
        h.update([0]);
        h.update(text.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())[..12].to_string()
}
