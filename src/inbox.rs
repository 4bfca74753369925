//! The inbox processor: applies stored webhook deliveries in arrival order.
//!
//! A delivery is acknowledged once it is on disk, so anything not yet processed survives a
//! crash and is picked up here after a restart. A delivery whose handling fails is retried on
//! later passes up to [`MAX_ATTEMPTS`] times, then left with its error for an operator; it
//! never blocks the deliveries behind it.

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
/// Processed deliveries are kept this long (for dedup of late retries and for forensics).
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
const BATCH: usize = 64;

pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Applies one delivery. An `Err` is recorded on the delivery and retried later.
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
        let mut failed_this_pass = std::collections::HashSet::new();
        loop {
            let batch = self
                .store
                .call(|c| inbox::pending(c, MAX_ATTEMPTS, BATCH))
                .await?;
            let batch: Vec<_> = batch
                .into_iter()
                .filter(|i| !failed_this_pass.contains(&i.id))
                .collect();
            if batch.is_empty() {
                return Ok(handled);
            }
            for item in batch {
                if cancel.is_cancelled() {
                    return Ok(handled);
                }
                let id = item.id;
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
                    Err(e) => {
                        tracing::warn!(id, source, event, error = %e, "webhook delivery failed; will retry");
                        failed_this_pass.insert(id);
                        self.store
                            .call(move |c| inbox::mark_failed(c, id, &e))
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
