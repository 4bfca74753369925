//! What a simulation run reports, and its table.

use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    pub items: usize,
    /// Items Plane shows Done.
    pub done: usize,
    /// Tasks orch has in its final (non-cancel) stage.
    pub done_in_orch: usize,
    /// Times the engine was killed and restarted.
    pub kills: usize,
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
        let mut out = crate::report::table(&["SIMULATION", "RESULT"], &rows);
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

pub(super) fn percentile(sorted: &[Duration], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_millis() as u64
}
