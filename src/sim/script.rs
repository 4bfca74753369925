//! What the simulated people and agents do, read from the rule set under simulation: the
//! Plane state a person starts work with, approves, rejects and cancels with, the states orch
//! shows them (awaiting a person, needs input, done), and one scripted agent per agent the
//! stages run, playing the part its stage's gate asks for. So any valid rule set — another
//! pipeline, other state names — runs end to end.

use anyhow::Context;

use crate::policy::{PlaneAction, RuleSet};

use super::fakes::PlaneStates;

/// The part a scripted agent plays, from the first stage that runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// A human gate's agent: may first ask a question, then writes its analysis.
    Analyst,
    /// Commits to the task branch and pushes, so CI runs on it.
    Developer,
    /// The gate needs `review_approved`: approves (rejects first when chosen to).
    Reviewer,
    /// The gate needs `tests_passed`: passes.
    Tester,
}

/// The people's and the agents' script for one rule set.
#[derive(Debug, Clone)]
pub(super) struct Script {
    /// Plane's states for the fake project: its usual ones and every one the rules name.
    pub states: PlaneStates,
    pub approve: Option<String>,
    pub cancel: Option<String>,
    /// What orch shows when a stage waits for a person (a person then approves).
    pub awaiting_human: Option<String>,
    /// What orch shows when an agent asked a question (a person then answers).
    pub needs_input: Option<String>,
    /// A person cancels an item once orch shows this (its first stage after the human gates
    /// has started).
    pub cancel_after: Option<String>,
    pub has_human_gate: bool,
    pub agents: Vec<(String, Role)>,
}

/// A Plane state that means `action` under `rules`: one of `states` when one does (by name,
/// else by group), else the name the rules map, added to `states`.
fn state_for(
    rules: &RuleSet,
    states: &mut Vec<(String, String)>,
    action: PlaneAction,
) -> Option<String> {
    if let Some((n, _)) = states
        .iter()
        .find(|(n, g)| rules.inbound_plane_action(n, Some(g)) == Some(action))
    {
        return Some(n.clone());
    }
    let (names, groups) = rules.inbound_for(action);
    if let Some(name) = names.first() {
        states.push((name.to_string(), "started".into()));
        return Some(name.to_string());
    }
    let group = groups.first()?;
    let name = format!("{group} ({})", action.as_str());
    states.push((name.clone(), group.to_string()));
    Some(name)
}

fn role_of(rules: &RuleSet, stage: &crate::policy::Stage) -> Role {
    let checks = rules.gate_checks(&stage.name);
    if stage.human_gate {
        Role::Analyst
    } else if checks.iter().any(|c| c == "review_approved") {
        Role::Reviewer
    } else if checks.iter().any(|c| c == "tests_passed") {
        Role::Tester
    } else {
        Role::Developer
    }
}

impl Script {
    pub(super) fn of(rules: &RuleSet) -> anyhow::Result<Script> {
        let mut all = PlaneStates::default().all;
        let start = state_for(rules, &mut all, PlaneAction::Start)
            .context("the rules map no Plane state to start: no item could ever start")?;
        let approve = state_for(rules, &mut all, PlaneAction::Approve);
        let cancel = state_for(rules, &mut all, PlaneAction::Cancel);
        let finished = rules
            .stages()
            .iter()
            .find(|s| s.terminal && !s.cancel)
            .map(|s| s.name.clone());
        let done = finished.and_then(|f| {
            rules
                .outbound_plane_state(&crate::policy::OutboundEvent::Entered { stage: f })
                .map(str::to_string)
        });
        for name in rules.outbound_states() {
            if !all.iter().any(|(n, _)| n == name) {
                let group = if Some(name) == done.as_deref() {
                    "completed"
                } else {
                    "started"
                };
                all.push((name.to_string(), group.into()));
            }
        }
        let has_human_gate = rules.stages().iter().any(|s| s.human_gate);
        let awaiting_human = rules
            .outbound_plane_state(&crate::policy::OutboundEvent::AwaitingHuman)
            .map(str::to_string);
        if has_human_gate && (approve.is_none() || awaiting_human.is_none()) {
            anyhow::bail!(
                "the rules have a human gate but no Plane state a person approves with, or none \
                 orch shows while it waits ([plane.inbound] approve, [plane.outbound] awaiting_human)"
            );
        }
        let cancel_after = rules
            .stages()
            .iter()
            .find(|s| !s.human_gate && !s.terminal && s.agent.is_some())
            .and_then(|s| {
                rules.outbound_plane_state(&crate::policy::OutboundEvent::Entered {
                    stage: s.name.clone(),
                })
            })
            .map(str::to_string);
        let mut agents: Vec<(String, Role)> = Vec::new();
        for stage in rules.stages() {
            if let Some(agent) = &stage.agent
                && !agents.iter().any(|(a, _)| a == agent)
            {
                agents.push((agent.clone(), role_of(rules, stage)));
            }
        }
        Ok(Script {
            states: PlaneStates { all, start, done },
            approve,
            cancel,
            awaiting_human,
            needs_input: rules
                .outbound_plane_state(&crate::policy::OutboundEvent::NeedsInput)
                .map(str::to_string),
            cancel_after,
            has_human_gate,
            agents,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(rel: &str) -> RuleSet {
        crate::policy::load_dir(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel))
            .unwrap()
    }

    #[test]
    fn the_default_rules_give_the_usual_people_and_agents() {
        let s = Script::of(&load("rules")).unwrap();
        assert_eq!(s.states.start, "In Progress");
        assert_eq!(s.states.done.as_deref(), Some("Done"));
        assert_eq!(s.approve.as_deref(), Some("Approved"));
        assert_eq!(s.cancel.as_deref(), Some("Cancelled"));
        assert_eq!(s.awaiting_human.as_deref(), Some("In Review"));
        assert_eq!(s.cancel_after.as_deref(), Some("In Progress"));
        let roles: Vec<_> = s.agents.iter().map(|(a, r)| (a.as_str(), *r)).collect();
        assert_eq!(
            roles,
            [
                ("analyst", Role::Analyst),
                ("developer", Role::Developer),
                ("reviewer", Role::Reviewer),
                ("tester", Role::Tester)
            ]
        );
    }

    #[test]
    fn fast_track_has_no_tester_and_no_cancel() {
        let s = Script::of(&load("rules/examples/fast-track")).unwrap();
        assert!(s.cancel.is_none());
        assert!(s.agents.iter().all(|(_, r)| *r != Role::Tester));
        assert_eq!(s.agents.len(), 3);
    }
}
