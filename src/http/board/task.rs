//! The task page (`/tasks/<WORK-ITEM>`): the current decision in words, the stage history,
//! the jobs with their output, the verdicts, the open question and the links.
//!
//! The decision is `GET /explain`'s ([`crate::reconciler::GateView::LastKnown`]): the
//! sweep's own reasoning with the last stored gate reading, never a call to Gitea.

use std::time::Duration;

use serde::Serialize;

use super::BoardError;
use super::cards::{self, BadgeView, BoardInput, Filter, PlaneLinks, human};
use crate::clock::Timestamp;
use crate::http::AppState;
use crate::policy::{self, Outcome, Overrides, RuleSet, SkipReason, TaskSnapshot};
use crate::reconciler::{Explanation, GateView};
use crate::store::{self, HistoryRow, Job, Task};

/// How much of an agent's output a job shows (its end, where the error usually is).
const EXCERPT_CHARS: usize = 4000;

#[derive(Debug, Serialize)]
pub(super) struct TaskView {
    pub(super) work_item: String,
    pub(super) title: String,
    pub(super) stage: String,
    pub(super) repo: String,
    pub(super) branch: String,
    pub(super) feedback: Option<String>,
    pub(super) plane_url: Option<String>,
    pub(super) gitea_url: Option<String>,
    pub(super) in_stage: String,
    pub(super) badges: Vec<BadgeView>,
    pub(super) decision: DecisionView,
    pub(super) question: Option<QuestionView>,
    pub(super) history: Vec<HistoryView>,
    /// The decision log's latest entries for the task, newest first: why it moved.
    pub(super) decisions: Vec<LoggedView>,
    pub(super) jobs: Vec<JobView>,
    pub(super) verdicts: Vec<VerdictView>,
}

#[derive(Debug, Serialize)]
pub(super) struct DecisionView {
    /// The outcome as a sentence.
    pub(super) words: String,
    pub(super) rule: String,
    pub(super) reason: String,
    pub(super) grace_left: Option<String>,
    pub(super) facts: Vec<(String, String)>,
}

#[derive(Debug, Serialize)]
pub(super) struct LoggedView {
    pub(super) at: String,
    pub(super) stage: String,
    pub(super) outcome: String,
    pub(super) trigger: String,
    pub(super) rule: String,
    pub(super) reason: String,
    pub(super) rules_version: String,
}

#[derive(Debug, Serialize)]
pub(super) struct QuestionView {
    pub(super) text: String,
    pub(super) asked_at: String,
}

#[derive(Debug, Serialize)]
pub(super) struct HistoryView {
    pub(super) at: String,
    pub(super) from: Option<String>,
    pub(super) to: String,
    pub(super) trigger: &'static str,
    pub(super) rules_version: String,
}

#[derive(Debug, Serialize)]
pub(super) struct JobView {
    pub(super) id: i64,
    pub(super) agent: String,
    pub(super) stage: String,
    pub(super) status: &'static str,
    pub(super) attempts: i64,
    pub(super) max_attempts: Option<u32>,
    pub(super) verdict: Option<String>,
    pub(super) exit_code: Option<i64>,
    pub(super) summary: Option<String>,
    pub(super) log_excerpt: Option<String>,
    pub(super) error: Option<String>,
    pub(super) created_at: String,
    pub(super) started_at: Option<String>,
    pub(super) finished_at: Option<String>,
}

#[derive(Debug, Serialize)]
pub(super) struct VerdictView {
    pub(super) at: String,
    pub(super) stage: String,
    pub(super) verdict: String,
    pub(super) source: String,
    pub(super) feedback: Option<String>,
}

/// The outcome of a decision as people say it.
pub(super) fn words(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Skip { why } => match why {
            SkipReason::Terminal => "Finished: the task is in a terminal stage.".into(),
            SkipReason::HumanGate => "Waits for a person: only their verdict moves it on.".into(),
            SkipReason::Busy => "An agent is working on it.".into(),
            SkipReason::AwaitingInput => "Waits for an answer to its agent's question.".into(),
            SkipReason::Disabled => "The sweep is switched off (kill switch).".into(),
            SkipReason::UnknownStage => "Its stage is not in the active rules.".into(),
        },
        Outcome::Wait { remaining_s } => format!(
            "Within its grace: the sweep looks at it again in {}.",
            human(Duration::from_secs(*remaining_s))
        ),
        Outcome::CheckGate { checks } => format!(
            "Past its grace: the sweep checks its gate ({}).",
            checks.join(", ")
        ),
        Outcome::Advance { from, to } => {
            format!("Its gate is green: the sweep moves it from {from} to {to}.")
        }
        Outcome::Hold { reason } => format!("Held: {reason}."),
        Outcome::Error { message } => format!("The rules cannot decide: {message}."),
    }
}

/// The decision in words. When the kill switch is what holds the task, also what the sweep
/// would decide with it on: "why is it not moving?" has two answers then, and both matter.
fn sentence(rules: &RuleSet, ov: &Overrides, x: &Explanation, now: Timestamp) -> String {
    let first = words(&x.decision.outcome);
    if x.decision.outcome
        != (Outcome::Skip {
            why: SkipReason::Disabled,
        })
    {
        return first;
    }
    let on = Overrides {
        reconcile_enabled: Some(true),
        ..ov.clone()
    };
    let snapshot = TaskSnapshot {
        work_item: x.work_item.clone(),
        stage: x.stage.clone(),
        labels: x.facts.labels.clone(),
        updated_at: x.facts.updated_at,
        has_active_job: x.facts.has_active_job,
        awaiting_input: x.facts.awaiting_input,
    };
    let would = policy::decide_task(rules, &on, &snapshot, None, now);
    let would = words(&would.outcome);
    let mut chars = would.chars();
    let would: String = chars
        .next()
        .map(|c| c.to_lowercase().chain(chars).collect())
        .unwrap_or_default();
    format!("{first} With it on: {would}")
}

fn facts(x: &Explanation) -> Vec<(String, String)> {
    let f = &x.facts;
    let yes = |b: bool| if b { "yes" } else { "no" }.to_string();
    let mut out = vec![
        ("Agent job active".to_string(), yes(f.has_active_job)),
        ("Awaiting an answer".to_string(), yes(f.awaiting_input)),
        (
            "Last activity".to_string(),
            format!(
                "{} ago ({})",
                human(Duration::from_secs(f.age_s)),
                f.updated_at
            ),
        ),
    ];
    if !f.labels.is_empty() {
        out.push(("Labels".into(), f.labels.join(", ")));
    }
    if let Some(g) = &f.gate {
        let text = match (g.get("green"), g.get("error")) {
            (_, Some(e)) if !e.is_null() => {
                format!("could not be read: {}", e.as_str().unwrap_or_default())
            }
            (Some(green), _) => format!(
                "{}: {}",
                if green.as_bool() == Some(true) {
                    "green"
                } else {
                    "red"
                },
                g.get("reason").and_then(|r| r.as_str()).unwrap_or_default()
            ),
            _ => "not read".into(),
        };
        let at = g
            .get("read_at")
            .and_then(|r| r.as_str())
            .unwrap_or_default();
        out.push(("Gate".into(), format!("{text} (read {at})")));
    }
    out
}

fn history_view(h: &HistoryRow) -> HistoryView {
    HistoryView {
        at: h.at.to_rfc3339(),
        from: h.from_stage.clone(),
        to: h.to_stage.clone(),
        trigger: h.trigger.as_str(),
        rules_version: h.rules_version.clone(),
    }
}

/// The end of `s`, at most `n` characters.
fn tail(s: &str, n: usize) -> String {
    let count = s.chars().count();
    s.chars().skip(count.saturating_sub(n)).collect()
}

fn job_view(j: &Job, max_attempts: Option<u32>) -> JobView {
    JobView {
        id: j.id,
        agent: j.agent.clone(),
        stage: j.stage.clone(),
        status: j.status.as_str(),
        attempts: j.attempts,
        max_attempts,
        verdict: j.verdict.clone(),
        exit_code: j.exit_code,
        summary: j.summary.clone(),
        log_excerpt: j.log_excerpt.as_deref().map(|l| tail(l, EXCERPT_CHARS)),
        error: j.error.clone(),
        created_at: j.created_at.to_rfc3339(),
        started_at: j.started_at.map(Timestamp::to_rfc3339),
        finished_at: j.finished_at.map(Timestamp::to_rfc3339),
    }
}

/// The page's data; `None` for a work item orch has no task for.
pub(super) async fn load(
    state: &AppState,
    work_item: &str,
    now: Timestamp,
) -> Result<Option<TaskView>, BoardError> {
    let Some(x) = state
        .reconciler
        .explain_with(work_item, GateView::LastKnown)
        .await?
    else {
        return Ok(None);
    };
    let wi = work_item.to_string();
    let loaded = state
        .store
        .call(move |c| {
            let Some(task) = store::tasks::get_by_work_item(c, &wi)? else {
                return Ok(None);
            };
            let history = store::tasks::history(c, task.id)?;
            let jobs = store::jobs::for_task(c, task.id)?;
            let verdicts = store::verdicts::for_task(c, task.id)?;
            let gate = store::gate_readings::latest(c, task.id)?;
            Ok(Some((task, history, jobs, verdicts, gate)))
        })
        .await?;
    let Some((task, history, jobs, verdicts, gate)) = loaded else {
        return Ok(None);
    };
    Ok(Some(view(
        state, task, x, history, jobs, verdicts, gate, now,
    )))
}

#[allow(clippy::too_many_arguments)]
fn view(
    state: &AppState,
    task: Task,
    x: Explanation,
    history: Vec<HistoryRow>,
    jobs: Vec<Job>,
    verdicts: Vec<store::verdicts::VerdictRow>,
    gate: Option<store::gate_readings::GateReading>,
    now: Timestamp,
) -> TaskView {
    let rules = state.rules.current();
    let links = PlaneLinks {
        base: state.config.plane.url.clone(),
        workspace: state.config.plane.workspace.clone(),
    };
    // The card's badges, from the same code the board uses.
    let mut input = BoardInput::default();
    if let Some(at) = history
        .iter()
        .rev()
        .find(|h| h.to_stage == task.stage)
        .map(|h| h.at)
    {
        input.entered.insert(task.id, at);
    }
    if let Some(j) = jobs.last() {
        input.latest_jobs.insert(task.id, j.clone());
    }
    if let Some(g) = gate {
        input.gates.insert(task.id, g);
    }
    input.tasks.push(task.clone());
    let board = cards::build(
        &input,
        &rules,
        state.reconciler.overrides(),
        &links,
        &[],
        &Filter::default(),
        now,
    );
    let card = board.columns.into_iter().flat_map(|c| c.cards).next();
    let gitea_url = state.config.gitea.url.as_deref().map(|u| {
        format!(
            "{}/{}/src/branch/{}",
            u.trim_end_matches('/'),
            task.repo,
            task.branch
        )
    });
    TaskView {
        work_item: task.work_item.clone(),
        title: task.title.clone(),
        stage: task.stage.clone(),
        repo: task.repo.clone(),
        branch: task.branch.clone(),
        feedback: task.feedback.clone(),
        plane_url: links.item_url(&task),
        gitea_url,
        in_stage: card
            .as_ref()
            .map(|c| c.in_stage.clone())
            .unwrap_or_default(),
        badges: card.map(|c| c.badges).unwrap_or_default(),
        decision: DecisionView {
            words: sentence(
                &state.rules.current(),
                state.reconciler.overrides(),
                &x,
                now,
            ),
            rule: x.decision.rule.clone(),
            reason: x.decision.reason.clone(),
            grace_left: x.grace_left_s.map(|s| human(Duration::from_secs(s))),
            facts: facts(&x),
        },
        question: x.facts.question.as_ref().map(|q| QuestionView {
            text: q.text.clone(),
            asked_at: q.asked_at.to_rfc3339(),
        }),
        history: history.iter().map(history_view).collect(),
        decisions: x
            .last_decisions
            .iter()
            .map(|d| LoggedView {
                at: d.at.to_rfc3339(),
                stage: d.decision.stage.clone(),
                outcome: d.decision.outcome.clone(),
                trigger: d.decision.trigger.clone(),
                rule: d.decision.rule.clone(),
                reason: d.decision.reason.clone(),
                rules_version: d.decision.rules_version.clone(),
            })
            .collect(),
        jobs: jobs
            .iter()
            .rev()
            .map(|j| job_view(j, rules.agent_policy(&j.agent).map(|p| p.budget_shown(j.attempts))))
            .collect(),
        verdicts: verdicts
            .into_iter()
            .map(|v| VerdictView {
                at: v.at.to_rfc3339(),
                stage: v.stage,
                verdict: v.verdict,
                source: v.source,
                feedback: v.feedback,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_read_as_sentences() {
        assert_eq!(
            words(&Outcome::Wait { remaining_s: 125 }),
            "Within its grace: the sweep looks at it again in 2m."
        );
        assert!(
            words(&Outcome::Skip {
                why: SkipReason::HumanGate
            })
            .contains("person")
        );
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("ab", 3), "ab");
    }
}
