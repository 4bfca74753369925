//! Git through the git CLI: clones, task worktrees, pushes.
//!
//! Every call runs with a timeout (a hung remote must not hang a job) and reports git's
//! stderr in its error. Layout under `repos_dir`: `owner/name` is a clone of the remote;
//! `worktrees/<branch with / replaced>` is one task's worktree on its own branch.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("git {args}: could not run git: {source}")]
    Spawn {
        args: String,
        source: std::io::Error,
    },
    #[error("git {args}: timed out after {timeout:?}")]
    Timeout { args: String, timeout: Duration },
    #[error("git {args}: exit {code:?}: {stderr}")]
    Failed {
        args: String,
        code: Option<i32>,
        stderr: String,
    },
    #[error("invalid repository name {0:?}: expected owner/name")]
    BadRepo(String),
}

#[derive(Debug, Clone)]
pub struct Git {
    repos_dir: PathBuf,
    timeout: Duration,
    /// One lock per clone: git itself does not serialise a clone racing a worktree add.
    locks: Arc<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>>,
}

/// `feature/<WORK-ITEM>-<slug of the title>`: lowercase ASCII, words joined by `-`, at most
/// 40 characters of slug, never empty.
pub fn branch_name(work_item: &str, title: &str) -> String {
    let mut slug = String::new();
    for c in title.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
        if slug.len() >= 40 {
            break;
        }
    }
    let slug = slug.trim_matches('-');
    let wi: String = work_item
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    if slug.is_empty() {
        format!("feature/{wi}")
    } else {
        format!("feature/{wi}-{slug}")
    }
}

/// One path component a repository name may use: no traversal, no separators.
fn safe_component(part: &str) -> bool {
    !part.is_empty()
        && part != "."
        && part != ".."
        && !part.contains(['/', '\\'])
        && !part.starts_with('-')
}

impl Git {
    pub fn new(repos_dir: PathBuf, timeout: Duration) -> Git {
        Git {
            repos_dir,
            timeout,
            locks: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn lock_for(&self, path: &Path) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry(path.to_path_buf()).or_default())
    }

    pub fn repos_dir(&self) -> &Path {
        &self.repos_dir
    }

    /// Runs git with `args` in `cwd`; returns stdout.
    pub async fn run(&self, cwd: &Path, args: &[&str]) -> Result<String, GitError> {
        let shown = args.join(" ");
        let mut cmd = Command::new("git");
        cmd.args(args)
            .current_dir(cwd)
            .env("GIT_TERMINAL_PROMPT", "0")
            .kill_on_drop(true)
            .stdin(std::process::Stdio::null());
        let child = cmd.output();
        let out = match tokio::time::timeout(self.timeout, child).await {
            Err(_) => {
                return Err(GitError::Timeout {
                    args: shown,
                    timeout: self.timeout,
                });
            }
            Ok(Err(source)) => {
                return Err(GitError::Spawn {
                    args: shown,
                    source,
                });
            }
            Ok(Ok(out)) => out,
        };
        if !out.status.success() {
            return Err(GitError::Failed {
                args: shown,
                code: out.status.code(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Where the local clone of `repo` (`owner/name`) lives; a name that could escape
    /// `repos_dir` is an error.
    pub fn clone_path(&self, repo: &str) -> Result<PathBuf, GitError> {
        let (owner, name) = repo
            .split_once('/')
            .filter(|(o, n)| [o, n].iter().all(|part| safe_component(part)))
            .ok_or_else(|| GitError::BadRepo(repo.to_string()))?;
        Ok(self.repos_dir.join(owner).join(name))
    }

    /// The local clone of `repo` (`owner/name`), cloned on first use and fetched otherwise.
    pub async fn ensure_clone(&self, repo: &str, clone_url: &str) -> Result<PathBuf, GitError> {
        let path = self.clone_path(repo)?;
        let (owner, name) = repo.split_once('/').unwrap_or_default();
        let lock = self.lock_for(&path);
        let _guard = lock.lock().await;
        if path.join(".git").exists() {
            self.run(&path, &["fetch", "--prune", "origin"]).await?;
            return Ok(path);
        }
        let parent = self.repos_dir.join(owner);
        tokio::fs::create_dir_all(&parent)
            .await
            .map_err(|source| GitError::Spawn {
                args: format!("clone (creating {})", parent.display()),
                source,
            })?;
        // Clone beside the target and rename into place, so a crash or timeout mid-clone
        // never leaves a half-made repository where the next attempt expects a whole one.
        let staging = format!(".{name}.cloning");
        let _ = tokio::fs::remove_dir_all(parent.join(&staging)).await;
        if path.exists() {
            let _ = tokio::fs::remove_dir_all(&path).await;
        }
        self.run(&parent, &["clone", "--quiet", clone_url, &staging])
            .await?;
        tokio::fs::rename(parent.join(&staging), &path)
            .await
            .map_err(|source| GitError::Spawn {
                args: format!("clone (moving into {})", path.display()),
                source,
            })?;
        Ok(path)
    }

    /// Where the worktree of `branch` lives.
    pub fn worktree_path(&self, branch: &str) -> PathBuf {
        self.repos_dir
            .join("worktrees")
            .join(branch.replace('/', "__"))
    }

    /// Adds (or returns the existing) worktree for `branch`, creating the branch from
    /// `base` (default: the remote's default branch) if it does not exist yet; an existing
    /// remote branch of that name is checked out instead.
    pub async fn add_worktree(
        &self,
        repo_path: &Path,
        branch: &str,
        base: Option<&str>,
    ) -> Result<PathBuf, GitError> {
        let lock = self.lock_for(repo_path);
        let _guard = lock.lock().await;
        let path = self.worktree_path(branch);
        if path.join(".git").exists() {
            return Ok(path);
        }
        let path_s = path.to_string_lossy().to_string();
        let local = self
            .run(
                repo_path,
                &[
                    "rev-parse",
                    "--verify",
                    "--quiet",
                    &format!("refs/heads/{branch}"),
                ],
            )
            .await
            .is_ok();
        if local {
            self.run(repo_path, &["worktree", "add", &path_s, branch])
                .await?;
            return Ok(path);
        }
        let remote_ref = format!("refs/remotes/origin/{branch}");
        let start = if self
            .run(
                repo_path,
                &["rev-parse", "--verify", "--quiet", &remote_ref],
            )
            .await
            .is_ok()
        {
            format!("origin/{branch}")
        } else {
            match base {
                Some(b) => b.to_string(),
                None => "origin/HEAD".to_string(),
            }
        };
        // Track the remote branch of the same name when starting from it; a new feature branch
        // tracks nothing until its first push (from `origin/HEAD` it would track main).
        let track = if start == format!("origin/{branch}") {
            "--track"
        } else {
            "--no-track"
        };
        // An empty remote has no origin/HEAD: start from an orphan-free HEAD in that case.
        let start = if self
            .run(repo_path, &["rev-parse", "--verify", "--quiet", &start])
            .await
            .is_ok()
        {
            start
        } else {
            "HEAD".to_string()
        };
        self.run(
            repo_path,
            &["worktree", "add", track, "-b", branch, &path_s, &start],
        )
        .await?;
        Ok(path)
    }

    /// Removes the worktree of `branch` (its uncommitted files with it); the branch and its
    /// commits stay in the clone. Removing a worktree that is not there succeeds.
    pub async fn remove_worktree(&self, repo_path: &Path, branch: &str) -> Result<(), GitError> {
        let lock = self.lock_for(repo_path);
        let _guard = lock.lock().await;
        let path = self.worktree_path(branch);
        if !path.exists() {
            return Ok(());
        }
        let path_s = path.to_string_lossy().to_string();
        self.run(repo_path, &["worktree", "remove", "--force", &path_s])
            .await?;
        Ok(())
    }

    /// Pushes `branch` from a worktree of the clone at `repo_path` to origin and makes
    /// `origin/<branch>` its upstream.
    pub async fn push(
        &self,
        repo_path: &Path,
        worktree: &Path,
        branch: &str,
    ) -> Result<(), GitError> {
        // The push itself runs unlocked: it is the slow, networked part and only writes the
        // branch's own refs.
        self.run(
            worktree,
            &["push", "--quiet", "origin", &format!("{branch}:{branch}")],
        )
        .await?;
        // The upstream is a write to the clone's shared config, which every worktree shares:
        // under the clone's lock, or it races a worktree add ("could not lock config file").
        // Written as config rather than `branch --set-upstream-to`, which needs the
        // remote-tracking ref that a concurrent `fetch --prune` may just have removed. A
        // convenience for agents, so a failure is logged, not a failed push.
        let lock = self.lock_for(repo_path);
        let _guard = lock.lock().await;
        let merge = format!("refs/heads/{branch}");
        for (key, value) in [("remote", "origin"), ("merge", merge.as_str())] {
            let key = format!("branch.{branch}.{key}");
            if let Err(e) = self.run(worktree, &["config", &key, value]).await {
                tracing::warn!(branch, error = %e, "pushed, but could not record the upstream");
                break;
            }
        }
        Ok(())
    }

    pub async fn head_sha(&self, worktree: &Path) -> Result<String, GitError> {
        self.run(worktree, &["rev-parse", "HEAD"]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_names_are_slugged() {
        assert_eq!(
            branch_name("ET-42", "Login redirect loop on Safari"),
            "feature/ET-42-login-redirect-loop-on-safari"
        );
        assert_eq!(
            branch_name("ET-1", "  Ünïcode & -- symbols!! "),
            "feature/ET-1-n-code-symbols"
        );
        assert_eq!(branch_name("ET-2", "???"), "feature/ET-2");
        let long = branch_name("ET-3", &"word ".repeat(40));
        assert!(long.len() <= "feature/ET-3-".len() + 40, "{long}");
        assert!(!long.ends_with('-'));
    }
}
