//! Supervised lifecycle of a long-running background loop (the reconciler, the inbox
//! processor, the worker and the outbox dispatchers).
//!
//! Why supervised: a loop's body is never-raise by design, but a bug that panics, or a loop
//! that returns while nobody asked it to stop, would otherwise end it silently, and the
//! service would go on answering `/health` while nothing sweeps, processes or dispatches.
//! The supervisor takes a fresh future from a factory for every start, logs and counts each
//! crash or unexpected end (`orch_background_restarts_total{loop}`), and starts the loop again
//! after a growing delay ([`RestartPolicy`]), so a loop that fails at once does not spin. Its
//! real state ([`LoopStatus`]) is what `/queue`, `/ready` and the systemd watchdog read.
//!
//! Start is idempotent — a second `start` while the loop is supervised does not spawn another
//! — and `stop` cancels cooperatively (a stop is never counted as a restart), waits up to a
//! timeout and then aborts, so shutdown is prompt even in the middle of a unit of work or of a
//! restart delay.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::metrics::Metrics;

/// How long the supervisor waits before starting a failed loop again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// The delay after a first failure (or after a healthy run).
    pub first_delay: Duration,
    /// Delays double up to this, so a loop that keeps failing costs little.
    pub max_delay: Duration,
    /// A run that lasted this long was healthy: its failure starts the delays over.
    pub healthy_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            healthy_after: Duration::from_secs(60),
        }
    }
}

impl RestartPolicy {
    /// The delay before the next start, given the delay before the failed run (`None`: it was
    /// the first start) and how long that run lasted. Pure, so the schedule is tested without
    /// waiting for it.
    pub fn next_delay(&self, previous: Option<Duration>, ran_for: Duration) -> Duration {
        match previous {
            Some(prev) if ran_for < self.healthy_after => prev
                .saturating_mul(2)
                .clamp(self.first_delay, self.max_delay),
            _ => self.first_delay.min(self.max_delay),
        }
    }
}

/// Where a supervised loop is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoopState {
    Running,
    /// It crashed or ended on its own; the supervisor starts it again after a delay.
    Restarting,
    /// Never started, or stopped on purpose (shutdown).
    Stopped,
}

/// A loop's state as `/queue` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LoopStatus {
    pub state: LoopState,
    /// How many times it was started again after a crash or an unexpected end.
    pub restarts: u64,
    /// Why it last ended unexpectedly; kept after it runs again, for the operator.
    pub last_error: Option<String>,
}

impl LoopStatus {
    const STOPPED: LoopStatus = LoopStatus {
        state: LoopState::Stopped,
        restarts: 0,
        last_error: None,
    };
}

#[derive(Debug)]
pub struct Background {
    name: &'static str,
    restarts: Counter,
    policy: Arc<Mutex<RestartPolicy>>,
    status: Arc<Mutex<LoopStatus>>,
    supervisor: Mutex<Option<(CancellationToken, JoinHandle<()>)>>,
}

impl Background {
    /// A stopped loop called `name`, whose restarts are counted in `metrics`.
    pub fn new(name: &'static str, metrics: &Metrics) -> Self {
        Background {
            name,
            restarts: metrics.background_restarts(name),
            policy: Arc::new(Mutex::new(RestartPolicy::default())),
            status: Arc::new(Mutex::new(LoopStatus::STOPPED)),
            supervisor: Mutex::new(None),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Changes the restart delays from the next failure on (tests shorten or lengthen them).
    #[cfg_attr(orch_audit, allow(dead_code))]
    pub fn set_policy(&self, policy: RestartPolicy) {
        *lock(&self.policy) = policy;
    }

    /// Supervises `factory`: each start runs `factory(cancel)` until it ends. Returns true
    /// when it spawned; false when the loop is already supervised.
    pub fn start<F, Fut>(&self, factory: F) -> bool
    where
        F: Fn(CancellationToken) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut supervisor = lock(&self.supervisor);
        if let Some((_, handle)) = supervisor.as_ref()
            && !handle.is_finished()
        {
            return false;
        }
        let cancel = CancellationToken::new();
        set_state(&self.status, LoopState::Running);
        let run = Supervisor {
            name: self.name,
            restarts: self.restarts.clone(),
            policy: Arc::clone(&self.policy),
            status: Arc::clone(&self.status),
            cancel: cancel.clone(),
        };
        let handle = tokio::spawn(run.supervise(factory));
        tracing::info!(service = self.name, "started");
        *supervisor = Some((cancel, handle));
        true
    }

    /// True while the loop itself runs (not while it waits to be restarted).
    pub fn is_running(&self) -> bool {
        self.status().state == LoopState::Running
    }

    pub fn status(&self) -> LoopStatus {
        lock(&self.status).clone()
    }

    /// Asks the loop to stop and waits up to `timeout`; aborts it after that. Returns true when
    /// it stopped on its own. A loop waiting to be restarted stops at once.
    pub async fn stop(&self, timeout: Duration) -> bool {
        let taken = lock(&self.supervisor).take();
        let Some((cancel, mut handle)) = taken else {
            return true;
        };
        cancel.cancel();
        let stopped = match tokio::time::timeout(timeout, &mut handle).await {
            Ok(_) => {
                tracing::info!(service = self.name, "stopped");
                true
            }
            Err(_) => {
                // Aborting the supervisor drops its handle on the loop, which aborts the loop.
                handle.abort();
                tracing::warn!(
                    service = self.name,
                    ?timeout,
                    "did not stop in time; aborted"
                );
                false
            }
        };
        set_state(&self.status, LoopState::Stopped);
        stopped
    }
}

/// The task that runs one loop and starts it again when it fails.
struct Supervisor {
    name: &'static str,
    restarts: Counter,
    policy: Arc<Mutex<RestartPolicy>>,
    status: Arc<Mutex<LoopStatus>>,
    cancel: CancellationToken,
}

impl Supervisor {
    async fn supervise<F, Fut>(self, factory: F)
    where
        F: Fn(CancellationToken) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut delay: Option<Duration> = None;
        loop {
            set_state(&self.status, LoopState::Running);
            let started = Instant::now();
            // Its own task, so a panic is caught as a join error; aborted if we are.
            let run = AbortOnDropHandle::new(tokio::spawn(factory(self.cancel.clone())));
            let cause = match run.await {
                _ if self.cancel.is_cancelled() => break,
                Ok(()) => "ended while not asked to stop".to_string(),
                Err(e) if e.is_panic() => format!("panicked: {}", panic_message(e.into_panic())),
                Err(e) => format!("was cancelled by the runtime: {e}"),
            };
            let policy = *lock(&self.policy);
            let next = policy.next_delay(delay, started.elapsed());
            delay = Some(next);
            self.restarts.inc();
            let restarts = {
                let mut s = lock(&self.status);
                s.state = LoopState::Restarting;
                s.restarts += 1;
                s.last_error = Some(cause.clone());
                s.restarts
            };
            tracing::error!(
                service = self.name,
                cause = %cause,
                restarts,
                delay = ?next,
                "background loop failed; restarting it after a delay"
            );
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                _ = tokio::time::sleep(next) => {}
            }
        }
        set_state(&self.status, LoopState::Stopped);
    }
}

/// The text a panic carried (`panic!("…")` gives a `&str` or a `String`).
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload
            .downcast_ref::<&str>()
            .map_or_else(|| "(no message)".to_string(), |s| (*s).to_string()),
    }
}

/// A panic inside a loop never happens while one of these is held, but a poisoned lock must
/// not take the supervisor down with it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn set_state(status: &Mutex<LoopStatus>, state: LoopState) {
    lock(status).state = state;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn fast() -> RestartPolicy {
        RestartPolicy {
            first_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(40),
            healthy_after: Duration::from_secs(60),
        }
    }

    async fn until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for: {what}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn start_is_idempotent_and_stop_is_prompt() {
        let metrics = Metrics::default();
        let bg = Background::new("test", &metrics);
        let spawned = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let spawned = spawned.clone();
            bg.start(move |cancel| {
                let spawned = spawned.clone();
                async move {
                    spawned.fetch_add(1, Ordering::SeqCst);
                    cancel.cancelled().await;
                }
            });
        }
        assert!(bg.is_running());
        assert!(bg.stop(Duration::from_secs(5)).await);
        assert_eq!(bg.status(), LoopStatus::STOPPED, "a stop is not a restart");
        assert_eq!(spawned.load(Ordering::SeqCst), 1);
        assert_eq!(metrics.background_restarts("test").get(), 0);
    }

    #[tokio::test]
    async fn a_loop_that_ignores_cancel_is_aborted() {
        let bg = Background::new("stubborn", &Metrics::default());
        bg.start(|_cancel| async move { std::future::pending::<()>().await });
        assert!(!bg.stop(Duration::from_millis(50)).await);
        assert!(!bg.is_running());
    }

    #[tokio::test]
    async fn a_loop_whose_first_run_panics_is_restarted_and_counted() {
        let metrics = Metrics::default();
        let bg = Background::new("fragile", &metrics);
        bg.set_policy(fast());
        let starts = Arc::new(AtomicUsize::new(0));
        let s = starts.clone();
        bg.start(move |cancel| {
            let n = s.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    panic!("boom in the first run");
                }
                cancel.cancelled().await;
            }
        });
        until("second start", || starts.load(Ordering::SeqCst) == 2).await;
        until("running again", || bg.is_running()).await;
        let status = bg.status();
        assert_eq!(status.restarts, 1);
        assert_eq!(
            status.last_error.as_deref(),
            Some("panicked: boom in the first run")
        );
        assert_eq!(metrics.background_restarts("fragile").get(), 1);
        assert!(bg.stop(Duration::from_secs(5)).await);
        assert_eq!(bg.status().state, LoopState::Stopped);
        assert_eq!(bg.status().restarts, 1, "the stop itself is not counted");
    }

    #[tokio::test]
    async fn a_loop_that_returns_on_its_own_is_restarted() {
        let metrics = Metrics::default();
        let bg = Background::new("quitter", &metrics);
        bg.set_policy(fast());
        let starts = Arc::new(AtomicUsize::new(0));
        let s = starts.clone();
        bg.start(move |cancel| {
            let n = s.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    return;
                }
                cancel.cancelled().await;
            }
        });
        until("third start", || starts.load(Ordering::SeqCst) == 3).await;
        until("running again", || bg.is_running()).await;
        assert_eq!(bg.status().restarts, 2);
        assert_eq!(
            bg.status().last_error.as_deref(),
            Some("ended while not asked to stop")
        );
        assert_eq!(metrics.background_restarts("quitter").get(), 2);
        assert!(bg.stop(Duration::from_secs(5)).await);
    }

    #[tokio::test]
    async fn a_stop_during_the_restart_delay_is_prompt_and_final() {
        let bg = Background::new("down", &Metrics::default());
        bg.set_policy(RestartPolicy {
            first_delay: Duration::from_secs(3600),
            ..RestartPolicy::default()
        });
        bg.start(|_cancel| async move { panic!("always") });
        until("restarting", || bg.status().state == LoopState::Restarting).await;
        let before = std::time::Instant::now();
        assert!(bg.stop(Duration::from_secs(5)).await);
        assert!(before.elapsed() < Duration::from_secs(2));
        assert_eq!(bg.status().state, LoopState::Stopped);
    }

    #[test]
    fn delays_double_up_to_the_cap_and_start_over_after_a_healthy_run() {
        let p = RestartPolicy::default();
        let quick = Duration::from_millis(10);
        let mut delay = None;
        let mut seen = vec![];
        for _ in 0..9 {
            let next = p.next_delay(delay, quick);
            seen.push(next.as_secs());
            delay = Some(next);
        }
        assert_eq!(seen, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(
            p.next_delay(delay, p.healthy_after),
            Duration::from_secs(1),
            "a loop that ran healthy for a while starts the delays over"
        );
    }
}
