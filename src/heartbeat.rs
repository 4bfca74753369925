//! The heartbeat loop: keeps this replica's row in `replicas` fresh every third of the lease
//! time, fences the replica when it cannot (see [`Liveness`]), and takes over the running jobs
//! of replicas that went silent (`store::jobs::requeue_expired`) — one atomic statement pair,
//! safe to run on every replica at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::replica::Liveness;
use crate::store::replicas::ReplicaInfo;
use crate::store::{self, Store};

/// Rows of replicas stopped or silent for longer than this are deleted.
const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);

pub struct Heartbeat {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub info: ReplicaInfo,
    pub lease_ttl: Duration,
    pub liveness: Arc<Liveness>,
    /// Wakes the worker when jobs came back to the queue.
    pub job_wakeup: Arc<Notify>,
}

impl Heartbeat {
    /// Heartbeats every `lease_ttl / 3` until `cancel`; never returns an error (each failure
    /// is logged, and fences the replica when it lasts).
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let period = (self.lease_ttl / 3).max(Duration::from_millis(10));
        loop {
            self.beat(period, &cancel).await;
            if cancel.is_cancelled() {
                return;
            }
            self.take_over_expired().await;
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
        }
    }

    /// The first heartbeat, at startup: before anything claims a job.
    pub async fn register(&self) -> Result<(), store::StoreError> {
        let info = self.info.clone();
        self.store
            .call(move |c| store::replicas::heartbeat(c, &info))
            .await?;
        self.liveness.heartbeat_ok(Instant::now());
        Ok(())
    }

    /// A graceful stop, after the loop stopped: this replica is gone at once rather than after
    /// the lease time, so what it left is taken over now.
    pub async fn mark_stopped(&self) {
        let id = self.info.id.clone();
        if let Err(e) = self
            .store
            .call(move |c| store::replicas::mark_stopped(c, &id))
            .await
        {
            tracing::warn!(error = %e, "cannot mark this replica stopped; the others notice after the lease time");
        }
    }

    /// One heartbeat, given at most `period`; the fence goes up if the deadline passes first.
    async fn beat(&self, period: Duration, cancel: &CancellationToken) {
        let started = Instant::now();
        let info = self.info.clone();
        let call = tokio::time::timeout(
            period,
            self.store
                .call(move |c| store::replicas::heartbeat(c, &info)),
        );
        tokio::pin!(call);
        let deadline = self.liveness.deadline(self.lease_ttl);
        let result = loop {
            tokio::select! {
                r = &mut call => break r,
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep_until(deadline), if !self.liveness.is_fenced() => self.fence(),
            }
        };
        match result {
            Ok(Ok(())) => {
                if self.liveness.heartbeat_ok(started) {
                    tracing::warn!(replica = %self.info.id, "heartbeat succeeded again: this replica claims jobs again");
                }
            }
            Ok(Err(e)) => {
                tracing::error!(replica = %self.info.id, error = %e, "heartbeat failed");
            }
            Err(_) => {
                tracing::error!(replica = %self.info.id, timeout = ?period, "heartbeat timed out");
            }
        }
        if Instant::now() >= self.liveness.deadline(self.lease_ttl) && !self.liveness.is_fenced()
        {
            self.fence();
        }
    }

    fn fence(&self) {
        if self.liveness.fence() {
            tracing::error!(
                replica = %self.info.id,
                after = ?Liveness::fence_after(self.lease_ttl),
                "no heartbeat succeeded in time: stopping this replica's agents and claiming nothing until one does (the others may take its jobs over)"
            );
        }
    }

    /// Queues again the running jobs of silent replicas, and forgets long-gone replicas.
    async fn take_over_expired(&self) {
        let (ttl, now) = (self.lease_ttl, self.clock.now());
        let result = self
            .store
            .call(move |c| {
                let expired = store::jobs::requeue_expired(c, ttl, now)?;
                store::replicas::prune(c, FORGET_AFTER)?;
                Ok(expired)
            })
            .await;
        match result {
            Ok(expired) => {
                if expired.requeued > 0 {
                    tracing::warn!(
                        requeued = expired.requeued,
                        "jobs of replicas silent for the lease time were put back in the queue"
                    );
                    self.metrics
                        .jobs_requeued_expired
                        .inc_by(expired.requeued as u64);
                    self.job_wakeup.notify_one();
                }
                if expired.ended > 0 {
                    tracing::info!(
                        ended = expired.ended,
                        "cancelled jobs of silent replicas were ended"
                    );
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot take over the jobs of silent replicas"),
        }
    }
}
