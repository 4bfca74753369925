//! `orch rules check | simulate | diff`: the command line over `policy`, which parses,
//! validates and decides but never prints; here its results become text, JSON and exit
//! codes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use super::OutputFormat;
use crate::policy::{self, RuleSet, scenario};

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Parse, validate and compile a rule set; print every error as file:line:col: message.
    Check {
        /// The rule-set directory.
        #[arg(default_value = "rules")]
        dir: PathBuf,
    },
    /// Print the decision table of a rule set for a scenario file.
    Simulate {
        #[arg(default_value = "rules")]
        dir: PathBuf,
        #[arg(long, value_name = "FILE")]
        scenarios: PathBuf,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Print only the decisions that change between two rule sets; exit 1 when any does.
    Diff {
        old: PathBuf,
        new: PathBuf,
        #[arg(long, value_name = "FILE")]
        scenarios: PathBuf,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// The shadow rule set's divergences from the live one, as `orch serve` kept them: work
    /// item, trigger, live decision, shadow decision, rule.
    ShadowReport(super::shadow::ReportArgs),
    /// Show the shadow report, then make the shadow rule set live: copied into the rules
    /// directory, which a running `orch serve` hot-reloads.
    Promote(super::shadow::PromoteArgs),
}

/// Every error on stderr, then a count: `check` is run by people and by CI, and both want
/// the whole list in one go.
fn load(dir: &Path) -> Result<RuleSet, ExitCode> {
    policy::load_dir(dir).map_err(|errors| {
        eprintln!("{errors}");
        eprintln!("{} error(s) in {}", errors.0.len(), dir.display());
        ExitCode::FAILURE
    })
}

pub(crate) fn run(cmd: RulesCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RulesCommand::ShadowReport(args) => super::shadow::report(args),
        RulesCommand::Promote(args) => super::shadow::promote(args),
        RulesCommand::Check { dir } => Ok(match load(&dir) {
            Ok(set) => {
                let flow = set
                    .stages()
                    .iter()
                    .filter(|s| !s.cancel)
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(" -> ");
                let cancel = set
                    .cancel_stage()
                    .map(|s| format!("; on cancel: {}", s.name))
                    .unwrap_or_default();
                println!(
                    "{}: ok, version {}, {} stages ({flow}{cancel})",
                    dir.display(),
                    set.version(),
                    set.stages().len(),
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        }),
        RulesCommand::Simulate {
            dir,
            scenarios,
            format,
        } => {
            let set = match load(&dir) {
                Ok(s) => s,
                Err(code) => return Ok(code),
            };
            let file = scenario::read(&scenarios)?;
            let rows = scenario::simulate(&set, &file).map_err(anyhow::Error::msg)?;
            match format {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                OutputFormat::Text => {
                    println!("rule set {} (version {})", dir.display(), set.version());
                    let cells: Vec<Vec<String>> = rows
                        .iter()
                        .map(|r| {
                            vec![
                                r.scenario.clone(),
                                r.subject.clone(),
                                r.decision.clone(),
                                r.rule.clone(),
                                r.reason.clone(),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        crate::report::table(
                            &["SCENARIO", "SUBJECT", "DECISION", "RULE", "REASON"],
                            &cells
                        )
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        RulesCommand::Diff {
            old,
            new,
            scenarios,
            format,
        } => {
            let (a, b) = match (load(&old), load(&new)) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(code), _) | (_, Err(code)) => return Ok(code),
            };
            let file = scenario::read(&scenarios)?;
            let rows_a = scenario::simulate(&a, &file).map_err(anyhow::Error::msg)?;
            let rows_b = scenario::simulate(&b, &file).map_err(anyhow::Error::msg)?;
            let changes = scenario::diff(&rows_a, &rows_b);
            match format {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&changes)?),
                OutputFormat::Text => {
                    if changes.is_empty() {
                        println!("no decision changes ({} -> {})", a.version(), b.version());
                    } else {
                        let cells: Vec<Vec<String>> = changes
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
                            .collect();
                        print!(
                            "{}",
                            crate::report::table(
                                &["SCENARIO", "SUBJECT", "OLD", "NEW", "RULE"],
                                &cells
                            )
                        );
                        println!("{} decision(s) change", changes.len());
                    }
                }
            }
            Ok(if changes.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
