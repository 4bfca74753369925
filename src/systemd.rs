//! systemd integration for `orch serve` under `Type=notify` (see `contrib/orch.service`):
//! `READY=1` once the service is serving, `WATCHDOG=1` at half of `WATCHDOG_USEC` — but only
//! while every background loop runs — and `STOPPING=1` at shutdown.
//!
//! Why the watchdog depends on the loops: the supervisor already restarts a crashed loop in
//! the process; a loop that stays down longer than the watchdog allows (or a wedged runtime,
//! where this task cannot run at all) is what an in-process restart could not fix, and then a
//! fresh process from systemd (`Restart=on-failure`) is the better remedy.
//!
//! Everything here is a no-op when `NOTIFY_SOCKET` is unset (not under systemd), and a failed
//! notification is logged, never fatal: the service works the same without a service manager.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The running watchdog (if systemd asked for one).
#[derive(Debug)]
pub struct Watchdog {
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

/// Says `READY=1` and, when systemd set `WATCHDOG_USEC` for this process, starts petting the
/// watchdog while `alive()` holds.
pub fn ready<A>(alive: A) -> Watchdog
where
    A: Fn() -> bool + Send + Sync + 'static,
{
    send(&[NotifyState::Ready]);
    let cancel = CancellationToken::new();
    let task = sd_notify::watchdog_enabled().map(|timeout| {
        let period = timeout / 2;
        tracing::info!(?timeout, "systemd watchdog on");
        tokio::spawn(pet_while(
            period,
            alive,
            || send(&[NotifyState::Watchdog]),
            cancel.clone(),
        ))
    });
    Watchdog { cancel, task }
}

impl Watchdog {
    /// Says `STOPPING=1` and stops petting (the shutdown has its own timeout in systemd).
    pub async fn stopping(mut self) {
        send(&[NotifyState::Stopping]);
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Pets every `period` while `alive()`; while it does not hold, looks again every second (at
/// most `period`) and pets as soon as it holds again, so a short restart of one loop does not
/// cost a missed deadline, while a loop that stays down lets the watchdog fire.
pub async fn pet_while<A, P>(period: Duration, alive: A, mut pet: P, cancel: CancellationToken)
where
    A: Fn() -> bool,
    P: FnMut(),
{
    let recheck = period.min(Duration::from_secs(1));
    let mut was_alive = true;
    loop {
        let next = if alive() {
            pet();
            was_alive = true;
            period
        } else {
            if was_alive {
                tracing::warn!(
                    "a background loop is down: the systemd watchdog is not petted until it runs again"
                );
            }
            was_alive = false;
            recheck
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(next) => {}
        }
    }
}

fn send(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    async fn until(what: &str, cond: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    #[tokio::test]
    async fn the_watchdog_is_petted_only_while_the_loops_are_alive() {
        let alive = Arc::new(AtomicBool::new(false));
        let checks = Arc::new(AtomicUsize::new(0));
        let pets = Arc::new(AtomicUsize::new(0));
        let cancel = CancellationToken::new();
        let (a, c, p) = (alive.clone(), checks.clone(), pets.clone());
        let task = tokio::spawn(pet_while(
            Duration::from_millis(5),
            move || {
                c.fetch_add(1, Ordering::SeqCst);
                a.load(Ordering::SeqCst)
            },
            move || {
                p.fetch_add(1, Ordering::SeqCst);
            },
            cancel.clone(),
        ));
        until("three checks", || checks.load(Ordering::SeqCst) >= 3).await;
        assert_eq!(pets.load(Ordering::SeqCst), 0, "a loop is down: no pet");
        alive.store(true, Ordering::SeqCst);
        until("petted again", || pets.load(Ordering::SeqCst) >= 2).await;
        cancel.cancel();
        task.await.unwrap();
    }
}
