//! `orch serve` on PostgreSQL (`db_url`): a delivery through the real server moves a task,
//! every read and write going through the PostgreSQL backend. Skipped without
//! `ORCH_TEST_PG_URL` outside CI (see `store_portable/backends.rs`).

mod common;

use common::*;

const SHA: &str = "bffeb74224043ba2feb48d137756c8a9331c449a";

#[tokio::test]
async fn a_gitea_status_moves_a_task_of_a_postgres_backed_orch() {
    let Some((_schema, url)) = backends::pg_schema() else {
        return;
    };
    let peers = Peers::start().await;
    let app = TestApp::spawn(|c| {
        peers.configure(c, "unused");
        c.reconcile.enabled = Some(false);
        c.db_url = Some(url.clone());
    })
    .await;
    assert!(
        app.state.store.location().starts_with("postgres://"),
        "{}",
        app.state.store.location()
    );
    let now = app.state.clock.now();
    insert_task(&app, "ET-1", "development", now).await;
    peers.gitea_branch_at("feature/ET-1-work", SHA).await;
    peers.gitea_ci(SHA, "success").await;
    let mut v: serde_json::Value = serde_json::from_slice(&fixture("gitea_status.json")).unwrap();
    v["state"] = serde_json::json!("success");
    let status = client()
        .post(app.url("/webhooks/gitea"))
        .header("X-Gitea-Event-Type", "status")
        .body(serde_json::to_vec(&v).unwrap())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 202);
    processed(&app).await;
    assert_eq!(task_of(&app, "ET-1").await.unwrap().stage, "review");
    let history = app
        .state
        .store
        .call(|c| {
            let id = orch::store::tasks::get_by_work_item(c, "ET-1")?.map(|t| t.id);
            orch::store::tasks::history(c, id.unwrap_or(0))
        })
        .await
        .unwrap();
    assert_eq!(history.last().map(|h| h.to_stage.as_str()), Some("review"));
    app.stop().await;
}
