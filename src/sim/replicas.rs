//! The replicas of a run: one engine per slot on the one database, killed (`kill -9`) and
//! restarted as the next generation; the leader (the `sweep` lease's holder) found and
//! killed on purpose, and its handover measured.
//!
//! Each slot's engine has its own `repos_dir` (worktrees are local to a host), listen port and
//! `replicas.name = sim-<i>-g<generation>`, so a report names replicas readably. The fakes'
//! webhooks go to the live engines through [`Hooks::set_targets`] (a load balancer).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::app::AppState;
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::config::Config;

use super::engine::Engine;
use super::fakes::Hooks;
use super::report::Handover;

/// How long a killed replica stays down while others are up (its lease must expire).
const RESTART_AFTER: Duration = Duration::from_secs(1);

struct Slot {
    engine: Option<Engine>,
    generation: u32,
    dead_since: Option<Instant>,
}

/// A leader kill whose handover is still being watched.
struct Watch {
    killed_at: Instant,
    killed_wall: Timestamp,
    old_token: i64,
    index: usize,
}

pub(super) struct Replicas {
    slots: Vec<Slot>,
    /// How many replicas the run has (the slots, live or not).
    count: usize,
    base: Config,
    root: PathBuf,
    rng: StdRng,
    /// Leader kills whose handover is not complete yet (a second kill may come first).
    watches: Vec<Watch>,
    pub handovers: Vec<Handover>,
    /// Leader kills that found no `sweep` lease held and killed a random replica instead.
    pub leaderless_kills: usize,
}

impl Replicas {
    /// Starts `n` engines on `base` (one database), the webhooks not yet pointed at them.
    pub(super) async fn start(
        base: Config,
        root: &Path,
        n: usize,
        seed: u64,
    ) -> anyhow::Result<Replicas> {
        let mut r = Replicas {
            slots: Vec::new(),
            count: n.max(1),
            base,
            root: root.to_path_buf(),
            rng: StdRng::seed_from_u64(seed ^ 0x4C45_4144),
            watches: Vec::new(),
            handovers: Vec::new(),
            leaderless_kills: 0,
        };
        for i in 0..n.max(1) {
            let engine = Engine::start(r.config(i, 0))
                .await
                .with_context(|| format!("starting replica sim-{i}"))?;
            r.slots.push(Slot {
                engine: Some(engine),
                generation: 0,
                dead_since: None,
            });
        }
        Ok(r)
    }

    /// Slot `i`'s configuration in `generation`: the shared one with a worktree directory, a
    /// port and a name of its own. One replica keeps today's `repos` directory.
    fn config(&self, i: usize, generation: u32) -> Config {
        let mut cfg = self.base.clone();
        if self.count > 1 {
            cfg.repos_dir = self.root.join(format!("repos-{i}"));
        }
        cfg.replicas.name = Some(format!("sim-{i}-g{generation}"));
        cfg
    }

    /// Any live engine (the database is shared, so any one reads it all).
    pub(super) fn live(&self) -> anyhow::Result<&Engine> {
        self.slots
            .iter()
            .find_map(|s| s.engine.as_ref())
            .context("no replica is running")
    }

    pub(super) fn state(&self) -> anyhow::Result<&AppState> {
        Ok(&self.live()?.state)
    }

    /// A counter summed over the live engines (a killed engine's counts are lost with it).
    pub(super) fn sum(&self, counter: impl Fn(&crate::metrics::Metrics) -> u64) -> u64 {
        self.slots
            .iter()
            .filter_map(|s| s.engine.as_ref())
            .map(|e| counter(&e.state.metrics))
            .sum()
    }

    /// The live engines' URLs, for the load balancer.
    pub(super) fn urls(&self) -> Vec<String> {
        self.slots
            .iter()
            .filter_map(|s| s.engine.as_ref().map(|e| e.url.clone()))
            .collect()
    }

    /// Stops every live engine as SIGTERM would.
    pub(super) async fn stop(&mut self) {
        for slot in &mut self.slots {
            if let Some(engine) = slot.engine.take() {
                engine.stop().await;
            }
        }
    }

    /// Kills a random live replica (`--kills`).
    pub(super) async fn kill_random(&mut self, hooks: &Hooks) -> anyhow::Result<()> {
        let live: Vec<usize> = (0..self.slots.len())
            .filter(|i| self.slots[*i].engine.is_some())
            .collect();
        let i = match live.len() {
            0 => return Ok(()),
            1 => live[0],
            n => live[self.rng.random_range(0..n)],
        };
        self.kill(i, hooks).await
    }

    /// Kills the holder of the `sweep` lease and watches for its handover; without a holder
    /// (no lease code yet, or between holders) a random replica, counted as leaderless.
    pub(super) async fn kill_leader(&mut self, hooks: &Hooks) -> anyhow::Result<()> {
        let lease = sweep_lease(&self.state()?.store).await?;
        let slot = lease.as_ref().and_then(|(holder, _)| {
            self.slots.iter().position(|s| {
                s.engine
                    .as_ref()
                    .is_some_and(|e| e.state.replica.as_str() == holder)
            })
        });
        let (Some(i), Some((_, token))) = (slot, lease) else {
            self.leaderless_kills += 1;
            return self.kill_random(hooks).await;
        };
        self.handovers.push(Handover::default());
        self.watches.push(Watch {
            killed_at: Instant::now(),
            killed_wall: SystemClock.now(),
            old_token: token,
            index: self.handovers.len() - 1,
        });
        self.kill(i, hooks).await
    }

    /// `kill -9` of slot `i`; it restarts later as the next generation, or at once when it
    /// was the only one up.
    async fn kill(&mut self, i: usize, hooks: &Hooks) -> anyhow::Result<()> {
        if let Some(mut engine) = self.slots[i].engine.take() {
            engine.kill();
        }
        self.slots[i].dead_since = Some(Instant::now());
        hooks.set_targets(self.urls());
        if self.slots.iter().all(|s| s.engine.is_none()) {
            self.restart(i, hooks).await?;
        }
        Ok(())
    }

    async fn restart(&mut self, i: usize, hooks: &Hooks) -> anyhow::Result<()> {
        let generation = self.slots[i].generation + 1;
        let engine = Engine::start(self.config(i, generation))
            .await
            .with_context(|| format!("restarting replica sim-{i} after a kill"))?;
        self.slots[i] = Slot {
            engine: Some(engine),
            generation,
            dead_since: None,
        };
        hooks.set_targets(self.urls());
        Ok(())
    }

    /// Restarts the replicas down for [`RESTART_AFTER`], and measures a watched handover.
    pub(super) async fn tick(&mut self, hooks: &Hooks) -> anyhow::Result<()> {
        for i in 0..self.slots.len() {
            if self.slots[i]
                .dead_since
                .is_some_and(|t| t.elapsed() >= RESTART_AFTER)
            {
                self.restart(i, hooks).await?;
            }
        }
        self.watch_handover().await
    }

    /// Handover acquired: a `sweep` lease with a newer token than the killed leader's;
    /// acting: its holder has swept since the kill. Each leader kill is watched on its own: a
    /// second kill may come before the first handover is acting.
    async fn watch_handover(&mut self) -> anyhow::Result<()> {
        if self.watches.is_empty() {
            return Ok(());
        }
        let Some((holder, token)) = sweep_lease(&self.state()?.store).await? else {
            return Ok(());
        };
        let swept = self
            .slots
            .iter()
            .filter_map(|s| s.engine.as_ref())
            .find(|e| e.state.replica.as_str() == holder)
            .and_then(|e| e.state.reconcile.lock().map(|s| s.last_sweep_at).unwrap_or_default());
        let handovers = &mut self.handovers;
        self.watches.retain(|w| {
            if token <= w.old_token {
                return true;
            }
            let elapsed = w.killed_at.elapsed().as_millis() as u64;
            let handover = &mut handovers[w.index];
            handover.acquired_ms.get_or_insert(elapsed);
            if swept.is_some_and(|at| at > w.killed_wall) {
                handover.acting_ms = Some(elapsed);
                return false;
            }
            true
        });
        Ok(())
    }

    /// Jobs done per replica (`jobs.claimed_by`, folded over generations: `sim-1`); jobs with
    /// no claim recorded count as `unknown`.
    pub(super) async fn jobs_per_replica(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let rows = self
            .state()?
            .store
            .call(|c| {
                c.query_map(
                    "SELECT claimed_by, COUNT(*) FROM jobs WHERE status = 'done' GROUP BY claimed_by",
                    args![],
                    |r| Ok((r.get::<Option<String>>(0)?, r.get::<i64>(1)?)),
                )
            })
            .await?;
        let mut out = BTreeMap::new();
        for (holder, n) in rows {
            let name = holder.as_deref().map_or("unknown", slot_name).to_string();
            *out.entry(name).or_default() += u64::try_from(n).unwrap_or(0);
        }
        Ok(out)
    }
}

/// `sim-1` of `sim-1-g2:1234:0badcafe`.
fn slot_name(replica: &str) -> &str {
    let name = replica.split(':').next().unwrap_or(replica);
    match name.rsplit_once("-g") {
        Some((slot, generation)) if generation.chars().all(|c| c.is_ascii_digit()) => slot,
        _ => name,
    }
}

/// The live `sweep` lease: its holder and fencing token, by the database's clock.
async fn sweep_lease(store: &crate::store::Store) -> anyhow::Result<Option<(String, i64)>> {
    Ok(store
        .call(|c| {
            let sql = format!(
                "SELECT holder, token FROM leases WHERE name = 'sweep' AND expires_at > {}",
                c.now_ms_sql()
            );
            c.query_opt(&sql, args![], |r| {
                Ok((r.get::<Option<String>>(0)?, r.get::<i64>(1)?))
            })
        })
        .await?
        .and_then(|(holder, token)| Some((holder?, token))))
}

#[cfg(test)]
mod tests {
    use super::slot_name;

    #[test]
    fn replicas_fold_by_slot_over_generations() {
        assert_eq!(slot_name("sim-1-g2:1234:0badcafe"), "sim-1");
        assert_eq!(slot_name("sim-0-g0:1:00000000"), "sim-0");
        assert_eq!(slot_name("web-gateway:1:00000000"), "web-gateway");
    }
}
