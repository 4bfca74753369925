//! The pipeline: the only code that changes a task's stage.
//!
//! Every trigger — a webhook, an agent finishing, the reconciler — goes through these
//! handlers, so a replayed transition is indistinguishable from the original except for the
//! `trigger` recorded in the task history. Each stage change is a compare-and-set on the
//! expected stage: two triggers racing cannot advance a task twice.
//!
//! What to do is the rules' business (`policy`); this module carries it out: it evaluates
//! gates, moves stages and queues agents. It never calls Plane or Telegram: what a change
//! owes a peer (a state, a comment, a message) is written as effects in the same transaction
//! as the change (`store::outbox`), and the dispatchers (`crate::outbox`) deliver them.
//!
//! One file per action: `start`, `verdict` (with reject), `cancel`, `input` (an agent's
//! question answered), `advance` (gates and the stage change every action ends in), `jobs`
//! (an agent's run ended), `webhook` (deliveries parsed into actions); `effects` builds the
//! effects a change owes, `running` tracks the agents running here.

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::Config;
use crate::git::Git;
use crate::integrations::{Forge, Tracker};
use crate::metrics::Metrics;
use crate::policy::{self, RulesHandle};
use crate::store::{self, Store, Task};
use tokio::sync::Notify;

mod advance;
mod audit;
mod cancel;
pub(crate) mod effects;
mod gates;
mod input;
mod jobs;
mod running;
mod start;
pub mod subjects;
mod verdict;
pub mod webhook;

pub use crate::integrations::plane::COMMENT_SOURCE;
pub use audit::Shadow;
pub use running::RunningJobs;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    #[error(transparent)]
    Integration(#[from] crate::integrations::IntegrationError),
    #[error("unknown gate check {0:?}")]
    UnknownCheck(String),
    #[error("Plane project {0} is not configured in [[projects]]")]
    UnknownProject(String),
    #[error(transparent)]
    Git(#[from] crate::git::GitError),
    #[error("{0}")]
    Worktree(String),
}

/// A work item as the trackers describe it; enough to start a task.
#[derive(Debug, Clone, Default)]
pub struct WorkItem {
    /// `ET-42`.
    pub work_item: String,
    pub plane_issue_id: Option<String>,
    pub plane_project_id: String,
    pub title: String,
    pub labels: Vec<String>,
}

/// Where a verdict came from; recorded with it and used to decide whether the stage takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerdictSource {
    /// A person, through a Plane state (the human gate).
    Plane,
    /// A person, through a Gitea pull-request review.
    Gitea,
    /// The stage's agent, through its result file.
    Agent,
}

impl VerdictSource {
    fn as_str(self) -> &'static str {
        match self {
            VerdictSource::Plane => "plane",
            VerdictSource::Gitea => "gitea",
            VerdictSource::Agent => "agent",
        }
    }
}

/// What a handler did; returned so callers (and tests, and the reconciler's counters) can
/// tell a real change from a no-op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Started {
        task_id: i64,
    },
    AlreadyStarted {
        task_id: i64,
    },
    Advanced {
        task_id: i64,
        from: String,
        to: String,
    },
    Rejected {
        task_id: i64,
        from: String,
        to: String,
    },
    /// A person answered an agent's question; the agent runs again.
    Resumed {
        task_id: i64,
    },
    Held {
        task_id: i64,
        reason: String,
    },
    /// The work item was cancelled; the task ended in the rules' cancel stage.
    Cancelled {
        task_id: i64,
        from: String,
    },
    /// Another trigger changed the task first.
    Raced {
        task_id: i64,
    },
    Ignored {
        reason: String,
    },
}

/// Everything the handlers need. Cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    pub config: Arc<Config>,
    pub store: Store,
    pub rules: RulesHandle,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    /// Read only: state names of v2 webhooks; writes go through the outbox.
    pub tracker: Arc<dyn Tracker>,
    pub forge: Arc<dyn Forge>,
    pub git: Git,
    /// Wakes the worker when a job is queued.
    pub job_wakeup: Arc<Notify>,
    /// Wakes the effect dispatchers when a change owed a peer something.
    pub outbox_wakeup: Arc<Notify>,
    /// The jobs whose agents run now, so a cancelled task can stop its agent.
    pub running_jobs: RunningJobs,
    /// The shadow rule set, when one is configured: evaluated beside the live one, never acting.
    pub shadow: Option<Arc<Shadow>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").finish_non_exhaustive()
    }
}

impl Pipeline {
    async fn task_of(&self, work_item: &str) -> Result<Option<Task>, PipelineError> {
        let wi = work_item.to_string();
        Ok(self
            .store
            .call(move |c| store::tasks::get_by_work_item(c, &wi))
            .await?)
    }
}
