//! The policy page (`/rules`): the active rule set as a graph, its version and load time,
//! the last refused reload with its `file:line:col` lines, and the kill switches.

use serde::Serialize;

use super::cards::human;
use super::svg;
use crate::http::AppState;
use crate::policy::{Overrides, RuleSet, Stage};

#[derive(Debug, Serialize)]
pub(super) struct RulesView {
    pub(super) version: String,
    pub(super) loaded_at: String,
    pub(super) dir: String,
    pub(super) files: Vec<String>,
    pub(super) reloads_ok: u64,
    pub(super) reloads_failed: u64,
    /// The refused reload's errors, one `file:line:col: message` per line.
    pub(super) last_error: Option<String>,
    pub(super) switches: Vec<SwitchView>,
    pub(super) stages: Vec<StageView>,
    pub(super) grace_expr: bool,
}

#[derive(Debug, Serialize)]
pub(super) struct SwitchView {
    pub(super) name: &'static str,
    /// As the rules say.
    pub(super) rules: bool,
    /// After the operator's `ORCH_RECONCILE_*` overrides.
    pub(super) effective: bool,
    pub(super) overridden: bool,
}

#[derive(Debug, Serialize)]
pub(super) struct StageView {
    pub(super) name: String,
    pub(super) agent: Option<String>,
    pub(super) gate: Option<String>,
    pub(super) next: Option<String>,
    pub(super) on_reject: Option<String>,
    pub(super) human_gate: bool,
    pub(super) terminal: bool,
    pub(super) grace: Option<String>,
}

/// A stage's grace as the sweep applies it, operator overrides first (as `policy::grace_for`
/// orders them); `None` for stages the sweep never times (terminal ones, human gates).
fn grace_of(rules: &RuleSet, ov: &Overrides, stage: &Stage) -> Option<String> {
    if stage.terminal || stage.human_gate {
        return None;
    }
    let d = ov
        .grace_by_stage
        .get(&stage.name)
        .copied()
        .or(ov.grace_default)
        .unwrap_or_else(|| rules.stage_grace(&stage.name));
    Some(human(d))
}

/// The page's data and its graph (markup, see [`svg::draw`]).
pub(super) fn view(state: &AppState) -> (RulesView, String) {
    let rules = state.rules.current();
    let status = state.rules.status();
    let ov = state.reconciler.overrides();
    let written = rules.switches();
    let effective = ov.effective_switches(&rules);
    let switches = vec![
        SwitchView {
            name: "reconcile.enabled",
            rules: written.reconcile_enabled,
            effective: effective.reconcile_enabled,
            overridden: ov.reconcile_enabled.is_some(),
        },
        SwitchView {
            name: "reconcile.plane_enabled",
            rules: written.plane_enabled,
            effective: effective.reconcile_enabled && effective.plane_enabled,
            overridden: ov.plane_enabled.is_some(),
        },
        SwitchView {
            name: "reconcile.notify_unblock",
            rules: written.notify_unblock,
            effective: effective.notify_unblock,
            overridden: ov.notify_unblock.is_some(),
        },
    ];
    let stages = rules
        .stages()
        .iter()
        .map(|s| StageView {
            name: s.name.clone(),
            agent: s.agent.clone(),
            gate: s.gate.clone(),
            next: s.next.clone(),
            on_reject: s.on_reject.clone(),
            human_gate: s.human_gate,
            terminal: s.terminal,
            grace: grace_of(&rules, ov, s),
        })
        .collect();
    let graph = svg::draw(&rules, |s| grace_of(&rules, ov, s).unwrap_or_default());
    let view = RulesView {
        version: status.version,
        loaded_at: status.loaded_at.to_rfc3339(),
        dir: status.dir.display().to_string(),
        files: status
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect(),
        reloads_ok: status.reloads_ok,
        reloads_failed: status.reloads_failed,
        last_error: status.last_reload_error,
        switches,
        stages,
        grace_expr: rules.has_grace_expr(),
    };
    (view, graph)
}
