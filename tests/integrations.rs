//! The Plane, Gitea and Telegram clients against real HTTP servers (wiremock).

use std::time::{Duration, Instant};

use orch::integrations::retry::RetryPolicy;
use orch::integrations::{CiState, Forge, Notifier, Tracker, gitea, plane, telegram};
use orch::secret::Secret;
use serde_json::json;
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const PROJECT: &str = "59e3be42-87ec-4950-99a3-ae639cf2b089";
const STATES: &str =
    "/api/v1/workspaces/acme/projects/59e3be42-87ec-4950-99a3-ae639cf2b089/states/";

fn plane_client(server: &MockServer, rpm: u32) -> plane::HttpPlane {
    plane::HttpPlane::new(
        &server.uri(),
        Secret::new("plane_api_secret_key"),
        "acme",
        rpm,
        RetryPolicy::fast(),
    )
    .unwrap()
}

async fn mount_states(server: &MockServer, expect: u64) {
    // The paginated envelope of plane.md §4.3.
    Mock::given(method("GET"))
        .and(path(STATES))
        .and(header("X-API-Key", "plane_api_secret_key"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "grouped_by": null, "sub_grouped_by": null, "total_count": 3, "next_cursor": "100:1:0",
            "prev_cursor": "100:-1:1", "next_page_results": false, "prev_page_results": false, "count": 3,
            "total_pages": 1, "total_results": 3, "extra_stats": null,
            "results": [
                {"id": "s-backlog", "name": "Backlog", "group": "backlog", "color": "#60646C", "sequence": 15000.0, "default": true},
                {"id": "s-progress", "name": "In Progress", "group": "started", "color": "#F59E0B", "sequence": 35000.0, "default": false},
                {"id": "s-done", "name": "Done", "group": "completed", "color": "#46A758", "sequence": 45000.0, "default": false}
            ]
        })))
        .expect(expect)
        .mount(server)
        .await;
}

#[tokio::test]
async fn plane_sets_states_by_name_through_a_cached_state_list() {
    let server = MockServer::start().await;
    mount_states(&server, 1).await;
    Mock::given(method("PATCH"))
        .and(path(format!(
            "/api/v1/workspaces/acme/projects/{PROJECT}/work-items/issue-1/"
        )))
        .and(body_json(json!({"state": "s-progress"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "issue-1"})))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(format!(
            "/api/v1/workspaces/acme/projects/{PROJECT}/work-items/issue-1/"
        )))
        .and(body_json(json!({"state": "s-done"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "issue-1"})))
        .expect(1)
        .mount(&server)
        .await;
    let p = plane_client(&server, 100_000);
    p.set_state_by_name(PROJECT, "issue-1", "In Progress")
        .await
        .unwrap();
    p.set_state_by_name(PROJECT, "issue-1", "in progress")
        .await
        .unwrap();
    p.set_state_by_name(PROJECT, "issue-1", "Done")
        .await
        .unwrap();
    server.verify().await; // the state list was fetched once
}

#[tokio::test]
async fn plane_unknown_state_refreshes_the_cache_once_then_fails_clearly() {
    let server = MockServer::start().await;
    mount_states(&server, 2).await;
    let p = plane_client(&server, 100_000);
    p.list_states(PROJECT).await.unwrap();
    let err = p
        .set_state_by_name(PROJECT, "issue-1", "Shipped")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no state named \"Shipped\""), "{err}");
    server.verify().await;
}

#[tokio::test]
async fn plane_comments_carry_an_external_id_and_a_duplicate_is_success() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/api/v1/workspaces/acme/projects/{PROJECT}/work-items/issue-1/comments/")))
        .and(body_json(json!({"comment_html": "<p>hi</p>", "external_source": "orch", "external_id": "gate-1"})))
        .respond_with(ResponseTemplate::new(409).set_body_json(json!({"error": "already exists", "id": "c-1"})))
        .expect(1)
        .mount(&server)
        .await;
    plane_client(&server, 100_000)
        .add_comment(PROJECT, "issue-1", "<p>hi</p>", "gate-1")
        .await
        .unwrap();
}

#[tokio::test]
async fn plane_errors_name_the_path_and_status_but_never_the_key() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(STATES))
        .respond_with(ResponseTemplate::new(500).set_body_string("internal error"))
        .expect(4) // the first attempt and three retries
        .mount(&server)
        .await;
    let err = plane_client(&server, 100_000)
        .list_states(PROJECT)
        .await
        .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(
        text.contains(STATES.trim_start_matches("/api/v1")),
        "{text}"
    );
    assert!(text.contains("500"), "{text}");
    assert!(!text.contains("plane_api_secret_key"), "{text}");
    server.verify().await;
}

#[tokio::test]
async fn plane_work_items_page_with_cursors_and_expanded_states() {
    let server = MockServer::start().await;
    let item = |seq: i64, state: &str| {
        json!({"id": format!("i-{seq}"), "name": format!("Item {seq}"), "sequence_id": seq,
               "state": {"id": format!("s-{state}"), "name": state, "color": "#000", "group": "started"},
               "labels": [{"id": "l1", "name": "urgent", "color": "#f00"}],
               "updated_at": "2026-05-19T14:02:47.550219Z"})
    };
    Mock::given(method("GET"))
        .and(path(format!("/api/v1/workspaces/acme/projects/{PROJECT}/work-items/")))
        .and(query_param("per_page", "2"))
        .and(query_param("order_by", "-updated_at"))
        .and(query_param("cursor", "2:1:0"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "next_cursor": "2:2:0", "prev_cursor": "2:0:1", "next_page_results": false, "results": [item(3, "Done")]
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!(
            "/api/v1/workspaces/acme/projects/{PROJECT}/work-items/"
        )))
        .and(query_param("per_page", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "next_cursor": "2:1:0", "prev_cursor": "2:-1:1", "next_page_results": true,
            "results": [item(5, "In Progress"), item(4, "Approved")]
        })))
        .mount(&server)
        .await;
    let p = plane_client(&server, 100_000);
    let first = p.list_work_items_page(PROJECT, None, 2).await.unwrap();
    assert_eq!(first.items.len(), 2);
    assert_eq!(first.items[0].state_name, "In Progress");
    assert_eq!(first.items[0].labels, ["urgent"]);
    assert_eq!(first.next_cursor.as_deref(), Some("2:1:0"));
    let last = p
        .list_work_items_page(PROJECT, first.next_cursor.as_deref(), 2)
        .await
        .unwrap();
    assert_eq!(last.items[0].sequence_id, 3);
    assert_eq!(
        last.next_cursor, None,
        "a never-empty cursor with next_page_results=false ends the listing"
    );
}

#[tokio::test]
async fn plane_recent_comments_newest_first_with_their_source_and_author() {
    let server = MockServer::start().await;
    let comments = format!("/api/v1/workspaces/acme/projects/{PROJECT}/work-items/i-7/comments/");
    // Served oldest first, to show the client orders them itself.
    Mock::given(method("GET"))
        .and(path(comments.clone()))
        .and(query_param("per_page", "100"))
        .and(query_param("order_by", "-created_at"))
        .and(header("X-API-Key", "plane_api_secret_key"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "next_cursor": "100:1:0", "prev_cursor": "100:-1:1", "next_page_results": false,
            "results": [
                {"id": "c-1", "comment_html": "<p>question</p>", "external_source": "orch",
                 "actor": "u-orch", "created_at": "2026-05-19T14:00:00.000000Z"},
                {"id": "c-2", "comment_html": "<p>answer</p>", "external_source": null,
                 "created_by": "u-ana", "created_at": "2026-05-19T14:20:11.402117Z"}
            ]
        })))
        .expect(1)
        .mount(&server)
        .await;
    let p = plane_client(&server, 100_000);
    let got = p.recent_comments(PROJECT, "i-7").await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].id, "c-2");
    assert_eq!(got[0].html, "<p>answer</p>");
    assert_eq!(
        got[0].author.as_deref(),
        Some("u-ana"),
        "created_by when actor is absent"
    );
    assert_eq!(got[0].external_source, None);
    assert_eq!(got[1].external_source.as_deref(), Some("orch"));
    assert!(got[0].created_at > got[1].created_at);
}

#[tokio::test]
async fn plane_reads_a_work_items_state_expanded_or_through_the_state_list() {
    let server = MockServer::start().await;
    mount_states(&server, 1).await;
    Mock::given(method("GET"))
        .and(path(format!(
            "/api/v1/workspaces/acme/projects/{PROJECT}/work-items/i-1/"
        )))
        .and(query_param("expand", "state"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "i-1",
            "state": {"id": "s-x", "name": "Cancelled", "color": "#000", "group": "cancelled"}
        })))
        .mount(&server)
        .await;
    // A server that ignores `expand` answers with the state's id.
    Mock::given(method("GET"))
        .and(path(format!(
            "/api/v1/workspaces/acme/projects/{PROJECT}/work-items/i-2/"
        )))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"id": "i-2", "state": "s-done"})),
        )
        .mount(&server)
        .await;
    let p = plane_client(&server, 100_000);
    let s = p.work_item_state(PROJECT, "i-1").await.unwrap().unwrap();
    assert_eq!(
        (s.name.as_str(), s.group.as_str()),
        ("Cancelled", "cancelled")
    );
    let s = p.work_item_state(PROJECT, "i-2").await.unwrap().unwrap();
    assert_eq!(s.name, "Done");
}

#[tokio::test]
async fn plane_comment_with_a_bad_timestamp_is_a_decode_error_naming_it() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!(
            "/api/v1/workspaces/acme/projects/{PROJECT}/work-items/i-7/comments/"
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "next_page_results": false,
            "results": [{"id": "c-1", "comment_html": "<p>x</p>", "created_at": "yesterday"}]
        })))
        .mount(&server)
        .await;
    let err = plane_client(&server, 100_000)
        .recent_comments(PROJECT, "i-7")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("list comments") && err.contains("\"yesterday\""),
        "{err}"
    );
}

#[tokio::test]
async fn plane_requests_are_paced_under_the_rate_limit() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!(
            "/api/v1/workspaces/acme/projects/{PROJECT}/work-items/"
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"next_cursor": "1:1:0", "next_page_results": false, "results": []}),
        ))
        .expect(3)
        .mount(&server)
        .await;
    // 600/min = one request per 100 ms.
    let p = plane_client(&server, 600);
    let started = Instant::now();
    for _ in 0..3 {
        p.list_work_items_page(PROJECT, None, 1).await.unwrap();
    }
    assert!(
        started.elapsed() >= Duration::from_millis(180),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn plane_retries_wait_for_their_rate_limit_slot_too() {
    let server = MockServer::start().await;
    let page = format!("/api/v1/workspaces/acme/projects/{PROJECT}/work-items/");
    Mock::given(method("GET"))
        .and(path(page.clone()))
        .respond_with(ResponseTemplate::new(502))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(page))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"next_cursor": "1:1:0", "next_page_results": false, "results": []}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    // 600/min = one request per 100 ms; the retry backoff alone would be a few milliseconds.
    let p = plane_client(&server, 600);
    let started = Instant::now();
    p.list_work_items_page(PROJECT, None, 1).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(180),
        "three attempts within {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn disabled_plane_is_a_silent_no_op() {
    let p = plane::DisabledPlane;
    p.set_state_by_name("p", "i", "Done").await.unwrap();
    p.add_comment("p", "i", "x", "y").await.unwrap();
    assert!(
        p.list_work_items_page("p", None, 100)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

// ---------------------------------------------------------------------------------------------
// Gitea

fn gitea_client(server: &MockServer) -> gitea::HttpGitea {
    gitea::HttpGitea::new(
        &server.uri(),
        Secret::new("gitea-secret-token"),
        RetryPolicy::fast(),
    )
    .unwrap()
}

fn status(id: i64, context: &str, state: &str) -> serde_json::Value {
    json!({"id": id, "status": state, "context": context, "target_url": "", "description": "",
           "url": "", "creator": {"id": 11, "login": "ci-bot"}, "created_at": "2025-03-04T10:17:03Z"})
}

#[tokio::test]
async fn gitea_combined_status_pages_and_keeps_the_latest_per_context() {
    let server = MockServer::start().await;
    let sha = "bffeb74224043ba2feb48d137756c8a9331c449a";
    let statuses = format!("/api/v1/repos/acme/widget/commits/{sha}/statuses");
    // 51 statuses: page 1 has 50, page 2 has 1. ci/test failed first, then passed (id 51).
    let mut page1: Vec<_> = (1..=49).map(|i| status(i, "ci/build", "success")).collect();
    page1.push(status(50, "ci/test", "failure"));
    Mock::given(method("GET"))
        .and(path(statuses.clone()))
        .and(query_param("page", "1"))
        .and(header("Authorization", "token gitea-secret-token"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("X-Total-Count", "51")
                .set_body_json(page1),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(statuses))
        .and(query_param("page", "2"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("X-Total-Count", "51")
                .set_body_json(vec![status(51, "ci/test", "success")]),
        )
        .expect(1)
        .mount(&server)
        .await;
    let s = gitea_client(&server)
        .combined_status("acme/widget", sha)
        .await
        .unwrap();
    assert_eq!(s.state, CiState::Success, "{s:?}");
    assert_eq!(s.statuses.len(), 2);
    server.verify().await;
}

#[tokio::test]
async fn gitea_no_status_or_pending_is_not_green_and_failure_wins() {
    let server = MockServer::start().await;
    for (sha, body) in [
        ("none", json!([])),
        (
            "pending",
            json!([status(1, "a", "success"), status(2, "b", "pending")]),
        ),
        (
            "failed",
            json!([status(1, "a", "pending"), status(2, "b", "failure")]),
        ),
    ] {
        Mock::given(method("GET"))
            .and(path(format!(
                "/api/v1/repos/acme/widget/commits/{sha}/statuses"
            )))
            .respond_with(ResponseTemplate::new(200).set_body_json(body))
            .mount(&server)
            .await;
    }
    let g = gitea_client(&server);
    assert_eq!(
        g.combined_status("acme/widget", "none")
            .await
            .unwrap()
            .state,
        CiState::None
    );
    assert_eq!(
        g.combined_status("acme/widget", "pending")
            .await
            .unwrap()
            .state,
        CiState::Pending
    );
    assert_eq!(
        g.combined_status("acme/widget", "failed")
            .await
            .unwrap()
            .state,
        CiState::Failure
    );
}

#[tokio::test]
async fn gitea_branches_heads_and_sha_lookup() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/repos/acme/widget/branches/feature/ET-1-x"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"name": "feature/ET-1-x", "commit": {"id": "aaa", "message": "m"}, "protected": false})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/repos/acme/widget/branches/gone"))
        .respond_with(
            ResponseTemplate::new(404).set_body_json(json!({"message": "branch does not exist"})),
        )
        .mount(&server)
        .await;
    let page = |names: &[(&str, &str)]| -> Vec<serde_json::Value> {
        names
            .iter()
            .map(|(n, s)| json!({"name": n, "commit": {"id": s}}))
            .collect()
    };
    let first: Vec<_> = (0..50)
        .map(|i| json!({"name": format!("b{i}"), "commit": {"id": format!("s{i}")}}))
        .collect();
    Mock::given(method("GET"))
        .and(path("/api/v1/repos/acme/widget/branches"))
        .and(query_param("page", "1"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("X-Total-Count", "52")
                .set_body_json(first),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/repos/acme/widget/branches"))
        .and(query_param("page", "2"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("X-Total-Count", "52")
                .set_body_json(page(&[
                    ("feature/ET-1-x", "aaa"),
                    ("feature/ET-2-y", "aaa"),
                ])),
        )
        .mount(&server)
        .await;
    let g = gitea_client(&server);
    assert_eq!(
        g.branch_head("acme/widget", "feature/ET-1-x")
            .await
            .unwrap()
            .as_deref(),
        Some("aaa")
    );
    assert_eq!(g.branch_head("acme/widget", "gone").await.unwrap(), None);
    assert_eq!(g.list_branches("acme/widget").await.unwrap().len(), 52);
    assert_eq!(
        g.branches_at_sha("acme/widget", "aaa").await.unwrap(),
        ["feature/ET-1-x", "feature/ET-2-y"]
    );
}

#[tokio::test]
async fn a_reply_slower_than_the_attempt_timeout_is_retried() {
    let server = MockServer::start().await;
    let branch = json!({"name": "main", "commit": {"id": "abc"}});
    // The first reply hangs past the timeout; the retry gets a prompt one.
    Mock::given(method("GET"))
        .and(path("/api/v1/repos/acme/widget/branches/main"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(branch.clone())
                .set_delay(Duration::from_secs(30)),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/repos/acme/widget/branches/main"))
        .respond_with(ResponseTemplate::new(200).set_body_json(branch))
        .expect(1)
        .mount(&server)
        .await;
    let g = gitea::HttpGitea::new(
        &server.uri(),
        Secret::new("gitea-secret-token"),
        RetryPolicy {
            attempt_timeout: Duration::from_millis(300),
            ..RetryPolicy::fast()
        },
    )
    .unwrap();
    let started = Instant::now();
    assert_eq!(
        g.branch_head("acme/widget", "main")
            .await
            .unwrap()
            .as_deref(),
        Some("abc")
    );
    // The configured timeout, not the 15 s default, cut the first attempt.
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn gitea_errors_never_show_the_token() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"message": "token is required"})),
        )
        .mount(&server)
        .await;
    let err = gitea_client(&server)
        .branch_head("acme/widget", "main")
        .await
        .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(
        text.contains("401") && text.contains("/repos/acme/widget/branches/main"),
        "{text}"
    );
    assert!(!text.contains("gitea-secret-token"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// Telegram

#[tokio::test]
async fn telegram_sends_to_the_bot_path_and_retries_5xx() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/bot123:secret/sendMessage"))
        .respond_with(ResponseTemplate::new(502))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/bot123:secret/sendMessage"))
        .and(body_json(
            json!({"chat_id": "-100", "text": "hello", "disable_web_page_preview": true}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
        .expect(1)
        .mount(&server)
        .await;
    let t = telegram::HttpTelegram::new(
        &server.uri(),
        Secret::new("123:secret"),
        "-100",
        RetryPolicy::fast(),
    )
    .unwrap();
    t.send("hello").await.unwrap();
    server.verify().await;
}

#[tokio::test]
async fn telegram_errors_hide_the_token_and_disabled_is_a_no_op() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({"ok": false, "description": "chat not found"})),
        )
        .mount(&server)
        .await;
    let t = telegram::HttpTelegram::new(
        &server.uri(),
        Secret::new("123:secret"),
        "-1",
        RetryPolicy::fast(),
    )
    .unwrap();
    let text = format!("{:?}", t.send("x").await.unwrap_err());
    assert!(text.contains("chat not found"), "{text}");
    assert!(!text.contains("123:secret"), "{text}");
    telegram::DisabledTelegram.send("x").await.unwrap();
}

#[tokio::test]
async fn with_no_credentials_every_integration_is_disabled_and_harmless() {
    let cfg = orch::config::Config::default();
    let i = orch::integrations::from_config(&cfg).unwrap();
    i.notifier.send("x").await.unwrap();
    i.tracker.set_state_by_name("p", "i", "Done").await.unwrap();
    assert_eq!(
        i.forge.combined_status("a/b", "main").await.unwrap().state,
        CiState::None
    );
    assert_eq!(i.forge.branch_head("a/b", "main").await.unwrap(), None);
}
