//! This process's identity among the `orch serve` processes (replicas) that share one
//! database (issue 15; `docs/design/postgres-replicas.md` (e)).
//!
//! The id is new on every process start (`<name>:<pid>:<8 random hex>`), so a restarted
//! process never mistakes its previous incarnation's job claims or leases for its own: those
//! expire and are taken over like any other silent replica's.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// One replica's id: what `jobs.claimed_by`, `leases.holder` and `replicas.id` hold.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReplicaId(Arc<str>);

impl ReplicaId {
    /// A fresh id for this process: `name` (default: the host name) and the pid, so a person
    /// reading `/queue` can find the process, and random hex, so two starts never collide.
    pub fn generate(name: Option<&str>) -> ReplicaId {
        let name = match name {
            Some(n) if !n.trim().is_empty() => n.trim().to_string(),
            _ => host_name(),
        };
        let salt: u32 = rand::random();
        ReplicaId(format!("{name}:{}:{salt:08x}", std::process::id()).into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The host name as the kernel has it (Linux), else `$HOSTNAME`, else `localhost`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Whether this replica may run agents: self-fencing (plan (e)). A replica whose heartbeat
/// has not succeeded for two thirds of the lease time may already be taken for dead by the
/// others, who re-queue its jobs after the whole lease time; so before that it stops its agents
/// (as a shutdown does) and claims nothing until a heartbeat succeeds again. An agent then never
/// runs on two machines at once unless the kill itself fails.
#[derive(Debug)]
pub struct Liveness {
    fenced: watch::Sender<bool>,
    /// When the last successful heartbeat started (monotonic clock).
    last_ok: Mutex<Instant>,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            fenced: watch::channel(false).0,
            last_ok: Mutex::new(Instant::now()),
        }
    }
}

impl Liveness {
    /// How long without a successful heartbeat before the replica fences itself.
    pub fn fence_after(lease_ttl: Duration) -> Duration {
        lease_ttl.saturating_mul(2) / 3
    }

    pub fn is_fenced(&self) -> bool {
        *self.fenced.borrow()
    }

    /// Follows the fence: the worker kills its agents when it goes up.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.fenced.subscribe()
    }

    /// The deadline by which a heartbeat must succeed, given the lease time.
    pub fn deadline(&self, lease_ttl: Duration) -> Instant {
        *self.last_ok.lock().unwrap_or_else(|p| p.into_inner()) + Self::fence_after(lease_ttl)
    }

    /// A heartbeat that started at `started` succeeded: the fence (if up) comes down. True
    /// when it was up.
    pub fn heartbeat_ok(&self, started: Instant) -> bool {
        {
            let mut last = self.last_ok.lock().unwrap_or_else(|p| p.into_inner());
            *last = (*last).max(started);
        }
        self.fenced.send_replace(false)
    }

    /// No heartbeat succeeded in time: stop the agents, claim nothing. True when it was down.
    pub fn fence(&self) -> bool {
        !self.fenced.send_replace(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_the_process_and_never_repeat() {
        let a = ReplicaId::generate(Some("orch-a"));
        let b = ReplicaId::generate(Some("orch-a"));
        assert_ne!(a, b);
        let parts: Vec<&str> = a.as_str().split(':').collect();
        assert_eq!(parts[0], "orch-a");
        assert_eq!(parts[1], std::process::id().to_string());
        assert_eq!(parts[2].len(), 8);
        assert!(!ReplicaId::generate(None).as_str().starts_with(':'));
        assert!(!ReplicaId::generate(Some("  ")).as_str().starts_with(':'));
    }

    #[test]
    fn the_fence_goes_up_after_two_thirds_of_the_lease_and_down_on_a_heartbeat() {
        let ttl = Duration::from_secs(15);
        let before = Instant::now();
        let live = Liveness::default();
        let deadline = live.deadline(ttl);
        assert!(deadline >= before + Duration::from_secs(10));
        assert!(deadline <= Instant::now() + Duration::from_secs(10));
        assert!(!live.is_fenced());
        let mut rx = live.subscribe();
        assert!(live.fence(), "it was down");
        assert!(!live.fence(), "already up");
        assert!(rx.has_changed().unwrap() && *rx.borrow_and_update());
        let started = Instant::now() + Duration::from_secs(12);
        assert!(live.heartbeat_ok(started), "it was up");
        assert!(!live.is_fenced());
        assert_eq!(live.deadline(ttl), started + Duration::from_secs(10));
        // A slow heartbeat that started earlier does not move the deadline back.
        assert!(!live.heartbeat_ok(before));
        assert_eq!(live.deadline(ttl), started + Duration::from_secs(10));
    }
}
