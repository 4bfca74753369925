//! The run's exit checks, read from orch's database and the fakes: what ended done or
//! cancelled, cancels honoured, duplicates.

use std::collections::HashSet;

use crate::app::AppState;

use super::fakes::{self, FakeGitea};

/// The stage the rules send cancelled tasks to.
pub(super) fn cancel_stage(state: &AppState) -> Option<String> {
    state.rules.current().cancel_stage().map(|s| s.name.clone())
}

/// Tasks in the rules' final stage: terminal, and not where cancels go.
pub(super) async fn ended_done(state: &AppState) -> anyhow::Result<usize> {
    let rules = state.rules.current();
    let finals: Vec<String> = rules
        .stages()
        .iter()
        .filter(|s| s.terminal && !s.cancel)
        .map(|s| s.name.clone())
        .collect();
    let counts = state
        .store
        .call(crate::store::tasks::counts_by_stage)
        .await?;
    Ok(counts
        .iter()
        .filter(|(stage, _)| finals.contains(stage))
        .map(|(_, n)| usize::try_from(*n).unwrap_or(0))
        .sum())
}

/// The tasks not in a terminal stage, each with its stage and its last job (agent, status,
/// error), so a run that ends short says where and why (`SIM-47 review: reviewer failed: …`).
pub(super) async fn unfinished(state: &AppState) -> anyhow::Result<Vec<String>> {
    let rules = state.rules.current();
    let open: Vec<String> = rules
        .stages()
        .iter()
        .filter(|s| !s.terminal)
        .map(|s| s.name.clone())
        .collect();
    let rows = state
        .store
        .call(|c| {
            c.query_map(
                "SELECT t.work_item, t.stage, j.agent, j.status, j.error FROM tasks t
                   LEFT JOIN jobs j ON j.id = (SELECT MAX(id) FROM jobs WHERE task_id = t.id)
                  ORDER BY t.id",
                args![],
                |r| {
                    Ok((
                        r.get::<String>(0)?,
                        r.get::<String>(1)?,
                        r.get::<Option<String>>(2)?,
                        r.get::<Option<String>>(3)?,
                        r.get::<Option<String>>(4)?,
                    ))
                },
            )
        })
        .await?;
    Ok(rows
        .into_iter()
        .filter(|(_, stage, ..)| open.contains(stage))
        .map(|(item, stage, agent, status, error)| {
            let job = match (agent, status) {
                (Some(agent), Some(status)) => format!("{agent} {status}"),
                _ => "no job".to_string(),
            };
            let error: String = error
                .map(|e| format!(": {}", e.chars().take(200).collect::<String>()))
                .unwrap_or_default();
            format!("{item} {stage}: {job}{error}")
        })
        .collect())
}

/// Tasks that ended in the cancel stage with nothing left queued or running.
pub(super) async fn ended_cancelled(state: &AppState) -> anyhow::Result<usize> {
    let Some(stage) = cancel_stage(state) else {
        return Ok(0);
    };
    let n: i64 = state
        .store
        .call(move |c| {
            c.query_row(
                "SELECT COUNT(*) FROM tasks t WHERE t.stage = ?1 AND NOT EXISTS
                   (SELECT 1 FROM jobs j WHERE j.task_id = t.id AND j.status IN ('queued', 'running'))",
                args![stage],
                |r| r.get(0),
            )
        })
        .await?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Cancelled items orch did not honour: the task is not in the cancel stage, still has a job
/// queued or running, or orch moved the Plane item away from the cancel state afterwards.
pub(super) async fn cancels_not_honoured(
    state: &AppState,
    items: &[fakes::PlaneItem],
    cancelled: &HashSet<i64>,
    cancel_state: Option<&str>,
) -> anyhow::Result<u64> {
    let stage = cancel_stage(state);
    let mut bad = 0;
    for item in items.iter().filter(|i| cancelled.contains(&i.seq)) {
        let (wi, stage) = (format!("SIM-{}", item.seq), stage.clone());
        let honoured = state
            .store
            .call(move |c| {
                let Some(t) = crate::store::tasks::get_by_work_item(c, &wi)? else {
                    return Ok(false);
                };
                Ok(Some(&t.stage) == stage.as_ref() && !crate::store::jobs::has_active(c, t.id)?)
            })
            .await?;
        if !honoured || Some(item.state.as_str()) != cancel_state {
            bad += 1;
        }
    }
    Ok(bad)
}

/// Reviews that sent the work back: the agents' reject verdicts (only the reviewer rejects).
pub(super) async fn review_rejections(store: &crate::store::Store) -> anyhow::Result<usize> {
    let n: i64 = store
        .call(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM jobs WHERE status = 'done' AND verdict = 'reject'",
                args![],
                |r| r.get(0),
            )
        })
        .await?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Anything that exists more than once where the pipeline promises one: tasks per work item,
/// finished runs of a stage's agent beyond one per time the task entered that stage (a run
/// that asked a question is not a duplicate of the one that got the answer), branches per
/// item.
pub(super) async fn count_duplicates(
    store: &crate::store::Store,
    gitea: &FakeGitea,
) -> anyhow::Result<u64> {
    let (tasks, jobs) = store
        .call(|c| {
            let tasks: i64 = c.query_row("SELECT COUNT(*) - COUNT(DISTINCT work_item) FROM tasks", args![], |r| r.get(0))?;
            let jobs: i64 = c.query_row(
                "SELECT CAST(COALESCE(SUM(CASE WHEN done > entered THEN done - entered ELSE 0 END), 0) AS BIGINT) FROM (
                   SELECT COUNT(*) AS done,
                          (SELECT COUNT(*) FROM task_history h WHERE h.task_id = j.task_id AND h.to_stage = j.stage) AS entered
                   FROM jobs j WHERE j.status = 'done' AND COALESCE(j.verdict, '') != 'needs_input'
                   GROUP BY j.task_id, j.stage) AS per_stage",
                args![],
                |r| r.get(0),
            )?;
            Ok((tasks, jobs))
        })
        .await?;
    let mut per_item: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for branch in gitea.heads().await.keys() {
        if let Some(rest) = branch.strip_prefix("feature/") {
            let item: String = rest.split('-').take(2).collect::<Vec<_>>().join("-");
            *per_item.entry(item).or_default() += 1;
        }
    }
    let branches: u64 = per_item.values().map(|n| n.saturating_sub(1)).sum();
    Ok(tasks as u64 + jobs as u64 + branches)
}
