//! This process's identity among the `orch serve` processes (replicas) that share one
//! database (issue 15; `docs/design/postgres-replicas.md` (e)).
//!
//! The id is new on every process start (`<name>:<pid>:<8 random hex>`), so a restarted
//! process never mistakes its previous incarnation's job claims or leases for its own: those
//! expire and are taken over like any other silent replica's.

use std::fmt;
use std::sync::Arc;

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
}
