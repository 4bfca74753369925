//! The board's page load with 10,000 open tasks (issue 13; target < 200 ms).
//!
//! The real server on loopback with a SQLite file holding `BOARD_TASKS` open tasks (default
//! 10,000) spread over the four open stages of the shipped rules and two projects; a third
//! of them with a queued job, some with a question, a failed job or a gate error, so every
//! badge is computed. Measured: `GET /` over HTTP, end to end (the four board queries, the
//! badges, the render, the response), and `GET /live/board` polled as the page's script does
//! (what each open page costs every second: mostly nothing changed, a render when the
//! 30-second clock step moves the fingerprint). After criterion's report the bench loads the board 20
//! times more and fails if the median is 200 ms or more.
//!
//! Run: `cargo bench --bench board` (env: `BOARD_TASKS`).

use std::time::{Duration, Instant};

use criterion::Criterion;
use orch::app::Application;
use orch::clock::Timestamp;
use orch::config::Config;
use orch::store::{Conn, StoreError};

const BUDGET: Duration = Duration::from_millis(200);
const STAGES: [&str; 4] = ["analysis", "development", "review", "testing"];

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `n` open tasks with their history rows, jobs and gate readings, in one transaction.
fn seed(conn: &Conn<'_>, n: usize, now: Timestamp) -> Result<(), StoreError> {
    conn.write(|tx| seed_in(tx, n, now))
}

fn seed_in(tx: &Conn<'_>, n: usize, now: Timestamp) -> Result<(), StoreError> {
    for i in 0..n {
        let stage = STAGES[i % STAGES.len()];
        let project = if i % 3 == 0 { "OPS" } else { "ET" };
        let at = now
            .minus(Duration::from_secs((i as u64 % 500) * 60))
            .as_millis();
        let id: i64 = tx.query_row(
            "INSERT INTO tasks (work_item, plane_issue_id, plane_project_id, title, repo, branch, stage, created_at, updated_at)
             VALUES (?1, ?2, 'p', ?3, 'acme/widget', ?4, ?5, ?6, ?6) RETURNING id",
            orch::args![
                format!("{project}-{i}"),
                format!("issue-{i}"),
                format!("Work item number {i} with a title of a usual length"),
                format!("feature/{i}"),
                stage,
                at
            ],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO task_history (task_id, from_stage, to_stage, trigger, rules_version, at)
             VALUES (?1, NULL, ?2, 'webhook', 'bench', ?3)",
            orch::args![id, stage, at],
        )?;
        let job = match i % 9 {
            0..=2 => Some(("queued", None)),
            3 => Some(("done", Some("needs_input"))),
            4 => Some(("failed", None)),
            _ => None,
        };
        if let Some((status, verdict)) = job {
            tx.execute(
                "INSERT INTO jobs (task_id, agent, stage, status, attempts, verdict, summary, not_before, created_at)
                 VALUES (?1, 'developer', ?2, ?3, 1, ?4, 'a question?', ?5, ?6)",
                orch::args![id, stage, status, verdict, now.as_millis() + 86_400_000, at],
            )?;
        }
        if i % 50 == 0 {
            let reading = format!(
                r#"{{"stage":"{stage}","green":null,"error":"gitea down","read_at":{at}}}"#
            );
            tx.execute(
                "INSERT INTO kv (key, value) VALUES (?1, ?2)",
                orch::args![format!("gate.last.{id}"), reading],
            )?;
        }
    }
    Ok(())
}

fn main() {
    let tasks = env_num("BOARD_TASKS", 10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = Config {
        db_path: dir.path().join("orch.db"),
        repos_dir: dir.path().join("repos"),
        listen: "127.0.0.1:0".parse().expect("addr"),
        rules_dir: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules"),
        ..Config::default()
    };
    cfg.reconcile.enabled = Some(false);
    let app = rt.block_on(Application::build(cfg)).expect("build orch");
    let now = app.state().clock.now();
    rt.block_on(app.state().store.call(move |c| seed(c, tasks, now)))
        .expect("seed");
    let base = format!("http://{}", app.local_addr().expect("addr"));
    let app_state = app.state().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    // The loops' states are part of the live fingerprint: take it once they all run.
    let state = app_state;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !state.loops_down().is_empty() {
        assert!(Instant::now() < deadline, "the loops did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    let http = orch::http_client::build(Duration::from_secs(30)).expect("client");
    let load = |path: &str| {
        let url = format!("{base}{path}");
        rt.block_on(async {
            let r = http.get(&url).send().await.expect("request");
            assert!(r.status().is_success(), "{url}: {}", r.status());
            r.bytes().await.expect("body").len()
        })
    };
    let bytes = load("/");
    // What the page's script does: poll with the fingerprint it holds, take the new one when
    // it moved (the clock moves it every 30 s: times in stage).
    let fp = std::cell::RefCell::new(String::new());
    let poll = || {
        let url = format!("{base}/live/board?fp={}", fp.borrow());
        let v: serde_json::Value = rt.block_on(async {
            http.get(&url)
                .send()
                .await
                .expect("live")
                .json()
                .await
                .expect("json")
        });
        if let Some(new) = v["fp"].as_str().filter(|new| *new != fp.borrow().as_str()) {
            *fp.borrow_mut() = new.to_string();
        }
        v.get("html").is_some()
    };
    poll();
    let rendered = poll();
    eprintln!(
        "board: {tasks} open tasks, page {bytes} bytes; an unchanged poll renders: {rendered}"
    );

    let mut c = Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(10))
        .configure_from_args();
    c.bench_function(&format!("board/get_page_{tasks}_open_tasks"), |b| {
        b.iter(|| load("/"))
    });
    c.bench_function("board/live_poll_unchanged", |b| b.iter(poll));
    c.final_summary();

    let mut times: Vec<Duration> = (0..20)
        .map(|_| {
            let start = Instant::now();
            load("/");
            start.elapsed()
        })
        .collect();
    times.sort();
    let median = times[times.len() / 2];
    eprintln!("board: GET / median {median:?} over 20 loads (budget {BUDGET:?})");
    let _ = stop.send(());
    let _ = rt.block_on(server);
    if median >= BUDGET {
        eprintln!("FAILED: the board takes {median:?} to load, over the {BUDGET:?} budget");
        std::process::exit(1);
    }
}
