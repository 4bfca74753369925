//! A kill -9 between the 202 and processing loses nothing; a kill -9 while an agent runs
//! leaves no agent running after the restart but the job's new run.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_orch(
    dir: &std::path::Path,
    db: &orch::config::Config,
    port: u16,
    plane_url: &str,
) -> Child {
    spawn_orch_with(dir, db, port, plane_url, "/nonexistent/remote.git", "")
}

/// `orch serve` on a configuration written to `dir`, with `extra` TOML (agents) appended.
fn spawn_orch_with(
    dir: &std::path::Path,
    db: &orch::config::Config,
    port: u16,
    plane_url: &str,
    clone_url: &str,
    extra: &str,
) -> Child {
    let config = format!(
        r#"
{db}
repos_dir = "{repos}"
listen = "127.0.0.1:{port}"
rules_dir = "{rules}"

[plane]
url = "{plane_url}"
api_token = "plane_api_test"
workspace = "{WORKSPACE}"
# The test posts plain JSON.
allow_unsigned = true

[reconcile]
enabled = false

[http]
retries = 0

[[projects]]
plane_project_id = "{PROJECT_ID}"
identifier = "ET"
repo = "{REPO}"
clone_url = "{clone_url}"
{extra}
"#,
        db = db_toml(db),
        repos = dir.join("repos").display(),
        rules = concat!(env!("CARGO_MANIFEST_DIR"), "/rules"),
    );
    std::fs::write(dir.join("orch.toml"), config).unwrap();
    Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(["serve", "--config"])
        .arg(dir.join("orch.toml"))
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_healthy(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client()
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await
            && r.status().as_u16() == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "orch did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A count from the database the server keeps, read beside it.
fn query(db: &orch::store::Store, sql: &'static str) -> i64 {
    db.call_sync(|c| c.query_row(sql, orch::args![], |r| r.get(0)))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_after_the_202_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(dir.path());
    let port = free_port();
    // Plane is down while the first process runs: the v2 delivery carries only a state id, so
    // processing needs Plane's state list and cannot complete before the crash.
    let dead_plane = format!("http://127.0.0.1:{}", free_port());
    let mut first = spawn_orch(dir.path(), &cfg, port, &dead_plane);
    wait_healthy(port).await;
    let v2 = serde_json::json!({
        "version": "v2", "event": "workitem.updated", "delivery_id": "d-1", "event_id": "e-1",
        "data": {"id": ISSUE_ID, "name": "Login redirect loop on Safari", "sequence_id": 42,
                 "project_id": PROJECT_ID, "state_id": state_id("In Progress"), "label_ids": []},
        "previous_attributes": {"state_id": state_id("Backlog")}
    });
    let r = client()
        .post(format!("http://127.0.0.1:{port}/webhooks/plane"))
        .header("X-Plane-Event", "issue")
        .body(serde_json::to_vec(&v2).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let db = open_store(&cfg);
    // The delivery is on disk, its processing attempt failed: now kill -9.
    let deadline = Instant::now() + Duration::from_secs(10);
    while query(&db, "SELECT COUNT(*) FROM inbox WHERE attempts > 0") == 0 {
        assert!(Instant::now() < deadline, "processing was never attempted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    assert_eq!(query(&db, "SELECT COUNT(*) FROM tasks"), 0);
    assert_eq!(
        query(&db, "SELECT COUNT(*) FROM inbox WHERE processed_at IS NULL"),
        1
    );

    // Restart with Plane reachable: the stored delivery is processed (once its retry time,
    // 5 s after the failed attempt, has come).
    let peers = Peers::start().await;
    let mut second = spawn_orch(dir.path(), &cfg, port, &peers.plane.uri());
    wait_healthy(port).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while query(&db, "SELECT COUNT(*) FROM inbox WHERE processed_at IS NULL") != 0 {
        assert!(
            Instant::now() < deadline,
            "the delivery was not processed after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        query(&db, "SELECT COUNT(*) FROM tasks WHERE work_item = 'ET-42'"),
        1
    );
    assert_eq!(
        query(&db, "SELECT COUNT(*) FROM jobs WHERE agent = 'analyst'"),
        1
    );
    second.kill().unwrap();
    second.wait().unwrap();
}

/// An agent runs in a process group of its own, so `kill -9` of orch leaves it running. The
/// restarted orch kills it before it runs the job again: one agent per job, not two.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_left_running_by_a_killed_orch_is_killed_at_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(dir.path());
    let bare = bare_repo(dir.path());
    let pids = dir.path().join("agent.pids");
    // The first run sleeps (an agent thinking for ten minutes); the next one ends at once.
    let agents = format!(
        r#"
[agents.analyst]
command = ["sh", "-c", "echo $$ >> '{pids}'; [ $(wc -l < '{pids}') -gt 1 ] && exit 0; exec sleep 600"]

# On PostgreSQL the killed replica's job comes back when its heartbeat is this old.
[replicas]
lease_ttl = "3s"
"#,
        pids = pids.display()
    );
    let peers = Peers::start().await;
    let port = free_port();
    let spawn = || {
        spawn_orch_with(
            dir.path(),
            &cfg,
            port,
            &peers.plane.uri(),
            bare.to_str().unwrap(),
            &agents,
        )
    };
    let mut first = spawn();
    wait_healthy(port).await;
    let r = client()
        .post(format!("http://127.0.0.1:{port}/webhooks/plane"))
        .header("X-Plane-Event", "issue")
        .body(plane_webhook("In Progress", "started"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    eventually("the analyst runs", Duration::from_secs(20), || async {
        recorded_pids(&pids).len() == 1
    })
    .await;
    let orphan = recorded_pids(&pids)[0];
    first.kill().unwrap(); // SIGKILL: orch only, not the agent's process group
    first.wait().unwrap();
    assert!(!process_gone(orphan), "the agent outlives orch");

    let mut second = spawn();
    wait_healthy(port).await;
    eventually("the orphan is killed", Duration::from_secs(10), || async {
        process_gone(orphan)
    })
    .await;
    eventually("the job runs again", Duration::from_secs(20), || async {
        recorded_pids(&pids).len() == 2
    })
    .await;
    second.kill().unwrap();
    second.wait().unwrap();
    if !process_gone(orphan) {
        // SAFETY: only sends a signal, to the test's own agent.
        unsafe { libc::kill(orphan, libc::SIGKILL) };
    }
}
