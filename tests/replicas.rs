//! Replicas end to end (issue 15): `orch simulate` with three engines on one PostgreSQL
//! database behind a load balancer, 30 % of the webhooks dropped and the leader (the `sweep`
//! lease's holder) killed twice. Skipped without `ORCH_TEST_PG_URL` outside CI (see
//! `.ci/pg`); the issue's 100 items under `ORCH_LONG_TESTS=1`.

use std::time::Duration;

use orch::sim::{SimOptions, SimReport, run};

/// The server to run on, or `None` (skipped) without PostgreSQL outside CI.
fn pg_url() -> Option<String> {
    match std::env::var("ORCH_TEST_PG_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but ORCH_TEST_PG_URL is not: start PostgreSQL with .ci/pg"
            );
            eprintln!("skipped: no PostgreSQL (set ORCH_TEST_PG_URL; see .ci/pg)");
            None
        }
    }
}

async fn three_replicas(items: usize, seed: u64) -> Option<SimReport> {
    let url = pg_url()?;
    let report = run(&SimOptions {
        items,
        drop_rate: 0.3,
        replicas: 3,
        leader_kills: 2,
        db_url: Some(url),
        seed,
        timeout: Duration::from_secs(300),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    Some(report)
}

fn assert_healthy(report: &SimReport, items: usize) {
    assert_eq!(report.replicas, 3, "{report:#?}");
    assert_eq!(report.leader_kills, 2, "{report:#?}");
    assert_eq!(report.done, items, "Plane shows Done: {report:#?}");
    assert_eq!(report.done_in_orch, items, "{report:#?}");
    assert_eq!(report.duplicates, 0, "{report:#?}");
    assert_eq!(report.effects_duplicated, 0, "{report:#?}");
    assert_eq!(report.webhooks_rejected, 0, "{report:#?}");
    assert_eq!(
        report.handovers.len() + report.leaderless_kills,
        2,
        "every leader kill is a handover or counted leaderless: {report:#?}"
    );
    assert!(
        report.replica_criteria_met(SimOptions::default().lease_ttl),
        "handovers within the lease, work on every replica: {report:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_survive_two_leader_kills_without_a_duplicate() {
    let Some(report) = three_replicas(30, 21).await else {
        return;
    };
    assert_healthy(&report, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_issues_hundred_items_on_three_replicas_with_two_leader_kills() {
    if std::env::var_os("ORCH_LONG_TESTS").is_none() {
        eprintln!("skipped: the 100-item run needs ORCH_LONG_TESTS=1");
        return;
    }
    let Some(report) = three_replicas(100, 22).await else {
        return;
    };
    assert_healthy(&report, 100);
}

#[tokio::test]
async fn more_than_one_replica_without_postgres_is_refused_naming_ci_pg() {
    let err = run(&SimOptions {
        items: 1,
        replicas: 2,
        db_url: None,
        ..SimOptions::default()
    })
    .await
    .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("--replicas 2"), "{text}");
    assert!(text.contains(".ci/pg"), "{text}");
}

#[test]
fn orch_simulate_refuses_replicas_without_a_database_url() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(["simulate", "--items", "1", "--replicas", "3"])
        .env_remove("ORCH_TEST_PG_URL")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(".ci/pg"), "{err}");
}
