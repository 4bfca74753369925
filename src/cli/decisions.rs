//! `orch decisions [WORK-ITEM] [--since D]`: the decision log — every decision that acted, with
//! its trigger, rule-set version, rule, reason and facts — for audits.

use std::process::ExitCode;
use std::time::Duration;

use super::{CommonArgs, OutputFormat, load_config};
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::store::Store;

#[derive(Debug, clap::Args)]
pub struct DecisionsArgs {
    /// Only this work item's decisions, e.g. ET-42.
    pub work_item: Option<String>,
    /// Only decisions of the last D (`1h`, `30m`, `7d`).
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

/// The database `orch serve` keeps, never created here: a mistyped path would read as "no
/// decisions".
pub(super) fn open_store(common: &CommonArgs) -> anyhow::Result<Store> {
    let cfg = load_config(common.config.as_deref(), common.rules.clone())?;
    existing_store(&cfg)
}

pub(super) fn existing_store(cfg: &crate::config::Config) -> anyhow::Result<Store> {
    super::ensure_database(cfg)?;
    Ok(match &cfg.db_url {
        Some(url) => Store::open_url(url)?,
        None => Store::open(&cfg.db_path)?,
    })
}

/// `now − since`, or every row.
pub(super) fn since(d: Option<Duration>) -> Option<Timestamp> {
    d.map(|d| SystemClock.now().minus(d))
}

pub(super) fn run(args: DecisionsArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(&args.common)?;
    let (wi, from, limit) = (args.work_item.clone(), since(args.since), args.limit);
    let rows = store.call_sync(|c| crate::store::decisions::list(c, wi.as_deref(), from, limit))?;
    match args.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        OutputFormat::Text if rows.is_empty() => match &args.work_item {
            Some(wi) => println!("no decisions logged for {wi}"),
            None => println!("no decisions logged"),
        },
        OutputFormat::Text => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let d = &r.decision;
                    vec![
                        r.at.to_string(),
                        d.work_item.clone(),
                        d.stage.clone(),
                        d.trigger.clone(),
                        d.outcome.clone(),
                        d.rule.clone(),
                        d.rules_version.clone(),
                        d.reason.clone(),
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
                        "DECISION",
                        "RULE",
                        "RULES",
                        "REASON"
                    ],
                    &cells
                )
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
