//! Deliveries through the real server into the pipeline: Plane starts, F-3 sha→branch
//! resolution for Gitea status events, concurrency, fuzzing, crash safety.

mod common;

use std::time::Duration;

use common::*;
use orch::store::Trigger;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, ResponseTemplate};

const SHA: &str = "bffeb74224043ba2feb48d137756c8a9331c449a";

async fn app_with_peers(peers: &Peers) -> TestApp {
    TestApp::spawn(|c| {
        peers.configure(c, "unused");
        c.reconcile.enabled = Some(false);
    })
    .await
}

async fn post(app: &TestApp, source: &str, event: &str, body: Vec<u8>) -> reqwest::StatusCode {
    let mut req = client()
        .post(app.url(&format!("/webhooks/{source}")))
        .body(body);
    req = match source {
        "plane" => req.header("X-Plane-Event", event),
        _ => req.header("X-Gitea-Event-Type", event),
    };
    req.send().await.unwrap().status()
}

/// The Gitea status fixture for `acme/widget`, with a given state.
fn status_event(state: &str) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(&fixture("gitea_status.json")).unwrap();
    v["state"] = serde_json::json!(state);
    serde_json::to_vec_pretty(&v).unwrap()
}

async fn green_statuses(peers: &Peers) {
    peers.gitea_ci(SHA, "success").await;
}

async fn branch_heads(peers: &Peers, heads: &[(&str, &str)]) {
    let list: Vec<_> = heads
        .iter()
        .map(|(b, s)| serde_json::json!({"name": b, "commit": {"id": s}}))
        .collect();
    Mock::given(method("GET"))
        .and(path(format!("/api/v1/repos/{REPO}/branches")))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("X-Total-Count", list.len().to_string())
                .set_body_json(list),
        )
        .mount(&peers.gitea)
        .await;
    for (b, s) in heads {
        peers.gitea_branch_at(b, s).await;
    }
}

async fn stage(app: &TestApp, wi: &str) -> String {
    task_of(app, wi).await.unwrap().stage
}

#[tokio::test]
async fn f3_status_resolved_through_the_gitea_api() {
    let peers = Peers::start().await;
    let app = app_with_peers(&peers).await;
    let now = app.state.clock.now();
    insert_task(&app, "ET-1", "development", now).await;
    insert_task(&app, "ET-2", "development", now).await;
    branch_heads(
        &peers,
        &[
            ("feature/ET-1-work", SHA),
            (
                "feature/ET-2-work",
                "0000000000000000000000000000000000000002",
            ),
        ],
    )
    .await;
    green_statuses(&peers).await;
    assert_eq!(
        post(&app, "gitea", "status", status_event("success")).await,
        202
    );
    processed(&app).await;
    assert_eq!(stage(&app, "ET-1").await, "review");
    assert_eq!(stage(&app, "ET-2").await, "development");
    app.stop().await;
}

#[tokio::test]
async fn f3_fallback_to_the_single_development_task_when_the_api_knows_no_branch() {
    let peers = Peers::start().await;
    let app = app_with_peers(&peers).await;
    let now = app.state.clock.now();
    insert_task(&app, "ET-3", "development", now).await;
    insert_task(&app, "ET-4", "review", now).await;
    // The branch moved on already: no branch has the status's sha as its head...
    branch_heads(
        &peers,
        &[("main", "1111111111111111111111111111111111111111")],
    )
    .await;
    // ...but the gate reads the branch head, which is green now.
    peers.gitea_branch_at("feature/ET-3-work", SHA).await;
    green_statuses(&peers).await;
    post(&app, "gitea", "status", status_event("success")).await;
    processed(&app).await;
    assert_eq!(
        stage(&app, "ET-3").await,
        "review",
        "resolved by the fallback"
    );
    app.stop().await;
}

#[tokio::test]
async fn f3_two_development_tasks_are_not_guessed() {
    let peers = Peers::start().await;
    let app = app_with_peers(&peers).await;
    let now = app.state.clock.now();
    insert_task(&app, "ET-5", "development", now).await;
    insert_task(&app, "ET-6", "development", now).await;
    branch_heads(&peers, &[]).await;
    green_statuses(&peers).await;
    post(&app, "gitea", "status", status_event("success")).await;
    processed(&app).await;
    assert_eq!(stage(&app, "ET-5").await, "development");
    assert_eq!(stage(&app, "ET-6").await, "development");
    // Nothing asked for either branch's head: no gate was evaluated.
    let reqs = peers.gitea.received_requests().await.unwrap();
    assert!(
        reqs.iter()
            .all(|r| !r.url.path().contains("/branches/feature")),
        "{reqs:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn f3_api_down_still_allows_the_fallback() {
    let peers = Peers::start().await;
    let app = app_with_peers(&peers).await;
    let now = app.state.clock.now();
    insert_task(&app, "ET-7", "development", now).await;
    Mock::given(method("GET"))
        .and(path(format!("/api/v1/repos/{REPO}/branches")))
        .respond_with(ResponseTemplate::new(500).set_body_string("gitea is restarting"))
        .mount(&peers.gitea)
        .await;
    peers.gitea_branch_at("feature/ET-7-work", SHA).await;
    green_statuses(&peers).await;
    post(&app, "gitea", "status", status_event("success")).await;
    processed(&app).await;
    assert_eq!(stage(&app, "ET-7").await, "review");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_identical_in_progress_deliveries_make_one_task() {
    let peers = Peers::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bare = bare_repo(dir.path());
    let mut cfg = test_config(dir.path());
    peers.configure(&mut cfg, bare.to_str().unwrap());
    cfg.reconcile.enabled = Some(false);
    let app = TestApp::spawn_in(dir, cfg).await;
    let body = plane_webhook("In Progress", "started");
    let mut handles = Vec::new();
    for i in 0..100 {
        let url = app.url("/webhooks/plane");
        let body = body.clone();
        handles.push(tokio::spawn(async move {
            client()
                .post(url)
                .header("X-Plane-Event", "issue")
                .header("X-Plane-Delivery", format!("delivery-{i}"))
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for h in handles {
        assert_eq!(h.await.unwrap(), 202);
    }
    // And the same start racing in through the pipeline directly (as the reconciler would).
    let item = work_item("ET-42", "Login redirect loop on Safari");
    app.state
        .pipeline
        .start(&item, Trigger::Reconciler)
        .await
        .unwrap();
    processed(&app).await;
    let counts: (i64, i64, i64) = app
        .state
        .store
        .call(|c| {
            Ok((
                c.query_row("SELECT COUNT(*) FROM inbox", orch::args![], |r| r.get(0))?,
                c.query_row("SELECT COUNT(*) FROM tasks", orch::args![], |r| r.get(0))?,
                c.query_row(
                    "SELECT COUNT(*) FROM jobs WHERE agent = 'analyst'",
                    orch::args![],
                    |r| r.get(0),
                )?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(
        counts,
        (1, 1, 1),
        "(deliveries stored, tasks, analyst jobs)"
    );
    let branches = std::process::Command::new("git")
        .args(["branch", "--list", "feature/*"])
        .current_dir(app.state.config.repos_dir.join("acme/widget"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&branches.stdout).lines().count(), 1);
    assert_eq!(
        std::fs::read_dir(app.state.config.repos_dir.join("worktrees"))
            .unwrap()
            .count(),
        1
    );
    app.stop().await;
}

/// A small deterministic PRNG (xorshift) so the fuzz cases are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut b = base.to_vec();
    match rng.below(6) {
        0 => {
            // Flip random bytes.
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
        }
        1 => b.truncate(rng.below(b.len())),
        2 => {
            let i = rng.below(b.len());
            let j = i + rng.below(b.len() - i);
            b.drain(i..j);
        }
        3 => {
            // Replace a JSON value with another type.
            let s = String::from_utf8_lossy(&b).to_string();
            let targets = [
                "\"sequence_id\": 42",
                "\"project\": \"59e3be42",
                "\"name\": \"In Progress\"",
                "\"event\": \"issue\"",
                "\"state\": {",
            ];
            let t = targets[rng.below(targets.len())];
            let repl = ["null", "[]", "{}", "-1", "\"\"", "1e999", "\"\\u0000\""][rng.below(7)];
            let key = t.split(':').next().unwrap_or(t);
            b = s
                .replacen(t, &format!("{key}: {repl}, \"x{}\"", rng.below(1000)), 1)
                .into_bytes();
        }
        4 => {
            let i = rng.below(b.len());
            let junk: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
            b.splice(i..i, junk);
        }
        _ => {
            // Valid JSON, unexpected shapes.
            let shapes = [
                r#"{}"#,
                r#"{"event": "issue"}"#,
                r#"{"event": "issue", "action": "created", "data": {}}"#,
                r#"{"version": "v2", "event": "workitem.created", "data": {"project_id": 5}}"#,
                r#"{"event": "issue", "action": "created", "data": {"project": "59e3be42-87ec-4950-99a3-ae639cf2b089", "sequence_id": "x", "state": 7}}"#,
            ];
            b = shapes[rng.below(shapes.len())].as_bytes().to_vec();
        }
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_mutated_payloads_never_panic_and_never_create_a_task() {
    let peers = Peers::start().await;
    const SECRET: &str = "fuzz-secret";
    let app = TestApp::spawn(|c| {
        peers.configure(c, "unused");
        c.reconcile.enabled = Some(false);
        c.plane.webhook_secret = Some(orch::secret::Secret::new(SECRET));
        c.gitea.webhook_secret = Some(orch::secret::Secret::new(SECRET));
    })
    .await;
    let bases = [
        ("plane", "issue", plane_webhook("Backlog", "backlog")),
        ("gitea", "push", fixture("gitea_push.json")),
        ("gitea", "status", fixture("gitea_status.json")),
    ];
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let http = client();
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..1000 {
        let (source, event, base) = &bases[rng.below(bases.len())];
        let body = mutate(&mut rng, base);
        let sig = sign(SECRET, &body);
        let mut req = http
            .post(app.url(&format!("/webhooks/{source}")))
            .body(body);
        req = if *source == "plane" {
            req.header("X-Plane-Event", *event)
                .header("X-Plane-Signature", sig)
        } else {
            req.header("X-Gitea-Event-Type", *event)
                .header("X-Gitea-Signature", sig)
        };
        let status = req.send().await.unwrap().status().as_u16();
        assert!((200..500).contains(&status), "server error {status}");
        *statuses.entry(status).or_insert(0) += 1;
    }
    assert!(
        statuses.contains_key(&400) && statuses.contains_key(&202),
        "{statuses:?}"
    );
    processed_or_failed(&app).await;
    let tasks: i64 = app
        .state
        .store
        .call(|c| c.query_row("SELECT COUNT(*) FROM tasks", orch::args![], |r| r.get(0)))
        .await
        .unwrap();
    assert_eq!(tasks, 0, "no task from an invalid (or non-start) delivery");
    // The server is still healthy.
    assert_eq!(
        http.get(app.url("/health"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    app.stop().await;
}

async fn processed_or_failed(app: &TestApp) {
    eventually("inbox settled", Duration::from_secs(20), || async {
        app.state
            .store
            .call(|c| {
                c.query_row(
                    "SELECT COUNT(*) FROM inbox WHERE processed_at IS NULL AND attempts = 0",
                    orch::args![],
                    |r| r.get::<i64>(0),
                )
            })
            .await
            .unwrap()
            == 0
    })
    .await;
}

#[tokio::test]
async fn gitea_push_rechecks_the_gate_of_a_task_waiting_on_ci() {
    let peers = Peers::start().await;
    let app = app_with_peers(&peers).await;
    let now = app.state.clock.now();
    insert_task(&app, "ET-8", "development", now).await;
    Mock::given(method("GET"))
        .and(path_regex(r"/branches/feature/ET-8-work$"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"name": "x", "commit": {"id": SHA}})),
        )
        .mount(&peers.gitea)
        .await;
    green_statuses(&peers).await;
    let mut push: serde_json::Value = serde_json::from_slice(&fixture("gitea_push.json")).unwrap();
    push["ref"] = serde_json::json!("refs/heads/feature/ET-8-work");
    post(
        &app,
        "gitea",
        "push",
        serde_json::to_vec_pretty(&push).unwrap(),
    )
    .await;
    processed(&app).await;
    assert_eq!(stage(&app, "ET-8").await, "review");
    app.stop().await;
}

#[tokio::test]
async fn bad_and_failing_deliveries_are_kept_without_blocking_the_ones_behind_them() {
    let peers = Peers::start().await;
    // Plane's API is down: a delivery that needs it fails, and must wait and retry.
    let plane_down = wiremock::MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(500))
        .mount(&plane_down)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let bare = bare_repo(dir.path());
    let mut cfg = test_config(dir.path());
    peers.configure(&mut cfg, bare.to_str().unwrap());
    cfg.plane.url = Some(plane_down.uri());
    cfg.reconcile.enabled = Some(false);
    let clock = std::sync::Arc::new(orch::clock::ManualClock::new(
        orch::clock::Timestamp::from_millis(1_800_000_000_000),
    ));
    let app = TestApp::spawn_with_clock(dir, cfg, clock.clone()).await;
    let base: serde_json::Value =
        serde_json::from_slice(&plane_webhook("In Progress", "started")).unwrap();

    // Wrong in itself: no sequence id, so no work item. Retrying cannot help.
    let mut malformed = base.clone();
    malformed["data"]
        .as_object_mut()
        .unwrap()
        .remove("sequence_id");
    // Right, but its state comes as a bare id: naming it needs Plane's API.
    let mut needs_plane = base.clone();
    needs_plane["data"]["sequence_id"] = 43.into();
    needs_plane["data"]["state"] = serde_json::json!({"id": state_id("In Progress")});
    // Right and self-contained.
    let mut fine = base.clone();
    fine["data"]["sequence_id"] = 44.into();
    for body in [&malformed, &needs_plane, &fine] {
        let status = post(&app, "plane", "issue", serde_json::to_vec(body).unwrap()).await;
        assert_eq!(status.as_u16(), 202);
    }

    eventually(
        "the delivery behind the bad ones is applied",
        Duration::from_secs(20),
        || async {
            app.state
                .store
                .call(|c| {
                    c.query_row(
                        "SELECT COUNT(*) FROM inbox WHERE processed_at IS NOT NULL",
                        orch::args![],
                        |r| r.get::<i64>(0),
                    )
                })
                .await
                .unwrap()
                == 1
        },
    )
    .await;
    assert!(task_of(&app, "ET-44").await.is_some());
    let rows = app
        .state
        .store
        .call(|c| {
            let rows = c.query_map("SELECT attempts, error, retry_at IS NOT NULL, processed_at IS NOT NULL FROM inbox ORDER BY id", orch::args![], |r| {
                    Ok((
                        r.get::<i64>(0)?,
                        r.get::<Option<String>>(1)?,
                        r.get::<bool>(2)?,
                        r.get::<bool>(3)?,
                    ))
                })?;
            Ok(rows)
        })
        .await
        .unwrap();
    let (attempts, error, _, processed) = &rows[0];
    assert_eq!(*attempts, orch::inbox::MAX_ATTEMPTS, "{rows:?}");
    assert!(!processed && error.as_deref().unwrap().contains("sequence_id"));
    let (attempts, error, waits, processed) = &rows[1];
    assert_eq!(*attempts, 1, "tried once, then waits: {rows:?}");
    assert!(*waits && !processed, "{rows:?}");
    assert!(error.as_deref().unwrap().contains("500"), "{rows:?}");
    assert!(rows[2].3, "{rows:?}");
    assert!(task_of(&app, "ET-43").await.is_none());

    let queue = get_json(&app, "/queue").await;
    assert_eq!(queue["inbox"]["dead"], 1, "{queue}");
    assert_eq!(queue["inbox"]["pending"], 1, "{queue}");
    let metrics = get_text(&app, "/metrics").await;
    assert!(metrics.contains("orch_inbox_dead 1"), "{metrics}");

    // Plane is back and the retry time comes: the waiting delivery is applied.
    plane_down.reset().await;
    Mock::given(method("GET"))
        .and(path_regex(r"/states/$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "next_cursor": "100:1:0", "next_page_results": false,
            "results": [{"id": state_id("In Progress"), "name": "In Progress", "group": "started"}]
        })))
        .mount(&plane_down)
        .await;
    clock.advance(orch::inbox::RETRY_DELAYS[0]);
    app.state.inbox_wakeup.notify_one();
    eventually(
        "the waiting delivery is retried",
        Duration::from_secs(20),
        || async { task_of(&app, "ET-43").await.is_some() },
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_gate_check_for_one_task_does_not_hold_another_items_delivery() {
    let peers = Peers::start().await;
    let app = app_with_peers(&peers).await;
    let now = app.state.clock.now();
    insert_task(&app, "ET-8", "development", now).await;
    // Gitea takes 3 s to answer the gate check of ET-8's branch.
    Mock::given(method("GET"))
        .and(path_regex(r"/branches/feature/ET-8-work$"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"name": "x", "commit": {"id": SHA}}))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&peers.gitea)
        .await;
    green_statuses(&peers).await;
    let mut push: serde_json::Value = serde_json::from_slice(&fixture("gitea_push.json")).unwrap();
    push["ref"] = serde_json::json!("refs/heads/feature/ET-8-work");
    post(&app, "gitea", "push", serde_json::to_vec(&push).unwrap()).await;
    // Then a Plane item is started: its delivery arrives behind the slow one.
    post(
        &app,
        "plane",
        "issue",
        plane_webhook("In Progress", "started"),
    )
    .await;
    processed(&app).await;
    let order: Vec<(String, i64)> = app
        .state
        .store
        .call(|c| {
            let rows = c.query_map(
                "SELECT source, processed_at FROM inbox ORDER BY id",
                orch::args![],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            Ok::<Vec<_>, orch::store::StoreError>(rows)
        })
        .await
        .unwrap();
    assert_eq!(order.len(), 2, "{order:?}");
    assert!(
        order[1].1 < order[0].1,
        "the Plane start was applied while the push's gate check waited on Gitea: {order:?}"
    );
    assert_eq!(stage(&app, "ET-8").await, "review");
    app.stop().await;
}

/// A stored delivery as the inbox hands it over.
fn stored(source: &str, event: &str, body: Vec<u8>) -> orch::store::InboxItem {
    orch::store::InboxItem {
        id: 1,
        source: source.into(),
        event: event.into(),
        body_hash: orch::store::inbox::body_hash(source, &body),
        body,
        received_at: orch::clock::Timestamp::EPOCH,
        processed_at: None,
        error: None,
        attempts: 0,
    }
}

#[test]
fn parse_reads_deliveries_without_any_lookup() {
    use orch::pipeline::webhook::{Parsed, PlaneStateRef, parse};
    let Parsed::PlaneWorkItem(change) = parse(&stored(
        "plane",
        "issue",
        fixture("plane_issue_in_progress.json"),
    ))
    .unwrap() else {
        panic!("not a work item change");
    };
    assert_eq!(change.sequence_id, 42);
    assert_eq!(change.project_id, "59e3be42-87ec-4950-99a3-ae639cf2b089");
    assert!(matches!(change.state, PlaneStateRef::Named { ref name, .. } if name == "In Progress"));
    assert_eq!(change.labels, vec!["bug".to_string()]);

    assert_eq!(
        parse(&stored("gitea", "status", fixture("gitea_status.json"))).unwrap(),
        Parsed::GiteaStatus {
            repo: "acme/widget".into(),
            sha: "bffeb74224043ba2feb48d137756c8a9331c449a".into(),
        }
    );
    assert_eq!(
        parse(&stored("gitea", "push", fixture("gitea_push.json"))).unwrap(),
        Parsed::GiteaPush {
            repo: "acme/widget".into(),
            branch: "main".into(),
        }
    );
    // Malformed stays malformed (given up at once); unknown sources are ignored, not errors.
    let err = parse(&stored(
        "plane",
        "issue",
        b"{\"event\": \"issue\", \"action\": \"created\"".to_vec(),
    ))
    .unwrap_err();
    assert!(err.is_permanent(), "{err}");
    let err = parse(&stored(
        "gitea",
        "status",
        b"{\"repository\": {\"full_name\": \"a/b\"}}".to_vec(),
    ))
    .unwrap_err();
    assert!(err.to_string().contains("sha is missing"), "{err}");
    assert!(matches!(
        parse(&stored("jira", "x", b"{}".to_vec())).unwrap(),
        Parsed::Ignored { .. }
    ));
}
