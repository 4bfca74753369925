//! Webhook processing latency while Plane is paced: arrival to processing of each delivery.
//!
//! The real server on loopback (inbox on disk, HMAC on) and a fake Plane as a real HTTP server
//! (`orch::sim::fakes::FakePlane`), with orch's Plane client paced at 50 requests/minute.
//! N work items are moved to "In Progress" in the fake, each sending its signed webhook (none
//! dropped) at a steady rate; every start creates a task and owes effects (a Plane state, a
//! Telegram message) that the dispatchers deliver from the outbox, the Plane one at 50/min.
//! Processing a delivery must not wait on that: the bench reads `processed_at - received_at`
//! of every inbox row (ms resolution) and fails if p99 ≥ 100 ms or a delivery is not
//! processed within 120 s.
//!
//! The shipped rules map no Plane state to the first stage (analysis), so a start would owe
//! Plane nothing; the bench runs on a copy of `rules/` whose `[plane.outbound.entered]` also
//! maps `analysis = "In Progress"`, so each start owes a Plane state write (a read of the
//! current state plus the PATCH: 2 requests) and the Plane outbox really backs up.
//! Reconciler off; no agents configured, so each first job fails to spawn (and is retried
//! after the rules' backoff, well after the bench ends).
//!
//! Run: `cargo bench --bench delivery_latency` (env: `LATENCY_ITEMS`, default 200;
//! `LATENCY_RATE`, deliveries/s, default 20).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use orch::app::Application;
use orch::config::{Config, Project};
use orch::secret::Secret;
use orch::sim::fakes::{FakePlane, Hooks};
use rusqlite::{Connection, OpenFlags};

const SECRET: &str = "plane_wh_bench";
const PROJECT_ID: &str = "00000000-0000-4000-8000-0000latency";
const PLANE_RPM: u32 = 50;
const TARGET_P99_MS: i64 = 100;
const DEADLINE: Duration = Duration::from_secs(120);

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `rules/` as shipped, plus a Plane state for entering the first stage.
fn write_rules(dst: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    std::fs::create_dir_all(dst).expect("mkdir rules");
    for e in std::fs::read_dir(src).expect("rules") {
        let p = e.expect("entry").path();
        if p.extension().and_then(|x| x.to_str()) != Some("toml") {
            continue;
        }
        let mut text = std::fs::read_to_string(&p).expect("read rule file");
        if p.file_name().and_then(|n| n.to_str()) == Some("plane.toml") {
            const SECTION: &str = "[plane.outbound.entered]\n";
            assert!(
                text.contains(SECTION),
                "rules/plane.toml has no {SECTION:?}"
            );
            text = text.replacen(
                SECTION,
                &format!("{SECTION}analysis = \"In Progress\"\n"),
                1,
            );
        }
        std::fs::write(dst.join(p.file_name().expect("name")), text).expect("write rule file");
    }
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn count(db: &Connection, sql: &str) -> i64 {
    db.query_row(sql, [], |r| r.get(0)).expect("count query")
}

fn main() {
    let items: usize = env_num("LATENCY_ITEMS", 200);
    let rate: f64 = env_num("LATENCY_RATE", 20.0_f64).max(0.001);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let passed = rt.block_on(run(items, rate));
    if !passed {
        std::process::exit(1);
    }
}

async fn run(items: usize, rate: f64) -> bool {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules");
    write_rules(&rules);

    // Plane first: orch's config needs its URL; its webhooks need orch's (set below).
    let plane_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind fake Plane");
    let plane_url = format!("http://{}", plane_listener.local_addr().expect("addr"));
    let hooks = Arc::new(
        Hooks::new("http://127.0.0.1:9".into(), SECRET.into(), 0.0, 1).expect("webhook client"),
    );
    let plane = FakePlane::new(PROJECT_ID, Arc::clone(&hooks));
    for seq in 1..=items as i64 {
        plane.create(seq, &format!("Latency item {seq}"));
    }
    let router = plane.router();
    let plane_server = tokio::spawn(async move {
        let _ = axum::serve(plane_listener, router).await;
    });

    let db_path = dir.path().join("orch.db");
    let mut cfg = Config {
        db_path: db_path.clone(),
        repos_dir: dir.path().join("repos"),
        listen: "127.0.0.1:0".parse().expect("addr"),
        rules_dir: rules,
        ..Config::default()
    };
    cfg.plane.url = Some(plane_url);
    cfg.plane.api_token = Some(Secret::new("plane_api_bench"));
    cfg.plane.workspace = Some("bench".into());
    cfg.plane.requests_per_minute = PLANE_RPM;
    cfg.plane.webhook_secret = Some(Secret::new(SECRET));
    cfg.reconcile.enabled = Some(false);
    cfg.projects = vec![Project {
        plane_project_id: PROJECT_ID.into(),
        identifier: "LAT".into(),
        repo: "bench/latency".into(),
        clone_url: None,
    }];
    let app = Application::build(cfg).await.expect("build orch");
    hooks.set_targets(vec![format!("http://{}", app.local_addr().expect("addr"))]);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stop_rx.await;
    }));

    // A person moves each item to In Progress, one every 1/rate s; each webhook is sent from
    // its own task so a slow acknowledgement never delays the next one.
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut senders = Vec::with_capacity(items);
    for seq in 1..=items as i64 {
        tick.tick().await;
        let plane = plane.clone();
        senders.push(tokio::spawn(async move {
            plane.human_sets(seq, "In Progress").await;
        }));
    }
    for s in senders {
        s.await.expect("sender");
    }
    let posted_in = started.elapsed();
    let (sent, rejected, unreachable) = (
        hooks.sent.load(Ordering::Relaxed),
        hooks.rejected.load(Ordering::Relaxed),
        hooks.unreachable.load(Ordering::Relaxed),
    );

    // Wait for the inbox processor, reading the database on the side.
    let db = Connection::open_with_flags(&db_path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open the inbox read-only");
    db.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    let deadline = Instant::now() + DEADLINE;
    let mut processed;
    loop {
        processed = count(
            &db,
            "SELECT COUNT(*) FROM inbox WHERE processed_at IS NOT NULL",
        );
        if processed as u64 >= sent || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let waited = started.elapsed();

    let mut lat: Vec<i64> = {
        let mut stmt = db
            .prepare("SELECT processed_at - received_at FROM inbox WHERE processed_at IS NOT NULL")
            .expect("prepare");
        stmt.query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    lat.sort_unstable();
    let rows = count(&db, "SELECT COUNT(*) FROM inbox");
    // `attempts` counts the successful attempt too.
    let retried = count(&db, "SELECT COUNT(*) FROM inbox WHERE attempts > 1");
    let tasks = count(&db, "SELECT COUNT(*) FROM tasks");
    let owed = |peer: &str| {
        count(
            &db,
            &format!(
                "SELECT COUNT(*) FROM outbox WHERE peer = '{peer}' AND status IN ('pending', 'sending')"
            ),
        )
    };
    let (plane_owed, telegram_owed) = (owed("plane"), owed("telegram"));
    let plane_sent = count(
        &db,
        "SELECT COUNT(*) FROM outbox WHERE peer = 'plane' AND status IN ('sent', 'skipped')",
    );
    let plane_requests = plane.requests.item.load(Ordering::Relaxed)
        + plane.requests.listing.load(Ordering::Relaxed);

    let p50 = percentile(&lat, 0.50);
    let p99 = percentile(&lat, 0.99);
    let max = lat.last().copied().unwrap_or_default();
    println!(
        "delivery latency: {items} start deliveries at {rate}/s, Plane paced at {PLANE_RPM}/min, inbox on disk (WAL)"
    );
    println!(
        "  posted      {sent} accepted, {rejected} refused, {unreachable} unreachable in {:.1} s",
        posted_in.as_secs_f64()
    );
    println!(
        "  processed   {processed} of {rows} inbox rows ({retried} needed a retry), {tasks} tasks, after {:.1} s",
        waited.as_secs_f64()
    );
    println!("  p50         {p50:>6} ms");
    println!("  p99         {p99:>6} ms   (target < {TARGET_P99_MS} ms)");
    println!("  max         {max:>6} ms");
    println!(
        "  Plane       {plane_requests} requests seen by the fake, {plane_sent} effects delivered"
    );
    println!("  outbox      {plane_owed} Plane and {telegram_owed} Telegram effects still pending");

    let _ = stop_tx.send(());
    let _ = server.await;
    plane_server.abort();

    let mut ok = true;
    if sent != items as u64 {
        eprintln!("FAIL: only {sent} of {items} deliveries were accepted");
        ok = false;
    }
    if (processed as usize) < items {
        eprintln!(
            "FAIL: {processed} of {items} deliveries processed within {} s",
            DEADLINE.as_secs()
        );
        ok = false;
    }
    if p99 >= TARGET_P99_MS {
        eprintln!("FAIL: p99 {p99} ms is not under the {TARGET_P99_MS} ms target");
        ok = false;
    }
    ok
}
