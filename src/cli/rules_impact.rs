//! `orch rules diff OLD NEW --db [PATH]`: the decisions an edit would change for the tasks
//! open in a database now, as text, JSON or Markdown (for pasting into a review). The work is
//! [`crate::impact`]; this file loads the inputs and prints.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::clock::{Clock, SystemClock, Timestamp};
use crate::impact::Impact;
use crate::policy::{RuleSet, scenario};
use crate::store::Store;

/// How `orch rules diff` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DiffFormat {
    Text,
    Json,
    /// A Markdown table, for a pull request or a review comment.
    Markdown,
}

/// A Markdown table; `|` in a cell is escaped so it cannot split the row.
pub(super) fn markdown(header: &[&str], rows: &[Vec<String>]) -> String {
    let cell = |s: &str| s.replace('|', "\\|");
    let mut out = format!("| {} |\n", header.join(" | "));
    out.push_str(&format!("|{}\n", "---|".repeat(header.len())));
    for row in rows {
        let cells: Vec<String> = row.iter().map(|c| cell(c)).collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out
}

/// The database `--db` names (a SQLite file, or a `postgres://` URL), or the configured one
/// when it names none, opened read-only.
fn open_db(db: Option<String>, cfg: &crate::config::Config) -> anyhow::Result<Store> {
    let target = db.or_else(|| cfg.db_url.clone());
    if let Some(url) = target
        .as_deref()
        .filter(|t| t.starts_with("postgres://") || t.starts_with("postgresql://"))
    {
        return crate::store::open_url_read_only(url)
            .with_context(|| format!("reading {}", crate::store::redact_url(url)));
    }
    let path = target.map_or_else(|| cfg.db_path.clone(), PathBuf::from);
    anyhow::ensure!(
        path.exists(),
        "no database at {} (pass --db PATH or a postgres:// URL, or set db_path / ORCH_DB_PATH)",
        path.display()
    );
    crate::store::open_read_only(&path).with_context(|| format!("reading {}", path.display()))
}

pub(super) fn run(
    (old, new): (&RuleSet, &RuleSet),
    db: Option<String>,
    config: Option<&Path>,
    at: Option<&str>,
    format: DiffFormat,
) -> anyhow::Result<ExitCode> {
    let cfg = crate::config::Config::load(config)?;
    let store = open_db(db, &cfg)?;
    // The operator's kill switches and grace overrides apply to both sets, as in the sweep.
    let ov = crate::reconciler::overrides_from_config(&cfg.reconcile);
    let now = match at {
        Some(t) => Timestamp::parse_rfc3339(t).with_context(|| format!("--at {t:?}"))?,
        None => SystemClock.now(),
    };
    let impact = crate::impact::over_db(&store, old, new, &ov, now)?;
    match format {
        DiffFormat::Json => println!("{}", serde_json::to_string_pretty(&impact)?),
        DiffFormat::Text => print!("{}", text(&impact)),
        DiffFormat::Markdown => print!("{}", markdown_report(&impact)),
    }
    Ok(
        if impact.changes.is_empty() && impact.plane_changes.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}

fn cells(impact: &Impact) -> Vec<Vec<String>> {
    impact
        .changes
        .iter()
        .map(|c| {
            vec![
                c.work_item.clone(),
                c.stage.clone(),
                c.old_text(),
                c.new_text(),
                rule_cell(&c.old.rule, &c.new.rule),
            ]
        })
        .collect()
}

/// The deciding rule, or `old -> new` when another rule decides now.
fn rule_cell(old: &str, new: &str) -> String {
    if old == new {
        new.to_string()
    } else {
        format!("{old} -> {new}")
    }
}

const HEADER: [&str; 5] = ["WORK ITEM", "STAGE", "OLD", "NEW", "RULE"];

fn summary(impact: &Impact) -> String {
    format!(
        "{} of {} open task(s) change at {} ({} -> {})",
        impact.changes.len(),
        impact.open_tasks,
        impact.at.to_rfc3339(),
        impact.old_version,
        impact.new_version
    )
}

fn text(impact: &Impact) -> String {
    if impact.changes.is_empty() && impact.plane_changes.is_empty() {
        let mut out = format!("no decision changes: {}\n", summary(impact));
        out.push_str(&plane_summary(impact));
        return out;
    }
    let mut out = String::new();
    if !impact.changes.is_empty() {
        out.push_str(&crate::report::table(&HEADER, &cells(impact)));
        out.push('\n');
        let counts: Vec<Vec<String>> = impact
            .counts
            .iter()
            .map(|(k, n)| vec![k.clone(), n.to_string()])
            .collect();
        out.push_str(&crate::report::table(&["CHANGE", "TASKS"], &counts));
    }
    if !impact.plane_changes.is_empty() {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&crate::report::table(&PLANE_HEADER, &plane_cells(impact)));
        out.push('\n');
        let counts: Vec<Vec<String>> = impact
            .plane_counts
            .iter()
            .map(|(k, n)| vec![k.clone(), n.to_string()])
            .collect();
        out.push_str(&crate::report::table(&["PLANE CHANGE", "ITEMS"], &counts));
    }
    out.push_str(&summary(impact));
    out.push('\n');
    out.push_str(&plane_summary(impact));
    out
}

const PLANE_HEADER: [&str; 5] = ["WORK ITEM", "PLANE STATE", "OLD", "NEW", "RULE"];

fn plane_cells(impact: &Impact) -> Vec<Vec<String>> {
    impact
        .plane_changes
        .iter()
        .map(|c| {
            vec![
                c.work_item.clone(),
                c.state.clone(),
                c.old_text(),
                c.new_text(),
                rule_cell(&c.old.rule, &c.new.rule),
            ]
        })
        .collect()
}

/// A line about the Plane items, when the sweep has seen any (a database without them prints
/// nothing, as before Plane items were kept).
fn plane_summary(impact: &Impact) -> String {
    if impact.plane_items == 0 {
        return String::new();
    }
    format!(
        "{} of {} Plane item(s) last seen change\n",
        impact.plane_changes.len(),
        impact.plane_items
    )
}

fn markdown_report(impact: &Impact) -> String {
    let mut out = format!("**Decision changes**: {}\n\n", summary(impact));
    if impact.plane_items > 0 {
        out.push_str(&format!("**Plane**: {}\n", plane_summary(impact)));
    }
    if !impact.changes.is_empty() {
        let counts: Vec<Vec<String>> = impact
            .counts
            .iter()
            .map(|(k, n)| vec![format!("`{k}`"), n.to_string()])
            .collect();
        out.push_str(&markdown(&["change", "tasks"], &counts));
        out.push('\n');
        out.push_str(&markdown(
            &["work item", "stage", "old", "new", "rule"],
            &cells(impact),
        ));
    }
    if !impact.plane_changes.is_empty() {
        out.push('\n');
        let counts: Vec<Vec<String>> = impact
            .plane_counts
            .iter()
            .map(|(k, n)| vec![format!("`{k}`"), n.to_string()])
            .collect();
        out.push_str(&markdown(&["plane change", "items"], &counts));
        out.push('\n');
        out.push_str(&markdown(
            &["work item", "plane state", "old", "new", "rule"],
            &plane_cells(impact),
        ));
    }
    out
}

/// The scenario diff (`--scenarios`) as Markdown.
pub(super) fn scenario_markdown(changes: &[scenario::Change]) -> String {
    format!(
        "**Decision changes**: {}\n\n{}",
        changes.len(),
        markdown(
            &["scenario", "subject", "old", "new", "rule"],
            &scenario_cells(changes)
        )
    )
}

/// A scenario diff's rows (scenario, subject, old, new, rule), as every format prints them.
pub(super) fn scenario_cells(changes: &[scenario::Change]) -> Vec<Vec<String>> {
    changes
        .iter()
        .map(|c| {
            vec![
                c.scenario.clone(),
                c.subject.clone(),
                c.old.clone().unwrap_or_else(|| "-".into()),
                c.new.clone().unwrap_or_else(|| "-".into()),
                c.new_rule
                    .clone()
                    .or(c.old_rule.clone())
                    .unwrap_or_default(),
            ]
        })
        .collect()
}
