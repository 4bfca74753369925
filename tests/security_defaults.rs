//! Security defaults (issue 11): unsigned webhooks are opt-in, `GET /explain` never calls a
//! peer, and `http.token` guards every endpoint but `/health`, `/ready` and the webhooks.

mod common;

use std::time::Duration;

use common::*;
use orch::secret::Secret;
use reqwest::StatusCode;
use serde_json::Value;

async fn inbox_count(app: &TestApp) -> i64 {
    app.state
        .store
        .call(orch::store::inbox::count)
        .await
        .unwrap()
}

#[tokio::test]
async fn without_a_secret_webhooks_are_refused_unless_unsigned_is_allowed() {
    let peers = Peers::start().await;
    let app = TestApp::spawn(|c| {
        peers.configure(c, "unused");
        c.plane.allow_unsigned = false;
        c.gitea.allow_unsigned = false;
    })
    .await;
    let http = client();
    let plane = http
        .post(app.url("/webhooks/plane"))
        .header("X-Plane-Event", "issue")
        .body(fixture("plane_issue_in_progress.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(plane.status(), StatusCode::UNAUTHORIZED);
    let err: Value = plane.json().await.unwrap();
    let msg = err["error"].as_str().unwrap();
    assert!(
        msg.contains("plane.webhook_secret") && msg.contains("ORCH_PLANE_ALLOW_UNSIGNED"),
        "the error names the settings: {msg}"
    );
    let gitea = http
        .post(app.url("/webhooks/gitea"))
        .header("X-Gitea-Event-Type", "status")
        .body(r#"{"sha": "cafebabe", "state": "success"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(gitea.status(), StatusCode::UNAUTHORIZED);
    let err: Value = gitea.json().await.unwrap();
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("ORCH_GITEA_WEBHOOK_SECRET"),
        "{err}"
    );
    assert_eq!(inbox_count(&app).await, 0, "nothing stored when refused");
    let metrics = get_text(&app, "/metrics").await;
    assert!(
        metrics.contains(r#"outcome="unsigned""#),
        "refusals are counted: {metrics}"
    );
    app.stop().await;

    // The same delivery, with unsigned deliveries allowed explicitly.
    let app = TestApp::spawn(|c| {
        peers.configure(c, "unused");
        c.plane.allow_unsigned = true;
    })
    .await;
    let r = http
        .post(app.url("/webhooks/plane"))
        .header("X-Plane-Event", "issue")
        .body(fixture("plane_issue_in_progress.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(inbox_count(&app).await, 1);
    app.stop().await;
}

#[test]
fn allow_unsigned_from_the_file_and_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orch.toml");
    std::fs::write(
        &file,
        "[plane]\nallow_unsigned = true\n[http]\ntoken = \"from-file\"\n",
    )
    .unwrap();
    let none = |_: &str| None;
    let cfg = orch::config::Config::load_from(Some(&file), &none).unwrap();
    assert!(cfg.plane.allow_unsigned && !cfg.gitea.allow_unsigned);
    assert_eq!(cfg.http.token.as_ref().unwrap().expose(), "from-file");
    let env = |k: &str| match k {
        "ORCH_PLANE_ALLOW_UNSIGNED" => Some("false".to_string()),
        "ORCH_GITEA_ALLOW_UNSIGNED" => Some("yes".to_string()),
        "ORCH_HTTP_TOKEN" => Some("from-env".to_string()),
        _ => None,
    };
    let cfg = orch::config::Config::load_from(Some(&file), &env).unwrap();
    assert!(!cfg.plane.allow_unsigned && cfg.gitea.allow_unsigned);
    assert_eq!(cfg.http.token.as_ref().unwrap().expose(), "from-env");
    assert!(
        !format!("{cfg:?}").contains("from-env"),
        "the token is a secret"
    );
    let defaults = orch::config::Config::load_from(None, &none).unwrap();
    assert!(!defaults.plane.allow_unsigned && !defaults.gitea.allow_unsigned);
    assert!(defaults.http.token.is_none());
}

#[tokio::test]
async fn explain_over_http_shows_the_last_gate_reading_and_never_calls_gitea() {
    const SHA: &str = "cafebabecafebabecafebabecafebabecafebabe";
    let peers = Peers::start().await;
    peers.gitea_branch_at("feature/ET-7-work", SHA).await;
    peers.gitea_ci(SHA, "pending").await;
    let app = TestApp::spawn(|c| {
        peers.configure(c, "unused");
        c.reconcile.interval = Duration::from_secs(3600);
        c.reconcile.plane_enabled = Some(false);
    })
    .await;
    // The sweep runs only when the test says so: let the loop's first sweep (over no tasks)
    // happen, so the loop has started, then stop it.
    eventually("the first sweep", Duration::from_secs(10), || async {
        get_json(&app, "/queue").await["reconcile"]["sweeps"].as_u64() >= Some(1)
    })
    .await;
    assert!(app.state.reconciler.stop(Duration::from_secs(5)).await);
    let now = app.state.clock.now();
    insert_task(
        &app,
        "ET-7",
        "development",
        now.minus(Duration::from_secs(3600)),
    )
    .await;
    let gitea_calls = || async { peers.gitea.received_requests().await.unwrap().len() };

    let before = gitea_calls().await;
    let x = get_json(&app, "/explain/ET-7").await;
    assert_eq!(gitea_calls().await, before, "explain called Gitea: {x}");
    assert_eq!(x["stage"], "development");
    assert_eq!(x["decision"]["outcome"]["kind"], "check_gate", "{x}");
    assert!(x["facts"]["gate"].is_null(), "never read yet: {x}");

    // A sweep reads the gate (red: CI pending) and keeps the reading.
    app.state.reconciler.reconcile_gate_once().await;
    let after_sweep = gitea_calls().await;
    assert!(after_sweep > before, "the sweep asked Gitea");
    let x = get_json(&app, "/explain/ET-7").await;
    let y = get_json(&app, "/explain/ET-7").await;
    assert_eq!(
        gitea_calls().await,
        after_sweep,
        "explain called Gitea: {x}"
    );
    assert_eq!(x["facts"]["gate"]["green"], false, "{x}");
    assert!(
        x["facts"]["gate"]["reason"]
            .as_str()
            .unwrap()
            .contains("CI pending"),
        "{x}"
    );
    assert_eq!(x["facts"]["gate"]["stage"], "development");
    assert!(x["facts"]["gate"]["read_at"].is_string(), "{x}");
    assert_eq!(x["facts"]["gate"], y["facts"]["gate"], "the same reading");
    assert_eq!(x["decision"]["outcome"]["kind"], "hold", "{x}");
    app.stop().await;
}

#[tokio::test]
async fn the_api_token_guards_everything_but_health_ready_and_webhooks() {
    const TOKEN: &str = "orch-api-0123456789";
    let app = TestApp::spawn(|c| c.http.token = Some(Secret::new(TOKEN))).await;
    let http = client();
    for path in ["/queue", "/metrics", "/explain/ET-1", "/no-such-endpoint"] {
        let r = http.get(app.url(path)).send().await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "{path} without a token"
        );
        let e: Value = r.json().await.unwrap();
        assert!(e["error"].as_str().unwrap().contains("Bearer"), "{e}");
        let r = http
            .get(app.url(path))
            .bearer_auth("orch-api-0123456788")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path} wrong token");
        let r = http
            .get(app.url(path))
            .header("Authorization", TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path} no scheme");
    }
    let r = http
        .get(app.url("/queue"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let q: Value = r.json().await.unwrap();
    assert!(q["jobs"].is_object(), "{q}");
    let r = http
        .get(app.url("/explain/ET-1"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "past the token");

    let r = http.get(app.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = http.get(app.url("/ready")).send().await.unwrap();
    assert_ne!(r.status(), StatusCode::UNAUTHORIZED, "/ready is open");
    let r = http
        .post(app.url("/webhooks/plane"))
        .header("X-Plane-Event", "issue")
        .body(fixture("plane_issue_in_progress.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "webhooks carry no token");
    app.stop().await;
}
