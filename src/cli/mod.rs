//! The command line (clap). Each subcommand is a thin edge over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::reconciler::Mode;
use crate::telemetry::LogFormat;

mod decisions;
mod outbox;
mod rules;
mod rules_impact;
mod rules_snapshot;
mod shadow;

#[derive(Debug, Parser)]
#[command(
    name = "orch",
    version,
    about = "A delivery-pipeline orchestrator that heals itself when webhooks get lost"
)]
pub struct Cli {
    /// Log output format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server and the background workers.
    Serve(ServeArgs),
    /// Check, simulate and diff rule sets.
    #[command(subcommand)]
    Rules(rules::RulesCommand),
    /// Run one reconciler sweep against the configured database and print its decisions.
    Reconcile(ReconcileArgs),
    /// Show the current decision for one task: rule, reason, facts and time left in grace.
    ///
    /// Evaluates the task's exit gate live (read-only: it asks Gitea, changes nothing), unlike
    /// `GET /explain`, which shows the last reading the server stored.
    Explain(ExplainArgs),
    /// Run the real engine against in-process fake Plane and Gitea with webhooks dropped at
    /// random, and report how the reconciler healed it.
    Simulate(SimulateArgs),
    /// Webhook deliveries the inbox gave up on: list them, or offer them again.
    #[command(subcommand)]
    Inbox(InboxCommand),
    /// Effects (Plane states and comments, Telegram messages) the dispatchers gave up on:
    /// list them, or offer them again.
    #[command(subcommand)]
    Outbox(outbox::OutboxCommand),
    /// The decision log: every decision that acted (advance, hold, replay, error), with its
    /// trigger, rule-set version, rule, reason and facts.
    Decisions(decisions::DecisionsArgs),
}

#[derive(Debug, Subcommand)]
pub enum InboxCommand {
    /// List deliveries given up on (out of attempts, or malformed) with their last error.
    Dead {
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Give deliveries that were given up on a fresh set of attempts; a running `orch serve`
    /// picks them up within a second.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["ids", "all"])))]
    Retry {
        /// Delivery ids (as `orch inbox dead` lists them).
        ids: Vec<i64>,
        /// Every delivery given up on.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        common: CommonArgs,
    },
}

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Work items to push through the pipeline.
    #[arg(long, default_value_t = 20)]
    pub items: usize,
    /// Fraction of webhooks silently dropped (0.0 – 1.0).
    #[arg(long, default_value_t = 0.3, value_parser = fraction)]
    pub drop_rate: f64,
    /// Fraction of items a person cancels once their development has started (0.0 – 1.0).
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    pub cancel_rate: f64,
    /// Fraction of items whose analyst first asks a question, answered by a person in a Plane
    /// comment (0.0 – 1.0).
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    pub ask_rate: f64,
    /// Fraction of items whose reviewer rejects the first review (0.0 – 1.0).
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    pub reject_rate: f64,
    /// Kill the engine this many times during the run (no graceful stop: everything in
    /// flight dropped, as with kill -9) and restart it on the same database.
    #[arg(long, default_value_t = 0)]
    pub kills: usize,
    /// Engines sharing one PostgreSQL database behind a load balancer (more than one needs
    /// --db-url); --kills then kills a random one.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=16))]
    pub replicas: u64,
    /// Kill the holder of the sweep lease (the leader) this many times and measure how soon
    /// another replica takes over; the killed one restarts.
    #[arg(long, default_value_t = 0)]
    pub leader_kills: usize,
    /// The PostgreSQL server to run on (the run creates a schema of its own there and drops
    /// it at the end). Default: ORCH_TEST_PG_URL when set with --replicas above 1, else SQLite.
    #[arg(long, value_name = "URL")]
    pub db_url: Option<String>,
    /// The replicas' lease time to live (a dead leader's work is taken over after it).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub lease_ttl: std::time::Duration,
    /// Keep the run's PostgreSQL schema for inspection instead of dropping it.
    #[arg(long)]
    pub keep: bool,
    /// Seed for the drops, cancels, questions and rejections, so a run can be repeated.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Grace before a quiet task counts as stuck.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub grace: std::time::Duration,
    /// Time between reconciler sweeps.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub interval: std::time::Duration,
    /// Give up after this long.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// Run this rule set (a directory) instead of the embedded default rules: its stages,
    /// human gates, Plane states and agents drive the people and the scripted agents.
    #[arg(long, value_name = "DIR")]
    pub rules: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    /// A candidate rule set evaluated beside the live one, never acting; its divergences are
    /// printed after the report.
    #[arg(long, value_name = "DIR")]
    pub shadow_rules: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ReconcileArgs {
    /// Run exactly one sweep and exit (the only mode; required so the intent is explicit).
    #[arg(long, required = true)]
    pub once: bool,
    /// Decide and print, but change nothing anywhere.
    #[arg(long)]
    pub dry_run: bool,
    /// Print a line for every open task, not only the counts, the tasks that advance (or
    /// would) and the errors. `--format json` always has every line.
    #[arg(long)]
    pub all: bool,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// The work item, e.g. ET-42.
    pub work_item: String,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, clap::Args)]
pub struct CommonArgs {
    /// Configuration file (default: ./orch.toml when it exists).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Rule-set directory (overrides rules_dir / ORCH_RULES_DIR).
    #[arg(long, value_name = "DIR")]
    pub rules: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Configuration file (default: ./orch.toml when it exists).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Rule-set directory (overrides rules_dir / ORCH_RULES_DIR).
    #[arg(long, value_name = "DIR")]
    pub rules: Option<PathBuf>,
    /// A candidate rule set evaluated beside the live one, never acting (overrides
    /// rules.shadow_dir / ORCH_RULES_SHADOW_DIR).
    #[arg(long, value_name = "DIR")]
    pub shadow_rules: Option<PathBuf>,
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let default_level = match cli.command {
        Command::Simulate(_)
        | Command::Rules(_)
        | Command::Inbox(_)
        | Command::Outbox(_)
        | Command::Decisions(_) => "warn",
        _ => "info",
    };
    crate::telemetry::init_with_default(cli.log_format, default_level);
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Rules(cmd) => rules::run(cmd),
        Command::Reconcile(args) => reconcile(args),
        Command::Explain(args) => explain(args),
        Command::Simulate(args) => simulate(args),
        Command::Inbox(cmd) => inbox(cmd),
        Command::Outbox(cmd) => outbox::run(cmd),
        Command::Decisions(args) => decisions::run(args),
    }
}

fn inbox(cmd: InboxCommand) -> anyhow::Result<ExitCode> {
    use crate::inbox::MAX_ATTEMPTS;
    use crate::store::inbox;
    runtime()?.block_on(async move {
        match cmd {
            InboxCommand::Dead { format, common } => {
                let parts = components(&common)?;
                let dead = parts
                    .state
                    .store
                    .call(|c| inbox::dead(c, MAX_ATTEMPTS))
                    .await?;
                print_dead(
                    format,
                    &dead,
                    "no dead deliveries",
                    &["ID", "SOURCE", "EVENT", "RECEIVED", "ATTEMPTS", "ERROR"],
                    |d| {
                        vec![
                            d.id.to_string(),
                            d.source.clone(),
                            d.event.clone(),
                            d.received_at.to_string(),
                            d.attempts.to_string(),
                            d.error.clone().unwrap_or_default(),
                        ]
                    },
                )?;
                Ok(ExitCode::SUCCESS)
            }
            InboxCommand::Retry { ids, all, common } => {
                let parts = components(&common)?;
                let wanted = (!all).then_some(ids.clone());
                let revived = parts
                    .state
                    .store
                    .call(move |c| inbox::revive(c, wanted.as_deref(), MAX_ATTEMPTS))
                    .await?;
                Ok(retried(
                    &ids,
                    &revived,
                    "deliveries",
                    "unknown, processed or still pending",
                ))
            }
        }
    })
}

/// A `dead` listing: JSON, a sentence when there is nothing, or a table.
fn print_dead<T: serde::Serialize>(
    format: OutputFormat,
    dead: &[T],
    none: &str,
    header: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(dead)?),
        OutputFormat::Text if dead.is_empty() => println!("{none}"),
        OutputFormat::Text => {
            let rows: Vec<Vec<String>> = dead.iter().map(row).collect();
            print!("{}", crate::report::table(header, &rows));
        }
    }
    Ok(())
}

/// A `retry`'s answer: how many were offered again; exit 1 naming the ids that were not dead.
fn retried(asked: &[i64], revived: &[i64], noun: &str, instead: &str) -> ExitCode {
    println!("{} {noun} offered again", revived.len());
    let missing: Vec<_> = asked.iter().filter(|id| !revived.contains(id)).collect();
    if missing.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("orch: not dead {noun} ({instead}): {missing:?}");
        ExitCode::from(1)
    }
}

/// A simulation rate: a number from 0 to 1.
fn fraction(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{value:?} is not a number between 0 and 1")),
    }
}

fn simulate(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.items > 0, "--items must be at least 1");
    let opts = crate::sim::SimOptions {
        items: args.items,
        drop_rate: args.drop_rate,
        cancel_rate: args.cancel_rate,
        ask_rate: args.ask_rate,
        reject_rate: args.reject_rate,
        kills: args.kills,
        replicas: usize::try_from(args.replicas)?,
        leader_kills: args.leader_kills,
        db_url: args.db_url.or_else(|| {
            std::env::var("ORCH_TEST_PG_URL")
                .ok()
                .filter(|u| args.replicas > 1 && !u.trim().is_empty())
        }),
        lease_ttl: args.lease_ttl,
        keep: args.keep,
        seed: args.seed,
        grace: args.grace,
        interval: args.interval,
        timeout: args.timeout,
        progress: args.format == OutputFormat::Text,
        shadow_rules: args.shadow_rules,
        rules: args.rules,
        ..crate::sim::SimOptions::default()
    };
    let report = runtime()?.block_on(crate::sim::run(&opts))?;
    match args.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Text => print!("{}", report.table()),
    }
    Ok(
        if report.done + report.cancelled == report.items
            && report.done_in_orch == report.done
            && report.cancels_not_honoured == 0
            && report.duplicates == 0
            && report.webhooks_rejected == 0
            && report.replica_criteria_met(opts.lease_ttl)
        {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}

/// The configured database exists (a PostgreSQL URL is taken as it is): the one-shot commands
/// never create one.
pub(super) fn ensure_database(cfg: &crate::config::Config) -> anyhow::Result<()> {
    if cfg.db_url.is_none() && !cfg.db_path.exists() {
        anyhow::bail!(
            "no database at {} (set db_path or ORCH_DB_PATH to the one orch serve uses)",
            cfg.db_path.display()
        );
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// What the one-shot commands (`reconcile`, `explain`, `inbox`) work on: the database
/// `orch serve` keeps. Unlike `serve` they never create one: a mistyped path would otherwise
/// give an empty database and answers like "no such task".
fn components(common: &CommonArgs) -> anyhow::Result<crate::app::Components> {
    let cfg = load_config(common.config.as_deref(), common.rules.clone())?;
    ensure_database(&cfg)?;
    crate::app::Components::build(cfg, std::sync::Arc::new(crate::clock::SystemClock))
}

fn reconcile(args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        let parts = components(&args.common)?;
        let mode = if args.dry_run {
            Mode::DryRun
        } else {
            Mode::Apply
        };
        let rows = if args.all || args.format == OutputFormat::Json {
            crate::reconciler::Rows::All
        } else {
            crate::reconciler::Rows::Notable
        };
        let report = parts.state.reconciler.sweep_rows(mode, rows).await;
        if mode == Mode::Apply {
            // What the sweep owes its peers is delivered now (a running server would too).
            if let Err(e) = parts.state.drain_outbox().await {
                tracing::warn!(error = %e, "could not deliver the sweep's effects; a running orch serve will");
            }
        }
        match args.format {
            OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
            OutputFormat::Text => {
                print!("{}", crate::report::sweep_table(&report, args.dry_run, args.all));
                println!("{}", sweep_lease_line(&parts.state.store).await);
            }
        }
        // A task the rules cannot decide is as much a failure as a peer that did not answer:
        // a cron job or CI gate running this must see it.
        Ok(if report.errors.is_empty() && report.decision_errors.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        })
    })
}

/// Who holds the `sweep` lease: this one-shot sweep ran beside it, without the lease (its
/// writes are compare-and-set guarded, as against a serving process's own sweep).
async fn sweep_lease_line(store: &crate::store::Store) -> String {
    match store
        .call(|c| crate::store::leases::holder(c, "sweep"))
        .await
    {
        Ok(Some((holder, token))) => format!(
            "sweep lease: held by {holder} (token {token}); this sweep ran beside it, without the lease"
        ),
        Ok(None) => "sweep lease: not held (no orch serve is sweeping)".to_string(),
        Err(e) => format!("sweep lease: unknown ({e})"),
    }
}

fn explain(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        let parts = components(&args.common)?;
        match parts.state.reconciler.explain(&args.work_item).await? {
            None => {
                eprintln!("orch: no task for work item {}", args.work_item);
                Ok(ExitCode::from(1))
            }
            Some(x) => {
                match args.format {
                    OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&x)?),
                    OutputFormat::Text => print!("{}", crate::report::explanation(&x)),
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

fn load_config(file: Option<&std::path::Path>, rules: Option<PathBuf>) -> anyhow::Result<Config> {
    let mut cfg = Config::load(file)?;
    if let Some(dir) = rules {
        cfg.rules_dir = dir;
    }
    Ok(cfg)
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = load_config(args.config.as_deref(), args.rules)?;
    if let Some(dir) = args.shadow_rules {
        cfg.shadow_rules_dir = Some(dir);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut app = crate::app::Application::build(cfg).await?;
        app.notify_systemd();
        app.run_until(crate::app::shutdown_signal()).await
    })?;
    Ok(ExitCode::SUCCESS)
}
