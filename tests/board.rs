//! The pipeline board (issue 13): `orch serve` on port 0 with a seeded SQLite file, looked at
//! by a real headless Chromium (tests/common/browser.rs), plus plain HTTP for access and
//! escaping.
//!
//! Time is a `ManualClock`, so "past its grace" and "time in stage" are facts of the seed;
//! the sweep is switched off so only the test moves tasks.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::browser::{Browser, DESKTOP, PHONE};
use common::*;
use orch::clock::{Clock, ManualClock, Timestamp};
use orch::store::gate_readings::GateReading;
use orch::store::{NewTask, Trigger};
use serde_json::{Value, json};

/// One Chromium at a time: the machine is small, and the live tests measure 2 s.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const HOSTILE: &str =
    r#"<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">"#;
/// Within the live tests' window: the page polls every second.
const LIVE: Duration = Duration::from_secs(2);

fn t0() -> Timestamp {
    Timestamp::parse_rfc3339("2026-11-30T10:00:00Z").unwrap()
}

fn mins(n: u64) -> Duration {
    Duration::from_secs(60 * n)
}

async fn spawn(configure: impl FnOnce(&mut orch::config::Config)) -> (TestApp, Arc<ManualClock>) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.reconcile.enabled = Some(false);
    cfg.plane.url = Some("https://plane.example".into());
    cfg.plane.workspace = Some("acme".into());
    cfg.gitea.url = Some("https://gitea.example".into());
    configure(&mut cfg);
    let clock = Arc::new(ManualClock::new(t0()));
    let app = TestApp::spawn_with_clock(dir, cfg, clock.clone()).await;
    (app, clock)
}

/// A task in `stage`, last active `ago` before t0, with `title`.
async fn task(app: &TestApp, wi: &str, title: &str, stage: &str, ago: Duration) -> i64 {
    let new = NewTask {
        work_item: wi.into(),
        plane_issue_id: Some(format!("issue-{wi}")),
        plane_project_id: Some(PROJECT_ID.into()),
        title: title.into(),
        repo: REPO.into(),
        branch: format!("feature/{wi}"),
        stage: stage.into(),
        labels: vec![],
    };
    let at = t0().minus(ago);
    app.state
        .store
        .call(move |c| {
            orch::store::tasks::create_atomic(c, &new, None, "seed", Trigger::Manual, at)
        })
        .await
        .unwrap()
        .0
        .id
}

/// A job row as the worker leaves it (inserted directly: the seed is a snapshot, not a run).
#[allow(clippy::too_many_arguments)]
async fn job(
    app: &TestApp,
    task_id: i64,
    agent: &str,
    stage: &str,
    status: &str,
    attempts: i64,
    verdict: Option<&str>,
    summary: Option<&str>,
) {
    let (agent, stage, status) = (agent.to_string(), stage.to_string(), status.to_string());
    let (verdict, summary) = (verdict.map(String::from), summary.map(String::from));
    // A queued job waits a day: the worker must not run the seed.
    let not_before = (status == "queued").then(|| t0().plus(mins(24 * 60)).as_millis());
    let at = t0().minus(mins(1)).as_millis();
    app.state
        .store
        .call(move |c| {
            c.execute(
                "INSERT INTO jobs (task_id, agent, stage, status, attempts, verdict, summary, log_excerpt,
                                   not_before, created_at, started_at, finished_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'agent output <b>not bold</b>', ?8, ?9, ?9,
                         CASE WHEN ?4 IN ('done', 'failed') THEN CAST(?9 AS BIGINT) END)",
                orch::args![task_id, agent, stage, status, attempts, verdict, summary, not_before, at],
            )?;
            Ok(())
        })
        .await
        .unwrap();
}

/// The seed: every badge, agents queued (a first run and a retry), terminal stages, two projects,
/// and a hostile title.
async fn seed(app: &TestApp) {
    task(app, "ET-1", "Draft the importer", "analysis", mins(5)).await;
    // A retry waiting for its backoff. (A running job is the worker's own: one seeded as
    // running would be put back in the queue by the worker's start.)
    let et2 = task(app, "ET-2", "Build the importer", "development", mins(3)).await;
    job(
        app,
        et2,
        "developer",
        "development",
        "queued",
        1,
        None,
        None,
    )
    .await;
    task(app, "ET-3", HOSTILE, "development", mins(120)).await;
    let et4 = task(app, "ET-4", "Review the importer", "review", mins(1)).await;
    job(app, et4, "reviewer", "review", "failed", 3, None, None).await;
    let et5 = task(app, "ET-5", "Test the importer", "testing", mins(2)).await;
    let q = "Which database should the tests use?";
    job(
        app,
        et5,
        "tester",
        "testing",
        "done",
        1,
        Some("needs_input"),
        Some(q),
    )
    .await;
    let et6 = task(app, "ET-6", "Review the exporter", "review", mins(1)).await;
    let reading = GateReading {
        stage: "review".into(),
        green: None,
        reason: None,
        error: Some("gitea: connection refused".into()),
        read_at: t0(),
    };
    app.state
        .store
        .call(move |c| orch::store::gate_readings::record(c, et6, &reading))
        .await
        .unwrap();
    task(app, "ET-7", "Shipped thing", "done", mins(30)).await;
    task(app, "ET-8", "Dropped thing", "cancelled", mins(40)).await;
    let ops = task(app, "OPS-1", "Rotate the keys", "development", mins(1)).await;
    job(
        app,
        ops,
        "developer",
        "development",
        "queued",
        0,
        None,
        None,
    )
    .await;
}

/// Every column's stage with its cards: work item, badges, the meta line, the title as text.
const READ_BOARD: &str = r#"
return Array.from(document.querySelectorAll('section.column')).map(function (c) {
  return { stage: c.dataset.stage,
           count: c.querySelector('.count').textContent,
           cards: Array.from(c.querySelectorAll('.card')).map(function (k) {
             return { wi: k.dataset.workItem,
                      title: k.querySelector('.title').textContent,
                      meta: k.querySelector('.meta').textContent,
                      badges: Array.from(k.querySelectorAll('.badge')).map(function (b) { return b.dataset.badge; }) };
           }) };
});"#;

fn column<'a>(board: &'a Value, stage: &str) -> &'a Value {
    board
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["stage"] == stage)
        .unwrap_or_else(|| panic!("no column {stage} in {board}"))
}

fn card<'a>(board: &'a Value, stage: &str, wi: &str) -> &'a Value {
    column(board, stage)["cards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["wi"] == wi)
        .unwrap_or_else(|| panic!("{wi} is not in column {stage}: {board}"))
}

fn badges(card: &Value) -> Vec<&str> {
    card["badges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap())
        .collect()
}

/// Whether the page is no wider than the viewport (nothing to scroll sideways on a phone).
const FITS: &str = "return document.documentElement.scrollWidth <= window.innerWidth;";

#[tokio::test]
async fn the_board_shows_each_task_in_its_column_with_its_badges() {
    let _one = BROWSER.lock().await;
    let (app, _clock) = spawn(|_| {}).await;
    seed(&app).await;
    let Some(browser) = Browser::start(DESKTOP).await else {
        return;
    };
    browser.goto(&app.url("/")).await;
    let board = browser.eval(READ_BOARD, json!([])).await;

    let stages: Vec<&str> = board
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "analysis",
            "development",
            "review",
            "testing",
            "done",
            "cancelled"
        ],
        "one column per stage, in the rules' order"
    );
    assert_eq!(badges(card(&board, "analysis", "ET-1")), ["person"]);
    let et2 = card(&board, "development", "ET-2");
    assert!(badges(et2).is_empty(), "{et2}");
    assert!(
        et2["meta"]
            .as_str()
            .unwrap()
            .contains("developer queued, attempt 2 of 3"),
        "{et2}"
    );
    assert!(
        et2["meta"].as_str().unwrap().contains("3m in stage"),
        "{et2}"
    );
    assert!(
        card(&board, "development", "OPS-1")["meta"]
            .as_str()
            .unwrap()
            .contains("developer queued, attempt 1 of 3")
    );
    assert_eq!(badges(card(&board, "development", "ET-3")), ["past_grace"]);
    assert_eq!(badges(card(&board, "review", "ET-4")), ["blocked"]);
    assert_eq!(badges(card(&board, "review", "ET-6")), ["gate_error"]);
    assert_eq!(badges(card(&board, "testing", "ET-5")), ["answer"]);
    assert_eq!(column(&board, "done")["count"], "1");
    card(&board, "done", "ET-7");
    card(&board, "cancelled", "ET-8");

    // The hostile title is text: shown as written, never run.
    assert_eq!(card(&board, "development", "ET-3")["title"], HOSTILE);
    let pwned = browser
        .eval("return [typeof window.__pwned, document.querySelectorAll('.card img, .card script').length];", json!([]))
        .await;
    assert_eq!(pwned, json!(["undefined", 0]));
    // The Plane link, from plane.url and plane.workspace.
    let href = browser
        .eval(
            "return document.querySelector('[data-work-item=\"ET-1\"] a.ext').href;",
            json!([]),
        )
        .await;
    assert_eq!(
        href,
        format!("https://plane.example/acme/projects/{PROJECT_ID}/issues/issue-ET-1")
    );
    browser.screenshot("board-desktop").await;

    // Filters: by project, by badge.
    browser.goto(&app.url("/?project=OPS")).await;
    let ops = browser.eval(READ_BOARD, json!([])).await;
    let all: Vec<&str> = ops
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["cards"].as_array().unwrap())
        .map(|c| c["wi"].as_str().unwrap())
        .collect();
    assert_eq!(all, ["OPS-1"]);
    browser.goto(&app.url("/?badge=blocked")).await;
    let blocked = browser.eval(READ_BOARD, json!([])).await;
    let all: Vec<&str> = blocked
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["cards"].as_array().unwrap())
        .map(|c| c["wi"].as_str().unwrap())
        .collect();
    assert_eq!(all, ["ET-4"]);

    // A phone: the same board, nothing wider than the screen.
    browser.resize(PHONE).await;
    browser.goto(&app.url("/")).await;
    assert_eq!(
        browser.eval(FITS, json!([])).await,
        json!(true),
        "the board fits 390 px"
    );
    browser.screenshot("board-390px").await;
    browser.quit().await;
    app.stop().await;
}

#[tokio::test]
async fn the_task_page_says_why_and_shows_history_jobs_and_the_question() {
    let _one = BROWSER.lock().await;
    let (app, _clock) = spawn(|_| {}).await;
    seed(&app).await;
    let Some(browser) = Browser::start(DESKTOP).await else {
        return;
    };
    browser.goto(&app.url("/tasks/ET-5")).await;
    let page = browser
        .eval(
            "return { words: document.querySelector('.decision .words').textContent,
                      question: document.querySelector('.question pre').textContent,
                      history: document.querySelectorAll('section table tbody tr').length,
                      jobs: Array.from(document.querySelectorAll('.job h3')).map(function (h) { return h.textContent; }),
                      output: document.querySelector('.job details pre').textContent,
                      badges: Array.from(document.querySelectorAll('.task .badge')).map(function (b) { return b.dataset.badge; }),
                      gitea: document.querySelector('.links a[href^=\"https://gitea.example\"]').href };",
            json!([]),
        )
        .await;
    // The sweep is off in these tests: the page says so, and what it would decide.
    assert_eq!(
        page["words"],
        "The sweep is switched off (kill switch). With it on: waits for an answer to its agent's question."
    );
    assert_eq!(page["question"], "Which database should the tests use?");
    assert!(page["history"].as_u64().unwrap() >= 1, "{page}");
    assert!(
        page["jobs"][0]
            .as_str()
            .unwrap()
            .contains("tester in testing: done, needs_input"),
        "{page}"
    );
    assert_eq!(
        page["output"], "agent output <b>not bold</b>",
        "output is text"
    );
    assert_eq!(page["badges"], json!(["answer"]));
    assert_eq!(
        page["gitea"],
        "https://gitea.example/acme/widget/src/branch/feature/ET-5"
    );
    browser.screenshot("task-desktop").await;

    // The hostile title on its own page.
    browser.goto(&app.url("/tasks/ET-3")).await;
    let title = browser
        .eval(
            "return [document.querySelector('.task .title').textContent, typeof window.__pwned];",
            json!([]),
        )
        .await;
    assert_eq!(title, json!([HOSTILE, "undefined"]));
    let words = browser
        .eval(
            "return document.querySelector('.decision .words').textContent;",
            json!([]),
        )
        .await;
    assert!(words.as_str().unwrap().contains("switched off"), "{words}");

    browser.resize(PHONE).await;
    browser.goto(&app.url("/tasks/ET-5")).await;
    assert_eq!(
        browser.eval(FITS, json!([])).await,
        json!(true),
        "the task page fits 390 px"
    );
    browser.screenshot("task-390px").await;
    browser.quit().await;
    app.stop().await;
}

#[tokio::test]
async fn a_task_moved_in_the_database_moves_column_without_a_reload() {
    let _one = BROWSER.lock().await;
    let (app, _clock) = spawn(|_| {}).await;
    seed(&app).await;
    let Some(browser) = Browser::start(DESKTOP).await else {
        return;
    };
    browser.goto(&app.url("/")).await;
    // Marks this document: a full reload would lose the mark.
    browser
        .eval("window.__same_page = true; return true;", json!([]))
        .await;
    let in_column = "return !!document.querySelector('section.column[data-stage=\"' + arguments[0] + '\"] [data-work-item=\"ET-2\"]');";
    assert_eq!(
        browser.eval(in_column, json!(["development"])).await,
        json!(true)
    );

    let id = task_of(&app, "ET-2").await.unwrap().id;
    let moved = app
        .state
        .store
        .call(move |c| {
            orch::store::tasks::compare_and_set_stage(
                c,
                id,
                "development",
                "review",
                None,
                Trigger::Manual,
                "test",
                t0(),
            )
        })
        .await
        .unwrap();
    assert!(moved);
    let start = Instant::now();
    assert!(
        browser.wait_for(in_column, json!(["review"]), LIVE).await,
        "ET-2 did not move to review within {LIVE:?}"
    );
    let elapsed = start.elapsed();
    assert_eq!(
        browser.eval(in_column, json!(["development"])).await,
        json!(false)
    );
    assert_eq!(
        browser
            .eval("return window.__same_page === true;", json!([]))
            .await,
        json!(true),
        "the page updated in place, not by a reload"
    );
    eprintln!("ET-2 moved column on the page {elapsed:?} after the change");
    browser.quit().await;
    app.stop().await;
}

#[tokio::test]
async fn a_rule_file_saved_with_an_error_shows_on_the_rules_page_without_a_reload() {
    let _one = BROWSER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_copy(dir.path(), &[]);
    let rules_for_cfg = rules.clone();
    let (app, _clock) = spawn(move |cfg| cfg.rules_dir = rules_for_cfg).await;
    let Some(browser) = Browser::start(DESKTOP).await else {
        return;
    };
    browser.goto(&app.url("/rules")).await;
    let page = browser
        .eval(
            "return { stages: Array.from(document.querySelectorAll('svg.graph [data-stage]')).map(function (g) { return g.dataset.stage; }),
                      error: !!document.querySelector('.reload-error'),
                      switches: Array.from(document.querySelectorAll('[data-switch]')).map(function (r) { return r.dataset.switch + '=' + r.lastElementChild.textContent; }) };",
            json!([]),
        )
        .await;
    assert_eq!(
        page["stages"],
        json!([
            "analysis",
            "development",
            "review",
            "testing",
            "done",
            "cancelled"
        ])
    );
    assert_eq!(page["error"], json!(false));
    assert_eq!(
        page["switches"][0],
        "reconcile.enabled=off (overridden by the environment)"
    );
    browser.screenshot("rules-desktop").await;

    // Line 28 of pipeline.toml is development's `next = "review"`.
    let path = rules.join("pipeline.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let line = text.lines().position(|l| l == "next = \"review\"").unwrap() + 1;
    std::fs::write(
        &path,
        text.replacen("next = \"review\"", "next = \"reveiw\"", 1),
    )
    .unwrap();
    let start = Instant::now();
    let shows = "var e = document.querySelector('.reload-error pre'); return !!e && e.textContent.indexOf(arguments[0]) >= 0;";
    let want = format!("pipeline.toml:{line}:");
    assert!(
        browser.wait_for(shows, json!([want]), LIVE).await,
        "the reload error naming {want} did not show within {LIVE:?}"
    );
    eprintln!(
        "the reload error showed {:?} after the save",
        start.elapsed()
    );
    browser.screenshot("rules-error-desktop").await;

    browser.resize(PHONE).await;
    browser.goto(&app.url("/rules")).await;
    assert_eq!(
        browser.eval(FITS, json!([])).await,
        json!(true),
        "the rules page fits 390 px"
    );
    browser.screenshot("rules-390px").await;
    browser.quit().await;
    app.stop().await;
}

// -------------------------------------------------------------------------------------------
// Plain HTTP: access and escaping, no browser needed.

#[tokio::test]
async fn pages_need_the_token_by_bearer_or_the_login_cookie() {
    let (app, _clock) =
        spawn(|cfg| cfg.http.token = Some(orch::secret::Secret::new("board-token"))).await;
    seed(&app).await;
    orch::http_client::install_crypto();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let r = http.get(app.url("/tasks/ET-1")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/login?next=/tasks/ET-1");
    let r = http.get(app.url("/live/board")).send().await.unwrap();
    assert_eq!(
        r.status().as_u16(),
        401,
        "the live endpoint is not open either"
    );
    let r = http.get(app.url("/login")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        http.get(app.url("/static/board.js"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );

    let wrong = http
        .post(app.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=nope&next=%2Frules")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());

    let ok = http
        .post(app.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=board-token&next=%2Frules")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 303);
    assert_eq!(ok.headers()["location"], "/rules");
    let cookie = ok.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("board-token"),
        "the cookie is not the token: {cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();

    for path in ["/", "/rules", "/tasks/ET-1", "/live/board"] {
        let r = http
            .get(app.url(path))
            .header("cookie", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path} with the cookie");
        let r = http
            .get(app.url(path))
            .bearer_auth("board-token")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path} with the bearer token");
    }
    let r = http
        .get(app.url("/"))
        .header("cookie", "orch_session=forged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303, "a forged cookie is no session");
    app.stop().await;
}

#[tokio::test]
async fn untrusted_text_is_escaped_in_the_html() {
    let (app, clock) = spawn(|_| {}).await;
    seed(&app).await;
    // A logged decision, its reason quoting an agent: shown on the task page, as text.
    let logged = orch::store::decisions::NewDecision {
        work_item: "ET-3".into(),
        task_id: None,
        stage: "review".into(),
        trigger: "webhook".into(),
        rules_version: "abc123".into(),
        rule: "gate.review".into(),
        outcome: "hold".into(),
        reason: "<img src=x onerror=alert(1)> said the reviewer".into(),
        facts: json!({}),
    };
    let now = clock.now();
    app.state
        .store
        .call(move |c| orch::store::decisions::record(c, &logged, now, None))
        .await
        .unwrap();
    let page = get_text(&app, "/tasks/ET-3").await;
    assert!(page.contains("Decisions that acted"), "{page}");
    assert!(
        page.contains("gate.review") && page.contains("abc123"),
        "{page}"
    );
    assert!(page.contains("&lt;img src=x onerror"), "{page}");
    for path in ["/", "/tasks/ET-3"] {
        let html = get_text(&app, path).await;
        assert!(
            !html.contains("<script>window.__pwned"),
            "{path} carries the script as markup"
        );
        assert!(
            !html.contains("<img src=x"),
            "{path} carries the img as markup"
        );
        assert!(
            html.contains("&lt;script&gt;window.__pwned"),
            "{path} shows it as text"
        );
    }
    assert_eq!(
        client()
            .get(app.url("/tasks/NOPE-1"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    app.stop().await;
}

#[tokio::test]
async fn the_live_endpoint_answers_with_the_fingerprint_and_html_only_after_a_change() {
    let (app, _clock) = spawn(|_| {}).await;
    seed(&app).await;
    // The loops' states are part of the fingerprint: start from one taken once they all run.
    eventually("every loop runs", Duration::from_secs(10), || async {
        app.state.loops_down().is_empty()
    })
    .await;
    let first = get_json(&app, "/live/board").await;
    let fp = first["fp"].as_str().unwrap().to_string();
    assert!(
        first["html"]
            .as_str()
            .unwrap()
            .contains("data-work-item=\"ET-1\"")
    );
    let same = get_json(&app, &format!("/live/board?fp={fp}")).await;
    assert_eq!(
        same,
        json!({ "fp": fp }),
        "nothing changed, nothing rendered"
    );

    task(&app, "ET-9", "A new one", "analysis", mins(0)).await;
    let after = get_json(&app, &format!("/live/board?fp={fp}")).await;
    assert_ne!(after["fp"], json!(fp));
    assert!(
        after["html"]
            .as_str()
            .unwrap()
            .contains("data-work-item=\"ET-9\"")
    );
    app.stop().await;
}
