//! Shared helpers for black-box tests: the real server on port 0 with a SQLite file in a
//! tempdir.
#![allow(dead_code)]

#[macro_use]
#[path = "../store_portable/backends.rs"]
pub mod backends;
pub mod browser;

use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use orch::app::{AppState, Application};
use orch::config::Config;
use sha2::Sha256;

pub struct TestApp {
    pub base: String,
    pub state: AppState,
    pub dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// A config for tests: everything under a fresh tempdir, listening on a free port.
///
/// Webhooks are accepted unsigned (`allow_unsigned`), as most tests post plain JSON; the
/// tests of signatures and of the unsigned default set a secret or turn it off.
///
/// Under `ORCH_TEST_DB=postgres` the database is a fresh PostgreSQL schema (`db_url`) instead
/// of the SQLite file `db_path` (see `backends`).
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut cfg = Config {
        db_path: dir.join("orch.db"),
        repos_dir: dir.join("repos"),
        listen: "127.0.0.1:0".parse().unwrap(),
        rules_dir: std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules"),
        ..Config::default()
    };
    cfg.db_url = backends::suite_db_url();
    cfg.plane.allow_unsigned = true;
    cfg.gitea.allow_unsigned = true;
    cfg
}

/// The store `cfg` names, opened beside (or before) the server, as the server opens it.
pub fn open_store(cfg: &Config) -> orch::store::Store {
    orch::store::Store::open_configured(cfg.db_url.as_deref(), &cfg.db_path).unwrap()
}

/// The database lines of a config file for the `orch` binary: `db_path` and, under
/// `ORCH_TEST_DB=postgres`, `db_url` (`cfg` from `test_config`).
pub fn db_toml(cfg: &Config) -> String {
    let mut s = format!("db_path = {:?}\n", cfg.db_path);
    if let Some(url) = &cfg.db_url {
        s.push_str(&format!("db_url = {url:?}\n"));
    }
    s
}

impl TestApp {
    pub async fn spawn(configure: impl FnOnce(&mut Config)) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = test_config(dir.path());
        configure(&mut cfg);
        Self::spawn_in(dir, cfg).await
    }

    pub async fn spawn_in(dir: tempfile::TempDir, cfg: Config) -> TestApp {
        Self::spawn_with_clock(dir, cfg, std::sync::Arc::new(orch::clock::SystemClock)).await
    }

    pub async fn spawn_with_clock(
        dir: tempfile::TempDir,
        cfg: Config,
        clock: std::sync::Arc<dyn orch::clock::Clock>,
    ) -> TestApp {
        Self::spawn_prepared(dir, cfg, clock, |_| {}).await
    }

    /// Like `spawn_with_clock`, with a chance to prepare the built application (test hooks
    /// such as a dispatcher failpoint) before it runs.
    pub async fn spawn_prepared(
        dir: tempfile::TempDir,
        cfg: Config,
        clock: std::sync::Arc<dyn orch::clock::Clock>,
        prepare: impl FnOnce(&mut Application),
    ) -> TestApp {
        if std::env::var_os("RUST_LOG").is_some() {
            orch::telemetry::init(orch::telemetry::LogFormat::Text);
        }
        let mut app = Application::build_with_clock(cfg, clock).await.unwrap();
        prepare(&mut app);
        let base = format!("http://{}", app.local_addr().unwrap());
        let state = app.state().clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(app.run_until(async move {
            let _ = rx.await;
        }));
        TestApp {
            base,
            state,
            dir,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn stop(self) {
        self.stop_keeping_dir().await;
    }

    /// Stops the server the way SIGINT does and hands back its directory (database, repos)
    /// for a restart.
    pub async fn stop_keeping_dir(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.unwrap().unwrap();
        }
        self.dir
    }
}

pub fn client() -> reqwest::Client {
    orch::http_client::build(Duration::from_secs(10)).unwrap()
}

pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Polls `cond` until it holds or the deadline passes.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Peers: Plane, Gitea and Telegram as real HTTP servers (wiremock), a bare git remote.

use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

pub const PROJECT_ID: &str = "59e3be42-87ec-4950-99a3-ae639cf2b089";
pub const ISSUE_ID: &str = "775c5716-5302-4617-bb9f-2cd843911268";
pub const WORKSPACE: &str = "acme";
pub const REPO: &str = "acme/widget";
pub const TG_TOKEN: &str = "123:tg-token";

/// The default Plane states plus the ones orch's rules use; id = "st-" + slug.
pub const STATES: &[(&str, &str)] = &[
    ("Backlog", "backlog"),
    ("Todo", "unstarted"),
    ("In Progress", "started"),
    ("In Review", "started"),
    ("Needs Input", "started"),
    ("Approved", "started"),
    ("Rejected", "started"),
    ("Blocked", "started"),
    ("Done", "completed"),
    ("Cancelled", "cancelled"),
];

pub fn state_id(name: &str) -> String {
    format!("st-{}", name.to_lowercase().replace(' ', "-"))
}

pub struct Peers {
    pub plane: MockServer,
    pub gitea: MockServer,
    pub telegram: MockServer,
}

impl Peers {
    pub async fn start() -> Peers {
        let peers = Peers {
            plane: MockServer::start().await,
            gitea: MockServer::start().await,
            telegram: MockServer::start().await,
        };
        let results: Vec<serde_json::Value> = STATES
            .iter()
            .map(|(name, group)| serde_json::json!({"id": state_id(name), "name": name, "group": group}))
            .collect();
        Mock::given(method("GET"))
            .and(path(format!(
                "/api/v1/workspaces/{WORKSPACE}/projects/{PROJECT_ID}/states/"
            )))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "grouped_by": null, "sub_grouped_by": null, "total_count": results.len(),
                "next_cursor": "100:1:0", "prev_cursor": "100:-1:1", "next_page_results": false,
                "prev_page_results": false, "count": results.len(), "total_pages": 1,
                "total_results": results.len(), "extra_stats": null, "results": results
            })))
            .mount(&peers.plane)
            .await;
        // orch reads an item's state before writing one (a lost cancel must not be erased).
        Mock::given(method("GET"))
            .and(path_regex(
                r"^/api/v1/workspaces/acme/projects/[^/]+/work-items/[^/]+/$",
            ))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "id": ISSUE_ID,
                "state": {"id": state_id("In Progress"), "name": "In Progress", "color": "#000", "group": "started"}
            })))
            .mount(&peers.plane)
            .await;
        Mock::given(method("PATCH"))
            .and(path_regex(
                r"^/api/v1/workspaces/acme/projects/[^/]+/work-items/[^/]+/$",
            ))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(serde_json::json!({"id": ISSUE_ID})),
            )
            .mount(&peers.plane)
            .await;
        Mock::given(method("POST"))
            .and(path_regex(
                r"^/api/v1/workspaces/acme/projects/[^/]+/work-items/[^/]+/comments/$",
            ))
            .respond_with(
                ResponseTemplate::new(201).set_body_json(serde_json::json!({"id": "c-1"})),
            )
            .mount(&peers.plane)
            .await;
        Mock::given(method("POST"))
            .and(path(format!("/bot{TG_TOKEN}/sendMessage")))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"ok": true})))
            .mount(&peers.telegram)
            .await;
        peers
    }

    pub fn configure(&self, cfg: &mut Config, clone_url: &str) {
        cfg.plane.url = Some(self.plane.uri());
        cfg.plane.api_token = Some(orch::secret::Secret::new("plane_api_test"));
        cfg.plane.workspace = Some(WORKSPACE.into());
        cfg.plane.requests_per_minute = 100_000;
        cfg.http.retries = 2;
        cfg.http.retry_base_delay = Duration::from_millis(5);
        cfg.gitea.url = Some(self.gitea.uri());
        cfg.gitea.token = Some(orch::secret::Secret::new("gitea-token"));
        cfg.telegram.bot_token = Some(orch::secret::Secret::new(TG_TOKEN));
        cfg.telegram.chat_id = Some("-100".into());
        cfg.telegram.api_url = self.telegram.uri();
        cfg.projects = vec![orch::config::Project {
            plane_project_id: PROJECT_ID.into(),
            identifier: "ET".into(),
            repo: REPO.into(),
            clone_url: Some(clone_url.into()),
        }];
    }

    /// Gitea answers branch heads from the bare repository and reports `ci` for every sha.
    pub async fn gitea_from_bare(&self, bare: &std::path::Path, ci: &'static str) {
        let bare = bare.to_path_buf();
        Mock::given(method("GET"))
            .and(path_regex(r"^/api/v1/repos/acme/widget/branches/.+$"))
            .respond_with(move |req: &Request| {
                let branch = req
                    .url
                    .path()
                    .trim_start_matches("/api/v1/repos/acme/widget/branches/")
                    .to_string();
                match git_head(&bare, &branch) {
                    Some(sha) => ResponseTemplate::new(200)
                        .set_body_json(serde_json::json!({"name": branch, "commit": {"id": sha}})),
                    None => ResponseTemplate::new(404)
                        .set_body_json(serde_json::json!({"message": "not found"})),
                }
            })
            .mount(&self.gitea)
            .await;
        Mock::given(method("GET"))
            .and(path_regex(
                r"^/api/v1/repos/acme/widget/commits/[^/]+/statuses$",
            ))
            .respond_with(
                ResponseTemplate::new(200)
                    .insert_header("X-Total-Count", "1")
                    .set_body_json(
                        serde_json::json!([{"id": 1, "status": ci, "context": "ci/build"}]),
                    ),
            )
            .mount(&self.gitea)
            .await;
    }

    /// Gitea says every branch's head is `sha` and its CI is `ci`.
    pub async fn gitea_every_branch_at(&self, sha: &str, ci: &str) {
        Mock::given(method("GET"))
            .and(path_regex(r"^/api/v1/repos/acme/widget/branches/.+$"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(serde_json::json!({"name": "b", "commit": {"id": sha}})),
            )
            .mount(&self.gitea)
            .await;
        self.gitea_ci(sha, ci).await;
    }

    /// Gitea says the head of `branch` (of `acme/widget`) is `sha`.
    pub async fn gitea_branch_at(&self, branch: &str, sha: &str) {
        Mock::given(method("GET"))
            .and(path(format!("/api/v1/repos/{REPO}/branches/{branch}")))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(serde_json::json!({"name": branch, "commit": {"id": sha}})),
            )
            .mount(&self.gitea)
            .await;
    }

    /// Gitea reports one CI status, `ci`, for `sha`.
    pub async fn gitea_ci(&self, sha: &str, ci: &str) {
        Mock::given(method("GET"))
            .and(path(format!("/api/v1/repos/{REPO}/commits/{sha}/statuses")))
            .respond_with(
                ResponseTemplate::new(200)
                    .insert_header("X-Total-Count", "1")
                    .set_body_json(
                        serde_json::json!([{"id": 1, "status": ci, "context": "ci/build"}]),
                    ),
            )
            .mount(&self.gitea)
            .await;
    }

    /// Texts sent to Telegram so far.
    pub async fn telegram_texts(&self) -> Vec<String> {
        self.telegram
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter_map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
            .filter_map(|v| v["text"].as_str().map(str::to_string))
            .collect()
    }

    /// Plane state ids PATCHed so far, in order.
    pub async fn plane_states_set(&self) -> Vec<String> {
        self.plane
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.method.as_str() == "PATCH")
            .filter_map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
            .filter_map(|v| v["state"].as_str().map(str::to_string))
            .collect()
    }

    pub async fn plane_comments(&self) -> Vec<serde_json::Value> {
        self.plane
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.method.as_str() == "POST" && r.url.path().ends_with("/comments/"))
            .filter_map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
            .collect()
    }
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A bare repository with one commit on `main`, as a Gitea remote would hold.
pub fn bare_repo(dir: &std::path::Path) -> std::path::PathBuf {
    let bare = dir.join("remote/widget.git");
    std::fs::create_dir_all(&bare).unwrap();
    git(&bare, &["init", "-q", "--bare", "-b", "main"]);
    let seed = dir.join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    git(&seed, &["init", "-q", "-b", "main"]);
    std::fs::write(seed.join("README.md"), "widget\n").unwrap();
    git(&seed, &["add", "README.md"]);
    git(&seed, &["commit", "-q", "-m", "initial"]);
    git(&seed, &["push", "-q", bare.to_str().unwrap(), "main"]);
    bare
}

/// The head sha of `branch` in a bare repository.
pub fn git_head(bare: &std::path::Path, branch: &str) -> Option<String> {
    let out = std::process::Command::new("git")
        .args([
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("refs/heads/{branch}"),
        ])
        .current_dir(bare)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The Plane webhook fixture (ET-42 in the configured project) with another state.
pub fn plane_webhook(state_name: &str, group: &str) -> Vec<u8> {
    let mut v: serde_json::Value =
        serde_json::from_slice(&fixture("plane_issue_in_progress.json")).unwrap();
    v["data"]["state"] = serde_json::json!({"id": state_id(state_name), "name": state_name, "color": "#000", "group": group});
    v["activity"]["new_value"] = serde_json::json!(state_id(state_name));
    // Python's separators, as Plane sends them.
    serde_json::to_string(&v).unwrap().into_bytes()
}

pub fn agent(name: &str) -> orch::config::AgentConfig {
    orch::config::AgentConfig {
        command: vec![format!(
            "{}/tests/agents/{name}.sh",
            env!("CARGO_MANIFEST_DIR")
        )],
        timeout: Duration::from_secs(30),
        push: false,
    }
}

pub async fn task_of(app: &TestApp, wi: &str) -> Option<orch::store::Task> {
    let wi = wi.to_string();
    app.state
        .store
        .call(move |c| orch::store::tasks::get_by_work_item(c, &wi))
        .await
        .unwrap()
}

/// A copy of the default rules in `dir/rules`, with textual replacements applied.
/// The real server wired to `peers`, with a bare remote to clone, the sweep off and `agents`
/// configured: the setup of most pipeline tests.
pub async fn spawn_with_agents(
    peers: &Peers,
    agents: Vec<(&str, orch::config::AgentConfig)>,
) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let bare = bare_repo(dir.path());
    let mut cfg = test_config(dir.path());
    peers.configure(&mut cfg, bare.to_str().unwrap());
    cfg.reconcile.enabled = Some(false);
    for (name, agent) in agents {
        cfg.agents.insert(name.into(), agent);
    }
    TestApp::spawn_in(dir, cfg).await
}

/// The work item of the Plane fixtures' project, as the pipeline takes it.
pub fn work_item(wi: &str, title: &str) -> orch::pipeline::WorkItem {
    orch::pipeline::WorkItem {
        work_item: wi.into(),
        plane_issue_id: Some(ISSUE_ID.into()),
        plane_project_id: PROJECT_ID.into(),
        title: title.into(),
        labels: vec![],
    }
}

/// `GET path` on the server, as JSON.
pub async fn get_json(app: &TestApp, path: &str) -> serde_json::Value {
    client()
        .get(app.url(path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `GET path` on the server, as text.
pub async fn get_text(app: &TestApp, path: &str) -> String {
    client()
        .get(app.url(path))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// An agent that hangs and starts a child that would outlive it; the child's pid is appended
/// to `pid_file` (tests/agents/slow.sh).
pub fn slow_agent(pid_file: &std::path::Path, timeout: Duration) -> orch::config::AgentConfig {
    orch::config::AgentConfig {
        command: vec![
            "/usr/bin/env".into(),
            format!("SLOW_PID_FILE={}", pid_file.display()),
            format!("{}/tests/agents/slow.sh", env!("CARGO_MANIFEST_DIR")),
        ],
        timeout,
        push: false,
    }
}

/// The pids the slow agent recorded (none yet when the file does not exist).
pub fn recorded_pids(pid_file: &std::path::Path) -> Vec<i32> {
    std::fs::read_to_string(pid_file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Gone, or a zombie waiting for init to reap it: either way no longer running.
pub fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// The stage history of one task, oldest first.
pub async fn task_history(app: &TestApp, task_id: i64) -> Vec<orch::store::HistoryRow> {
    app.state
        .store
        .call(move |c| orch::store::tasks::history(c, task_id))
        .await
        .unwrap()
}

/// The jobs of one task, oldest first (none for an unknown task).
pub async fn task_jobs(app: &TestApp, task_id: i64) -> Vec<orch::store::Job> {
    app.state
        .store
        .call(move |c| orch::store::jobs::for_task(c, task_id))
        .await
        .unwrap()
}

pub fn rules_copy(dir: &std::path::Path, edits: &[(&str, &str, &str)]) -> std::path::PathBuf {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let dst = dir.join("rules");
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().and_then(|e| e.to_str()) == Some("toml") {
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            let mut text = std::fs::read_to_string(&p).unwrap();
            for (file, from, to) in edits {
                if *file == name {
                    assert!(text.contains(from), "{name} has no {from:?}");
                    text = text.replace(from, to);
                }
            }
            std::fs::write(dst.join(name), text).unwrap();
        }
    }
    dst
}

/// Inserts a task directly in `stage`, last updated `age` before `now`.
pub async fn insert_task(
    app: &TestApp,
    wi: &str,
    stage: &str,
    updated: orch::clock::Timestamp,
) -> orch::store::Task {
    let new = orch::store::NewTask {
        work_item: wi.into(),
        plane_issue_id: Some(format!("issue-{wi}")),
        plane_project_id: Some(PROJECT_ID.into()),
        title: format!("Work item {wi}"),
        repo: REPO.into(),
        branch: format!("feature/{wi}-work"),
        stage: stage.into(),
        labels: vec![],
    };
    app.state
        .store
        .call(move |c| {
            orch::store::tasks::create_atomic(
                c,
                &new,
                None,
                "test",
                orch::store::Trigger::Manual,
                updated,
            )
        })
        .await
        .unwrap()
        .0
}

/// Waits until every stored delivery has been processed.
pub async fn processed(app: &TestApp) {
    eventually("inbox drained", Duration::from_secs(10), || async {
        app.state
            .store
            .call(|c| orch::store::inbox::backlog(c, orch::inbox::MAX_ATTEMPTS))
            .await
            .unwrap()
            .pending
            == 0
    })
    .await;
}

/// Waits until the running dispatchers have delivered every effect owed so far.
pub async fn delivered(app: &TestApp) {
    eventually("outbox delivered", Duration::from_secs(10), || async {
        let mut owed = 0;
        for peer in orch::store::outbox::Peer::ALL {
            owed += app
                .state
                .store
                .call(move |c| orch::store::outbox::owed(c, peer))
                .await
                .unwrap();
        }
        owed == 0
    })
    .await;
}

/// Posts a Plane delivery and expects it to be accepted.
pub async fn post_plane(app: &TestApp, body: Vec<u8>) {
    let r = client()
        .post(app.url("/webhooks/plane"))
        .header("X-Plane-Event", "issue")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
}

/// Runs the `orch` binary with `args` (no `RUST_LOG`): exit code, stdout, stderr.
pub fn run_orch(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}
