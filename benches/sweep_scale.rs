//! The sweep at 100,000 tasks (issue 16): time, gate calls and memory per sweep.
//!
//! A SQLite file with `SWEEP_TASKS` tasks (default 100,000): 20 % finished (`done`), 20 % in
//! `review` inside their grace (a 30-day grace override), 60 % in `development`, quiet for a
//! week and stuck on a red `ci_green` gate. Gitea is a double on loopback (axum) that answers
//! every request after `SWEEP_LATENCY_MS` (default 20 ms): a branch head, then a red combined
//! status, so one gate check is two requests. The reconciler runs as the background loop
//! does (applied, keeping only the notable task lines), `SWEEP_SWEEPS` times (default 30),
//! with an injected clock advanced by the 60 s interval between sweeps; shipped rules (red
//! backoff capped at 1 h), `reconcile.max_gate_checks` 1,000 and `reconcile.gate_concurrency`
//! `SWEEP_CONCURRENCY` (default 400: 1,000 checks of two 20 ms requests each have a latency
//! floor of 0.1 s there; at 200 it is 0.2 s of the 0.5 s target, and the slowest sweep
//! lands within a few ms of it — see BENCHMARKS.md for both).
//!
//! Then a push to one stuck task's branch is handled (its CI still red, so the push's own
//! check holds it), CI turns green with its status webhook lost, and the next sweep must read
//! that task's gate and advance it, ahead of the tasks that only waited.
//!
//! Prints one line per sweep (time, gate checks, Gitea requests, over budget, backing off,
//! RSS) and a summary; exits non-zero if a target is missed: the first sweep checks at most
//! `max_gate_checks`; from the second sweep on, the slowest sweep < 0.5 s, ≤ 1,000 gate
//! checks per sweep, RSS < 100 MB; the pushed task advanced by the next sweep.
//!
//! Run: `cargo bench --bench sweep_scale` (env: `SWEEP_TASKS`, `SWEEP_SWEEPS`,
//! `SWEEP_CONCURRENCY`, `SWEEP_LATENCY_MS`, `SWEEP_BUDGET` — `reconcile.max_gate_checks`,
//! default 1,000).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::routing::get;
use orch::app::Components;
use orch::clock::{ManualClock, Timestamp};
use orch::config::Config;
use orch::reconciler::{Mode, Rows};
use orch::secret::Secret;
use orch::store::InboxItem;

const T0: Timestamp = Timestamp::from_millis(1_800_000_000_000);
const REPO: &str = "acme/widget";
const INTERVAL: Duration = Duration::from_secs(60);

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Gitea: every branch's head is a sha named after it; CI is red unless the sha is green.
#[derive(Clone)]
struct Double {
    latency: Duration,
    requests: Arc<AtomicU64>,
    green: Arc<Mutex<HashSet<String>>>,
}

fn sha_of(branch: &str) -> String {
    branch.replace('/', "-")
}

async fn branch(
    State(d): State<Double>,
    Path((_, _, branch)): Path<(String, String, String)>,
) -> axum::Json<serde_json::Value> {
    d.requests.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(d.latency).await;
    axum::Json(serde_json::json!({"name": branch, "commit": {"id": sha_of(&branch)}}))
}

async fn statuses(
    State(d): State<Double>,
    Path((_, _, sha)): Path<(String, String, String)>,
) -> impl axum::response::IntoResponse {
    d.requests.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(d.latency).await;
    let green = d.green.lock().map(|g| g.contains(&sha)).unwrap_or(false);
    let status = if green { "success" } else { "failure" };
    (
        [("X-Total-Count", "1")],
        axum::Json(serde_json::json!([{"id": 1, "status": status, "context": "ci/build"}])),
    )
}

async fn start_double(latency: Duration) -> (Double, String) {
    let d = Double {
        latency,
        requests: Arc::new(AtomicU64::new(0)),
        green: Arc::new(Mutex::new(HashSet::new())),
    };
    let app = axum::Router::new()
        .route(
            "/api/v1/repos/{owner}/{name}/branches/{*branch}",
            get(branch),
        )
        .route(
            "/api/v1/repos/{owner}/{name}/commits/{sha}/statuses",
            get(statuses),
        )
        .with_state(d.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (d, url)
}

fn stage_of(i: usize) -> &'static str {
    match i % 5 {
        0 => "done",
        1 => "review",
        _ => "development",
    }
}

fn seed(db: &std::path::Path, n: usize) {
    let mut c = rusqlite::Connection::open(db).expect("open db");
    let tx = c.transaction().expect("tx");
    let week_ago = T0.as_millis() - 7 * 24 * 3600 * 1000;
    {
        let mut stmt = tx
            .prepare(
                "INSERT INTO tasks (work_item, plane_issue_id, plane_project_id, title, repo,
                 branch, stage, labels, created_at, updated_at)
                 VALUES (?1, ?2, 'p', ?3, ?4, ?5, ?6, '[]', ?7, ?7)",
            )
            .expect("prepare");
        for i in 0..n {
            let wi = format!("ET-{i}");
            stmt.execute(rusqlite::params![
                wi,
                format!("issue-{i}"),
                format!("Work item {i}"),
                REPO,
                format!("feature/{wi}-x"),
                stage_of(i),
                week_ago,
            ])
            .expect("insert");
        }
    }
    tx.commit().expect("commit");
}

/// (current, peak) resident set size in MB.
fn rss_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn push_of(wi: &str) -> InboxItem {
    let body = serde_json::json!({
        "ref": format!("refs/heads/feature/{wi}-x"),
        "repository": {"full_name": REPO},
    });
    InboxItem {
        id: 0,
        source: "gitea".into(),
        event: "push".into(),
        body: serde_json::to_vec(&body).expect("json"),
        body_hash: "bench-push".into(),
        received_at: T0,
        processed_at: None,
        error: None,
        attempts: 0,
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let ok = rt.block_on(run());
    if !ok {
        std::process::exit(1);
    }
}

async fn run() -> bool {
    let tasks: usize = env_num("SWEEP_TASKS", 100_000);
    let sweeps: usize = env_num("SWEEP_SWEEPS", 30);
    let concurrency: usize = env_num("SWEEP_CONCURRENCY", 400);
    let latency = Duration::from_millis(env_num("SWEEP_LATENCY_MS", 20));
    let budget: usize = env_num("SWEEP_BUDGET", 1000);
    let (double, url) = start_double(latency).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = Config {
        db_path: dir.path().join("orch.db"),
        repos_dir: dir.path().join("repos"),
        rules_dir: std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules"),
        ..Config::default()
    };
    cfg.gitea.url = Some(url);
    cfg.gitea.token = Some(Secret::new("bench".to_string()));
    cfg.reconcile.plane_enabled = Some(false);
    cfg.reconcile.interval = INTERVAL;
    cfg.reconcile.gate_concurrency = concurrency;
    cfg.reconcile.max_gate_checks = budget;
    cfg.reconcile
        .grace_overrides
        .insert("review".into(), Duration::from_secs(30 * 24 * 3600));
    let clock = Arc::new(ManualClock::new(T0));
    let parts = Components::build(cfg, clock.clone()).expect("components");
    let started = Instant::now();
    seed(&dir.path().join("orch.db"), tasks);
    println!(
        "seeded {tasks} tasks in {:.1} s; gate concurrency {concurrency}, budget {budget}, \
         Gitea latency {} ms per request",
        started.elapsed().as_secs_f64(),
        latency.as_millis()
    );
    let reconciler = &parts.state.reconciler;
    let mut ok = true;
    let (mut slowest, mut max_checks, mut max_rss) = (0.0f64, 0u64, 0.0f64);
    let mut times = Vec::new();
    println!("sweep   time_s  checks  requests  over_budget  backing_off  rss_mb");
    for s in 1..=sweeps {
        let before = double.requests.load(Ordering::Relaxed);
        let t = Instant::now();
        let report = reconciler.sweep_rows(Mode::Apply, Rows::Notable).await;
        let took = t.elapsed().as_secs_f64();
        let requests = double.requests.load(Ordering::Relaxed) - before;
        let (rss, _) = rss_mb();
        println!(
            "{s:>5}  {took:>7.3}  {:>6}  {requests:>8}  {:>11}  {:>11}  {rss:>6.1}",
            report.gate_checks, report.over_budget, report.backing_off
        );
        if s == 1 && report.gate_checks > budget as u64 {
            println!("FAIL: the first sweep checked {} gates", report.gate_checks);
            ok = false;
        }
        if s > 1 {
            slowest = slowest.max(took);
            max_checks = max_checks.max(report.gate_checks);
            max_rss = max_rss.max(rss);
            times.push(took);
        }
        clock.advance(INTERVAL);
    }
    times.sort_by(f64::total_cmp);
    let median = times.get(times.len() / 2).copied().unwrap_or(0.0);

    // A push to one stuck task's branch; CI goes green afterwards and its webhook is lost.
    let pushed_i = (0..tasks)
        .rev()
        .find(|i| stage_of(*i) == "development")
        .unwrap_or(0);
    let pushed = format!("ET-{pushed_i}");
    let outcome = parts
        .state
        .pipeline
        .handle_delivery(&push_of(&pushed))
        .await;
    double
        .green
        .lock()
        .expect("lock")
        .insert(sha_of(&format!("feature/{pushed}-x")));
    let report = reconciler.sweep_rows(Mode::Apply, Rows::Notable).await;
    let advanced = report
        .unblocked
        .iter()
        .any(|l| l.contains(&format!("{pushed} ")));
    let (_, peak) = rss_mb();
    println!(
        "steady state (sweeps 2–{sweeps}): median {median:.3} s, slowest {slowest:.3} s, \
         at most {max_checks} gate checks, RSS at most {max_rss:.1} MB (peak incl. seeding {peak:.1} MB)"
    );
    println!(
        "push to {pushed}: its own check {outcome:?}; next sweep advanced it: {advanced} ({} checks)",
        report.gate_checks
    );
    if slowest >= 0.5 {
        println!("FAIL: a steady-state sweep took {slowest:.3} s (target < 0.5 s)");
        ok = false;
    }
    if max_checks > 1000 {
        println!("FAIL: {max_checks} gate checks in one sweep (target ≤ 1,000)");
        ok = false;
    }
    if max_rss >= 100.0 {
        println!("FAIL: RSS {max_rss:.1} MB (target < 100 MB)");
        ok = false;
    }
    if !advanced {
        println!("FAIL: the pushed task was not advanced by the next sweep");
        ok = false;
    }
    ok
}
