//! The sections other than the stages: `[agents]`, `[reconcile]`, `[grace]`, `[plane]` and
//! `[templates]`. Each is checked against the stages where it names them, and defaults what
//! the files leave out, so a small rule set stays small.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rhai::Engine;

use super::load::{Ctx, InFile};
use super::{AgentPolicy, Grace, PlaneMapping, Stage, Switches, TEMPLATE_NAMES};
use crate::duration;
use crate::policy::schema::{RawAgent, RawGrace, RawPlane, RawReconcile};
use crate::policy::{PlaneAction, RuleError};

impl Ctx<'_> {
    pub(super) fn agents(
        &mut self,
        agents: Option<&InFile<BTreeMap<String, RawAgent>>>,
    ) -> BTreeMap<String, AgentPolicy> {
        let mut policies = BTreeMap::new();
        let Some((fi, a)) = agents else {
            return policies;
        };
        for (name, raw) in a.get_ref() {
            let backoff = match &raw.backoff {
                Some(b) => match parse_duration(b.get_ref()) {
                    Some(d) => d,
                    None => {
                        self.err_span(
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
            let start_attempts = raw
                .start_attempts
                .unwrap_or(super::DEFAULT_START_ATTEMPTS);
            for (key, n) in [("max_attempts", max_attempts), ("start_attempts", start_attempts)] {
                if n == 0 {
                    self.err_span(*fi, a, format!("agents.{name}.{key} must be at least 1"));
                }
            }
            policies.insert(
                name.clone(),
                AgentPolicy {
                    max_attempts,
                    start_attempts,
                    backoff,
                },
            );
        }
        policies
    }

    /// Nothing to check: every switch is a boolean with a default.
    pub(super) fn switches(&self, reconcile: Option<&InFile<RawReconcile>>) -> Switches {
        let sw = reconcile.map(|(_, r)| r.get_ref());
        Switches {
            reconcile_enabled: sw.and_then(|r| r.enabled).unwrap_or(true),
            plane_enabled: sw.and_then(|r| r.plane_enabled).unwrap_or(true),
            notify_unblock: sw.and_then(|r| r.notify_unblock).unwrap_or(false),
        }
    }

    /// `reconcile.red_backoff_cap`: a duration of at least one second (default one hour).
    pub(super) fn red_backoff_cap(&mut self, reconcile: Option<&InFile<RawReconcile>>) -> Duration {
        let default = Duration::from_secs(3600);
        let Some((fi, r)) = reconcile else {
            return default;
        };
        let Some(cap) = &r.get_ref().red_backoff_cap else {
            return default;
        };
        match parse_duration(cap.get_ref()) {
            Some(d) if d >= Duration::from_secs(1) => d,
            _ => {
                self.err_span(
                    *fi,
                    cap,
                    format!(
                        "reconcile.red_backoff_cap: {:?} is not a duration of at least 1s, such as 1h",
                        cap.get_ref()
                    ),
                );
                default
            }
        }
    }

    pub(super) fn grace(
        &mut self,
        grace: Option<&InFile<RawGrace>>,
        stages: &[Stage],
        engine: &Engine,
    ) -> Grace {
        let mut out = Grace {
            default: Duration::from_secs(600),
            stages: BTreeMap::new(),
            expr: None,
        };
        let Some((fi, g)) = grace else {
            return out;
        };
        let fi = *fi;
        let g = g.get_ref();
        if let Some(d) = &g.default {
            match parse_duration(d.get_ref()) {
                Some(v) => out.default = v,
                None => self.err_span(
                    fi,
                    d,
                    format!(
                        "grace.default: {:?} is not a duration such as 10m",
                        d.get_ref()
                    ),
                ),
            }
        }
        for (stage, d) in &g.stages {
            if !is_stage(stages, stage) {
                self.err_span(fi, d, format!("grace.stages: unknown stage {stage:?}"));
            }
            match parse_duration(d.get_ref()) {
                Some(v) => {
                    out.stages.insert(stage.clone(), v);
                }
                None => self.err_span(
                    fi,
                    d,
                    format!("grace.stages.{stage}: {:?} is not a duration", d.get_ref()),
                ),
            }
        }
        if let Some(e) = &g.expr {
            match engine.compile(e.get_ref()) {
                Ok(ast) => out.expr = Some(Arc::new(ast)),
                Err(err) => {
                    // Point into the script: the error's position is relative to the string.
                    let pos = err.position();
                    self.err_span(
                        fi,
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
        out
    }

    /// The mappings as written, then what the pipeline needs of them: people act in Plane, so
    /// every action the stages wait for must have a state, and every state a person must see
    /// must be named.
    pub(super) fn plane(
        &mut self,
        plane: Option<&InFile<RawPlane>>,
        stages: &[Stage],
    ) -> PlaneMapping {
        let mut out = PlaneMapping::default();
        if let Some((fi, p)) = plane {
            let p = p.get_ref();
            if let Some(inb) = &p.inbound {
                for (map, target) in [
                    (&inb.states, &mut out.inbound_states),
                    (&inb.groups, &mut out.inbound_groups),
                ] {
                    for (k, v) in map {
                        match parse_action(v.get_ref()) {
                            Some(a) => {
                                target.insert(k.to_lowercase(), a);
                            }
                            None => self.err_span(
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
            if let Some(o) = &p.outbound {
                out.awaiting_human = o.awaiting_human.clone();
                out.needs_input = o.needs_input.clone();
                out.blocked = o.blocked.clone();
                for (stage, state) in &o.entered {
                    if !is_stage(stages, stage) {
                        self.err_span(
                            *fi,
                            state,
                            format!("plane.outbound.entered: unknown stage {stage:?}"),
                        );
                    }
                    out.entered.insert(stage.clone(), state.get_ref().clone());
                }
            }
        }
        self.plane_coverage(plane, stages, &out);
        out
    }

    /// What is missing is missing from the whole section: these errors point at `[plane]`,
    /// or at the start of the first file when there is none.
    fn plane_coverage(
        &mut self,
        plane: Option<&InFile<RawPlane>>,
        stages: &[Stage],
        m: &PlaneMapping,
    ) {
        let file = plane.map(|(f, _)| *f).unwrap_or(0);
        let offset = plane.map(|(_, p)| p.span().start).unwrap_or(0);
        let mapped: HashSet<PlaneAction> = m
            .inbound_states
            .values()
            .chain(m.inbound_groups.values())
            .copied()
            .collect();
        let needs_verdicts = stages.iter().any(|s| s.human_gate);
        let mut required = vec![PlaneAction::Start];
        if needs_verdicts {
            required.extend([PlaneAction::Approve, PlaneAction::Reject]);
        }
        for action in required {
            if !mapped.contains(&action) {
                self.err_at(
                    file,
                    offset,
                    format!("plane.inbound: no Plane state maps to {}", action.as_str()),
                );
            }
        }
        if needs_verdicts && m.awaiting_human.is_none() {
            self.err_at(file, offset, "plane.outbound.awaiting_human is missing: people must see when a human gate waits for them");
        }
        if m.blocked.is_none() {
            self.err_at(
                file,
                offset,
                "plane.outbound.blocked is missing: people must see a blocked task",
            );
        }
        if mapped.contains(&PlaneAction::Cancel) && !stages.iter().any(|s| s.cancel) {
            self.err_at(
                file,
                offset,
                "plane.inbound maps a state to cancel, but no stage has cancel = true to take cancelled tasks",
            );
        }
        // A cancelled task already shows as cancelled in Plane: only the end of the pipeline
        // needs a state to show.
        for s in stages.iter().filter(|s| s.terminal && !s.cancel) {
            if !m.entered.contains_key(&s.name) {
                self.err_at(file, offset, format!("plane.outbound.entered.{} is missing: a finished task must show as done in Plane", s.name));
            }
        }
    }

    /// Only `unblock` is required: the reconciler's unblock line is built from it, while any
    /// other message whose template is missing is simply not sent.
    pub(super) fn templates(
        &mut self,
        templates: Option<InFile<BTreeMap<String, String>>>,
    ) -> BTreeMap<String, String> {
        if let Some((file, t)) = &templates {
            for name in t.get_ref().keys() {
                if !TEMPLATE_NAMES.contains(&name.as_str()) {
                    self.err_span(
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
            self.errors.push(RuleError {
                file: self.files[0].0.clone(),
                line: 1,
                col: 1,
                message: "[templates] unblock is missing: the reconciler's unblock line needs it"
                    .into(),
            });
        }
        templates
    }
}

fn is_stage(stages: &[Stage], name: &str) -> bool {
    stages.iter().any(|s| s.name == name)
}

/// A rule file's duration: bare digits are seconds.
fn parse_duration(s: &str) -> Option<Duration> {
    duration::parse(s, true).ok()
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
