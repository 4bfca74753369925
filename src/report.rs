//! Plain-text renderings of reports for the command line: aligned tables a person can scan.

use std::fmt::Write;

use unicode_width::UnicodeWidthStr;

use crate::reconciler::{Explanation, SweepReport};

/// An error and its causes on one line, `outer: inner: innermost`, for an operator's terminal.
/// Unlike anyhow's `{:#}`, a cause whose text the line already holds is not repeated: many
/// errors quote their source in their own message ("cannot read x: No such file"), and the
/// same words twice read like two failures.
pub fn error_chain(error: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Left-aligned columns separated by two spaces, aligned by display width: a CJK character
/// or an emoji takes two terminal columns, and counting chars would misalign the rest.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let width = |s: &str| UnicodeWidthStr::width(s);
    let mut widths: Vec<usize> = header.iter().map(|h| width(h)).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(width(cell));
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            l.push_str(c);
            if i + 1 < cells.len() {
                let pad = widths[i].saturating_sub(width(c)) + 2;
                l.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

fn outcome_kind(v: &impl serde::Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_string))
        .unwrap_or_default()
}

/// A sweep for people: the counts per stage and decision, then the task lines the report
/// kept (every open task with `orch reconcile --once --all`; otherwise the tasks that advance
/// or would, and errors), then the unblocks and errors.
pub fn sweep_table(r: &SweepReport, dry_run: bool, every_task: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sweep{}: gate side {}, Plane side {}",
        if dry_run {
            " (dry run: nothing changed)"
        } else {
            ""
        },
        if r.gate_enabled { "on" } else { "off" },
        if r.plane_enabled { "on" } else { "off" },
    );
    let _ = writeln!(
        out,
        "gate checks {}, over budget {} (checked in a later sweep), red gates backing off {}",
        r.gate_checks, r.over_budget, r.backing_off
    );
    let counts: Vec<Vec<String>> = r
        .summary
        .iter()
        .flat_map(|(stage, per)| {
            per.iter()
                .map(move |(decision, n)| vec![stage.clone(), decision.clone(), n.to_string()])
        })
        .collect();
    if !counts.is_empty() {
        out.push('\n');
        out.push_str(&table(&["STAGE", "DECISION", "TASKS"], &counts));
    }
    if !every_task {
        let _ = writeln!(
            out,
            "\n{} task line(s) worth reading (advancing or would, errors); --all prints every task",
            r.tasks.len()
        );
    }
    if r.tasks.is_empty() {
        return sweep_tail(out, r);
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = r
        .tasks
        .iter()
        .map(|t| {
            vec![
                t.work_item.clone(),
                t.stage.clone(),
                outcome_kind(&t.decision.outcome),
                t.decision.rule.clone(),
                t.action.clone().unwrap_or_else(|| "-".into()),
                t.decision.reason.clone(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["WORK ITEM", "STAGE", "DECISION", "RULE", "ACTION", "REASON"],
        &rows,
    ));
    if !r.plane.is_empty() {
        let rows: Vec<Vec<String>> = r
            .plane
            .iter()
            .map(|p| {
                vec![
                    p.work_item.clone(),
                    p.state.clone(),
                    outcome_kind(&p.decision.outcome),
                    p.action.clone().unwrap_or_else(|| "-".into()),
                    p.decision.reason.clone(),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            &["WORK ITEM", "PLANE STATE", "DECISION", "ACTION", "REASON"],
            &rows,
        ));
    }
    sweep_tail(out, r)
}

fn sweep_tail(mut out: String, r: &SweepReport) -> String {
    for line in &r.unblocked {
        let _ = writeln!(out, "{line}");
    }
    for line in &r.answers {
        let _ = writeln!(out, "{line}");
    }
    for e in &r.errors {
        let _ = writeln!(out, "error: {e}");
    }
    for e in &r.decision_errors {
        let _ = writeln!(
            out,
            "decision error: {} {}: {}",
            e.work_item, e.stage, e.message
        );
    }
    out
}

pub fn explanation(x: &Explanation) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "work item   {}", x.work_item);
    let _ = writeln!(out, "stage       {}", x.stage);
    let _ = writeln!(
        out,
        "decision    {} ({})",
        outcome_kind(&x.decision.outcome),
        x.decision.rule
    );
    let _ = writeln!(out, "reason      {}", x.decision.reason);
    let _ = writeln!(out, "rules       {}", x.decision.rules_version);
    let _ = writeln!(out, "active job  {}", x.facts.has_active_job);
    if let Some(q) = &x.facts.question {
        let _ = writeln!(
            out,
            "awaiting    a person's answer to {:?} (asked {})",
            q.text,
            q.asked_at.to_rfc3339()
        );
    } else if x.facts.awaiting_input {
        let _ = writeln!(out, "awaiting    a person's answer to the agent's question");
    }
    let _ = writeln!(
        out,
        "quiet for   {}s (since {})",
        x.facts.age_s, x.facts.updated_at
    );
    if let Some(left) = x.grace_left_s {
        let _ = writeln!(out, "grace left  {left}s");
    }
    if !x.facts.labels.is_empty() {
        let _ = writeln!(out, "labels      {}", x.facts.labels.join(", "));
    }
    if let Some(g) = &x.facts.gate {
        let _ = writeln!(out, "gate        {g}");
    }
    if let Some(n) = &x.next_check {
        let _ = writeln!(out, "next check  {} ({})", n.at.to_rfc3339(), n.why);
    }
    for (i, d) in x.last_decisions.iter().enumerate() {
        let label = if i == 0 { "decided" } else { "" };
        let l = &d.decision;
        let _ = writeln!(
            out,
            "{label:<11} {} {} {} by {} ({}, rules {})",
            d.at, l.stage, l.outcome, l.trigger, l.rule, l.rules_version
        );
    }
    out
}

#[cfg(test)]
mod error_chain_tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read config file orch.toml: {source}")]
    struct Quoting {
        source: std::io::Error,
    }

    #[test]
    fn a_cause_already_quoted_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = anyhow::Error::new(Quoting { source: io }).context("loading the configuration");
        assert_eq!(
            error_chain(&e),
            "loading the configuration: cannot read config file orch.toml: No such file"
        );
    }

    #[test]
    fn distinct_causes_are_all_kept_in_order() {
        let e = anyhow::anyhow!("disk full")
            .context("writing the inbox")
            .context("accepting a webhook");
        assert_eq!(
            error_chain(&e),
            "accepting a webhook: writing the inbox: disk full"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::table;

    #[test]
    fn wide_characters_keep_the_columns_aligned() {
        let out = table(
            &["ITEM", "STAGE"],
            &[
                vec!["修正ログイン".into(), "review".into()],
                vec!["🚀 ship".into(), "done".into()],
                vec!["ascii".into(), "testing".into()],
            ],
        );
        let starts: Vec<usize> = out
            .lines()
            .map(|l| {
                let i = l.find(['r', 'd', 't', 'S']).unwrap_or(0);
                unicode_width::UnicodeWidthStr::width(&l[..i])
            })
            .collect();
        assert!(starts.iter().all(|s| *s == starts[0]), "{out}");
    }
}
