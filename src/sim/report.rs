//! What a simulation run reports, and its table.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    pub items: usize,
    /// Items Plane shows Done.
    pub done: usize,
    /// Tasks orch has in its final (non-cancel) stage.
    pub done_in_orch: usize,
    /// Tasks left in an open stage at the end, each with its stage and last job.
    pub unfinished: Vec<String>,
    /// Times the engine was killed and restarted.
    pub kills: usize,
    /// Engines on the one database.
    pub replicas: usize,
    /// Kills of the `sweep` lease's holder; of those, `leaderless_kills` found no holder and
    /// killed a random replica instead.
    pub leader_kills: usize,
    pub leaderless_kills: usize,
    /// Per leader kill: when another replica held the lease, and when it had swept.
    pub handovers: Vec<Handover>,
    /// Jobs done per replica (`jobs.claimed_by`, by slot over its generations); `unknown`:
    /// jobs with no claim recorded.
    pub jobs_per_replica: BTreeMap<String, u64>,
    /// Effects a person would see twice (a comment shown twice for one external id). Must be 0.
    pub effects_duplicated: u64,
    /// Effects sent again and harmless: repeats Plane refused, states written that an item
    /// already had (a kill cut a call that had already arrived).
    pub effects_resent: u64,
    /// Plane API requests about single work items (reads, state writes, comments) per item,
    /// and listings (the Plane-side sweep's pages, states) in the whole run.
    pub plane_requests_per_item: f64,
    pub plane_listings: u64,
    /// Items a person cancelled, and of those, how many orch ended in the cancel stage.
    pub cancel_requested: usize,
    pub cancelled: usize,
    /// Cancelled items orch did not honour: task not cancelled, an agent still queued or
    /// running, or Plane no longer showing Cancelled. Must be 0.
    pub cancels_not_honoured: u64,
    /// Questions the analysts asked, and how many of those a person answered in Plane.
    pub questions: usize,
    pub answered: usize,
    /// Reviews that sent the work back to development.
    pub rejections: usize,
    pub time_to_done_p50_ms: u64,
    pub time_to_done_p99_ms: u64,
    pub webhooks_sent: u64,
    pub webhooks_dropped: u64,
    pub webhooks_rejected: u64,
    /// Webhooks sent while the engine was down (killed): lost, like a 502 during a deploy.
    pub webhooks_unreachable: u64,
    pub unblocks: u64,
    pub replays: u64,
    pub duplicates: u64,
    pub elapsed_ms: u64,
    /// With a shadow rule set: every divergence it kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow_divergences: Option<Vec<crate::store::shadow::DivergenceRow>>,
}

/// One leader kill's handover, in milliseconds after the kill; `None`: not seen by the end.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Handover {
    /// Another replica acquired the `sweep` lease (a newer fencing token).
    pub acquired_ms: Option<u64>,
    /// The new holder had swept since the kill.
    pub acting_ms: Option<u64>,
}

impl SimReport {
    pub fn table(&self) -> String {
        let mut rows = vec![
            vec![
                "items done".to_string(),
                format!("{} / {}", self.done, self.items),
            ],
            vec![
                "done in orch / in Plane".to_string(),
                format!("{} / {}", self.done_in_orch, self.done),
            ],
            vec![
                "time to done p50".into(),
                format!("{:.1} s", self.time_to_done_p50_ms as f64 / 1e3),
            ],
            vec![
                "time to done p99".into(),
                format!("{:.1} s", self.time_to_done_p99_ms as f64 / 1e3),
            ],
            vec!["webhooks delivered".into(), self.webhooks_sent.to_string()],
            vec!["webhooks dropped".into(), self.webhooks_dropped.to_string()],
            vec![
                "webhooks rejected by orch".into(),
                self.webhooks_rejected.to_string(),
            ],
            vec![
                "unblocks by the reconciler".into(),
                self.unblocks.to_string(),
            ],
            vec!["Plane states replayed".into(), self.replays.to_string()],
            vec!["duplicates found".into(), self.duplicates.to_string()],
            vec![
                "Plane requests per item".into(),
                format!("{:.1}", self.plane_requests_per_item),
            ],
            vec![
                "Plane listings (sweep)".into(),
                self.plane_listings.to_string(),
            ],
            vec![
                "wall time".into(),
                format!("{:.1} s", self.elapsed_ms as f64 / 1e3),
            ],
        ];
        if self.rejections > 0 {
            rows.insert(
                1,
                vec!["reviews rejected".into(), self.rejections.to_string()],
            );
        }
        if self.questions > 0 {
            rows.insert(
                1,
                vec![
                    "questions answered".into(),
                    format!("{} / {}", self.answered, self.questions),
                ],
            );
        }
        // Cancels only when the run had any (`--cancel-rate`).
        if self.cancel_requested > 0 {
            rows.insert(
                1,
                vec![
                    "items cancelled".into(),
                    format!("{} / {}", self.cancelled, self.cancel_requested),
                ],
            );
            rows.insert(
                2,
                vec![
                    "cancels not honoured".into(),
                    self.cancels_not_honoured.to_string(),
                ],
            );
        }
        if self.kills > 0 {
            rows.insert(
                1,
                vec!["engine kills (kill -9)".into(), self.kills.to_string()],
            );
            rows.insert(
                rows.len() - 4,
                vec![
                    "webhooks lost to kills".into(),
                    self.webhooks_unreachable.to_string(),
                ],
            );
        }
        if self.replicas > 1 || self.leader_kills > 0 {
            let at = rows.len() - 1;
            rows.splice(at..at, self.replica_rows());
        }
        let mut out = crate::report::table(&["SIMULATION", "RESULT"], &rows);
        if !self.unfinished.is_empty() {
            out.push_str(&format!("\nunfinished: {}\n", self.unfinished.len()));
            for line in &self.unfinished {
                out.push_str(&format!("  {line}\n"));
            }
        }
        if let Some(divergences) = &self.shadow_divergences {
            out.push_str(&format!(
                "\nshadow rules: {} divergence(s) from the live rules\n",
                divergences.len()
            ));
            for d in divergences.iter().map(|r| &r.divergence) {
                out.push_str(&format!(
                    "  {} {} ({}): live {} [{}], shadow {} [{}]\n",
                    d.work_item,
                    d.stage,
                    d.trigger,
                    d.live.outcome,
                    d.live.rule,
                    d.shadow.outcome,
                    d.shadow.rule
                ));
            }
        }
        out
    }
}

impl SimReport {
    /// The exit criteria for replicas, applied to what the run could see: nothing
    /// shown twice; with claims recorded (no `unknown` jobs), every replica did work; with a
    /// `sweep` lease found at the leader kills, every handover acquired within
    /// `lease_ttl + 1.5 s` and no more resent effects than kills.
    pub fn replica_criteria_met(&self, lease_ttl: Duration) -> bool {
        let bound = (lease_ttl + Duration::from_millis(1500)).as_millis() as u64;
        let claims = !self.jobs_per_replica.contains_key("unknown");
        let spread = !claims
            || self.replicas <= 1
            || (0..self.replicas).all(|i| {
                self.jobs_per_replica
                    .get(&format!("sim-{i}"))
                    .is_some_and(|n| *n > 0)
            });
        let leases = !self.handovers.is_empty();
        let handovers = self
            .handovers
            .iter()
            .all(|h| h.acquired_ms.is_some_and(|ms| ms <= bound));
        let resent = self.effects_resent <= (self.kills + self.leader_kills) as u64;
        self.effects_duplicated == 0 && spread && (!leases || (handovers && resent))
    }

    /// The rows of a run with replicas: kills of the leader, handovers, jobs per replica,
    /// effects twice.
    fn replica_rows(&self) -> Vec<Vec<String>> {
        let jobs: Vec<String> = self
            .jobs_per_replica
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        let mut rows = vec![
            vec!["replicas".to_string(), self.replicas.to_string()],
            vec![
                "leader kills".into(),
                if self.leaderless_kills > 0 {
                    format!(
                        "{} ({} found no sweep lease held: a random replica)",
                        self.leader_kills, self.leaderless_kills
                    )
                } else {
                    self.leader_kills.to_string()
                },
            ],
            vec!["jobs per replica".into(), jobs.join(", ")],
            vec![
                "effects duplicated".into(),
                self.effects_duplicated.to_string(),
            ],
            vec!["effects resent".into(), self.effects_resent.to_string()],
        ];
        let ms = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |ms| format!("{ms} ms"));
        for (i, h) in self.handovers.iter().enumerate() {
            rows.insert(
                2 + i,
                vec![
                    format!("handover {} acquired/acting", i + 1),
                    format!("{} / {}", ms(h.acquired_ms), ms(h.acting_ms)),
                ],
            );
        }
        rows
    }
}

pub(super) fn percentile(sorted: &[Duration], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_millis() as u64
}
