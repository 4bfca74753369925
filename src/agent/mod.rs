//! Running one agent job per the agent protocol.
//!
//! The agent is an argv (no shell) run in the task's worktree with the `ORCH_*` environment,
//! in its own process group so that a timeout kills everything it started. Its output is kept
//! as a bounded tail; its optional result file is parsed and validated.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

mod orphans;
pub use orphans::kill_orphans;

#[derive(Debug, Clone)]
pub struct AgentRun {
    pub command: Vec<String>,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    pub result_file: PathBuf,
    /// How much of the combined output to keep (the tail).
    pub max_output_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Approve,
    Reject,
    Pass,
    Fail,
    /// The agent cannot go on without an answer from a person; its summary is the question.
    NeedsInput,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Reject => "reject",
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::NeedsInput => "needs_input",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentStatus {
    Succeeded,
    Failed { exit_code: Option<i32> },
    TimedOut,
    SpawnFailed { error: String },
    /// The job's worktree (or results directory) could not be prepared, so the agent never
    /// started: usually the git remote (retried up to the rules' `start_attempts`).
    NotPrepared { error: String },
}

#[derive(Debug, Clone)]
pub struct AgentOutcome {
    pub status: AgentStatus,
    pub verdict: Option<Verdict>,
    pub summary: Option<String>,
    pub output_excerpt: String,
    /// The result file exists but is not valid; the job counts as failed.
    pub result_error: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultFile {
    verdict: Option<Verdict>,
    summary: Option<String>,
}

/// Runs the agent to completion or timeout. Never panics; every failure is in the outcome.
pub async fn run_agent(run: &AgentRun) -> AgentOutcome {
    let failed = |error: String| AgentOutcome {
        status: AgentStatus::SpawnFailed { error },
        verdict: None,
        summary: None,
        output_excerpt: String::new(),
        result_error: None,
    };
    let Some((program, args)) = run.command.split_first() else {
        return failed("empty command".into());
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(&run.cwd)
        .envs(run.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    #[cfg(unix)]
    cmd.process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return failed(format!("{program}: {e}")),
    };
    let pgid = child.id();
    // If this future is dropped (shutdown), the whole group goes with it, not just the child.
    let _group = GroupGuard(pgid);
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let max = run.max_output_bytes;
    let out_task = tokio::spawn(read_tail(stdout, max));
    let err_task = tokio::spawn(read_tail(stderr, max));

    let status = match tokio::time::timeout(run.timeout, child.wait()).await {
        Ok(Ok(s)) if s.success() => AgentStatus::Succeeded,
        Ok(Ok(s)) => AgentStatus::Failed {
            exit_code: s.code(),
        },
        Ok(Err(e)) => AgentStatus::SpawnFailed {
            error: format!("waiting for {program}: {e}"),
        },
        Err(_) => {
            kill_group(pgid);
            let _ = child.wait().await;
            AgentStatus::TimedOut
        }
    };
    // Children that outlive a successful parent would keep the pipes open forever.
    kill_group(pgid);
    let out = out_task.await.unwrap_or_default();
    let err = err_task.await.unwrap_or_default();
    let mut excerpt = out;
    if !err.is_empty() {
        if !excerpt.is_empty() {
            excerpt.push_str("\n--- stderr ---\n");
        }
        excerpt.push_str(&err);
    }
    let excerpt = tail(&excerpt, max);

    let (verdict, summary, result_error) = match tokio::fs::read(&run.result_file).await {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, None, None),
        Err(e) => (
            None,
            None,
            Some(format!("cannot read {}: {e}", run.result_file.display())),
        ),
        Ok(bytes) => match serde_json::from_slice::<ResultFile>(&bytes) {
            Ok(r) => (r.verdict, r.summary, None),
            Err(e) => (
                None,
                None,
                Some(format!("{}: {e}", run.result_file.display())),
            ),
        },
    };
    AgentOutcome {
        status,
        verdict,
        summary,
        output_excerpt: excerpt,
        result_error,
    }
}

struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        kill_group(self.0);
    }
}

fn kill_group(pgid: Option<u32>) {
    #[cfg(unix)]
    if let Some(pid) = pgid.and_then(|p| i32::try_from(p).ok()).filter(|p| *p > 0) {
        // SAFETY: killpg only sends a signal; the group id is the agent's own (process_group(0)).
        unsafe {
            libc::killpg(pid, libc::SIGKILL);
        }
    }
    #[cfg(not(unix))]
    let _ = pgid;
}

/// Reads a stream to the end keeping only the last `max` bytes.
async fn read_tail<R: AsyncRead + Unpin>(stream: Option<R>, max: usize) -> String {
    let Some(mut stream) = stream else {
        return String::new();
    };
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * max.max(1) {
                    let cut = kept.len() - max;
                    kept.drain(..cut);
                }
            }
        }
    }
    tail(&String::from_utf8_lossy(&kept), max)
}

fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}
