//! One agent run per the agent protocol: environment, exit codes, result file, output bound.

use std::path::PathBuf;
use std::time::Duration;

use orch::agent::{AgentRun, AgentStatus, Verdict, run_agent};

fn run_sh(dir: &std::path::Path, script: &str, max_output: usize) -> AgentRun {
    AgentRun {
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        cwd: dir.to_path_buf(),
        env: vec![
            ("ORCH_WORK_ITEM".into(), "ET-42".into()),
            (
                "ORCH_RESULT_FILE".into(),
                dir.join("result.json").display().to_string(),
            ),
        ],
        timeout: Duration::from_secs(20),
        result_file: dir.join("result.json"),
        max_output_bytes: max_output,
    }
}

#[tokio::test]
async fn success_with_a_verdict_in_the_worktree_with_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_agent(&run_sh(
        dir.path(),
        r#"pwd > where.txt; echo "item $ORCH_WORK_ITEM"; printf '{"verdict": "approve", "summary": "fine"}' > "$ORCH_RESULT_FILE""#,
        4096,
    ))
    .await;
    assert_eq!(out.status, AgentStatus::Succeeded);
    assert_eq!(out.verdict, Some(Verdict::Approve));
    assert_eq!(out.summary.as_deref(), Some("fine"));
    assert!(out.output_excerpt.contains("item ET-42"));
    let cwd = std::fs::read_to_string(dir.path().join("where.txt")).unwrap();
    assert_eq!(
        PathBuf::from(cwd.trim()).canonicalize().unwrap(),
        dir.path().canonicalize().unwrap()
    );
    assert!(out.result_error.is_none());
}

#[tokio::test]
async fn a_non_zero_exit_is_a_failure_with_its_code_and_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_agent(&run_sh(dir.path(), "echo broken >&2; exit 7", 4096)).await;
    assert_eq!(out.status, AgentStatus::Failed { exit_code: Some(7) });
    assert!(out.output_excerpt.contains("broken"));
}

#[tokio::test]
async fn output_is_kept_as_a_bounded_tail() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_agent(&run_sh(
        dir.path(),
        "i=0; while [ $i -lt 100000 ]; do echo line-$i; i=$((i+1)); done; echo THE-END",
        1024,
    ))
    .await;
    assert_eq!(out.status, AgentStatus::Succeeded);
    assert!(
        out.output_excerpt.len() <= 1024 + 8,
        "{}",
        out.output_excerpt.len()
    );
    assert!(out.output_excerpt.trim_end().ends_with("THE-END"));
}

#[tokio::test]
async fn an_invalid_result_file_is_an_error_not_a_verdict() {
    let dir = tempfile::tempdir().unwrap();
    for body in [
        r#"{"verdict": "maybe"}"#,
        "not json",
        r#"{"verdict": "pass", "extra": 1}"#,
    ] {
        let script = format!("printf '%s' '{body}' > \"$ORCH_RESULT_FILE\"");
        let out = run_agent(&run_sh(dir.path(), &script, 4096)).await;
        assert_eq!(out.status, AgentStatus::Succeeded);
        assert!(out.result_error.is_some(), "{body}");
        assert_eq!(out.verdict, None);
    }
}

#[tokio::test]
async fn a_missing_program_cannot_spawn() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = run_sh(dir.path(), "", 100);
    run.command = vec!["/nonexistent/agent".into()];
    assert!(matches!(
        run_agent(&run).await.status,
        AgentStatus::SpawnFailed { .. }
    ));
    run.command = vec![];
    assert!(matches!(
        run_agent(&run).await.status,
        AgentStatus::SpawnFailed { .. }
    ));
}

/// Shutdown drops the running job's future: the agent and everything it started must go too,
/// or a restart would run a second copy beside the orphan.
#[tokio::test]
async fn dropping_a_run_kills_the_agent_and_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("child.pid");
    let script = r#"sleep 300 & echo $! > child.pid; wait"#;
    let run = run_sh(dir.path(), script, 4096);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    {
        let fut = run_agent(&run);
        tokio::pin!(fut);
        // Drive the run until the child has announced itself, then drop it mid-flight.
        loop {
            tokio::select! {
                out = &mut fut => panic!("the agent finished on its own: {:?}", out.status),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            let written = std::fs::read_to_string(&pid_file).unwrap_or_default();
            if written.ends_with('\n') {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "no child pid");
        }
    }
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    loop {
        // SAFETY: signal 0 only probes whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        if !alive {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "child {pid} outlived the dropped run"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
