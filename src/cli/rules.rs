//! `orch rules check | simulate | diff | snapshot | verify`: the command line over `policy`,
//! which parses, validates and decides but never prints; here its results become text, JSON
//! and exit codes. `snapshot`/`verify` live in `rules_snapshot.rs`, `diff --db` in
//! `rules_impact.rs`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use super::OutputFormat;
use super::rules_impact::{self, DiffFormat};
use super::rules_snapshot;
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
    /// Print only the decisions that change between two rule sets, for a scenario file or for
    /// the tasks open in a database now; exit 1 when any does.
    #[command(group(clap::ArgGroup::new("over").required(true).args(["scenarios", "db"])))]
    Diff {
        old: PathBuf,
        new: PathBuf,
        #[arg(long, value_name = "FILE")]
        scenarios: Option<PathBuf>,
        /// The database's open tasks (read-only): a SQLite file or a `postgres://` URL;
        /// without a value, the configured database (`db_url`, else `db_path`).
        #[arg(long, value_name = "PATH|URL", num_args = 0..=1)]
        db: Option<Option<String>>,
        /// Configuration file for the default database and the ORCH_RECONCILE_* overrides.
        #[arg(long, value_name = "FILE", requires = "db")]
        config: Option<PathBuf>,
        /// Evaluate at this time (RFC 3339) instead of now; with --db.
        #[arg(long, value_name = "TIME", requires = "db")]
        at: Option<String>,
        #[arg(long, value_enum, default_value_t = DiffFormat::Text)]
        format: DiffFormat,
    },
    /// Pin every rule set under DIR by its decisions for the scenario files, as insta `.snap`
    /// files in `snapshots/` beside DIR; changed ones are written as `.snap.new` (exit 1)
    /// unless --accept.
    Snapshot {
        #[arg(default_value = "rules")]
        dir: PathBuf,
        #[arg(long, value_name = "FILE", num_args = 1.., required = true)]
        scenarios: Vec<PathBuf>,
        /// Where the snapshots live (default: `snapshots/` beside DIR).
        #[arg(long, value_name = "DIR")]
        snapshots: Option<PathBuf>,
        /// Write changed and new snapshots in place.
        #[arg(long)]
        accept: bool,
    },
    /// Check that every rule set under DIR still decides as pinned and that every scenario
    /// `expect` holds; exit 1 with the changed decisions otherwise.
    Verify {
        #[arg(default_value = "rules")]
        dir: PathBuf,
        #[arg(long, value_name = "FILE", num_args = 1.., required = true)]
        scenarios: Vec<PathBuf>,
        #[arg(long, value_name = "DIR")]
        snapshots: Option<PathBuf>,
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
        RulesCommand::Snapshot {
            dir,
            scenarios,
            snapshots,
            accept,
        } => rules_snapshot::snapshot(&dir, &scenarios, snapshots.as_deref(), accept),
        RulesCommand::Verify {
            dir,
            scenarios,
            snapshots,
        } => rules_snapshot::verify(&dir, &scenarios, snapshots.as_deref()),
        RulesCommand::Diff {
            old,
            new,
            scenarios,
            db,
            config,
            at,
            format,
        } => {
            let (a, b) = match (load(&old), load(&new)) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(code), _) | (_, Err(code)) => return Ok(code),
            };
            let Some(scenarios) = scenarios else {
                let db = db.flatten();
                return rules_impact::run((&a, &b), db, config.as_deref(), at.as_deref(), format);
            };
            let file = scenario::read(&scenarios)?;
            let rows_a = scenario::simulate(&a, &file).map_err(anyhow::Error::msg)?;
            let rows_b = scenario::simulate(&b, &file).map_err(anyhow::Error::msg)?;
            let changes = scenario::diff(&rows_a, &rows_b);
            match format {
                DiffFormat::Json => println!("{}", serde_json::to_string_pretty(&changes)?),
                DiffFormat::Markdown => print!("{}", rules_impact::scenario_markdown(&changes)),
                DiffFormat::Text => {
                    if changes.is_empty() {
                        println!("no decision changes ({} -> {})", a.version(), b.version());
                    } else {
                        let cells = super::rules_impact::scenario_cells(&changes);
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
