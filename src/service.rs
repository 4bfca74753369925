//! Lifecycle of a long-running background task (inbox processor, worker, reconciler).
//!
//! Start is idempotent — a second `start` while the loop runs does not spawn another — and
//! `stop` cancels cooperatively, waits up to a timeout and then aborts, so shutdown is
//! prompt even if the loop is in the middle of a unit of work.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
pub struct Background {
    name: &'static str,
    state: Mutex<Option<(CancellationToken, JoinHandle<()>)>>,
}

impl Background {
    pub fn new(name: &'static str) -> Self {
        Background {
            name,
            state: Mutex::new(None),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Spawns `run(cancel)` unless it is already running. Returns true when it spawned.
    pub fn start<F, Fut>(&self, run: F) -> bool
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, handle)) = state.as_ref()
            && !handle.is_finished()
        {
            return false;
        }
        let cancel = CancellationToken::new();
        let handle = tokio::spawn(run(cancel.clone()));
        tracing::info!(service = self.name, "started");
        *state = Some((cancel, handle));
        true
    }

    pub fn is_running(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.as_ref().is_some_and(|(_, h)| !h.is_finished())
    }

    /// Asks the loop to stop and waits up to `timeout`; aborts it after that. Returns true when
    /// it stopped on its own.
    pub async fn stop(&self, timeout: Duration) -> bool {
        let taken = self.state.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some((cancel, mut handle)) = taken else {
            return true;
        };
        cancel.cancel();
        match tokio::time::timeout(timeout, &mut handle).await {
            Ok(_) => {
                tracing::info!(service = self.name, "stopped");
                true
            }
            Err(_) => {
                handle.abort();
                tracing::warn!(
                    service = self.name,
                    ?timeout,
                    "did not stop in time; aborted"
                );
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn start_is_idempotent_and_stop_is_prompt() {
        let bg = Background::new("test");
        let spawned = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let spawned = spawned.clone();
            bg.start(move |cancel| async move {
                spawned.fetch_add(1, Ordering::SeqCst);
                cancel.cancelled().await;
            });
        }
        assert!(bg.is_running());
        assert!(bg.stop(Duration::from_secs(5)).await);
        assert!(!bg.is_running());
        assert_eq!(spawned.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_loop_that_ignores_cancel_is_aborted() {
        let bg = Background::new("stubborn");
        bg.start(|_cancel| async move { std::future::pending::<()>().await });
        assert!(!bg.stop(Duration::from_millis(50)).await);
        assert!(!bg.is_running());
    }
}
