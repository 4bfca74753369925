//! The inbox processor: applies stored webhook deliveries in arrival order.
//!
//! A delivery is acknowledged once it is on disk, so anything not yet processed survives a
//! crash and is picked up here after a restart. A delivery whose handling fails for a reason
//! that may pass (a peer or the database unavailable) is retried with growing delays
//! ([`RETRY_DELAYS`]) up to [`MAX_ATTEMPTS`] times; one that is wrong in itself is not
//! retried. Either way it is then kept, with its error, for an operator, and it never blocks
//! the deliveries behind it.
//!
//! Deliveries about different things (work items, branches; [`Subject`]) are applied side by
//! side, at most [`CONCURRENCY`] at once, and those about one thing in arrival order, so a
//! slow gate check for one task never holds another's webhook. No handler calls Plane or
//! Telegram (what a change owes them is an outbox row), and each delivery gets at most
//! [`DEADLINE`] (a Gitea gate check that hangs is retried later, not waited on).

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::metrics::{Metrics, ResultLabels};
use crate::pipeline::subjects::Subject;
use crate::store::{InboxItem, Store, StoreError, inbox};

pub const MAX_ATTEMPTS: i64 = 5;
/// Deliveries about different subjects applied at once.
pub const CONCURRENCY: usize = 4;
/// The most one delivery may take; past it the attempt fails and is retried later.
pub const DEADLINE: Duration = Duration::from_secs(30);
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
/// How many pending deliveries one look at the inbox considers.
const LOOKAHEAD: usize = 256;

/// Why a delivery could not be applied.
#[derive(Debug, Clone)]
pub struct Failure {
    pub message: String,
    /// Retrying cannot help (e.g. a payload missing the fields its event needs).
    pub permanent: bool,
}

pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), Failure>> + Send>>;

/// Applies one delivery, writing through the given store (fenced by the lane's lease when
/// lanes are leased). An `Err` is recorded on the delivery (and retried later unless it is
/// permanent).
pub type Handler = Arc<dyn Fn(InboxItem, Store) -> HandlerFuture + Send + Sync>;

#[derive(Clone)]
pub struct Processor {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub wakeup: Arc<Notify>,
    pub handler: Handler,
    /// How often to look for work when nobody wakes us (failed deliveries being retried).
    pub poll: Duration,
    /// Pruning runs only while this process holds this lease (`orch serve`: `sweep`), its
    /// delete fenced by it; `None`: always, unfenced.
    pub prune_under: Option<Arc<crate::lease::Lease>>,
    /// PostgreSQL (replicas): each lane runs under its subject's lease, skipped while another
    /// replica holds it. `None` (SQLite: one process): the in-process lanes suffice.
    pub lane_leases: Option<crate::lease::LaneLeases>,
}

impl Processor {
    /// The store to prune through now, if this process may prune.
    fn prune_store(&self) -> Option<Store> {
        match &self.prune_under {
            None => Some(self.store.clone()),
            Some(lease) => lease.held().map(|h| h.fenced(&self.store)),
        }
    }

    /// Runs until cancelled.
    pub async fn run(self, cancel: CancellationToken) {
        let mut last_prune: Option<tokio::time::Instant> = None;
        loop {
            if let Err(e) = self.drain(&cancel).await {
                tracing::error!(error = %e, "inbox pass failed; will retry");
            }
            if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY)
                && let Some(store) = self.prune_store()
            {
                last_prune = Some(tokio::time::Instant::now());
                let before = self.clock.now().minus(RETENTION);
                match store
                    .call(move |c| {
                        // The inbox lanes' released lease rows (PostgreSQL), after an hour.
                        crate::store::leases::prune_lanes(c, 3_600_000)?;
                        inbox::prune_processed(c, before)
                    })
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

    /// Processes everything pending now, and what arrives meanwhile; returns when nothing is
    /// pending or in flight. Returns how many deliveries were handled.
    ///
    /// Lanes (one per subject) run side by side; a new arrival about another subject starts
    /// at once rather than waiting for a slow lane, and one about a subject in flight waits
    /// for that lane, so a subject's deliveries stay in arrival order.
    pub async fn drain(&self, cancel: &CancellationToken) -> Result<usize, StoreError> {
        let mut handled = 0;
        let mut busy_keys: HashSet<String> = HashSet::new();
        let mut busy_ids: HashSet<i64> = HashSet::new();
        let mut running = tokio::task::JoinSet::new();
        let mut failed = None;
        loop {
            if !cancel.is_cancelled() && failed.is_none() && running.len() < CONCURRENCY {
                let now = self.clock.now();
                let pending = self
                    .store
                    .call(move |c| inbox::pending(c, MAX_ATTEMPTS, 0, now, LOOKAHEAD))
                    .await?;
                for (key, lane) in lanes(pending, &busy_keys, &busy_ids) {
                    if running.len() >= CONCURRENCY {
                        break;
                    }
                    busy_keys.insert(key.clone());
                    busy_ids.extend(lane.iter().map(|d| d.id));
                    let (me, cancel) = (self.clone(), cancel.clone());
                    running.spawn(async move {
                        let ids: Vec<i64> = lane.iter().map(|d| d.id).collect();
                        let ran = me.lane(&key, lane, &cancel).await;
                        (key, ids, ran)
                    });
                }
            }
            if running.is_empty() {
                return match failed {
                    Some(e) => Err(e),
                    None => Ok(handled),
                };
            }
            tokio::select! {
                joined = running.join_next() => match joined {
                    Some(Ok((key, ids, ran))) => {
                        for id in ids {
                            busy_ids.remove(&id);
                        }
                        // A lane another replica holds stays out of this pass (the next
                        // pass, a wake-up or a poll later, tries it again).
                        if let Some((done, result)) = ran {
                            busy_keys.remove(&key);
                            handled += done;
                            if let Err(e) = result {
                                failed = Some(e);
                            }
                        }
                    }
                    Some(Err(e)) => failed = Some(StoreError::Join(e.to_string())),
                    None => {}
                },
                // A new arrival: start it beside the lanes in flight.
                _ = self.wakeup.notified() => {}
            }
        }
    }

    /// One lane: its deliveries in order, each applied until one fails (the rest wait for
    /// its retry). With lane leases, only under the subject's lease (skipped while another
    /// replica holds it), through a store fenced by it, and only the deliveries still
    /// pending once it is held (another replica may have applied some meanwhile). `None`:
    /// another replica holds the lane.
    async fn lane(
        &self,
        key: &str,
        lane: Vec<InboxItem>,
        cancel: &CancellationToken,
    ) -> Option<(usize, Result<(), StoreError>)> {
        let Some(leases) = &self.lane_leases else {
            return Some(self.apply_all(lane, &self.store, cancel).await);
        };
        leases
            .lease(key)
            .run_once(cancel, |held| async move {
                let now = self.clock.now();
                let pending = self
                    .store
                    .call(move |c| inbox::pending(c, MAX_ATTEMPTS, 0, now, LOOKAHEAD))
                    .await;
                let still: HashSet<i64> = match pending {
                    Ok(p) => p.iter().map(|d| d.id).collect(),
                    Err(e) => return (0, Err(e)),
                };
                let lane = lane.into_iter().filter(|d| still.contains(&d.id)).collect();
                self.apply_all(lane, &held.fenced(&self.store), &held.cancel)
                    .await
            })
            .await
    }

    async fn apply_all(
        &self,
        lane: Vec<InboxItem>,
        store: &Store,
        cancel: &CancellationToken,
    ) -> (usize, Result<(), StoreError>) {
        let mut done = 0;
        for item in lane {
            if cancel.is_cancelled() {
                break;
            }
            if let Err(e) = self.apply(item, store).await {
                return (done, Err(e));
            }
            done += 1;
        }
        (done, Ok(()))
    }

    /// Applies one delivery within [`DEADLINE`] and records how it went.
    async fn apply(&self, item: InboxItem, store: &Store) -> Result<(), StoreError> {
        let id = item.id;
        let attempts = item.attempts;
        let source = item.source.clone();
        let event = item.event.clone();
        let handled = (self.handler)(item, store.clone());
        let result = match tokio::time::timeout(DEADLINE, handled).await {
            Ok(r) => r,
            Err(_) => Err(Failure {
                message: format!("not applied within {DEADLINE:?}"),
                permanent: false,
            }),
        };
        match result {
            Ok(()) => {
                let now = self.clock.now();
                store
                    .call(move |c| inbox::mark_processed(c, id, now))
                    .await?;
                self.count("ok");
            }
            Err(f) if f.permanent || attempts + 1 >= MAX_ATTEMPTS => {
                tracing::error!(id, source, event, error = %f.message, attempts = attempts + 1, "webhook delivery failed for good; kept for an operator");
                store
                    .call(move |c| inbox::mark_dead(c, id, &f.message, MAX_ATTEMPTS))
                    .await?;
                self.count("dead");
            }
            Err(f) => {
                let delay = retry_delay(attempts);
                tracing::warn!(id, source, event, error = %f.message, retry_in = ?delay, "webhook delivery failed; will retry");
                let retry_at = self.clock.now().plus(delay);
                store
                    .call(move |c| inbox::mark_failed(c, id, &f.message, retry_at))
                    .await?;
                self.count("error");
            }
        }
        Ok(())
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

/// The wait before the next attempt after `attempts` failed ones: [`RETRY_DELAYS`], then its
/// last entry. Shared by the inbox and the outbox.
pub fn retry_delay(attempts: i64) -> Duration {
    RETRY_DELAYS
        .get(usize::try_from(attempts).unwrap_or(usize::MAX))
        .copied()
        .unwrap_or(RETRY_DELAYS[RETRY_DELAYS.len() - 1])
}

/// Groups `pending` deliveries (in arrival order) into lanes by subject, leaving out those in
/// flight and every delivery about a subject in flight (it waits for that lane).
fn lanes(
    pending: Vec<InboxItem>,
    busy_keys: &HashSet<String>,
    busy_ids: &HashSet<i64>,
) -> Vec<(String, Vec<InboxItem>)> {
    let mut lanes: Vec<(String, Vec<InboxItem>)> = Vec::new();
    for item in pending {
        if busy_ids.contains(&item.id) {
            continue;
        }
        let key = Subject::of(&item).order_key();
        if busy_keys.contains(&key) {
            continue;
        }
        match lanes.iter_mut().find(|(k, _)| *k == key) {
            Some((_, lane)) => lane.push(item),
            None => lanes.push((key, vec![item])),
        }
    }
    lanes
}
