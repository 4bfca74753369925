//! The inbox processor: applies stored webhook deliveries in arrival order.
//!
//! A delivery is acknowledged once it is on disk, so anything not yet processed survives a
//! crash and is picked up here after a restart. A delivery whose handling fails for a reason
//! that may pass (a peer or the database unavailable) is retried with growing delays
//! ([`RETRY_DELAYS`]) up to [`MAX_ATTEMPTS`] times; one that is wrong in itself is not
//! retried. Either way it is then kept, with its error, for an operator, and it never blocks
//! the deliveries behind it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::metrics::{Metrics, ResultLabels};
use crate::store::{InboxItem, Store, inbox};

pub const MAX_ATTEMPTS: i64 = 5;
/// The wait before the 2nd, 3rd, … attempt: long enough for a restarting peer, short enough
/// that a transition is not held for hours (the reconciler heals what is lost beyond that).
pub const RETRY_DELAYS: [Duration; 4] = [
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
    Duration::from_secs(600),
];
/// Processed deliveries are kept this long (for dedup of late retries and for forensics).
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
const BATCH: usize = 64;

/// Why a delivery could not be applied.
#[derive(Debug, Clone)]
pub struct Failure {
    pub message: String,
    /// Retrying cannot help (e.g. a payload missing the fields its event needs).
    pub permanent: bool,
}

pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), Failure>> + Send>>;

/// Applies one delivery. An `Err` is recorded on the delivery (and retried later unless it
/// is permanent).
pub type Handler = Arc<dyn Fn(InboxItem) -> HandlerFuture + Send + Sync>;

pub struct Processor {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub wakeup: Arc<Notify>,
    pub handler: Handler,
    /// How often to look for work when nobody wakes us (failed deliveries being retried).
    pub poll: Duration,
}

impl Processor {
    /// Runs until cancelled.
    pub async fn run(self, cancel: CancellationToken) {
        let mut last_prune: Option<tokio::time::Instant> = None;
        loop {
            if let Err(e) = self.drain(&cancel).await {
                tracing::error!(error = %e, "inbox pass failed; will retry");
            }
            if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(tokio::time::Instant::now());
                let before = self.clock.now().minus(RETENTION);
                match self
                    .store
                    .call(move |c| inbox::prune_processed(c, before))
                    .await
                {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        deleted = n,
                        "pruned processed webhook deliveries older than 7 days"
                    ),
                    Err(e) => tracing::warn!(error = %e, "could not prune the inbox; will retry"),
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.wakeup.notified() => {}
                _ = tokio::time::sleep(self.poll) => {}
            }
        }
    }

    /// Processes everything pending now. Returns how many deliveries were handled.
    pub async fn drain(
        &self,
        cancel: &CancellationToken,
    ) -> Result<usize, crate::store::StoreError> {
        let mut handled = 0;
        let mut after = 0;
        loop {
            let now = self.clock.now();
            let batch = self
                .store
                .call(move |c| inbox::pending(c, MAX_ATTEMPTS, after, now, BATCH))
                .await?;
            if batch.is_empty() {
                return Ok(handled);
            }
            for item in batch {
                if cancel.is_cancelled() {
                    return Ok(handled);
                }
                let id = item.id;
                after = id;
                let attempts = item.attempts;
                let source = item.source.clone();
                let event = item.event.clone();
                let result = (self.handler)(item).await;
                handled += 1;
                match result {
                    Ok(()) => {
                        let now = self.clock.now();
                        self.store
                            .call(move |c| inbox::mark_processed(c, id, now))
                            .await?;
                        self.count("ok");
                    }
                    Err(f) if f.permanent || attempts + 1 >= MAX_ATTEMPTS => {
                        tracing::error!(id, source, event, error = %f.message, attempts = attempts + 1, "webhook delivery failed for good; kept for an operator");
                        self.store
                            .call(move |c| inbox::mark_dead(c, id, &f.message, MAX_ATTEMPTS))
                            .await?;
                        self.count("dead");
                    }
                    Err(f) => {
                        let delay = RETRY_DELAYS
                            .get(usize::try_from(attempts).unwrap_or(usize::MAX))
                            .copied()
                            .unwrap_or(RETRY_DELAYS[RETRY_DELAYS.len() - 1]);
                        tracing::warn!(id, source, event, error = %f.message, retry_in = ?delay, "webhook delivery failed; will retry");
                        let retry_at = self.clock.now().plus(delay);
                        self.store
                            .call(move |c| inbox::mark_failed(c, id, &f.message, retry_at))
                            .await?;
                        self.count("error");
                    }
                }
            }
        }
    }

    fn count(&self, result: &str) {
        self.metrics
            .inbox_processed
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }
}
