//! Supervision seen from outside: `/ready` and the `loops` block of `/queue` report each
//! background loop's real state, a loop that panics (Telegram's dispatcher, through its failpoint, on the "stage changed" message a new task owes) is
//! named while it is down, counted, and started again.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use orch::outbox::{Failpoint, Step};
use orch::service::RestartPolicy;
use orch::store::outbox::Peer;

const LOOPS: [&str; 6] = [
    "heartbeat",
    "outbox-plane",
    "outbox-telegram",
    "worker",
    "inbox",
    "reconciler",
];

async fn ready(app: &TestApp) -> (u16, serde_json::Value) {
    let r = client().get(app.url("/ready")).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn a_healthy_server_is_ready_and_lists_its_loops_as_running() {
    let app = TestApp::spawn(|_| {}).await;
    let (status, body) = ready(&app).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ready"], true);

    let q = get_json(&app, "/queue").await;
    for name in LOOPS {
        assert_eq!(q["loops"][name]["state"], "running", "{name}: {q}");
        assert_eq!(q["loops"][name]["restarts"], 0, "{name}: {q}");
    }
    assert_eq!(q["reconcile"]["running"], true);

    // A loop stopped (here the sweep, as an operator's hook would) is reported, not hidden.
    assert!(app.state.reconciler.stop(Duration::from_secs(5)).await);
    let (status, body) = ready(&app).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["loops_down"], serde_json::json!(["reconciler"]));
    assert!(
        body["reason"].as_str().unwrap().contains("reconciler"),
        "{body}"
    );
    let q = get_json(&app, "/queue").await;
    assert_eq!(q["loops"]["reconciler"]["state"], "stopped");
    assert_eq!(q["reconcile"]["running"], false);
    app.stop().await;
}

/// The real server with Plane, Gitea and Telegram as peers and Telegram's dispatcher running
/// with `failpoint`.
async fn spawn_with_telegram_failpoint(peers: &Peers, failpoint: Failpoint) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let bare = bare_repo(dir.path());
    let mut cfg = test_config(dir.path());
    peers.configure(&mut cfg, bare.to_str().unwrap());
    cfg.reconcile.enabled = Some(false);
    TestApp::spawn_prepared(dir, cfg, Arc::new(orch::clock::SystemClock), move |app| {
        app.set_dispatcher_failpoint(Peer::Telegram, failpoint)
    })
    .await
}

fn panics_at_claim(armed: Arc<AtomicBool>) -> Failpoint {
    Arc::new(move |_id, step| {
        if step == Step::Claimed && armed.swap(false, Ordering::SeqCst) {
            panic!("injected dispatcher bug");
        }
        false
    })
}

#[tokio::test]
async fn a_panicking_dispatcher_makes_the_server_unready_naming_it() {
    let peers = Peers::start().await;
    let app = spawn_with_telegram_failpoint(&peers, panics_at_claim(Arc::new(true.into()))).await;
    // Long enough that the loop is still down whenever we look.
    app.state.set_restart_policy(RestartPolicy {
        first_delay: Duration::from_secs(3600),
        ..RestartPolicy::default()
    });
    post_plane(&app, plane_webhook("In Progress", "started")).await;

    eventually("not ready", Duration::from_secs(10), || async {
        ready(&app).await.0 == 503
    })
    .await;
    let (_, last) = ready(&app).await;
    assert_eq!(
        last["loops_down"],
        serde_json::json!(["outbox-telegram"]),
        "{last}"
    );
    let reason = last["reason"].as_str().unwrap();
    assert!(reason.contains("outbox-telegram"), "{reason}");
    assert!(reason.contains("injected dispatcher bug"), "{reason}");
    assert_eq!(last["store"], "ok");

    let q = get_json(&app, "/queue").await;
    let telegram = &q["loops"]["outbox-telegram"];
    assert_eq!(telegram["state"], "restarting", "{q}");
    assert_eq!(telegram["restarts"], 1);
    assert_eq!(telegram["last_error"], "panicked: injected dispatcher bug");
    assert_eq!(q["loops"]["outbox-plane"]["state"], "running");

    let metrics = get_text(&app, "/metrics").await;
    assert!(
        metrics.contains("orch_background_restarts_total{loop=\"outbox-telegram\"} 1"),
        "{metrics}"
    );
    // Shutdown does not wait for the restart delay.
    let before = std::time::Instant::now();
    app.stop().await;
    assert!(before.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_panicking_dispatcher_is_restarted_and_the_server_is_ready_again() {
    let peers = Peers::start().await;
    let armed = Arc::new(AtomicBool::new(true));
    let app = spawn_with_telegram_failpoint(&peers, panics_at_claim(armed.clone())).await;
    app.state.set_restart_policy(RestartPolicy {
        first_delay: Duration::from_millis(50),
        ..RestartPolicy::default()
    });
    post_plane(&app, plane_webhook("In Progress", "started")).await;

    eventually("the failpoint fired", Duration::from_secs(10), || async {
        !armed.load(Ordering::SeqCst)
    })
    .await;
    eventually("running again", Duration::from_secs(10), || async {
        let q = get_json(&app, "/queue").await;
        q["loops"]["outbox-telegram"]["state"] == "running"
            && q["loops"]["outbox-telegram"]["restarts"] == 1
    })
    .await;
    let (status, body) = ready(&app).await;
    assert_eq!(status, 200, "{body}");
    let q = get_json(&app, "/queue").await;
    assert_eq!(
        q["loops"]["outbox-telegram"]["last_error"], "panicked: injected dispatcher bug",
        "the cause stays visible after the restart"
    );
    app.stop().await;
}
