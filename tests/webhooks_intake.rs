//! Webhook intake against the real server: signatures, dedup, bad bodies, nothing stored on
//! rejection.

mod common;

use common::{TestApp, client, fixture, get_json, sign};
use orch::secret::Secret;
use reqwest::StatusCode;
use serde_json::Value;

const PLANE_SECRET: &str = "plane_wh_0123456789abcdef";
const GITEA_SECRET: &str = "gitea-hook-secret";

async fn app() -> TestApp {
    TestApp::spawn(|c| {
        c.plane.webhook_secret = Some(Secret::new(PLANE_SECRET));
        c.gitea.webhook_secret = Some(Secret::new(GITEA_SECRET));
    })
    .await
}

async fn inbox_count(app: &TestApp) -> i64 {
    app.state
        .store
        .call(orch::store::inbox::count)
        .await
        .unwrap()
}

#[tokio::test]
async fn plane_signature_right_wrong_and_missing() {
    let app = app().await;
    let body = fixture("plane_issue_in_progress.json");
    let http = client();

    let wrong = http
        .post(app.url("/webhooks/plane"))
        .header("X-Plane-Event", "issue")
        .header("X-Plane-Signature", sign("not-the-secret", &body))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let err: Value = wrong.json().await.unwrap();
    assert!(err["error"].as_str().unwrap().contains("signature"));

    let missing = http
        .post(app.url("/webhooks/plane"))
        .header("X-Plane-Event", "issue")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        inbox_count(&app).await,
        0,
        "nothing stored for a rejected delivery"
    );

    let right = http
        .post(app.url("/webhooks/plane"))
        .header("X-Plane-Event", "issue")
        .header("X-Plane-Delivery", "0b6a4e0e-5f8e-4a53-9d3c-2f4a7c1e9b11")
        .header("X-Plane-Signature", sign(PLANE_SECRET, &body))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), StatusCode::ACCEPTED);
    let ok: Value = right.json().await.unwrap();
    assert_eq!(ok["status"], "accepted");
    assert_eq!(inbox_count(&app).await, 1);
    app.stop().await;
}

#[tokio::test]
async fn the_same_delivery_twice_is_stored_once() {
    let app = app().await;
    let body = fixture("plane_issue_in_progress.json");
    let http = client();
    // Plane's retries carry a new X-Plane-Delivery each time; the body is what identifies them.
    for delivery in ["d-1", "d-2"] {
        let r = http
            .post(app.url("/webhooks/plane"))
            .header("X-Plane-Event", "issue")
            .header("X-Plane-Delivery", delivery)
            .header("X-Plane-Signature", sign(PLANE_SECRET, &body))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    assert_eq!(inbox_count(&app).await, 1);
    let metrics = http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"orch_webhook_deliveries_total{source="plane",outcome="duplicate"} 1"#),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn gitea_accepts_either_signature_header_and_routes_on_the_event_type() {
    let app = app().await;
    let http = client();
    let push = fixture("gitea_push.json");
    let r = http
        .post(app.url("/webhooks/gitea"))
        .header("X-Gitea-Event", "push")
        .header("X-Gitea-Event-Type", "push")
        .header("X-Gitea-Signature", sign(GITEA_SECRET, &push))
        .body(push.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    let status = fixture("gitea_status.json");
    // Gitea 1.23 sent `status` with an empty X-Gitea-Event: the exact type header is what counts.
    let r = http
        .post(app.url("/webhooks/gitea"))
        .header("X-Gitea-Event", "")
        .header("X-Gitea-Event-Type", "status")
        .header("X-Gitea-Signature", "")
        .header(
            "X-Hub-Signature-256",
            format!("sha256={}", sign(GITEA_SECRET, &status)),
        )
        .body(status.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    let r = http
        .post(app.url("/webhooks/gitea"))
        .header("X-Gitea-Event-Type", "status")
        .header(
            "X-Hub-Signature-256",
            format!("sha256={}", sign("wrong", &status)),
        )
        .body(b"{\"other\": 1}".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let events: Vec<String> = app
        .state
        .store
        .call(|c| {
            let rows = c.query_map("SELECT event FROM inbox ORDER BY id", orch::args![], |r| {
                r.get(0)
            })?;
            Ok::<Vec<String>, orch::store::StoreError>(rows)
        })
        .await
        .unwrap();
    assert_eq!(events, ["push", "status"]);
    app.stop().await;
}

#[tokio::test]
async fn malformed_and_oversized_bodies_are_rejected_with_json_errors() {
    let app = TestApp::spawn(|_| {}).await; // no secrets: signatures not required
    let http = client();
    for bad in [&b"{not json"[..], b"[1,2,3]", b""] {
        let r = http
            .post(app.url("/webhooks/plane"))
            .body(bad.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::BAD_REQUEST,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].is_string());
    }
    // A delivery that does not say which event it is cannot be routed: refused, not stored.
    for (path, body) in [
        ("/webhooks/gitea", fixture("gitea_push.json")),
        (
            "/webhooks/plane",
            b"{\"action\": \"updated\", \"data\": {}}".to_vec(),
        ),
    ] {
        let r = http.post(app.url(path)).body(body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
        let v: Value = r.json().await.unwrap();
        assert!(
            v["error"]
                .as_str()
                .is_some_and(|e| e.contains("cannot tell which event")),
            "{path}: {v}"
        );
    }
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let r = http
        .post(app.url("/webhooks/gitea"))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].is_string());
    assert_eq!(inbox_count(&app).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn queue_reports_levels_and_blocks() {
    let app = TestApp::spawn(|_| {}).await;
    let v: Value = get_json(&app, "/queue").await;
    assert_eq!(v["jobs"]["queued"], 0);
    assert!(v["tasks"].is_object());
    assert!(v["reconcile"]["sweeps"].is_number());
    app.stop().await;
}
