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

mod locks;

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

/// A clone's lock, shared with the git commands run under it.
#[derive(Debug, Clone)]
struct Held {
    _guard: Arc<tokio::sync::OwnedMutexGuard<()>>,
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

    /// Takes the clone's lock; every command that writes the clone's shared state runs under
    /// it (see [`Git::run_held`]).
    async fn hold(&self, path: &Path) -> Held {
        let lock = {
            let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(map.entry(path.to_path_buf()).or_default())
        };
        Held {
            _guard: Arc::new(lock.lock_owned().await),
        }
    }

    /// Runs git with `args` in `cwd`; returns stdout.
    pub async fn run(&self, cwd: &Path, args: &[&str]) -> Result<String, GitError> {
        self.run_held(cwd, args, None).await
    }

    /// Runs git, keeping `held` (the clone's lock) until the command has ended.
    ///
    /// A git command is never killed half-way because its caller went away (a cancelled job,
    /// a shutdown): killed while holding `.git/config.lock` or `index.lock` it would leave the
    /// lock behind and break every later command on the clone. So it runs in a task of its own,
    /// holding the clone's lock, until it ends or its timeout kills it.
    async fn run_held(
        &self,
        cwd: &Path,
        args: &[&str],
        held: Option<&Held>,
    ) -> Result<String, GitError> {
        let shown = args.join(" ");
        let mut cmd = Command::new("git");
        cmd.args(args)
            .current_dir(cwd)
            .env("GIT_TERMINAL_PROMPT", "0")
            .kill_on_drop(true)
            .stdin(std::process::Stdio::null());
        let timeout = self.timeout;
        let held = held.cloned();
        let started = std::time::Instant::now();
        let finished = tokio::spawn(async move {
            let _held = held;
            tokio::time::timeout(timeout, cmd.output()).await
        })
        .await;
        tracing::debug!(args = %shown, cwd = %cwd.display(), elapsed_ms = started.elapsed().as_millis() as u64, "git command ended");
        let out = match finished {
            Err(join) => {
                return Err(GitError::Spawn {
                    args: shown,
                    source: std::io::Error::other(join.to_string()),
                });
            }
            Ok(Err(_)) => {
                return Err(GitError::Timeout {
                    args: shown,
                    timeout: self.timeout,
                });
            }
            Ok(Ok(Err(source))) => {
                return Err(GitError::Spawn {
                    args: shown,
                    source,
                });
            }
            Ok(Ok(Ok(out))) => out,
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
        let held = self.hold(&path).await;
        if path.join(".git").exists() {
            self.clear_stale_locks(&path).await;
            self.run_held(&path, &["fetch", "--prune", "origin"], Some(&held))
                .await?;
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
        self.run_held(
            &parent,
            &["clone", "--quiet", clone_url, &staging],
            Some(&held),
        )
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
        let held = self.hold(repo_path).await;
        let path = self.worktree_path(branch);
        if path.join(".git").exists() {
            if locks::worktree_admin_dir(&path)
                .await
                .is_some_and(|admin| admin.join("HEAD").exists())
            {
                return Ok(path);
            }
            // A `worktree add` killed half-way leaves an empty or dangling `.git` file, and every
            // later command in the worktree fails ("invalid gitfile format"): make it again.
            tracing::warn!(worktree = %path.display(), "a worktree left half-made by a killed git; making it again");
            tokio::fs::remove_dir_all(&path)
                .await
                .map_err(|source| GitError::Spawn {
                    args: format!("worktree add (removing {})", path.display()),
                    source,
                })?;
        }
        // Forget worktrees whose directory is gone (the one above, or a `worktree remove`
        // killed between deleting the directory and its administrative files): `worktree add`
        // refuses a path still registered.
        self.run_held(repo_path, &["worktree", "prune"], Some(&held))
            .await?;
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
            self.run_held(
                repo_path,
                &["worktree", "add", &path_s, branch],
                Some(&held),
            )
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
        self.run_held(
            repo_path,
            &["worktree", "add", track, "-b", branch, &path_s, &start],
            Some(&held),
        )
        .await?;
        Ok(path)
    }

    /// Brings the worktree of `branch` to `origin/<branch>` (as of the clone's last fetch)
    /// when the remote has that branch: `reset --hard` and `clean -fd`. With replicas the
    /// remote branch is the only shared state of a task's code; a worktree left behind by
    /// another replica's push would otherwise fail every push of its own. Local commits the
    /// remote does not have belong to a run that never pushed them (a crash) and go too
    /// (logged). True when it reset; false when the remote has no such branch yet.
    pub async fn sync_worktree(
        &self,
        repo_path: &Path,
        worktree: &Path,
        branch: &str,
    ) -> Result<bool, GitError> {
        let held = self.hold(repo_path).await;
        self.clear_worktree_locks(repo_path, worktree, branch).await;
        let remote = format!("refs/remotes/origin/{branch}");
        let verify = ["rev-parse", "--verify", "--quiet", remote.as_str()];
        if self.run_held(repo_path, &verify, Some(&held)).await.is_err() {
            return Ok(false);
        }
        let unpushed = self
            .run_held(
                worktree,
                &["rev-list", "--count", &format!("{remote}..HEAD")],
                Some(&held),
            )
            .await
            .unwrap_or_default();
        if !unpushed.is_empty() && unpushed != "0" {
            tracing::warn!(branch, unpushed = %unpushed, "dropping local commits the remote branch does not have (a run that never pushed)");
        }
        self.run_held(worktree, &["reset", "--quiet", "--hard", &remote], Some(&held))
            .await?;
        self.run_held(worktree, &["clean", "-fdq"], Some(&held))
            .await?;
        Ok(true)
    }

    /// Removes the worktree of `branch` (its uncommitted files with it); the branch and its
    /// commits stay in the clone. Removing a worktree that is not there succeeds.
    pub async fn remove_worktree(&self, repo_path: &Path, branch: &str) -> Result<(), GitError> {
        let held = self.hold(repo_path).await;
        let path = self.worktree_path(branch);
        if !path.exists() {
            return Ok(());
        }
        let path_s = path.to_string_lossy().to_string();
        self.run_held(
            repo_path,
            &["worktree", "remove", "--force", &path_s],
            Some(&held),
        )
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
        // Under the clone's lock, like fetch: a push also writes the clone's remote-tracking
        // ref `origin/<branch>`, and a fetch updating the same ref at the same moment fails
        // ("cannot lock ref … but expected …").
        let held = self.hold(repo_path).await;
        self.run_held(
            worktree,
            &["push", "--quiet", "origin", &format!("{branch}:{branch}")],
            Some(&held),
        )
        .await?;
        // The upstream is a write to the clone's shared config, which every worktree shares.
        // Written as config rather than `branch --set-upstream-to`, which needs the
        // remote-tracking ref that a `fetch --prune` may have removed. A convenience for
        // agents, so a failure is logged, not a failed push.
        let merge = format!("refs/heads/{branch}");
        for (key, value) in [("remote", "origin"), ("merge", merge.as_str())] {
            let key = format!("branch.{branch}.{key}");
            if let Err(e) = self
                .run_held(worktree, &["config", &key, value], Some(&held))
                .await
            {
                tracing::warn!(branch, error = %e, "pushed, but could not record the upstream");
                break;
            }
        }
        Ok(())
    }

    #[cfg_attr(orch_audit, allow(dead_code))]
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
