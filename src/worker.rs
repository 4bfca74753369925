//! The worker: claims queued jobs and runs their agents, at most `concurrency` at once.
//!
//! A job runs in the task's worktree with the agent protocol's environment; its end is handed
//! to [`Pipeline::job_finished`], which retries, rejects or advances. Every replica runs a
//! worker; a job is claimed by one of them, and every write about its run carries the claim.
//! Jobs still `running` when the process dies are put back in the queue at the next start
//! (SQLite) or when the replica has been silent for the lease time (PostgreSQL).
//! On a clean shutdown the worker does not wait for agents (they may run for half an hour): it
//! kills them and puts their jobs back in the queue at once, without spending a retry, so a
//! deploy never counts against an agent.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::agent::{self, AgentOutcome, AgentRun, AgentStatus};
use crate::pipeline::Pipeline;
use crate::replica::{Liveness, ReplicaId};
use crate::store::{self, Job, Task};

/// The bounded output kept per job (the tail).
const MAX_OUTPUT_BYTES: usize = 16 * 1024;

pub struct Worker {
    pub pipeline: Pipeline,
    pub concurrency: usize,
    /// How often to look for due jobs when nobody wakes us (retries whose backoff expired),
    /// and for stop requests of this replica's jobs.
    pub poll: Duration,
    /// This replica: what its claims carry.
    pub replica: ReplicaId,
    /// While fenced (no heartbeat in time), the worker runs nothing and claims nothing.
    pub liveness: Arc<Liveness>,
}

impl Worker {
    pub async fn run(self, cancel: CancellationToken) {
        // A worker that starts again after its loop died (a panic) finds the jobs the dead loop
        // was running still marked `running`: their tasks were dropped with it, so nothing
        // here runs them. They go back to the queue, attempt kept, as after a crash.
        self.pipeline.running_jobs.clear();
        let me = self.replica.to_string();
        match self
            .pipeline
            .store
            .call(move |c| store::jobs::requeue_claimed_by(c, &me))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                requeued = n,
                "jobs left running by a stopped worker loop were put back in the queue"
            ),
            Err(e) => {
                tracing::error!(error = %e, "cannot requeue the jobs of a stopped worker loop; they wait for the next start")
            }
        }
        let permits = Arc::new(Semaphore::new(self.concurrency.max(1)));
        let wakeup = self.pipeline.job_wakeup.clone();
        let mut running = tokio::task::JoinSet::new();
        let mut fence = self.liveness.subscribe();
        // The jobs claimed since the fence last went up; cancelled (as by a shutdown) when it
        // goes up again.
        let mut batch = cancel.child_token();
        loop {
            // Reap finished jobs so the set does not grow.
            while running.try_join_next().is_some() {}
            if !running.is_empty() {
                self.stop_requested().await;
            }
            while !self.liveness.is_fenced()
                && let Ok(permit) = permits.clone().try_acquire_owned()
            {
                let (now, me) = (self.pipeline.clock.now(), self.replica.to_string());
                let claimed = self
                    .pipeline
                    .store
                    .call(move |c| store::jobs::claim_next(c, &me, now))
                    .await;
                match claimed {
                    Ok(Some(job)) => {
                        let pipeline = self.pipeline.clone();
                        let wakeup = wakeup.clone();
                        let stop = batch.child_token();
                        // Registered at once, so a cancel of its task can find it.
                        let cancelled = pipeline.running_jobs.register(job.id);
                        running.spawn(async move {
                            let id = job.id;
                            run_job(&pipeline, job, &stop, &cancelled).await;
                            pipeline.running_jobs.unregister(id);
                            drop(permit);
                            // A slot is free: look for the next job now.
                            wakeup.notify_one();
                        });
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot claim a job; will retry");
                        break;
                    }
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = wakeup.notified() => {}
                changed = fence.changed() => {
                    if changed.is_ok() && *fence.borrow_and_update() {
                        tracing::warn!(running = running.len(), "fenced: stopping this replica's agents");
                        batch.cancel();
                        batch = cancel.child_token();
                    }
                }
                _ = tokio::time::sleep(self.poll) => {}
            }
        }
        // Every job has seen the cancel: each kills its agent and re-queues itself, or, if its
        // agent had already finished, records the end as usual.
        while running.join_next().await.is_some() {}
    }

    /// Stops the agents of this replica's jobs whose task was cancelled, on any replica: each
    /// then ends cancelled through its own run (fenced by its claim).
    async fn stop_requested(&self) {
        let me = self.replica.to_string();
        match self
            .pipeline
            .store
            .call(move |c| store::jobs::stop_requested(c, &me))
            .await
        {
            Ok(ids) => {
                for id in ids {
                    if self.pipeline.running_jobs.stop(id) {
                        tracing::info!(job = id, "stop requested by a cancel; stopping the agent");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the stop requests; will retry"),
        }
    }
}

/// Runs one claimed job to its end; never returns an error (it is recorded on the job).
/// A job whose task has left the job's stage (cancelled, or moved on while a retry waited or
/// the process was down) is not run. `stop` (shutdown, or the replica fencing itself)
/// interrupts the agent: it is killed with its process group and the job goes back in the
/// queue with the attempt given back. `cancelled` (the task was cancelled) kills it too, and
/// the job ends failed.
pub async fn run_job(
    pipeline: &Pipeline,
    job: Job,
    stop: &CancellationToken,
    cancelled: &CancellationToken,
) {
    let task_id = job.task_id;
    let task = match pipeline
        .store
        .call(move |c| store::tasks::get(c, task_id))
        .await
    {
        Ok(Some(t)) if t.stage == job.stage => t,
        Ok(Some(t)) => {
            let reason = format!("the task left {} (now in {})", job.stage, t.stage);
            return abandon(pipeline, &job, reason).await;
        }
        Ok(None) => return abandon(pipeline, &job, format!("task {task_id} does not exist")).await,
        Err(e) => {
            let outcome = spawn_failed(format!("cannot load task {task_id}: {e}"));
            return finished(pipeline, &job, outcome).await;
        }
    };
    // On either token `execute` is dropped, and with it the agent's process group.
    tokio::select! {
        outcome = execute(pipeline, &job, &task) => finished(pipeline, &job, outcome).await,
        _ = stop.cancelled() => {
            let (id, claim) = (job.id, job.claim);
            match pipeline.store.call(move |c| store::jobs::release_interrupted(c, id, claim)).await {
                Ok(_) => tracing::info!(job = job.id, agent = %job.agent, "job interrupted (shutdown, or the replica fenced itself); queued again"),
                Err(e) => tracing::error!(job = job.id, error = %e, "job interrupted by shutdown; it will be queued again at the next start"),
            }
        }
        _ = cancelled.cancelled() => abandon(pipeline, &job, store::jobs::CANCELLED.to_string()).await,
    }
}

/// Ends a job without (or without finishing) its agent run: failed with `reason`, never
/// retried.
async fn abandon(pipeline: &Pipeline, job: &Job, reason: String) {
    let (id, claim, now, why) = (job.id, job.claim, pipeline.clock.now(), reason.clone());
    match pipeline
        .store
        .call(move |c| store::jobs::abandon(c, id, claim, &why, now))
        .await
    {
        Ok(_) => {
            tracing::info!(job = job.id, agent = %job.agent, %reason, "job ended without its agent")
        }
        Err(e) => tracing::error!(job = job.id, %reason, error = %e, "could not end the job"),
    }
}

async fn finished(pipeline: &Pipeline, job: &Job, outcome: AgentOutcome) {
    if let Err(e) = pipeline.job_finished(job, outcome).await {
        tracing::error!(job = job.id, error = %e, "could not record the end of a job");
    }
}

async fn execute(pipeline: &Pipeline, job: &Job, task: &Task) -> AgentOutcome {
    let Some(agent_cfg) = pipeline.config.agents.get(&job.agent).cloned() else {
        return spawn_failed(format!(
            "no command configured for agent {:?}: add [agents.{}] to orch.toml",
            job.agent, job.agent
        ));
    };
    let worktree = match pipeline.prepare_worktree(task).await {
        Ok(p) => p,
        Err(e) => return not_prepared(format!("worktree for {}: {e:#}", task.branch)),
    };
    let results_dir = pipeline.config.repos_dir.join(".orch").join("results");
    if let Err(e) = tokio::fs::create_dir_all(&results_dir).await {
        return not_prepared(format!("cannot create {}: {e}", results_dir.display()));
    }
    let result_file = results_dir.join(format!("job-{}.json", job.id));
    let _ = tokio::fs::remove_file(&result_file).await;
    let env = vec![
        ("ORCH_TASK_ID".to_string(), task.id.to_string()),
        ("ORCH_JOB_ID".to_string(), job.id.to_string()),
        ("ORCH_WORK_ITEM".to_string(), task.work_item.clone()),
        ("ORCH_STAGE".to_string(), job.stage.clone()),
        ("ORCH_AGENT".to_string(), job.agent.clone()),
        ("ORCH_REPO".to_string(), task.repo.clone()),
        ("ORCH_BRANCH".to_string(), task.branch.clone()),
        ("ORCH_WORKTREE".to_string(), worktree.display().to_string()),
        (
            "ORCH_FEEDBACK".to_string(),
            task.feedback.clone().unwrap_or_default(),
        ),
        (
            "ORCH_RESULT_FILE".to_string(),
            result_file.display().to_string(),
        ),
    ];
    tracing::info!(job = job.id, work_item = %task.work_item, agent = %job.agent, attempt = job.attempts, "agent started");
    let run = AgentRun {
        command: agent_cfg.command.clone(),
        cwd: worktree.clone(),
        env,
        timeout: agent_cfg.timeout,
        result_file: result_file.clone(),
        max_output_bytes: MAX_OUTPUT_BYTES,
    };
    let mut outcome = agent::run_agent(&run).await;
    let _ = tokio::fs::remove_file(&result_file).await;
    tracing::info!(job = job.id, work_item = %task.work_item, agent = %job.agent, status = ?outcome.status, verdict = ?outcome.verdict, "agent finished");
    if matches!(outcome.status, AgentStatus::Succeeded)
        && outcome.result_error.is_none()
        && agent_cfg.push
    {
        // A push cannot be taken back: only a run that still holds its claim pushes (a
        // replica taken for dead may finish after another run took the job over).
        let (id, claim) = (job.id, job.claim);
        match pipeline
            .store
            .call(move |c| store::jobs::holds_claim(c, id, claim))
            .await
        {
            Ok(true) => {
                let pushed = match pipeline.git.clone_path(&task.repo) {
                    Ok(clone) => pipeline.git.push(&clone, &worktree, &task.branch).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = pushed {
                    outcome.result_error = Some(format!("push of {} failed: {e}", task.branch));
                }
            }
            Ok(false) => {
                tracing::warn!(job = job.id, claim, branch = %task.branch, "the run lost its claim; not pushing");
                outcome.result_error = Some("the run lost its claim; not pushed".to_string());
            }
            Err(e) => {
                outcome.result_error = Some(format!("cannot check the job's claim before the push: {e}"));
            }
        }
    }
    outcome
}

fn spawn_failed(error: String) -> AgentOutcome {
    AgentOutcome {
        status: AgentStatus::SpawnFailed { error },
        verdict: None,
        summary: None,
        output_excerpt: String::new(),
        result_error: None,
    }
}
/// The job's worktree could not be prepared: the agent never started (see
/// [`AgentStatus::NotPrepared`]).
fn not_prepared(error: String) -> AgentOutcome {
    AgentOutcome {
        status: AgentStatus::NotPrepared { error },
        verdict: None,
        summary: None,
        output_excerpt: String::new(),
        result_error: None,
    }
}
