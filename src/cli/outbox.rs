//! `orch outbox`: effects the dispatchers gave up on, listed and offered again.
//!
//! The same shape as `orch inbox`: `dead` lists, `retry` gives a fresh set of attempts, and
//! a running `orch serve` delivers them within a second.

use std::process::ExitCode;

use super::{CommonArgs, OutputFormat, components, print_dead, retried, runtime};
use crate::store::outbox::{self, Effect};

#[derive(Debug, clap::Subcommand)]
pub enum OutboxCommand {
    /// List effects given up on (out of attempts, or refused by the peer) with their last error.
    Dead {
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Give effects that were given up on a fresh set of attempts; a running `orch serve`
    /// delivers them within a second.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["ids", "all"])))]
    Retry {
        /// Effect ids (as `orch outbox dead` lists them).
        ids: Vec<i64>,
        /// Every effect given up on.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        common: CommonArgs,
    },
}

pub(crate) fn run(cmd: OutboxCommand) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        match cmd {
            OutboxCommand::Dead { format, common } => {
                let parts = components(&common)?;
                let dead = parts.state.store.call(outbox::dead).await?;
                print_dead(
                    format,
                    &dead,
                    "no dead effects",
                    &["ID", "PEER", "WORK ITEM", "EFFECT", "ATTEMPTS", "ERROR"],
                    |d| {
                        vec![
                            d.id.to_string(),
                            d.peer.as_str().to_string(),
                            d.subject.clone(),
                            describe(&d.effect),
                            d.attempts.to_string(),
                            d.error.clone().unwrap_or_default(),
                        ]
                    },
                )?;
                Ok(ExitCode::SUCCESS)
            }
            OutboxCommand::Retry { ids, all, common } => {
                let parts = components(&common)?;
                let wanted = (!all).then_some(ids.clone());
                let now = parts.state.clock.now();
                let revived = parts
                    .state
                    .store
                    .call(move |c| outbox::retry_dead(c, wanted.as_deref(), now))
                    .await?;
                Ok(retried(
                    &ids,
                    &revived,
                    "effects",
                    "unknown, delivered or still pending",
                ))
            }
        }
    })
}

/// One line for a person: what the effect would do.
fn describe(effect: &Effect) -> String {
    match effect {
        Effect::PlaneState { state, .. } => format!("set state {state:?}"),
        Effect::PlaneComment { external_id, .. } => format!("comment {external_id}"),
        Effect::Telegram { text } => {
            let short: String = text.chars().take(60).collect();
            if short.len() < text.len() {
                format!("message {short:?}…")
            } else {
                format!("message {short:?}")
            }
        }
    }
}
