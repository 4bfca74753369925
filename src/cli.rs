//! The command line (clap). Each subcommand is a thin edge over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::telemetry::LogFormat;

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
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Configuration file (default: ./orch.toml when it exists).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Rule-set directory (overrides rules_dir / ORCH_RULES_DIR).
    #[arg(long, value_name = "DIR")]
    pub rules: Option<PathBuf>,
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    crate::telemetry::init(cli.log_format);
    match cli.command {
        Command::Serve(args) => serve(args),
    }
}

fn load_config(file: Option<&std::path::Path>, rules: Option<PathBuf>) -> anyhow::Result<Config> {
    let mut cfg = Config::load(file)?;
    if let Some(dir) = rules {
        cfg.rules_dir = dir;
    }
    Ok(cfg)
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let cfg = load_config(args.config.as_deref(), args.rules)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let app = crate::app::Application::build(cfg).await?;
        app.run_until(crate::app::shutdown_signal()).await
    })?;
    Ok(ExitCode::SUCCESS)
}
