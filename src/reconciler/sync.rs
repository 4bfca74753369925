//! Level-triggered Plane sync: Plane shows what orch last said, whatever was lost on the way.
//!
//! The outbox makes every state orch owes survive a crash, but an effect can still die (out
//! of attempts), and a database from before the outbox never owed anything. So at startup
//! and then at most once per grace, each open or recently finished task's expected Plane
//! state (the newest state orch owed for it, or the state the rules map its stage to) is
//! compared with the item's actual state, read from Plane's work-item pages (one page per
//! request, newest first), and a difference is owed again.
//!
//! Invariant: a person's newer change is an input, never overwritten here. An item updated
//! after orch's last write, or showing a state the rules map to cancel, is left to the
//! Plane webhook and F-2, which decide what it means.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Project;
use crate::integrations::plane::PlaneWorkItem;
use crate::policy::{OutboundEvent, PlaneAction, RuleSet};
use crate::store::outbox::{Effect, EffectStatus, NewEffect};
use crate::store::{self, Task};

use super::{Mode, ReconcileError, Reconciler, SweepReport};

/// Finished tasks are kept in sync this long after they finished.
const RECENTLY_FINISHED: Duration = Duration::from_secs(24 * 3600);
/// Pages read per project and pass; the tasks to check are the recently active ones, which
/// Plane lists first.
const MAX_PAGES: usize = 20;
const PAGE_SIZE: u32 = 100;

impl Reconciler {
    /// One sync pass if one is due (at startup, then at most once per grace).
    pub(super) async fn plane_sync(
        &self,
        rules: &Arc<RuleSet>,
        mode: Mode,
        cancel: &CancellationToken,
        report: &mut SweepReport,
    ) {
        let every = self
            .overrides
            .grace_default
            .unwrap_or(rules.grace.default)
            .max(self.interval);
        let now = self.pipeline().clock.now();
        {
            let mut last = self.last_sync.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| now.since(t) < every) {
                return;
            }
            if mode == Mode::Apply {
                *last = Some(now);
            }
        }
        for project in self.pipeline().config.projects.clone() {
            if cancel.is_cancelled() {
                return;
            }
            if let Err(e) = self.sync_project(rules, &project, mode, report).await {
                tracing::warn!(project = %project.identifier, error = %e, "reconciler: Plane sync failed");
                report
                    .errors
                    .push(format!("sync {}: {e}", project.identifier));
            }
        }
    }

    async fn sync_project(
        &self,
        rules: &RuleSet,
        project: &Project,
        mode: Mode,
        report: &mut SweepReport,
    ) -> Result<(), ReconcileError> {
        let terminal: Vec<String> = rules
            .stages()
            .iter()
            .filter(|s| s.terminal)
            .map(|s| s.name.clone())
            .collect();
        let since = self.pipeline().clock.now().minus(RECENTLY_FINISHED);
        let pid = project.plane_project_id.clone();
        let tasks = self.pipeline()
            .store
            .call(move |c| store::tasks::for_plane_sync(c, &pid, &terminal, since))
            .await?;
        let mut unseen: HashMap<String, Task> = tasks
            .into_iter()
            .filter_map(|t| Some((t.plane_issue_id.clone()?, t)))
            .collect();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            if unseen.is_empty() {
                break;
            }
            self.plane_turn().await;
            let page = self.pipeline()
                .tracker
                .list_work_items_page(&project.plane_project_id, cursor.as_deref(), PAGE_SIZE)
                .await?;
            for item in page.items {
                if let Some(task) = unseen.remove(&item.id) {
                    self.sync_item(rules, &task, &item, mode, report).await?;
                }
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        Ok(())
    }

    /// Compares one task's expected Plane state with its item's; owes the difference.
    async fn sync_item(
        &self,
        rules: &RuleSet,
        task: &Task,
        item: &PlaneWorkItem,
        mode: Mode,
        report: &mut SweepReport,
    ) -> Result<(), ReconcileError> {
        let id = task.id;
        let newest = self.pipeline()
            .store
            .call(move |c| store::outbox::newest_state_effect(c, id))
            .await?;
        // What orch last said, and since when Plane should show it.
        let (expected, said_at) = match &newest {
            Some(e) => {
                match e.status {
                    // Still on its way, or given up on (the operator retries those).
                    EffectStatus::Pending | EffectStatus::Sending | EffectStatus::Dead => {
                        return Ok(());
                    }
                    EffectStatus::Sent | EffectStatus::Skipped => {}
                }
                let Effect::PlaneState { state, .. } = &e.effect else {
                    return Ok(());
                };
                (state.clone(), e.done_at.unwrap_or(e.created_at))
            }
            None => {
                let entered = OutboundEvent::Entered {
                    stage: task.stage.clone(),
                };
                let Some(state) = rules.outbound_plane_state(&entered) else {
                    return Ok(());
                };
                (state.to_string(), task.updated_at)
            }
        };
        if item.state_name == expected {
            return Ok(());
        }
        let group = item.state_group.as_deref().filter(|g| !g.is_empty());
        let cancelled =
            rules.inbound_plane_action(&item.state_name, group) == Some(PlaneAction::Cancel);
        if cancelled || item.updated_at > said_at {
            return Ok(());
        }
        let line = format!(
            "{}: Plane shows {:?}, orch last said {:?}; owed again",
            task.work_item, item.state_name, expected
        );
        if mode == Mode::Apply {
            let Some(effect) = resend(task, &expected) else {
                return Ok(());
            };
            let now = self.pipeline().clock.now();
            self.pipeline()
                .store
                .call(move |c| store::outbox::owe(c, Some(id), &[effect], now))
                .await?;
            self.pipeline().outbox_wakeup.notify_one();
            self.pipeline().metrics.plane_sync_owed.inc();
            tracing::info!("reconciler: {line}");
        }
        report.synced.push(line);
        Ok(())
    }
}

/// The state effect that says `state` again for `task`.
fn resend(task: &Task, state: &str) -> Option<NewEffect> {
    Some(NewEffect::new(
        &task.work_item,
        Effect::PlaneState {
            project: task.plane_project_id.clone()?,
            issue: task.plane_issue_id.clone()?,
            state: state.to_string(),
        },
    ))
}
