//! The board as data: one column per stage in the rules' order, a card per task with its
//! badges.
//!
//! Pure: the rows the store read, the rules, the operator's overrides and `now` in, the view
//! out. "Past its grace" uses the evaluator's own grace (`policy::grace_for`, overrides and
//! grace expression included), so the board never tells a different story from the sweep.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde::Serialize;

use crate::clock::Timestamp;
use crate::policy::{self, Overrides, RuleSet, TaskSnapshot};
use crate::store::gate_readings::GateReading;
use crate::store::{Job, JobStatus, Task};

/// How many cards a column shows; the rest are counted ("and 1,234 more") and reached by the
/// filters. A column of thousands of cards helps nobody, least of all on a phone.
pub const MAX_CARDS: usize = 250;
/// How many of the latest tasks a terminal stage shows under its count.
pub const TERMINAL_LATEST: usize = 5;

/// What the store reads for the board, in four queries.
#[derive(Debug, Default)]
pub struct BoardInput {
    pub tasks: Vec<Task>,
    /// When each task entered its current stage.
    pub entered: HashMap<i64, Timestamp>,
    /// Each task's newest job.
    pub latest_jobs: HashMap<i64, Job>,
    /// Each task's last gate reading.
    pub gates: HashMap<i64, GateReading>,
}

/// Why a card needs someone's eye.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Badge {
    /// In a human gate: only a person's verdict moves it.
    Person,
    /// Its agent asked a question that has no answer yet.
    Answer,
    /// Its stage's grace has run out: the sweep will check its gate.
    PastGrace,
    /// Its agent failed every attempt.
    Blocked,
    /// The last check of its exit gate could not be evaluated.
    GateError,
}

impl Badge {
    pub const ALL: [Badge; 5] = [
        Badge::Person,
        Badge::Answer,
        Badge::PastGrace,
        Badge::Blocked,
        Badge::GateError,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Badge::Person => "person",
            Badge::Answer => "answer",
            Badge::PastGrace => "past_grace",
            Badge::Blocked => "blocked",
            Badge::GateError => "gate_error",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Badge::Person => "waits for a person",
            Badge::Answer => "waits for an answer",
            Badge::PastGrace => "past its grace",
            Badge::Blocked => "blocked",
            Badge::GateError => "gate check errored",
        }
    }

    pub fn parse(key: &str) -> Option<Badge> {
        Badge::ALL.into_iter().find(|b| b.key() == key)
    }
}

/// The board's filters (`?project=ET&badge=blocked`); empty means everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub project: Option<String>,
    pub badge: Option<Badge>,
}

impl Filter {
    /// The query string that reproduces this filter (empty, or starting with `?`).
    pub fn query(&self) -> String {
        let mut parts = Vec::new();
        if let Some(p) = &self.project {
            parts.push(format!(
                "project={}",
                crate::http::auth::encode_query_value(p)
            ));
        }
        if let Some(b) = self.badge {
            parts.push(format!("badge={}", b.key()));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("?{}", parts.join("&"))
        }
    }
}

/// Where a work item lives in Plane's web app, when orch knows (`plane.url` and
/// `plane.workspace` set, the task's Plane ids recorded).
#[derive(Debug, Clone, Default)]
pub struct PlaneLinks {
    pub base: Option<String>,
    pub workspace: Option<String>,
}

impl PlaneLinks {
    pub fn item_url(&self, task: &Task) -> Option<String> {
        let base = self.base.as_deref()?.trim_end_matches('/');
        let ws = self.workspace.as_deref()?;
        let project = task.plane_project_id.as_deref()?;
        let issue = task.plane_issue_id.as_deref()?;
        Some(format!("{base}/{ws}/projects/{project}/issues/{issue}"))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BadgeView {
    pub key: &'static str,
    pub label: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    pub name: String,
    /// `running` or `queued`.
    pub state: &'static str,
    pub attempt: i64,
    pub max_attempts: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Card {
    pub work_item: String,
    /// The task page.
    pub href: String,
    pub title: String,
    pub plane_url: Option<String>,
    pub project: String,
    pub in_stage: String,
    pub in_stage_s: u64,
    pub entered_at: String,
    pub agent: Option<AgentView>,
    pub badges: Vec<BadgeView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Column {
    pub stage: String,
    pub terminal: bool,
    pub human_gate: bool,
    /// False for a stage the active rules do not have (tasks left behind by a rename).
    pub known: bool,
    /// Tasks in the stage that pass the filter.
    pub total: usize,
    pub cards: Vec<Card>,
    /// Tasks counted but not shown (see [`MAX_CARDS`], [`TERMINAL_LATEST`]).
    pub hidden: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct BadgeCount {
    pub key: &'static str,
    pub label: &'static str,
    pub count: usize,
    pub selected: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct BoardView {
    pub columns: Vec<Column>,
    /// Every project with tasks (work-item prefixes) and the configured ones.
    pub projects: Vec<String>,
    pub project: Option<String>,
    pub badges: Vec<BadgeCount>,
    pub open_tasks: usize,
    pub query: String,
}

/// The work item's project: its prefix (`ET` of `ET-142`).
pub fn project_of(work_item: &str) -> &str {
    work_item.rsplit_once('-').map_or(work_item, |(p, _)| p)
}

/// The task page of a work item, its name percent-encoded as one path segment.
pub fn task_href(work_item: &str) -> String {
    let mut out = String::from("/tasks/");
    for b in work_item.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A duration as people read it on a card: `45s`, `12m`, `3h 5m`, `2d 4h`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// The badges of one task, in [`Badge::ALL`]'s order.
fn badges_of(
    task: &Task,
    rules: &RuleSet,
    ov: &Overrides,
    job: Option<&Job>,
    gate: Option<&GateReading>,
    now: Timestamp,
) -> Vec<Badge> {
    let stage = rules.stage(&task.stage);
    let here = |j: &&Job| j.stage == task.stage;
    let active = job.is_some_and(|j| matches!(j.status, JobStatus::Queued | JobStatus::Running));
    let answer = job.filter(here).is_some_and(|j| {
        j.status == JobStatus::Done && j.verdict.as_deref() == Some("needs_input")
    });
    let blocked = job
        .filter(here)
        .is_some_and(|j| j.status == JobStatus::Failed);
    let mut out = Vec::new();
    if stage.is_some_and(|s| s.human_gate) && !answer {
        out.push(Badge::Person);
    }
    if answer {
        out.push(Badge::Answer);
    }
    if stage.is_some_and(|s| !s.terminal && !s.human_gate) && !active && !answer {
        let snapshot = TaskSnapshot {
            work_item: task.work_item.clone(),
            stage: task.stage.clone(),
            labels: task.labels.clone(),
            updated_at: task.updated_at,
            has_active_job: active,
            awaiting_input: answer,
        };
        // Past grace whatever the kill switches say: a paused sweep is when it matters most.
        let grace =
            policy::grace_for(rules, ov, &snapshot, now).unwrap_or(rules.stage_grace(&task.stage));
        if now.since(task.updated_at) >= grace {
            out.push(Badge::PastGrace);
        }
    }
    if blocked {
        out.push(Badge::Blocked);
    }
    if gate.is_some_and(|g| g.stage == task.stage && g.error.is_some()) {
        out.push(Badge::GateError);
    }
    out
}

fn agent_of(job: Option<&Job>, rules: &RuleSet) -> Option<AgentView> {
    let j = job?;
    let (state, attempt) = match j.status {
        JobStatus::Running => ("running", j.attempts),
        JobStatus::Queued => ("queued", j.attempts + 1),
        _ => return None,
    };
    Some(AgentView {
        name: j.agent.clone(),
        state,
        attempt,
        max_attempts: rules
            .agent_policy(&j.agent)
            .map(|p| p.budget_shown(j.attempts)),
    })
}

fn card(
    task: &Task,
    input: &BoardInput,
    rules: &RuleSet,
    links: &PlaneLinks,
    now: Timestamp,
    badges: &[Badge],
) -> Card {
    let entered = input
        .entered
        .get(&task.id)
        .copied()
        .unwrap_or(task.created_at);
    let in_stage = now.since(entered);
    Card {
        work_item: task.work_item.clone(),
        href: task_href(&task.work_item),
        title: task.title.clone(),
        plane_url: links.item_url(task),
        project: project_of(&task.work_item).to_string(),
        in_stage: human(in_stage),
        in_stage_s: in_stage.as_secs(),
        entered_at: entered.to_rfc3339(),
        agent: agent_of(input.latest_jobs.get(&task.id), rules),
        badges: badges
            .iter()
            .map(|b| BadgeView {
                key: b.key(),
                label: b.label(),
            })
            .collect(),
    }
}

/// Builds the board. `configured` are the projects `orch.toml` names (offered as filters
/// even before they have tasks).
pub fn build(
    input: &BoardInput,
    rules: &RuleSet,
    ov: &Overrides,
    links: &PlaneLinks,
    configured: &[String],
    filter: &Filter,
    now: Timestamp,
) -> BoardView {
    let mut projects: BTreeSet<String> = configured.iter().cloned().collect();
    let mut badge_counts: HashMap<Badge, usize> = HashMap::new();
    // (stage) -> [(task, badges)] passing the filter.
    let mut by_stage: HashMap<&str, Vec<(&Task, Vec<Badge>)>> = HashMap::new();
    let mut open_tasks = 0;
    for task in &input.tasks {
        let project = project_of(&task.work_item);
        projects.insert(project.to_string());
        if filter.project.as_deref().is_some_and(|p| p != project) {
            continue;
        }
        let badges = badges_of(
            task,
            rules,
            ov,
            input.latest_jobs.get(&task.id),
            input.gates.get(&task.id),
            now,
        );
        for b in &badges {
            *badge_counts.entry(*b).or_default() += 1;
        }
        if filter.badge.is_some_and(|b| !badges.contains(&b)) {
            continue;
        }
        if !rules.stage(&task.stage).is_some_and(|s| s.terminal) {
            open_tasks += 1;
        }
        by_stage
            .entry(&task.stage)
            .or_default()
            .push((task, badges));
    }
    let mut names: Vec<&str> = rules.stages().iter().map(|s| s.name.as_str()).collect();
    let mut unknown: Vec<&str> = by_stage
        .keys()
        .copied()
        .filter(|s| rules.stage(s).is_none())
        .collect();
    unknown.sort_unstable();
    names.extend(unknown);
    let columns = names
        .into_iter()
        .map(|name| {
            let stage = rules.stage(name);
            let terminal = stage.is_some_and(|s| s.terminal);
            let mut tasks = by_stage.remove(name).unwrap_or_default();
            let total = tasks.len();
            if terminal {
                // The latest to finish first.
                tasks.sort_by_key(|t| std::cmp::Reverse(t.0.updated_at));
            } else {
                // The longest in the stage first: the likeliest to be stuck.
                let entered = |t: &Task| input.entered.get(&t.id).copied().unwrap_or(t.created_at);
                tasks.sort_by(|a, b| entered(a.0).cmp(&entered(b.0)).then(a.0.id.cmp(&b.0.id)));
            }
            let shown = if terminal { TERMINAL_LATEST } else { MAX_CARDS };
            let cards: Vec<Card> = tasks
                .iter()
                .take(shown)
                .map(|(t, b)| card(t, input, rules, links, now, b))
                .collect();
            Column {
                stage: name.to_string(),
                terminal,
                human_gate: stage.is_some_and(|s| s.human_gate),
                known: stage.is_some(),
                total,
                hidden: total - cards.len(),
                cards,
            }
        })
        .collect();
    BoardView {
        columns,
        projects: projects.into_iter().collect(),
        project: filter.project.clone(),
        badges: Badge::ALL
            .into_iter()
            .map(|b| BadgeCount {
                key: b.key(),
                label: b.label(),
                count: badge_counts.get(&b).copied().unwrap_or(0),
                selected: filter.badge == Some(b),
            })
            .collect(),
        open_tasks,
        query: filter.query(),
    }
}

#[cfg(test)]
#[path = "cards_tests.rs"]
mod tests;
