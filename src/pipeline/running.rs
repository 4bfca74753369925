//! The agents running in this process, so a cancelled task can stop its own.
//!
//! Only the process that runs an agent can stop it: a cancel stops the ones here and leaves a
//! stop request (`jobs.stop_requested_at`) that the worker of the replica running the others
//! acts on; a job left `running` by a crash has no entry anywhere, and is ended in the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

/// Stop handles of the running agent jobs, by job id.
#[derive(Debug, Clone, Default)]
pub struct RunningJobs(Arc<Mutex<HashMap<i64, CancellationToken>>>);

impl RunningJobs {
    /// Registers a job as running; the token fires when its task is cancelled.
    pub fn register(&self, job_id: i64) -> CancellationToken {
        let token = CancellationToken::new();
        self.lock().insert(job_id, token.clone());
        token
    }

    pub fn unregister(&self, job_id: i64) {
        self.lock().remove(&job_id);
    }

    /// Forgets every job: the worker that ran them is gone.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Stops the agent of `job_id`, if it is running here; true when it was.
    pub fn stop(&self, job_id: i64) -> bool {
        self.lock().get(&job_id).map(|t| t.cancel()).is_some()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i64, CancellationToken>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
