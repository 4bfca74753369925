//! Agents the last process left running.
//!
//! An agent runs in a process group of its own (so a timeout or a cancel kills everything it
//! started), and so outlives orch: after a `kill -9` of orch alone, or a crash, it keeps
//! running, an orphan, spending tokens and writing in a worktree whose job the restarted
//! orch runs again. Every process an agent starts inherits `ORCH_WORKTREE`, a path under
//! `repos_dir/worktrees`; `repos_dir` is one replica's own. So at start, before this process
//! runs any agent, every process naming a worktree of this `repos_dir` is an orphan of the
//! last one, and its process group is killed.
//!
//! Linux only (`/proc`); elsewhere orphans are left to the service manager.

use std::path::{Path, PathBuf};

/// Kills the process groups of the agents the last process left running under `repos_dir`;
/// returns how many processes were found. Never fails: a process that cannot be read is
/// not ours (another user's) or already gone.
pub fn kill_orphans(repos_dir: &Path) -> usize {
    let prefixes = worktree_prefixes(repos_dir);
    let me = std::process::id();
    let mut found = 0;
    for (pid, worktree) in agent_processes() {
        if pid == me || !prefixes.iter().any(|p| worktree.starts_with(p)) {
            continue;
        }
        found += 1;
        tracing::warn!(
            pid,
            worktree = %worktree.display(),
            "killing an agent the last process left running (its job runs again)"
        );
        kill_group_of(pid);
    }
    found
}

/// `repos_dir/worktrees` as configured and as an absolute path: `ORCH_WORKTREE` carries it
/// the way the configuration spelled it.
fn worktree_prefixes(repos_dir: &Path) -> Vec<PathBuf> {
    let given = repos_dir.join("worktrees");
    let mut out = vec![given.clone()];
    if let Ok(abs) = std::path::absolute(&given) {
        out.push(abs);
    }
    if let Ok(real) = std::fs::canonicalize(&given) {
        out.push(real);
    }
    out
}

/// Every readable process with `ORCH_WORKTREE` in its environment, with its value.
#[cfg(target_os = "linux")]
fn agent_processes() -> Vec<(u32, PathBuf)> {
    use std::os::unix::ffi::OsStrExt;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            let value = environ
                .split(|b| *b == 0)
                .find_map(|var| var.strip_prefix(b"ORCH_WORKTREE="))?;
            Some((pid, PathBuf::from(std::ffi::OsStr::from_bytes(value))))
        })
        .collect()
}

#[cfg(not(target_os = "linux"))]
fn agent_processes() -> Vec<(u32, PathBuf)> {
    Vec::new()
}

/// SIGKILL to `pid`'s process group (the agent's own), or to `pid` alone when its group is
/// ours or init's.
fn kill_group_of(pid: u32) {
    #[cfg(unix)]
    {
        let Ok(pid) = i32::try_from(pid) else {
            return;
        };
        // SAFETY: getpgid/getpgrp only read; kill/killpg only send a signal.
        unsafe {
            let group = libc::getpgid(pid);
            if group > 1 && group != libc::getpgrp() {
                libc::killpg(group, libc::SIGKILL);
            } else {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
    #[cfg(not(unix))]
    let _ = pid;
}
