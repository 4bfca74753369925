//! The lease runner: work that one replica at a time may do runs only while this process
//! holds its lease (`store::leases`; `docs/design/postgres-replicas.md` (f)).
//!
//! [`Lease::run`] tries to acquire every second (± 20 % jitter; at once on the first try, so a
//! free lease is taken at startup without delay). Once it holds the lease it runs the work with
//! a [`Held`]: a fence for a fenced store ([`Store::fenced`]), a cancel token, and the local
//! deadline for calls the database cannot fence. It renews every `ttl / 3`. The work is
//! cancelled when a renewal finds the lease gone, when no renewal succeeded by the local
//! deadline, when any fenced write fails its check, on shutdown, or when the lease it runs
//! under (`dispatch:plane` under `sweep`) ends. On every end the runner waits for the work to
//! stop and then releases the lease, so another replica takes it over at once.
//!
//! The local deadline is the start of the last successful renewal + `ttl − ttl/5`: before it,
//! the lease is still valid by the database's clock, whatever this host's clock says.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::replica::ReplicaId;
use crate::store::Store;
use crate::store::leases::{self, Fence};

/// How often a replica that does not hold a lease tries to acquire it.
const ACQUIRE_EVERY: Duration = Duration::from_secs(1);

/// The lease held now, as the work under it sees it.
#[derive(Clone, Debug)]
pub struct Held {
    pub fence: Arc<Fence>,
    /// Cancelled when the work must stop (lost, released, shutdown).
    pub cancel: CancellationToken,
    deadline: Arc<Mutex<Instant>>,
}

impl Held {
    /// `store` with its writes fenced by this lease.
    pub fn fenced(&self, store: &Store) -> Store {
        store.fenced(Arc::clone(&self.fence))
    }

    /// True while the lease is certainly still valid: check before each call to a peer,
    /// which cannot check a token.
    pub fn within_deadline(&self) -> bool {
        !self.cancel.is_cancelled()
            && Instant::now() < *self.deadline.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One named lease this process contends for.
pub struct Lease {
    name: String,
    store: Store,
    holder: ReplicaId,
    ttl: Duration,
    metrics: Arc<Metrics>,
    /// SQLite: the first acquisition takes the lease over from a previous incarnation.
    take_over: AtomicBool,
    /// Counted in the `orch_lease_*` metrics (not the many short inbox lanes).
    counted: bool,
    held: watch::Sender<Option<Held>>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("name", &self.name)
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// `store` is the unfenced store. On SQLite (one serving process per database) the first
    /// acquisition takes over whatever a previous incarnation held, so a restart after a crash
    /// does not wait a whole `ttl`; on PostgreSQL it waits for expiry like any replica.
    pub fn new(
        name: &str,
        store: Store,
        holder: ReplicaId,
        ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> Arc<Lease> {
        let take_over = AtomicBool::new(!store.is_shared());
        let lease = Arc::new(Lease {
            name: name.to_string(),
            store,
            holder,
            ttl,
            metrics,
            take_over,
            counted: true,
            held: watch::channel(None).0,
        });
        // Every replica exports the gauge, 0 until it holds the lease.
        lease.set_held(false);
        lease
    }

    /// Acquires the lease if it is free (or expired), runs `work` under it (renewing it),
    /// and releases it. `None`: another replica holds it (or the database did not answer).
    pub async fn run_once<R, W, Fut>(&self, shutdown: &CancellationToken, work: W) -> Option<R>
    where
        W: FnOnce(Held) -> Fut,
        Fut: Future<Output = R>,
    {
        let started = Instant::now();
        match self.acquire().await {
            Ok(Some(token)) => {
                let parent = CancellationToken::new();
                self.hold(token, started, shutdown, &parent, work).await
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(lease = %self.name, error = %e, "cannot acquire the lease; will retry");
                None
            }
        }
    }

    /// The lease as held now by this process, if it is.
    pub fn held(&self) -> Option<Held> {
        self.held.borrow().clone()
    }

    /// Contends for the lease until `shutdown`, running `work` each time it is acquired (and,
    /// with `under`, only while this process holds that lease too). Never returns an error:
    /// a failing acquisition is logged and tried again.
    pub async fn run<F, Fut>(
        self: Arc<Self>,
        shutdown: CancellationToken,
        under: Option<Arc<Lease>>,
        work: F,
    ) where
        F: Fn(Held) -> Fut,
        Fut: Future<Output = ()>,
    {
        loop {
            let parent = match &under {
                Some(p) => match p.wait_held(&shutdown).await {
                    Some(h) => Some(h.cancel),
                    None => return,
                },
                None => None,
            };
            let started = Instant::now();
            match self.acquire().await {
                Ok(Some(token)) => {
                    let parent = parent.unwrap_or_default();
                    self.hold(token, started, &shutdown, &parent, &work).await;
                    if shutdown.is_cancelled() {
                        return;
                    }
                    // Lost, or the work ended: try again after the usual pause, so work
                    // that ends at once does not spin.
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(lease = %self.name, error = %e, "cannot acquire the lease; will retry");
                }
            }
            let jitter = ACQUIRE_EVERY.mul_f64(rand::random_range(0.8..1.2));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(jitter) => {}
            }
        }
    }

    /// Waits until this process holds the lease; `None` on shutdown.
    async fn wait_held(&self, shutdown: &CancellationToken) -> Option<Held> {
        let mut rx = self.held.subscribe();
        tokio::select! {
            _ = shutdown.cancelled() => None,
            // Not a holding that already ends (its work winding down).
            held = rx.wait_for(|h| h.as_ref().is_some_and(|h| !h.cancel.is_cancelled())) => {
                held.ok().and_then(|h| h.clone())
            }
        }
    }

    async fn acquire(&self) -> Result<Option<i64>, crate::store::StoreError> {
        let take_over = self.take_over.load(Ordering::Relaxed);
        let (name, holder, ttl) = (self.name.clone(), self.holder.to_string(), self.ttl_ms());
        let got = self
            .store
            .call(move |c| leases::acquire(c, &name, &holder, ttl, take_over))
            .await?;
        self.take_over.store(false, Ordering::Relaxed);
        Ok(got)
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX)
    }

    fn deadline_after(&self, renewal_start: Instant) -> Instant {
        renewal_start + self.ttl - self.ttl / 5
    }

    /// Runs `work` while the lease is held, renewing it; releases it when the work ended.
    /// Returns what the work returned, unless it was cancelled before it ended.
    async fn hold<R, W, Fut>(
        &self,
        token: i64,
        started: Instant,
        shutdown: &CancellationToken,
        parent: &CancellationToken,
        work: W,
    ) -> Option<R>
    where
        W: FnOnce(Held) -> Fut,
        Fut: Future<Output = R>,
    {
        let fence = Arc::new(Fence::new(&self.name, self.holder.as_str(), token));
        let held = Held {
            fence: Arc::clone(&fence),
            cancel: shutdown.child_token(),
            deadline: Arc::new(Mutex::new(self.deadline_after(started))),
        };
        if self.counted {
            tracing::info!(lease = %self.name, token, "lease acquired");
        }
        self.count_acquired();
        self.held.send_replace(Some(held.clone()));
        let mut lost = false;
        let mut next_renewal = started + self.ttl / 3;
        let job = work(held.clone());
        tokio::pin!(job);
        let out = loop {
            let deadline = *held.deadline.lock().unwrap_or_else(|p| p.into_inner());
            let active = !held.cancel.is_cancelled();
            tokio::select! {
                out = &mut job => break out,
                _ = fence.lost.cancelled(), if active => {
                    tracing::warn!(lease = %self.name, token, "a fenced write found the lease gone; stopping its work");
                    lost = true;
                    held.cancel.cancel();
                }
                _ = parent.cancelled(), if active => held.cancel.cancel(),
                _ = tokio::time::sleep_until(deadline), if active => {
                    tracing::warn!(lease = %self.name, token, "no renewal succeeded in time; stopping its work");
                    lost = true;
                    held.cancel.cancel();
                }
                _ = tokio::time::sleep_until(next_renewal), if active => {
                    let start = Instant::now();
                    match tokio::time::timeout(deadline.saturating_duration_since(start), self.renew(token)).await {
                        Ok(Ok(true)) => {
                            *held.deadline.lock().unwrap_or_else(|p| p.into_inner()) = self.deadline_after(start);
                            next_renewal = start + self.ttl / 3;
                        }
                        Ok(Ok(false)) => {
                            tracing::warn!(lease = %self.name, token, "the lease was lost (expired or taken over); stopping its work");
                            lost = true;
                            held.cancel.cancel();
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(lease = %self.name, error = %e, "cannot renew the lease; will retry until its deadline");
                            next_renewal = Instant::now() + (self.ttl / 10).min(Duration::from_secs(1));
                        }
                        // The deadline passed: the branch above fires next.
                        Err(_) => {}
                    }
                }
            }
        };
        held.cancel.cancel();
        self.held.send_replace(None);
        self.set_held(false);
        if lost && self.counted {
            self.metrics
                .lease_lost
                .get_or_create(&self.labels())
                .inc();
        }
        // Hands over at once; harmless when the lease is gone already.
        let (name, holder) = (self.name.clone(), self.holder.to_string());
        match self
            .store
            .call(move |c| leases::release(c, &name, &holder, token))
            .await
        {
            Ok(true) if self.counted => tracing::info!(lease = %self.name, token, "lease released"),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(lease = %self.name, error = %e, "cannot release the lease; it expires on its own")
            }
        }
        Some(out)
    }

    async fn renew(&self, token: i64) -> Result<bool, crate::store::StoreError> {
        let (name, holder, ttl) = (self.name.clone(), self.holder.to_string(), self.ttl_ms());
        let renewed = self
            .store
            .call(move |c| leases::renew(c, &name, &holder, token, ttl))
            .await?;
        Ok(renewed.is_some())
    }

    fn labels(&self) -> crate::metrics::LeaseLabels {
        crate::metrics::LeaseLabels {
            lease: self.name.clone(),
        }
    }

    fn count_acquired(&self) {
        if !self.counted {
            return;
        }
        self.metrics
            .lease_acquired
            .get_or_create(&self.labels())
            .inc();
        self.set_held(true);
    }

    fn set_held(&self, held: bool) {
        if !self.counted {
            return;
        }
        self.metrics
            .lease_held
            .get_or_create(&self.labels())
            .set(i64::from(held));
    }
}

/// The leases of one `orch serve` process.
#[derive(Debug)]
pub struct Leases {
    /// The reconciler's sweep and the pruning.
    pub sweep: Arc<Lease>,
    /// Plane's dispatcher; taken only under `sweep`, so Plane has one request budget.
    pub dispatch_plane: Arc<Lease>,
    pub dispatch_telegram: Arc<Lease>,
}

impl Leases {
    pub fn new(
        store: &Store,
        holder: &ReplicaId,
        ttl: Duration,
        metrics: &Arc<Metrics>,
    ) -> Leases {
        let lease = |name: &str| {
            Lease::new(
                name,
                store.clone(),
                holder.clone(),
                ttl,
                Arc::clone(metrics),
            )
        };
        Leases {
            sweep: lease("sweep"),
            dispatch_plane: lease("dispatch:plane"),
            dispatch_telegram: lease("dispatch:telegram"),
        }
    }
}

/// The inbox's lanes across replicas (PostgreSQL): one lease per subject (`inbox:<order
/// key>`), held while one replica applies that subject's deliveries, so they are applied by
/// one replica at a time, in arrival order. Not counted in the lease metrics (they are many
/// and short).
#[derive(Clone, Debug)]
pub struct LaneLeases {
    pub store: Store,
    pub holder: ReplicaId,
    pub ttl: Duration,
    pub metrics: Arc<Metrics>,
}

impl LaneLeases {
    /// The lease of the lane of `key` (a subject's order key).
    pub fn lease(&self, key: &str) -> Lease {
        Lease {
            name: format!("inbox:{key}"),
            store: self.store.clone(),
            holder: self.holder.clone(),
            ttl: self.ttl,
            metrics: Arc::clone(&self.metrics),
            take_over: AtomicBool::new(false),
            counted: false,
            held: watch::channel(None).0,
        }
    }
}
