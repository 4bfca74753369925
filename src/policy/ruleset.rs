//! Loading a rule set: parse every file, merge, validate the whole, compile the Rhai.
//!
//! A rule set is valid or it is not loaded: every problem found is reported (not just the
//! first) as `file:line:col: message`, and nothing partial is ever returned.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rhai::{AST, Engine};
use sha2::{Digest, Sha256};
use toml::Spanned;

use super::schema::{RawFile, RawStage};
use super::{KNOWN_CHECKS, PlaneAction, RuleError, RuleErrors, sandbox};
use crate::config::line_col;

/// An agent's retry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPolicy {
    pub max_attempts: u32,
    pub backoff: Duration,
}

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

/// A parsed, validated, compiled rule set. Immutable; shared as `Arc<RuleSet>`.
pub struct RuleSet {
    pub(crate) version: String,
    pub(crate) files: Vec<PathBuf>,
    pub(crate) stages: Vec<Stage>,
    pub(crate) gates: BTreeMap<String, Gate>,
    pub(crate) agents: BTreeMap<String, AgentPolicy>,
    pub(crate) switches: Switches,
    pub(crate) grace_default: Duration,
    pub(crate) grace_stages: BTreeMap<String, Duration>,
    pub(crate) grace_expr: Option<Arc<AST>>,
    pub(crate) inbound_states: BTreeMap<String, PlaneAction>,
    pub(crate) inbound_groups: BTreeMap<String, PlaneAction>,
    pub(crate) out_entered: BTreeMap<String, String>,
    pub(crate) out_awaiting_human: Option<String>,
    pub(crate) out_needs_input: Option<String>,
    pub(crate) out_blocked: Option<String>,
    pub(crate) templates: BTreeMap<String, String>,
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

/// The default rule set, compiled into the binary so `orch serve` works from any directory.
/// The messages orch renders; a `[templates]` key outside this list is a typo.
pub const TEMPLATE_NAMES: &[&str] = &[
    "unblock",
    "stage_changed",
    "gate_failed",
    "awaiting_human",
    "blocked",
    "needs_human",
    "needs_input",
];

pub const EMBEDDED: &[(&str, &str)] = &[
    (
        "notifications.toml",
        include_str!("../../rules/notifications.toml"),
    ),
    ("pipeline.toml", include_str!("../../rules/pipeline.toml")),
    ("plane.toml", include_str!("../../rules/plane.toml")),
    ("reconcile.toml", include_str!("../../rules/reconcile.toml")),
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
pub fn version_of(files: &[(PathBuf, String)]) -> String {
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

struct Ctx<'a> {
    errors: Vec<RuleError>,
    files: &'a [(PathBuf, String)],
}

impl Ctx<'_> {
    fn err_at(&mut self, file: usize, offset: usize, message: impl Into<String>) {
        let (path, text) = &self.files[file];
        let (line, col) = line_col(text, offset);
        self.errors.push(RuleError {
            file: path.clone(),
            line,
            col,
            message: message.into(),
        });
    }

    fn err_span<T>(&mut self, file: usize, s: &Spanned<T>, message: impl Into<String>) {
        self.err_at(file, s.span().start, message);
    }
}

fn parse_duration(s: &str) -> Option<Duration> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().ok().map(Duration::from_secs);
    }
    humantime::parse_duration(t).ok()
}

fn parse_action(s: &str) -> Option<PlaneAction> {
    match s {
        "start" => Some(PlaneAction::Start),
        "approve" => Some(PlaneAction::Approve),
        "reject" => Some(PlaneAction::Reject),
        "cancel" => Some(PlaneAction::Cancel),
        _ => None,
    }
}

/// The identifiers of a Rhai gate expression, in order: what the validator checks against the
/// known checks. Skips what Rhai would not read as a name: string, character and back-tick
/// literals (with their escapes), comments, and numbers such as `1_000`, `0x1f` or `2e3`.
fn identifiers(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                while let Some(d) = chars.next() {
                    if d == '\\' {
                        chars.next();
                    } else if d == c {
                        break;
                    }
                }
            }
            // Back-tick strings are raw: no escapes.
            '`' => {
                for d in chars.by_ref() {
                    if d == '`' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for d in chars.by_ref() {
                    if prev == '*' && d == '/' {
                        break;
                    }
                    prev = d;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut id = String::from(c);
                while let Some(&d) = chars.peek() {
                    if !(d.is_ascii_alphanumeric() || d == '_') {
                        break;
                    }
                    id.push(d);
                    chars.next();
                }
                out.push(id);
            }
            c if c.is_ascii_digit() => {
                while chars
                    .peek()
                    .is_some_and(|d| d.is_ascii_alphanumeric() || *d == '_' || *d == '.')
                {
                    chars.next();
                }
            }
            _ => {}
        }
    }
    out
}

/// Parses, merges, validates and compiles `files` as one rule set.
pub fn load_sources(files: Vec<(PathBuf, String)>) -> Result<RuleSet, RuleErrors> {
    let version = version_of(&files);
    let mut ctx = Ctx {
        errors: Vec::new(),
        files: &files,
    };
    let mut parsed: Vec<(usize, RawFile)> = Vec::new();
    for (i, (_, text)) in files.iter().enumerate() {
        match toml::from_str::<RawFile>(text) {
            Ok(f) => parsed.push((i, f)),
            Err(e) => {
                let offset = e.span().map(|s| s.start).unwrap_or(0);
                ctx.err_at(i, offset, e.message().trim().to_string());
            }
        }
    }
    if !ctx.errors.is_empty() {
        return Err(RuleErrors(ctx.errors));
    }

    // Merge: stages concatenate in file order; every other section is defined once.
    let mut stages_raw: Vec<(usize, RawStage)> = Vec::new();
    let mut agents = None;
    let mut reconcile = None;
    let mut grace = None;
    let mut plane = None;
    let mut templates = None;
    let mut stage_file: Option<usize> = None;
    macro_rules! once {
        ($slot:ident, $value:expr, $file:expr, $name:literal) => {
            if let Some(v) = $value {
                if let Some((first, _)) = &$slot {
                    let first_name = files[*first as usize].0.display().to_string();
                    ctx.err_span(
                        $file,
                        &v,
                        format!("[{}] is already defined in {}", $name, first_name),
                    );
                } else {
                    $slot = Some(($file, v));
                }
            }
        };
    }
    for (i, f) in parsed {
        if !f.stage.is_empty() {
            if let Some(first) = stage_file.filter(|first| *first != i) {
                let first_name = files[first].0.display().to_string();
                let s = &f.stage[0].name;
                ctx.err_span(
                    i,
                    s,
                    format!(
                        "stages are already defined in {first_name}; keep the pipeline in one file"
                    ),
                );
            } else {
                stage_file = Some(i);
                stages_raw.extend(f.stage.into_iter().map(|s| (i, s)));
            }
        }
        once!(agents, f.agents, i, "agents");
        once!(reconcile, f.reconcile, i, "reconcile");
        once!(grace, f.grace, i, "grace");
        once!(plane, f.plane, i, "plane");
        once!(templates, f.templates, i, "templates");
    }

    let engine = Arc::new(sandbox::engine());
    let first_file = 0usize;

    // --- agents
    let mut agent_policies = BTreeMap::new();
    if let Some((fi, a)) = &agents {
        for (name, raw) in a.get_ref() {
            let backoff = match &raw.backoff {
                Some(b) => match parse_duration(b.get_ref()) {
                    Some(d) => d,
                    None => {
                        ctx.err_span(
                            *fi,
                            b,
                            format!(
                                "agents.{name}.backoff: {:?} is not a duration such as 30s, 5m",
                                b.get_ref()
                            ),
                        );
                        Duration::from_secs(30)
                    }
                },
                None => Duration::from_secs(30),
            };
            let max_attempts = raw.max_attempts.unwrap_or(3);
            if max_attempts == 0 {
                ctx.err_span(
                    *fi,
                    a,
                    format!("agents.{name}.max_attempts must be at least 1"),
                );
            }
            agent_policies.insert(
                name.clone(),
                AgentPolicy {
                    max_attempts,
                    backoff,
                },
            );
        }
    }

    // --- stages
    if stages_raw.is_empty() {
        ctx.errors.push(RuleError {
            file: files.first().map(|f| f.0.clone()).unwrap_or_default(),
            line: 1,
            col: 1,
            message: "no [[stage]] defined".into(),
        });
        return Err(RuleErrors(ctx.errors));
    }
    let names: Vec<String> = stages_raw
        .iter()
        .map(|(_, s)| s.name.get_ref().clone())
        .collect();
    let mut seen = HashSet::new();
    for (fi, s) in &stages_raw {
        if !seen.insert(s.name.get_ref().clone()) {
            ctx.err_span(
                *fi,
                &s.name,
                format!("stage {:?} is defined twice", s.name.get_ref()),
            );
        }
    }
    let known = |n: &str| names.iter().any(|x| x == n);
    let mut stages = Vec::new();
    let mut gates = BTreeMap::new();
    for (fi, s) in &stages_raw {
        let name = s.name.get_ref().clone();
        for (what, target) in [("next", &s.next), ("on_reject", &s.on_reject)] {
            if let Some(t) = target
                && !known(t.get_ref())
            {
                ctx.err_span(
                    *fi,
                    t,
                    format!("stage {name}: {what} names unknown stage {:?}", t.get_ref()),
                );
            }
        }
        if let Some(a) = &s.agent
            && !agent_policies.contains_key(a.get_ref())
        {
            ctx.err_span(
                *fi,
                a,
                format!(
                    "stage {name}: unknown agent {:?} (declare it under [agents.{}])",
                    a.get_ref(),
                    a.get_ref()
                ),
            );
        }
        if let Some(c) = &s.cancel
            && *c.get_ref()
            && !s.terminal
        {
            ctx.err_span(
                *fi,
                c,
                format!(
                    "stage {name} takes cancelled tasks and must be terminal (terminal = true)"
                ),
            );
        }
        if s.terminal {
            if let Some(n) = &s.next {
                ctx.err_span(
                    *fi,
                    n,
                    format!("stage {name} is terminal and cannot have a next stage"),
                );
            }
            if let Some(g) = &s.gate {
                ctx.err_span(
                    *fi,
                    g,
                    format!("stage {name} is terminal and cannot have a gate"),
                );
            }
        } else if s.next.is_none() {
            ctx.err_span(
                *fi,
                &s.name,
                format!("stage {name} is not terminal but has no next stage"),
            );
        }
        if let Some(sw) = &s.sweep
            && s.human_gate
            && *sw.get_ref()
        {
            ctx.err_span(*fi, sw, format!("stage {name} is a human gate: the sweep must never advance it (remove sweep = true)"));
        }
        if s.human_gate {
            match &s.gate {
                None => ctx.err_span(*fi, &s.name, format!("stage {name} is a human gate but has no gate: tasks would leave it without a person")),
                Some(g) if !identifiers(g.get_ref()).iter().any(|i| i == "analysis_approved") => ctx.err_span(
                    *fi,
                    g,
                    format!("stage {name} is a human gate but its gate does not require analysis_approved, a person's verdict"),
                ),
                _ => {}
            }
            if s.next.as_ref().is_some_and(|n| n.get_ref() == &name) {
                ctx.err_span(
                    *fi,
                    &s.name,
                    format!("stage {name} is a human gate whose next stage is itself"),
                );
            }
        }
        if let Some(g) = &s.gate {
            let text = g.get_ref().trim();
            let ids = identifiers(text);
            let single = ids.len() == 1 && ids[0] == text;
            let mut bad = false;
            for id in &ids {
                if !KNOWN_CHECKS.contains(&id.as_str()) && id != "true" && id != "false" {
                    ctx.err_span(
                        *fi,
                        g,
                        format!(
                            "stage {name}: unknown gate check {id:?} (known: {})",
                            KNOWN_CHECKS.join(", ")
                        ),
                    );
                    bad = true;
                }
            }
            if !bad {
                if single {
                    gates.insert(name.clone(), Gate::Check(text.to_string()));
                } else {
                    match engine.compile_expression(text) {
                        Ok(ast) => {
                            let mut checks: Vec<String> = ids
                                .into_iter()
                                .filter(|i| KNOWN_CHECKS.contains(&i.as_str()))
                                .collect();
                            checks.sort();
                            checks.dedup();
                            gates.insert(
                                name.clone(),
                                Gate::Expr {
                                    ast: Arc::new(ast),
                                    checks,
                                },
                            );
                        }
                        Err(e) => ctx.err_span(
                            *fi,
                            g,
                            format!("stage {name}: gate is not a valid Rhai expression: {e}"),
                        ),
                    }
                }
            }
        }
        stages.push(Stage {
            name: name.clone(),
            agent: s.agent.as_ref().map(|a| a.get_ref().clone()),
            next: s.next.as_ref().map(|n| n.get_ref().clone()),
            on_reject: s.on_reject.as_ref().map(|n| n.get_ref().clone()),
            human_gate: s.human_gate,
            sweep: s
                .sweep
                .as_ref()
                .map(|s| *s.get_ref())
                .unwrap_or(!s.human_gate)
                && !s.human_gate,
            terminal: s.terminal,
            cancel: s.cancel.as_ref().is_some_and(|c| *c.get_ref()),
            gitea_reviews: s.gitea_reviews,
            gate: s.gate.as_ref().map(|g| g.get_ref().clone()),
        });
    }
    let cancel_stages: Vec<_> = stages_raw
        .iter()
        .filter(|(_, s)| s.cancel.as_ref().is_some_and(|c| *c.get_ref()))
        .collect();
    if let [_, (fi, extra), ..] = cancel_stages.as_slice() {
        ctx.err_span(
            *fi,
            &extra.name,
            format!(
                "stage {} is a second cancel stage: cancelled tasks need one place to go",
                extra.name.get_ref()
            ),
        );
    }
    if !stages.iter().any(|s| s.terminal && !s.cancel) {
        let (fi, s) = &stages_raw[0];
        ctx.err_span(
            *fi,
            &s.name,
            "no terminal stage: a task could never be done",
        );
    }
    // Reachability from the first stage along next and on_reject.
    let mut reached = BTreeSet::new();
    let mut todo = vec![stages[0].name.clone()];
    while let Some(n) = todo.pop() {
        if !reached.insert(n.clone()) {
            continue;
        }
        if let Some(s) = stages.iter().find(|s| s.name == n) {
            todo.extend(s.next.iter().cloned());
            todo.extend(s.on_reject.iter().cloned());
        }
    }
    // The cancel stage is reached from every stage by the `cancel` action.
    reached.extend(stages.iter().filter(|s| s.cancel).map(|s| s.name.clone()));
    for (fi, s) in &stages_raw {
        if !reached.contains(s.name.get_ref()) {
            ctx.err_span(
                *fi,
                &s.name,
                format!(
                    "stage {} is unreachable from the first stage {}",
                    s.name.get_ref(),
                    stages[0].name
                ),
            );
        }
    }

    // --- reconcile switches
    let sw = reconcile.as_ref().map(|(_, r)| r.get_ref());
    let switches = Switches {
        reconcile_enabled: sw.and_then(|r| r.enabled).unwrap_or(true),
        plane_enabled: sw.and_then(|r| r.plane_enabled).unwrap_or(true),
        notify_unblock: sw.and_then(|r| r.notify_unblock).unwrap_or(false),
    };

    // --- grace
    let mut grace_default = Duration::from_secs(600);
    let mut grace_stages = BTreeMap::new();
    let mut grace_expr = None;
    if let Some((fi, g)) = &grace {
        let g = g.get_ref();
        if let Some(d) = &g.default {
            match parse_duration(d.get_ref()) {
                Some(v) => grace_default = v,
                None => ctx.err_span(
                    *fi,
                    d,
                    format!(
                        "grace.default: {:?} is not a duration such as 10m",
                        d.get_ref()
                    ),
                ),
            }
        }
        for (stage, d) in &g.stages {
            if !known(stage) {
                ctx.err_span(*fi, d, format!("grace.stages: unknown stage {stage:?}"));
            }
            match parse_duration(d.get_ref()) {
                Some(v) => {
                    grace_stages.insert(stage.clone(), v);
                }
                None => ctx.err_span(
                    *fi,
                    d,
                    format!("grace.stages.{stage}: {:?} is not a duration", d.get_ref()),
                ),
            }
        }
        if let Some(e) = &g.expr {
            match engine.compile(e.get_ref()) {
                Ok(ast) => grace_expr = Some(Arc::new(ast)),
                Err(err) => {
                    // Point into the script: the error's position is relative to the string.
                    let pos = err.position();
                    ctx.err_span(
                        *fi,
                        e,
                        format!(
                            "grace.expr: Rhai syntax error at script line {}, column {}: {}",
                            pos.line().unwrap_or(0),
                            pos.position().unwrap_or(0),
                            err.err_type()
                        ),
                    );
                }
            }
        }
    }

    // --- plane mappings
    let mut inbound_states = BTreeMap::new();
    let mut inbound_groups = BTreeMap::new();
    let mut out_entered = BTreeMap::new();
    let (mut out_awaiting_human, mut out_needs_input, mut out_blocked) = (None, None, None);
    let plane_file = plane.as_ref().map(|(f, _)| *f).unwrap_or(first_file);
    if let Some((fi, p)) = &plane {
        let p = p.get_ref();
        if let Some(inb) = &p.inbound {
            for (map, target) in [
                (&inb.states, &mut inbound_states),
                (&inb.groups, &mut inbound_groups),
            ] {
                for (k, v) in map {
                    match parse_action(v.get_ref()) {
                        Some(a) => {
                            target.insert(k.to_lowercase(), a);
                        }
                        None => ctx.err_span(
                            *fi,
                            v,
                            format!(
                                "plane.inbound: {:?} is not an action (start, approve, reject, cancel)",
                                v.get_ref()
                            ),
                        ),
                    }
                }
            }
        }
        if let Some(out) = &p.outbound {
            out_awaiting_human = out.awaiting_human.clone();
            out_needs_input = out.needs_input.clone();
            out_blocked = out.blocked.clone();
            for (stage, state) in &out.entered {
                if !known(stage) {
                    ctx.err_span(
                        *fi,
                        state,
                        format!("plane.outbound.entered: unknown stage {stage:?}"),
                    );
                }
                out_entered.insert(stage.clone(), state.get_ref().clone());
            }
        }
    }
    let plane_span_file = plane_file;
    let plane_offset = plane.as_ref().map(|(_, p)| p.span().start).unwrap_or(0);
    let mapped: HashSet<PlaneAction> = inbound_states
        .values()
        .chain(inbound_groups.values())
        .copied()
        .collect();
    let needs_verdicts = stages.iter().any(|s| s.human_gate);
    let mut required = vec![PlaneAction::Start];
    if needs_verdicts {
        required.extend([PlaneAction::Approve, PlaneAction::Reject]);
    }
    for action in required {
        if !mapped.contains(&action) {
            ctx.err_at(
                plane_span_file,
                plane_offset,
                format!("plane.inbound: no Plane state maps to {}", action.as_str()),
            );
        }
    }
    if needs_verdicts && out_awaiting_human.is_none() {
        ctx.err_at(plane_span_file, plane_offset, "plane.outbound.awaiting_human is missing: people must see when a human gate waits for them");
    }
    if out_blocked.is_none() {
        ctx.err_at(
            plane_span_file,
            plane_offset,
            "plane.outbound.blocked is missing: people must see a blocked task",
        );
    }
    if mapped.contains(&PlaneAction::Cancel) && !stages.iter().any(|s| s.cancel) {
        ctx.err_at(
            plane_span_file,
            plane_offset,
            "plane.inbound maps a state to cancel, but no stage has cancel = true to take cancelled tasks",
        );
    }
    // A cancelled task already shows as cancelled in Plane: only the end of the pipeline
    // needs a state to show.
    for s in stages.iter().filter(|s| s.terminal && !s.cancel) {
        if !out_entered.contains_key(&s.name) {
            ctx.err_at(plane_span_file, plane_offset, format!("plane.outbound.entered.{} is missing: a finished task must show as done in Plane", s.name));
        }
    }

    // --- templates
    if let Some((file, t)) = &templates {
        for name in t.get_ref().keys() {
            if !TEMPLATE_NAMES.contains(&name.as_str()) {
                ctx.err_span(
                    *file,
                    t,
                    format!(
                        "[templates] {name} is not a template orch sends (known: {})",
                        TEMPLATE_NAMES.join(", ")
                    ),
                );
            }
        }
    }
    let templates = templates.map(|(_, t)| t.into_inner()).unwrap_or_default();
    if !templates.contains_key("unblock") {
        ctx.errors.push(RuleError {
            file: files[0].0.clone(),
            line: 1,
            col: 1,
            message: "[templates] unblock is missing: the reconciler's unblock line needs it"
                .into(),
        });
    }

    if !ctx.errors.is_empty() {
        ctx.errors
            .sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
        return Err(RuleErrors(ctx.errors));
    }
    let file_paths = files.iter().map(|(p, _)| p.clone()).collect();
    Ok(RuleSet {
        version,
        files: file_paths,
        stages,
        gates,
        agents: agent_policies,
        switches,
        grace_default,
        grace_stages,
        grace_expr,
        inbound_states,
        inbound_groups,
        out_entered,
        out_awaiting_human,
        out_needs_input,
        out_blocked,
        templates,
        engine,
    })
}

#[cfg(test)]
mod tests {
    use super::identifiers;

    #[test]
    fn identifiers_are_the_names_rhai_reads() {
        assert_eq!(
            identifiers("ci_green && !(tests_passed || review_approved)"),
            ["ci_green", "tests_passed", "review_approved"]
        );
        // Literals and comments hide what looks like a name.
        assert_eq!(
            identifiers(r#"ci_green && "a \"quoted\" word" != 'x' // nope"#),
            ["ci_green"]
        );
        assert_eq!(
            identifiers("/* analysis_approved */ ci_green || `raw text` == \"\""),
            ["ci_green"]
        );
        // Numbers, with separators, hex digits and exponents, are not names.
        assert_eq!(
            identifiers("1_000 > 0x1f && 2e3 > 1.5"),
            Vec::<String>::new()
        );
        assert_eq!(identifiers("true"), ["true"]);
    }
}
