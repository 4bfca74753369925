//! The dispatchers: deliver what orch owes its peers, from the outbox (`store::outbox`).
//!
//! One dispatcher per peer (Plane, Telegram) drains the effects that are due, in order per
//! work item. A failure that may pass is retried with the inbox's growing delays
//! ([`crate::inbox::retry_delay`]) up to [`crate::inbox::MAX_ATTEMPTS`] attempts; one that
//! cannot pass (a 4xx) is given up at once. Either way it is then kept as `dead`, with its
//! last error, for `orch outbox retry`.
//!
//! Plane calls go through the Plane client's pacing, so effects, the reconciler's polling and
//! everything else orch asks Plane share one request budget. Before writing a state, the
//! dispatcher reads the item's current one: Plane has no conditional write, and a person's
//! cancel whose webhook was lost would otherwise be overwritten unseen; it is applied instead.
//!
//! Invariant: nothing else in orch calls Plane's write endpoints or Telegram.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::inbox::{MAX_ATTEMPTS, RETENTION, retry_delay};
use crate::integrations::{IntegrationError, Notifier, Tracker};
use crate::lease::Held;
use crate::metrics::{Metrics, PeerResultLabels};
use crate::pipeline::{Outcome, Pipeline};
use crate::policy::PlaneAction;
use crate::store::outbox::{self, Effect, EffectStatus, Outbound, Peer};
use crate::store::{Store, StoreError};

const BATCH: usize = 64;
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// A step boundary of one delivery, where a test injects a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Claimed (`sending` committed), the peer not called yet.
    Claimed,
    /// The peer answered; the outcome not recorded yet.
    Called,
}

/// Decides, at each step boundary of effect `id`, whether the dispatcher dies there.
pub type Failpoint = Arc<dyn Fn(i64, Step) -> bool + Send + Sync>;

/// Whether a delivery ran to its end or a failpoint stopped it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Go,
    /// Stopped at a failpoint, or past the lease's deadline.
    Crashed,
}

/// How an effect ended when it did not fail.
enum Delivered {
    Sent,
    /// Not needed any more, with why.
    Skipped(String),
}

/// Delivers one peer's effects.
pub struct Dispatcher {
    pub peer: Peer,
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub tracker: Arc<dyn Tracker>,
    pub notifier: Arc<dyn Notifier>,
    /// Applies a cancel found in Plane while about to write a state.
    pub pipeline: Pipeline,
    pub wakeup: Arc<Notify>,
    /// How often to look for due effects when nobody wakes the dispatcher.
    pub poll: Duration,
    /// Crash injection for tests: when it returns true the dispatcher stops at that step
    /// and leaves the effect exactly as a killed process would.
    pub failpoint: Option<Failpoint>,
    /// The peer's lease (`dispatch:<peer>`) when run by `orch serve`: no peer call is made
    /// past its local deadline. `None` (one-shot drains, tests): no deadline.
    pub lease: Option<Held>,
}

impl Dispatcher {
    /// Runs the dispatcher under `held`, the peer's lease: its writes fenced by it, no peer
    /// call past its local deadline. First the peer's effects a previous holder (a crashed
    /// process, a replica that lost the lease) left `sending` are recovered.
    pub async fn run_leased(mut self, held: Held) {
        self.store = held.fenced(&self.store);
        self.pipeline.store = held.fenced(&self.pipeline.store);
        let cancel = held.cancel.clone();
        self.lease = Some(held);
        let (peer, now) = (self.peer, self.clock.now());
        match self
            .store
            .call(move |c| outbox::recover_peer(c, peer, now))
            .await
        {
            Ok((0, 0)) => {}
            Ok((requeued, skipped)) => tracing::info!(
                peer = peer.as_str(),
                requeued,
                skipped,
                "effects interrupted by the previous dispatcher: Plane ones queued again, Telegram ones not resent"
            ),
            Err(e) => {
                // Fenced, or the database is away: stop; the lease runner tries again.
                tracing::warn!(peer = peer.as_str(), error = %e, "cannot recover the outbox; not dispatching");
                return;
            }
        }
        self.run(cancel).await;
    }

    /// False once the lease's local deadline passed: no more peer calls.
    fn may_call_peer(&self) -> bool {
        self.lease.as_ref().is_none_or(Held::within_deadline)
    }

    /// Runs until cancelled. A failing pass is logged and the loop goes on.
    pub async fn run(self, cancel: CancellationToken) {
        let mut last_prune: Option<tokio::time::Instant> = None;
        loop {
            if let Err(e) = self.drain(&cancel).await {
                tracing::error!(peer = self.peer.as_str(), error = %e, "outbox pass failed; will retry");
            }
            if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(tokio::time::Instant::now());
                self.prune().await;
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.wakeup.notified() => {}
                _ = tokio::time::sleep(self.poll) => {}
            }
        }
    }

    /// Delivers everything due now. Returns how many effects were handled.
    pub async fn drain(&self, cancel: &CancellationToken) -> Result<usize, StoreError> {
        let mut handled = 0;
        loop {
            let (peer, now) = (self.peer, self.clock.now());
            let batch = self
                .store
                .call(move |c| outbox::due(c, peer, now, BATCH))
                .await?;
            if batch.is_empty() {
                return Ok(handled);
            }
            for row in batch {
                if cancel.is_cancelled() {
                    return Ok(handled);
                }
                let flow = self.deliver(row).await?;
                handled += 1;
                if flow == Flow::Crashed {
                    return Ok(handled);
                }
            }
        }
    }

    fn crashes_at(&self, id: i64, step: Step) -> bool {
        self.failpoint.as_ref().is_some_and(|f| f(id, step))
    }

    async fn deliver(&self, row: Outbound) -> Result<Flow, StoreError> {
        let id = row.id;
        if matches!(row.effect, Effect::PlaneState { .. }) {
            let r = row.clone();
            if let Some(newer) = self
                .store
                .call(move |c| outbox::superseded_by(c, &r))
                .await?
            {
                let note = format!("superseded by effect {newer}");
                self.end(id, EffectStatus::Skipped, Some(note)).await?;
                return Ok(Flow::Go);
            }
        }
        if !self.may_call_peer() {
            return Ok(Flow::Crashed);
        }
        if !self.store.call(move |c| outbox::begin(c, id)).await? {
            return Ok(Flow::Go);
        }
        if self.crashes_at(id, Step::Claimed) || !self.may_call_peer() {
            // Left `sending`, as a crash would: the next holder's recovery decides.
            return Ok(Flow::Crashed);
        }
        let attempts = row.attempts + 1;
        let sent = self.send(&row).await;
        if self.crashes_at(id, Step::Called) {
            return Ok(Flow::Crashed);
        }
        match sent {
            Ok(Delivered::Sent) => self.end(id, EffectStatus::Sent, None).await,
            Ok(Delivered::Skipped(why)) => self.end(id, EffectStatus::Skipped, Some(why)).await,
            Err(e) if !e.is_transient() || attempts >= MAX_ATTEMPTS => {
                tracing::error!(id, peer = self.peer.as_str(), subject = %row.subject, error = %e, attempts, "effect failed for good; kept for an operator (orch outbox dead)");
                self.end(id, EffectStatus::Dead, Some(e.to_string())).await
            }
            Err(e) => {
                let delay = retry_delay(attempts - 1);
                tracing::warn!(id, peer = self.peer.as_str(), subject = %row.subject, error = %e, retry_in = ?delay, "effect failed; will retry");
                self.count("error");
                let (msg, at) = (e.to_string(), self.clock.now().plus(delay));
                self.store
                    .call(move |c| outbox::retry_at(c, id, &msg, at))
                    .await
            }
        }?;
        Ok(Flow::Go)
    }

    async fn end(
        &self,
        id: i64,
        status: EffectStatus,
        note: Option<String>,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        self.store
            .call(move |c| outbox::end(c, id, status, note.as_deref(), now))
            .await?;
        self.count(status.as_str());
        Ok(())
    }

    async fn send(&self, row: &Outbound) -> Result<Delivered, IntegrationError> {
        match &row.effect {
            Effect::PlaneState {
                project,
                issue,
                state,
            } => self.plane_state(&row.subject, project, issue, state).await,
            Effect::PlaneComment {
                project,
                issue,
                html,
                external_id,
            } => {
                self.tracker
                    .add_comment(project, issue, html, external_id)
                    .await?;
                Ok(Delivered::Sent)
            }
            Effect::Telegram { text } => {
                self.notifier.send(text).await?;
                Ok(Delivered::Sent)
            }
        }
    }

    async fn plane_state(
        &self,
        subject: &str,
        project: &str,
        issue: &str,
        state: &str,
    ) -> Result<Delivered, IntegrationError> {
        // The newest state orch set is still this one (review and testing both map to In
        // Progress): nothing to write. A person's change in between is an input, handled by
        // the Plane webhook and the sweep, and the level sync corrects anything lost.
        let s = subject.to_string();
        if self
            .store
            .call(move |c| outbox::last_state_sent(c, &s))
            .await
            .ok()
            .flatten()
            .is_some_and(|last| last == state)
        {
            return Ok(Delivered::Skipped(format!("{state} is already set")));
        }
        let rules = self.pipeline.rules.current();
        if rules.cancel_stage().is_some()
            && let Some(current) = self.tracker.work_item_state(project, issue).await?
        {
            let group = Some(current.group.as_str()).filter(|g| !g.is_empty());
            if rules.inbound_plane_action(&current.name, group) == Some(PlaneAction::Cancel) {
                self.apply_found_cancel(subject, &current.name).await;
                return Ok(Delivered::Skipped(format!(
                    "the work item was cancelled in Plane ({})",
                    current.name
                )));
            }
        }
        self.tracker
            .set_state_by_name(project, issue, state)
            .await?;
        Ok(Delivered::Sent)
    }

    /// A person cancelled the item and its webhook was lost: apply the cancel (as the sweep
    /// would: it replays a lost webhook) instead of overwriting it.
    async fn apply_found_cancel(&self, work_item: &str, state: &str) {
        tracing::info!(
            work_item,
            state,
            "the work item was cancelled in Plane (lost webhook); cancelling instead of overwriting its state"
        );
        match self.pipeline.cancel_found_in_plane(work_item).await {
            Ok(Outcome::Cancelled { .. }) => {
                self.metrics.reconcile_replays.inc();
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(work_item, error = %e, "could not cancel the task"),
        }
    }

    async fn prune(&self) {
        let before = self.clock.now().minus(RETENTION);
        match self.store.call(move |c| outbox::prune(c, before)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "pruned delivered effects older than 7 days"),
            Err(e) => tracing::warn!(error = %e, "could not prune the outbox; will retry"),
        }
    }

    fn count(&self, result: &str) {
        self.metrics
            .outbox_processed
            .get_or_create(&PeerResultLabels {
                peer: self.peer.as_str().to_string(),
                result: result.to_string(),
            })
            .inc();
    }
}

/// Effects of every peer left `sending` by a crash (see [`outbox::recover_peer`]); `orch serve`
/// recovers each peer's when its dispatcher takes the peer's lease instead.
#[cfg_attr(orch_audit, allow(dead_code))]
pub async fn recover(store: &Store, clock: &dyn Clock) -> Result<(), StoreError> {
    let now = clock.now();
    let (requeued, skipped) = store
        .call(move |c| {
            c.write(|tx| {
                let mut total = (0, 0);
                for peer in outbox::Peer::ALL {
                    let (r, s) = outbox::recover_peer(tx, peer, now)?;
                    total = (total.0 + r, total.1 + s);
                }
                Ok(total)
            })
        })
        .await?;
    if requeued + skipped > 0 {
        tracing::info!(
            requeued,
            skipped,
            "effects interrupted by the last process: Plane ones queued again, Telegram ones not resent"
        );
    }
    Ok(())
}
