//! `orch rules shadow-report` and `orch rules promote`: what the shadow rule set would have
//! done otherwise, and making it the live one.
//!
//! Promotion is a copy into the live rules directory, each file written beside its target
//! and renamed over it, and rule files the shadow set does not have removed: the running
//! server's watcher activates a change only once the directory stayed the same for its settle
//! window, so it sees the whole new set at once, validates it and swaps it in (or keeps the
//! old one and reports why, as for any edit).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use super::decisions::{existing_store, since};
use super::{CommonArgs, OutputFormat, load_config};
use crate::store::shadow::DivergenceRow;

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Only divergences of the last D (`1h`, `30m`, `7d`).
    #[arg(long, value_name = "D", value_parser = humantime::parse_duration)]
    pub since: Option<Duration>,
    /// At most this many (the latest).
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, clap::Args)]
pub struct PromoteArgs {
    /// The shadow rule set to make live (default: rules.shadow_dir / ORCH_RULES_SHADOW_DIR).
    pub shadow: Option<PathBuf>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// The report as JSON: every divergence and the count per shadow rule.
#[derive(Debug, Serialize)]
struct Report<'a> {
    divergences: &'a [DivergenceRow],
    by_rule: BTreeMap<&'a str, usize>,
}

fn by_rule(rows: &[DivergenceRow]) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for r in rows {
        *counts.entry(r.divergence.shadow.rule.as_str()).or_insert(0) += 1;
    }
    counts
}

fn print_report(rows: &[DivergenceRow], format: OutputFormat) -> anyhow::Result<()> {
    if format == OutputFormat::Json {
        let report = Report {
            divergences: rows,
            by_rule: by_rule(rows),
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no shadow divergences");
        return Ok(());
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let d = &r.divergence;
            vec![
                r.at.to_string(),
                d.work_item.clone(),
                d.stage.clone(),
                d.trigger.clone(),
                d.live.outcome.clone(),
                d.shadow.outcome.clone(),
                d.shadow.rule.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        crate::report::table(
            &[
                "AT",
                "WORK ITEM",
                "STAGE",
                "TRIGGER",
                "LIVE",
                "SHADOW",
                "RULE"
            ],
            &cells
        )
    );
    for (rule, n) in by_rule(rows) {
        println!("{n} divergence(s) by {rule}");
    }
    Ok(())
}

pub(super) fn report(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let cfg = load_config(args.common.config.as_deref(), args.common.rules.clone())?;
    let store = existing_store(&cfg)?;
    let (from, limit) = (since(args.since), args.limit);
    let rows = store.call_sync(|c| crate::store::shadow::list(c, from, limit))?;
    print_report(&rows, args.format)?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn promote(args: PromoteArgs) -> anyhow::Result<ExitCode> {
    let cfg = load_config(args.common.config.as_deref(), args.common.rules.clone())?;
    let Some(shadow) = args.shadow.or(cfg.shadow_rules_dir.clone()) else {
        anyhow::bail!("no shadow rule set: name its directory, or set rules.shadow_dir");
    };
    let set = match crate::policy::load_dir(&shadow) {
        Ok(s) => s,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "the shadow rule set in {} is invalid; nothing promoted",
                shadow.display()
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    if cfg.db_url.is_some() || cfg.db_path.exists() {
        let store = existing_store(&cfg)?;
        let rows = store.call_sync(|c| crate::store::shadow::list(c, None, usize::MAX))?;
        print_report(&rows, OutputFormat::Text)?;
    } else {
        println!(
            "no database at {}: no divergences observed",
            cfg.db_path.display()
        );
    }
    let live = &cfg.rules_dir;
    let before = crate::policy::load_dir(live)
        .map(|s| s.version().to_string())
        .ok();
    copy_set(&shadow, live)?;
    let after = crate::policy::load_dir(live).map_err(|e| {
        anyhow::anyhow!("the promoted rules in {} do not load:\n{e}", live.display())
    })?;
    anyhow::ensure!(
        after.version() == set.version(),
        "the rules in {} are version {} after the copy, not the shadow's {}; was the directory changed meanwhile?",
        live.display(),
        after.version(),
        set.version()
    );
    println!(
        "promoted {} to {}: version {} (was {}); a running orch serve reloads it",
        shadow.display(),
        live.display(),
        set.version(),
        before.as_deref().unwrap_or("none")
    );
    Ok(ExitCode::SUCCESS)
}

/// Makes `to`'s rule files (`*.toml` at the top level) those of `from`: every file written
/// beside its target first, then renamed over it, then the files `from` lacks removed.
fn copy_set(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    let files = crate::policy::read_dir(from).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut names = Vec::new();
    let mut staged = Vec::new();
    for (path, text) in &files {
        let Some(name) = path.file_name() else {
            continue;
        };
        let tmp = to.join(format!(".{}.promote", name.to_string_lossy()));
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        staged.push((tmp, to.join(name)));
        names.push(name.to_os_string());
    }
    for (tmp, target) in &staged {
        std::fs::rename(tmp, target)
            .with_context(|| format!("renaming {} to {}", tmp.display(), target.display()))?;
    }
    for entry in std::fs::read_dir(to).with_context(|| format!("reading {}", to.display()))? {
        let path = entry?.path();
        let is_rule = path.extension().and_then(|e| e.to_str()) == Some("toml") && path.is_file();
        if is_rule
            && path
                .file_name()
                .is_some_and(|n| !names.iter().any(|m| m == n))
        {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}
