//! Lock files git left behind when it was killed.
//!
//! Git guards every file it rewrites with `<file>.lock`, created exclusively and renamed into
//! place at the end. A git process killed half-way leaves its lock, and every later command
//! that needs the file fails with "File exists" until somebody deletes it: each job of the
//! task fails until its retries run out and the task is blocked. Killed gits are ordinary
//! here: a git command of ours past its timeout, an agent's process group killed by a cancel
//! or its timeout (mid `git commit`), the whole service killed with its children (systemd's
//! control group, a container restart, `orch simulate --kills`).
//!
//! A lock is taken for stale at three moments, each where nothing of ours can hold it:
//! - at start, every lock under `repos_dir`: the clones and worktrees are this replica's own
//!   (one `repos_dir` per replica), and the gits of the last process died with it;
//! - before a job, the locks of its task's worktree and branch ref: the task's earlier agents
//!   have ended (their process groups killed), our own git commands on the clone run under the
//!   clone's lock the caller holds, and the job resets the worktree anyway;
//! - before a fetch, the clone's locks older than the git timeout, the longest any git command
//!   of ours may run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Git;

/// Directories of a clone's `.git` left out of the walk: many files (`objects`, `logs`, whose
/// reflogs are guarded by their ref's lock) and no lock that fails a command.
const SKIPPED: &[&str] = &["objects", "logs", "hooks", "info"];
/// Before a fetch (on every job's path) the worktrees' files are left out too: each job clears
/// its own worktree's locks ([`Git::clear_worktree_locks`]), and a fetch does not touch them.
const SKIPPED_BEFORE_FETCH: &[&str] = &["objects", "logs", "hooks", "info", "worktrees"];

impl Git {
    /// Removes every lock file under the clones of `repos_dir` (their `.git` directories,
    /// the worktrees' administrative files with them). For the start of the process, before
    /// any job runs. Returns how many were removed; a directory that cannot be read is
    /// logged and skipped.
    pub async fn clear_locks_left_by_last_process(&self) -> usize {
        let repos_dir = self.repos_dir.clone();
        let locks = tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            for git_dir in clone_git_dirs(&repos_dir) {
                find_locks(&git_dir, SKIPPED, None, &mut found);
            }
            found
        })
        .await
        .unwrap_or_default();
        let mut removed = 0;
        for lock in locks {
            if remove(&lock, "left by the last process").await {
                removed += 1;
            }
        }
        removed
    }

    /// Removes the clone's locks older than the git timeout. Called under the clone's lock.
    pub(super) async fn clear_stale_locks(&self, clone: &Path) {
        let (git_dir, timeout) = (clone.join(".git"), self.timeout);
        let locks = tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            find_locks(&git_dir, SKIPPED_BEFORE_FETCH, Some(timeout), &mut found);
            found
        })
        .await
        .unwrap_or_default();
        for lock in locks {
            remove(&lock, "older than the git timeout").await;
        }
    }

    /// Removes the locks of `worktree`'s own files (its index, HEAD, ORIG_HEAD, AUTO_MERGE…)
    /// and of `branch`'s ref in the clone. Called under the clone's lock, before a job runs
    /// in the worktree.
    pub(super) async fn clear_worktree_locks(&self, clone: &Path, worktree: &Path, branch: &str) {
        let mut candidates = vec![clone.join(".git/refs/heads").join(format!("{branch}.lock"))];
        if let Some(admin) = worktree_admin_dir(worktree).await
            && let Ok(mut entries) = tokio::fs::read_dir(&admin).await
        {
            while let Ok(Some(entry)) = entries.next_entry().await {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "lock") {
                    candidates.push(path);
                }
            }
        }
        for lock in candidates {
            if tokio::fs::try_exists(&lock).await.unwrap_or(false) {
                remove(&lock, "left in the task's worktree by a killed git").await;
            }
        }
    }
}

/// Removes `lock`, logged; true when it was removed.
async fn remove(lock: &Path, why: &str) -> bool {
    match tokio::fs::remove_file(lock).await {
        Ok(()) => {
            tracing::warn!(lock = %lock.display(), why, "removed a stale git lock file");
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            tracing::warn!(lock = %lock.display(), error = %e, "cannot remove a stale git lock file");
            false
        }
    }
}

/// The worktree's administrative directory in the clone (`.git/worktrees/<name>`), read
/// from the `gitdir:` line of its `.git` file.
pub(super) async fn worktree_admin_dir(worktree: &Path) -> Option<PathBuf> {
    let text = tokio::fs::read_to_string(worktree.join(".git")).await.ok()?;
    let dir = text.lines().find_map(|l| l.strip_prefix("gitdir:"))?.trim();
    Some(worktree.join(dir))
}

/// The `.git` directories of the clones in `repos_dir` (`<owner>/<name>/.git`).
fn clone_git_dirs(repos_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for owner in subdirs(repos_dir) {
        for clone in subdirs(&owner) {
            let git_dir = clone.join(".git");
            if git_dir.is_dir() {
                out.push(git_dir);
            }
        }
    }
    out
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect(),
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot look for stale git locks");
            }
            Vec::new()
        }
    }
}

/// Collects the `*.lock` files under `dir` (older than `older_than`, when given), not
/// descending into the `skipped` directories at the top.
fn find_locks(
    dir: &Path,
    skipped: &[&str],
    older_than: Option<Duration>,
    found: &mut Vec<PathBuf>,
) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                let skip = d == dir && skipped.iter().any(|s| entry.file_name() == *s);
                if !skip {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "lock") && old_enough(&entry, older_than)
            {
                found.push(path);
            }
        }
    }
}

fn old_enough(entry: &std::fs::DirEntry, older_than: Option<Duration>) -> bool {
    let Some(min) = older_than else {
        return true;
    };
    entry
        .metadata()
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|m| m.elapsed().ok())
        .is_some_and(|age| age > min)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "").unwrap();
    }

    #[test]
    fn locks_are_found_in_refs_and_worktrees_but_not_in_objects() {
        let dir = tempfile::tempdir().unwrap();
        let git = dir.path().join("acme/widget/.git");
        for p in [
            "index.lock",
            "refs/remotes/origin/feature/x.lock",
            "worktrees/feature__x/index.lock",
            "objects/maintenance.lock",
            "refs/heads/main",
        ] {
            touch(&git.join(p));
        }
        let mut found = Vec::new();
        for g in clone_git_dirs(dir.path()) {
            find_locks(&g, SKIPPED, None, &mut found);
        }
        let mut names: Vec<String> = found
            .iter()
            .map(|p| p.strip_prefix(&git).unwrap().display().to_string())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "index.lock",
                "refs/remotes/origin/feature/x.lock",
                "worktrees/feature__x/index.lock"
            ]
        );
        let mut young = Vec::new();
        find_locks(&git, SKIPPED, Some(Duration::from_secs(60)), &mut young);
        assert!(young.is_empty(), "fresh locks are not stale by age: {young:?}");
    }
}
