//! The simulated people: they start every item, answer the questions orch shows, approve
//! the human gates, cancel the chosen items, and run CI on every new head.

use std::collections::HashSet;
use std::time::Duration;

use super::fakes::{self, FakeGitea, FakePlane};
use super::script::Script;
use super::{SimOptions, workspace};

/// What the simulated people have done so far.
pub(super) struct People {
    pub script: Script,
    /// Which items a person will cancel once their development has started.
    to_cancel: HashSet<i64>,
    pub cancel_sent: HashSet<i64>,
    pub answered: HashSet<i64>,
    approved: HashSet<i64>,
    /// Items a person approved that orch has not moved on yet (approved once per wait).
    approving: HashSet<i64>,
    /// Items whose question a person answered while orch still shows it (once per question).
    answering: HashSet<i64>,
    /// Heads CI already ran on.
    ci_seen: HashSet<String>,
}

impl People {
    pub(super) fn new(opts: &SimOptions, script: Script) -> People {
        People {
            script,
            to_cancel: workspace::chosen(opts.items, opts.cancel_rate, opts.seed ^ 0xC0FF_EE00),
            cancel_sent: HashSet::new(),
            answered: HashSet::new(),
            approved: HashSet::new(),
            approving: HashSet::new(),
            answering: HashSet::new(),
            ci_seen: HashSet::new(),
        }
    }

    /// One look at Plane and Gitea, and what the people do about it.
    pub(super) async fn act(&mut self, plane: &FakePlane, gitea: &FakeGitea, ci_delay: Duration) {
        let items = plane.items();
        let s = &self.script;
        let shows = |state: &Option<String>, i: &fakes::PlaneItem| state.as_ref() == Some(&i.state);
        // A person answers every question orch shows (Needs Input) in a comment.
        // (An agent that asks at more than one human gate is answered each time.)
        for i in items.iter().filter(|i| shows(&s.needs_input, i)) {
            self.answered.insert(i.seq);
            if self.answering.insert(i.seq) {
                plane.human_comments(i.seq, "The simple way, please.").await;
            }
        }
        self.answering.retain(|seq| {
            items
                .iter()
                .any(|i| i.seq == *seq && shows(&s.needs_input, i))
        });
        // A person cancels the chosen items once development has started (orch shows it as
        // In Progress after the approval).
        if let Some(cancel) = &s.cancel {
            for i in items.iter().filter(|i| {
                self.to_cancel.contains(&i.seq)
                    && (self.approved.contains(&i.seq) || !s.has_human_gate)
                    && shows(&s.cancel_after, i)
            }) {
                if self.cancel_sent.insert(i.seq) {
                    plane.human_sets(i.seq, cancel).await;
                }
            }
        }
        // A person approves every stage that waits for one (at every human gate). A task
        // that comes back to a human gate is approved again.
        if let Some(approve) = &s.approve {
            for i in items.iter().filter(|i| shows(&s.awaiting_human, i)) {
                self.approved.insert(i.seq);
                if self.approving.insert(i.seq) {
                    plane.human_sets(i.seq, approve).await;
                }
            }
            self.approving.retain(|seq| {
                items
                    .iter()
                    .any(|i| i.seq == *seq && shows(&s.awaiting_human, i))
            });
        }
        // CI runs on every new head of a task branch.
        for (branch, sha) in gitea.heads().await {
            if branch.starts_with("feature/") && self.ci_seen.insert(sha.clone()) {
                let g = gitea.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(ci_delay).await;
                    g.ci_finished(&sha).await;
                });
            }
        }
    }
}
