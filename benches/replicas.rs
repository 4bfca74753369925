//! `orch simulate --replicas 3 --items 100 --drop-rate 0.3 --leader-kills 2` with the
//! production lease time to live (15 s): jobs per replica and how long each leader kill took
//! to hand over (kill → another replica holds the `sweep` lease → it has swept). Needs
//! PostgreSQL (`ORCH_TEST_PG_URL`, see `.ci/pg`).
//!
//! `cargo bench --bench replicas`

use std::time::Duration;

use orch::sim::{SimOptions, run};

fn main() {
    let Some(url) = std::env::var("ORCH_TEST_PG_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
    else {
        eprintln!("skipped: no PostgreSQL (set ORCH_TEST_PG_URL; see .ci/pg)");
        return;
    };
    let opts = SimOptions {
        items: 100,
        drop_rate: 0.3,
        replicas: 3,
        leader_kills: 2,
        lease_ttl: Duration::from_secs(15),
        db_url: Some(url),
        seed: 1,
        timeout: Duration::from_secs(600),
        ..SimOptions::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let report = runtime.block_on(run(&opts)).expect("the simulation runs");
    print!("{}", report.table());
    println!("jobs per replica: {:?}", report.jobs_per_replica);
    let ms = |v: Option<u64>| v.map_or_else(|| "not seen".to_string(), |ms| format!("{ms} ms"));
    for (i, h) in report.handovers.iter().enumerate() {
        println!(
            "handover {}: kill -> acquired {}, kill -> acting {}",
            i + 1,
            ms(h.acquired_ms),
            ms(h.acting_ms)
        );
    }
    if report.leaderless_kills > 0 {
        println!(
            "{} leader kill(s) found no sweep lease held (no lease code yet): a random replica was killed",
            report.leaderless_kills
        );
    }
}
