//! F-2, the Plane side: replays Plane states and answers whose webhook was lost.
//!
//! Per project, work items are paged newest-updated first down to the watermark of the
//! previous complete pass, and the states the rules map to start / approve / reject are
//! replayed through the Plane webhook's own handler when the policy says they have not
//! happened yet ([`policy::decide_plane_item`]); one code path means a replay and a late
//! webhook settle the same way. A task whose agent asked a question is answered from Plane's
//! comments when the comment's webhook was lost ([`policy::answer_check_due`] says when to
//! look).
//!
//! Invariant: the watermark only moves after a complete pass, and never past an item that
//! was deferred (busy task, too recent) or failed, so an item still owed a replay is read
//! again next sweep instead of being skipped for good.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::Timestamp;
use crate::integrations::plane::PlaneWorkItem;
use crate::pipeline::webhook::PlaneItem;
use crate::pipeline::{Outcome, WorkItem};
use crate::policy::{self, PlaneOutcome, RuleSet};
use crate::store::{self, Task, Trigger};

use super::{Mode, PlaneReport, ReconcileError, Reconciler, Rows, Sides, SweepReport, snapshot_of};

const PLANE_PAGE_SIZE: u32 = 100;
/// Safety net against a server that never ends its pages.
const MAX_PAGES_PER_PROJECT: usize = 1000;

/// What one pass did with a Plane item, as far as the watermark is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ItemResult {
    /// Replayed, or nothing is owed: the watermark may pass it.
    Settled,
    /// Not acted on yet (its task is busy, or the change is too recent) but it may need a
    /// replay later: the watermark must not pass it.
    Deferred,
}

/// Sightings kept in memory before old ones are forgotten.
const FIRST_SEEN_LIMIT: usize = 10_000;

impl Reconciler {
    /// The Plane side alone, applied and muted by the Plane switch: lets a test watch F-2
    /// without gates advancing in the same pass.
    #[cfg_attr(orch_audit, allow(dead_code))]
    pub async fn reconcile_plane_once(&self) -> SweepReport {
        self.run_sides(
            Sides::Plane,
            Mode::Apply,
            Rows::All,
            &CancellationToken::new(),
        )
        .await
    }

    pub(super) async fn plane_side(
        &self,
        rules: &Arc<RuleSet>,
        mode: Mode,
        cancel: &CancellationToken,
        report: &mut SweepReport,
    ) {
        let waiting = self.questions_waiting().await;
        for project in self.pipeline().config.projects.clone() {
            if cancel.is_cancelled() {
                break;
            }
            if let Err(e) = self.plane_project(rules, &project, mode, report).await {
                tracing::warn!(project = %project.identifier, error = %e, "reconciler: Plane project pass failed");
                report
                    .errors
                    .push(format!("project {}: {e}", project.identifier));
            }
            match &waiting {
                Ok(waiting) => {
                    let mine = waiting.iter().filter(|(t, _)| {
                        t.plane_project_id.as_deref() == Some(project.plane_project_id.as_str())
                    });
                    self.lost_answers(rules, mine, mode, cancel, report).await;
                }
                Err(e) => report
                    .errors
                    .push(format!("project {}: {e}", project.identifier)),
            }
        }
    }

    /// The tasks waiting for a person's answer, with when the question was asked; forgets
    /// the look-ups of tasks that no longer wait.
    async fn questions_waiting(&self) -> Result<Vec<(Task, Timestamp)>, store::StoreError> {
        let waiting = self.pipeline()
            .store
            .call(store::tasks::awaiting_answer)
            .await;
        match &waiting {
            Ok(w) => {
                let ids: std::collections::HashSet<i64> = w.iter().map(|(t, _)| t.id).collect();
                self.answer_checks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|id, _| ids.contains(id));
            }
            Err(e) => {
                tracing::error!(error = %e, "reconciler: cannot load the tasks waiting for an answer")
            }
        }
        waiting
    }

    /// Answers whose comment webhook was lost. For each waiting task whose look-up is due,
    /// the newest comment written after the question by someone other than orch is handed to
    /// [`Pipeline::answer`], exactly as the comment's webhook would have been. A webhook that
    /// arrives as well finds the task no longer waiting and changes nothing. Each task is its
    /// own unit of work.
    async fn lost_answers<'a>(
        &self,
        rules: &Arc<RuleSet>,
        waiting: impl Iterator<Item = &'a (Task, Timestamp)>,
        mode: Mode,
        cancel: &CancellationToken,
        report: &mut SweepReport,
    ) {
        for (task, asked_at) in waiting {
            if cancel.is_cancelled() {
                break;
            }
            let (Some(project_id), Some(issue_id)) = (&task.plane_project_id, &task.plane_issue_id)
            else {
                continue;
            };
            let now = self.pipeline().clock.now();
            let last = self
                .answer_checks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&task.id)
                .copied();
            let snapshot = snapshot_of(task, false, true);
            if !policy::answer_check_due(rules, &self.overrides, &snapshot, *asked_at, last, now) {
                continue;
            }
            if mode == Mode::Apply {
                self.answer_checks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(task.id, now);
            }
            self.plane_turn().await;
            let comments = match self.pipeline()
                .tracker
                .recent_comments(project_id, issue_id)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(work_item = %task.work_item, error = %e, "reconciler: cannot read the work item's comments");
                    report.errors.push(format!("{}: {e}", task.work_item));
                    continue;
                }
            };
            let answer = comments
                .iter()
                .filter(|c| c.created_at > *asked_at)
                .filter(|c| {
                    !self.pipeline()
                        .is_own_comment(c.external_source.as_deref(), c.author.as_deref())
                })
                .map(|c| crate::pipeline::webhook::plain_text(&c.html))
                .find(|text| !text.is_empty());
            let Some(answer) = answer else {
                continue;
            };
            if mode == Mode::DryRun {
                report.answers.push(format!(
                    "{}: an answer is in Plane; it would be handed to the {} agent",
                    task.work_item, task.stage
                ));
                continue;
            }
            match self.pipeline()
                // Only comments newer than the question were considered above.
                .answer(task, answer, None, Trigger::Reconciler)
                .await
            {
                Ok(Outcome::Resumed { .. }) => {
                    tracing::info!(work_item = %task.work_item, stage = %task.stage, "reconciler: replayed a person's answer from Plane (lost comment webhook)");
                    self.pipeline().metrics.reconcile_replays.inc();
                    report.replays += 1;
                    report.answers.push(format!(
                        "{}: answer replayed from Plane; the {} agent runs again",
                        task.work_item, task.stage
                    ));
                }
                // Answered meanwhile (the webhook won the race): nothing to count.
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(work_item = %task.work_item, error = %e, "reconciler: replaying an answer failed");
                    report.errors.push(format!("{}: {e}", task.work_item));
                }
            }
        }
    }

    async fn plane_project(
        &self,
        rules: &Arc<RuleSet>,
        project: &crate::config::Project,
        mode: Mode,
        report: &mut SweepReport,
    ) -> Result<(), ReconcileError> {
        let key = format!("reconcile.plane.watermark.{}", project.plane_project_id);
        let k = key.clone();
        let watermark = self.pipeline()
            .store
            .call(move |c| store::kv::get(c, &k))
            .await?
            .and_then(|v| v.parse::<i64>().ok())
            .map(Timestamp::from_millis);
        let mut cursor: Option<String> = None;
        let mut newest: Option<Timestamp> = None;
        // Items we could not act on yet (busy task): the watermark must not pass them.
        let mut oldest_deferred: Option<Timestamp> = None;
        let mut complete = false;
        for _ in 0..MAX_PAGES_PER_PROJECT {
            self.plane_turn().await;
            let page = self.pipeline()
                .tracker
                .list_work_items_page(
                    &project.plane_project_id,
                    cursor.as_deref(),
                    PLANE_PAGE_SIZE,
                )
                .await?;
            let mut reached_watermark = false;
            for item in page.items {
                if watermark.is_some_and(|w| item.updated_at < w) {
                    reached_watermark = true;
                    break;
                }
                newest = newest.max(Some(item.updated_at));
                match self.plane_item(rules, project, &item, mode, report).await {
                    Ok(ItemResult::Settled) => {}
                    Ok(ItemResult::Deferred) => {
                        oldest_deferred = Some(
                            oldest_deferred.map_or(item.updated_at, |o| o.min(item.updated_at)),
                        );
                    }
                    Err(e) => {
                        tracing::warn!(project = %project.identifier, item = %item.sequence_id, error = %e, "reconciler: Plane item replay failed");
                        report
                            .errors
                            .push(format!("{}-{}: {e}", project.identifier, item.sequence_id));
                        oldest_deferred = Some(
                            oldest_deferred.map_or(item.updated_at, |o| o.min(item.updated_at)),
                        );
                    }
                }
            }
            match page.next_cursor {
                Some(next) if !reached_watermark => cursor = Some(next),
                _ => {
                    complete = true;
                    break;
                }
            }
        }
        if complete && mode == Mode::Apply {
            let mark = match (newest, oldest_deferred) {
                (_, Some(d)) => Some(d),
                (n, None) => n,
            };
            if let Some(mark) = mark.filter(|m| watermark.is_none_or(|w| *m > w)) {
                let v = mark.as_millis().to_string();
                self.pipeline()
                    .store
                    .call(move |c| store::kv::set(c, &key, &v))
                    .await?;
            }
        }
        Ok(())
    }

    async fn plane_item(
        &self,
        rules: &Arc<RuleSet>,
        project: &crate::config::Project,
        item: &PlaneWorkItem,
        mode: Mode,
        report: &mut SweepReport,
    ) -> Result<ItemResult, ReconcileError> {
        let work_item = format!("{}-{}", project.identifier, item.sequence_id);
        let wi = work_item.clone();
        let (task, busy, awaiting, applied_at) = self.pipeline()
            .store
            .call(move |c| {
                let t = store::tasks::get_by_work_item(c, &wi)?;
                let (busy, awaiting, applied) = match &t {
                    Some(t) => (
                        store::jobs::has_active(c, t.id)?,
                        store::jobs::awaiting_input(c, t.id)?,
                        store::tasks::plane_applied_at(c, t.id)?,
                    ),
                    None => (false, false, None),
                };
                Ok((t, busy, awaiting, applied))
            })
            .await?;
        let first_seen_at = Some(self.first_seen(&item.id, item.updated_at));
        let snapshot = policy::PlaneItemSnapshot {
            work_item: work_item.clone(),
            state_name: item.state_name.clone(),
            state_group: item.state_group.clone(),
            updated_at: item.updated_at,
            task: task.as_ref().map(|t| snapshot_of(t, busy, awaiting)),
            applied_at,
            first_seen_at,
        };
        if mode == Mode::Apply {
            // What `orch rules diff --db` decides over; the sweep goes on without it.
            let seen = store::plane_seen::SeenItem {
                work_item: work_item.clone(),
                state_name: item.state_name.clone(),
                state_group: item.state_group.clone(),
                updated_at: item.updated_at,
                first_seen_at,
            };
            let kept = self.pipeline()
                .store
                .call(move |c| store::plane_seen::record(c, &seen))
                .await;
            if let Err(e) = kept {
                tracing::warn!(work_item = %work_item, error = %e, "reconciler: cannot keep the Plane item seen");
            }
        }
        let decided_at = self.pipeline().clock.now();
        let decision = policy::decide_plane_item(rules, &self.overrides, &snapshot, decided_at);
        let deferred = matches!(&decision.outcome, PlaneOutcome::Ignore { why } if why == "busy" || why == "recent");
        let result = if deferred {
            ItemResult::Deferred
        } else {
            ItemResult::Settled
        };
        let mut action = None;
        let mut replayed = None;
        let replay = matches!(decision.outcome, PlaneOutcome::Replay { .. });
        // Changed before orch may look (a new install's backlog): never replayed here.
        let too_old = item.updated_at < self.plane_since;
        if replay && too_old {
            action = Some(format!(
                "not replayed: changed before plane_since ({}); a wider reconcile.plane_since would replay it",
                self.plane_since
            ));
        }
        if replay && !too_old && mode == Mode::Apply {
            let plane_item = PlaneItem {
                item: WorkItem {
                    work_item: work_item.clone(),
                    plane_issue_id: Some(item.id.clone()),
                    plane_project_id: project.plane_project_id.clone(),
                    title: item.name.clone(),
                    labels: item.labels.clone(),
                },
                state_name: item.state_name.clone(),
                state_group: item.state_group.clone(),
                actor: None,
                // The policy already compared the item's change with the task's.
                changed_at: None,
                plane_updated_at: Some(item.updated_at),
            };
            let outcome = self.pipeline()
                .apply_plane_state(&plane_item, Trigger::Reconciler)
                .await?;
            // Count what the replay changed; a webhook that won the race leaves nothing to count.
            if !matches!(
                outcome,
                Outcome::AlreadyStarted { .. } | Outcome::Ignored { .. } | Outcome::Raced { .. }
            ) {
                tracing::info!(work_item = %work_item, state = %item.state_name, outcome = ?outcome, "reconciler: replayed Plane state (lost webhook)");
                self.pipeline().metrics.reconcile_replays.inc();
                report.replays += 1;
                replayed = Some(outcome.clone());
            }
            action = Some(format!("{outcome:?}"));
        }
        if mode == Mode::Apply {
            self.pipeline()
                .observe_plane(
                    &self.overrides,
                    &snapshot,
                    &decision,
                    replayed.as_ref(),
                    decided_at,
                )
                .await;
        }
        report.plane.push(PlaneReport {
            work_item,
            state: item.state_name.clone(),
            decision,
            action,
        });
        Ok(result)
    }

    /// When the sweep first saw this change of the item (orch's clock): the webhook's grace
    /// is measured from there, so Plane's clock being ahead or behind does not matter.
    fn first_seen(&self, issue_id: &str, updated_at: Timestamp) -> Timestamp {
        let now = self.pipeline().clock.now();
        let mut seen = self.first_seen.lock().unwrap_or_else(|p| p.into_inner());
        // Forget changes seen long ago; a fresh sighting only delays a replay by one grace.
        if seen.len() > FIRST_SEEN_LIMIT {
            seen.retain(|_, (_, at)| now.since(*at) < Duration::from_secs(24 * 3600));
        }
        match seen.get(issue_id) {
            Some((stamp, at)) if *stamp == updated_at => *at,
            _ => {
                seen.insert(issue_id.to_string(), (updated_at, now));
                now
            }
        }
    }
}
