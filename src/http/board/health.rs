//! The health strip on every page: the reconciler, the inbox and outbox, the worker. Each
//! links to `/queue`, whose JSON has the details.

use serde::Serialize;

use super::cards::human;
use crate::clock::Timestamp;
use crate::http::AppState;
use crate::service::LoopState;
use crate::store::outbox::EffectStatus;
use crate::store::{self, JobStatus, StoreError, Trigger};

const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Clone, Serialize)]
pub(super) struct Health {
    pub(super) reconciler: ReconcilerHealth,
    pub(super) inbox: Backlog,
    pub(super) outbox: Backlog,
    pub(super) worker: WorkerHealth,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct ReconcilerHealth {
    /// The supervised loop runs.
    pub(super) running: bool,
    /// The kill switch (rules and overrides) lets it act.
    pub(super) enabled: bool,
    /// `12s ago`, or `None` before the first sweep.
    pub(super) last_sweep: Option<String>,
    /// Tasks the sweep moved on since midnight UTC.
    pub(super) unblocks_today: i64,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct Backlog {
    pub(super) pending: i64,
    pub(super) dead: i64,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct WorkerHealth {
    pub(super) running: bool,
    pub(super) jobs_running: i64,
    pub(super) jobs_queued: i64,
}

/// Reads the strip: one store call, the rest from memory.
pub(super) async fn read(state: &AppState, now: Timestamp) -> Result<Health, StoreError> {
    let midnight = Timestamp::from_millis(now.as_millis() - now.as_millis().rem_euclid(DAY_MS));
    let (inbox, outbox, jobs, unblocks) = state
        .store
        .call(move |c| {
            let inbox = store::inbox::backlog(c, crate::inbox::MAX_ATTEMPTS)?;
            let outbox = store::outbox::counts(c)?;
            let jobs = store::jobs::counts_by_status(c)?;
            let unblocks = store::tasks::moves_since(c, Trigger::Reconciler, midnight)?;
            Ok((inbox, outbox, jobs, unblocks))
        })
        .await?;
    let outbox_n = |wanted: &[EffectStatus]| -> i64 {
        outbox
            .iter()
            .filter(|(_, s, _)| wanted.contains(s))
            .map(|(_, _, n)| n)
            .sum()
    };
    let jobs_n = |wanted: JobStatus| -> i64 {
        jobs.iter()
            .filter(|(s, _)| *s == wanted)
            .map(|(_, n)| n)
            .sum()
    };
    let last = state.reconcile.lock().ok().and_then(|s| s.last_sweep_at);
    let switches = state
        .reconciler
        .overrides()
        .effective_switches(&state.rules.current());
    Ok(Health {
        reconciler: ReconcilerHealth {
            running: state.reconciler.is_running(),
            enabled: switches.reconcile_enabled,
            last_sweep: last.map(|t| format!("{} ago", human(now.since(t)))),
            unblocks_today: unblocks,
        },
        inbox: Backlog {
            pending: inbox.pending,
            dead: inbox.dead,
        },
        outbox: Backlog {
            pending: outbox_n(&[EffectStatus::Pending, EffectStatus::Sending]),
            dead: outbox_n(&[EffectStatus::Dead]),
        },
        worker: WorkerHealth {
            running: state.loops.worker.status().state == LoopState::Running,
            jobs_running: jobs_n(JobStatus::Running),
            jobs_queued: jobs_n(JobStatus::Queued),
        },
    })
}
