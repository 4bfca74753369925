//! TC-20's log line: `reconciler: <WORK-ITEM> <stage> unblocked (lost webhook)`, logged once
//! per unblock. This binary holds a single test so it can own the global subscriber.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use orch::app::Components;
use orch::clock::{Clock, ManualClock, Timestamp};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn tc20_every_unblock_logs_one_line() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_env_filter("orch=info")
        .init();

    let peers = Peers::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    peers.configure(&mut cfg, "unused");
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_800_000_000_000)));
    let state = Components::build(cfg, clock.clone()).unwrap().state;
    let new = orch::store::NewTask {
        work_item: "ET-042".into(),
        plane_project_id: Some(PROJECT_ID.into()),
        title: "t".into(),
        repo: REPO.into(),
        branch: "feature/ET-042-x".into(),
        stage: "development".into(),
        ..Default::default()
    };
    let at = clock.now().minus(Duration::from_secs(3600));
    state
        .store
        .call(move |c| {
            orch::store::tasks::create_atomic(c, &new, None, "v", orch::store::Trigger::Manual, at)
        })
        .await
        .unwrap();
    Mock::given(method("GET"))
        .and(path(format!(
            "/api/v1/repos/{REPO}/branches/feature/ET-042-x"
        )))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"name": "b", "commit": {"id": "abc"}})),
        )
        .mount(&peers.gitea)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/api/v1/repos/{REPO}/commits/abc/statuses")))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                serde_json::json!([{"id": 1, "status": "success", "context": "ci"}]),
            ),
        )
        .mount(&peers.gitea)
        .await;

    state.reconciler.reconcile_gate_once().await;
    state.reconciler.reconcile_gate_once().await; // nothing left to unblock: no second line
    let logged = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = "reconciler: ET-042 development unblocked (lost webhook)";
    assert_eq!(logged.matches(line).count(), 1, "{logged}");
}
