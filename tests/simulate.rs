//! The chaos test: the real engine against fake Plane and Gitea with 30% of webhooks lost.

use orch::sim::{SimOptions, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_items_with_thirty_percent_of_webhooks_dropped_all_reach_done() {
    let report = run(&SimOptions {
        items: 50,
        drop_rate: 0.3,
        seed: 7,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    assert_eq!(report.done, 50, "{report:#?}");
    assert_eq!(report.duplicates, 0, "{report:#?}");
    assert!(report.webhooks_dropped > 0, "{report:#?}");
    assert_eq!(
        report.webhooks_rejected, 0,
        "signed deliveries are accepted: {report:#?}"
    );
    assert!(
        report.unblocks + report.replays > 0,
        "the reconciler healed the lost webhooks: {report:#?}"
    );
    assert!(report.unblocks > 0, "{report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_drops_the_webhook_path_alone_finishes_everything() {
    let report = run(&SimOptions {
        items: 5,
        drop_rate: 0.0,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    assert_eq!(report.done, 5, "{report:#?}");
    assert_eq!(report.webhooks_dropped, 0);
    assert_eq!(report.webhooks_rejected, 0, "{report:#?}");
    assert_eq!(
        report.replays, 0,
        "nothing to replay when nothing is lost: {report:#?}"
    );
    assert_eq!(
        report.unblocks, 0,
        "nothing to unblock when nothing is lost: {report:#?}"
    );
    assert_eq!(report.duplicates, 0);
    assert!(
        report.plane_requests_per_item <= 8.0,
        "Plane's budget per item: {report:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_items_survive_three_kills_done_in_orch_and_in_plane() {
    let report = run(&SimOptions {
        items: 50,
        drop_rate: 0.3,
        kills: 3,
        seed: 11,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    assert_eq!(report.kills, 3, "{report:#?}");
    assert_eq!(report.done, 50, "Plane shows Done: {report:#?}");
    assert_eq!(report.done_in_orch, 50, "{report:#?}");
    assert_eq!(report.duplicates, 0, "{report:#?}");
    assert_eq!(report.webhooks_rejected, 0, "{report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_items_end_cancelled_even_when_their_webhooks_are_lost() {
    let report = run(&SimOptions {
        items: 20,
        drop_rate: 0.3,
        cancel_rate: 0.4,
        seed: 3,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    assert!(report.cancel_requested > 0, "{report:#?}");
    assert_eq!(report.cancelled, report.cancel_requested, "{report:#?}");
    assert_eq!(report.done + report.cancelled, 20, "{report:#?}");
    assert_eq!(report.cancels_not_honoured, 0, "{report:#?}");
    assert_eq!(report.duplicates, 0, "{report:#?}");
    assert_eq!(report.webhooks_rejected, 0, "{report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn questions_are_answered_and_rejected_reviews_redone_when_webhooks_are_lost() {
    let report = run(&SimOptions {
        items: 20,
        drop_rate: 0.5,
        ask_rate: 0.5,
        reject_rate: 0.4,
        seed: 4,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    assert!(report.questions > 0, "{report:#?}");
    assert!(report.rejections > 0, "{report:#?}");
    assert_eq!(report.answered, report.questions, "{report:#?}");
    assert_eq!(report.done, 20, "{report:#?}");
    assert_eq!(
        report.duplicates, 0,
        "one run per answer and per return to a stage: {report:#?}"
    );
    assert_eq!(report.webhooks_rejected, 0, "{report:#?}");
}

fn fast_track() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/examples/fast-track")
}

/// A reshaped pipeline, end to end: the fast-track rules have no testing stage and a review
/// gate of `review_approved && ci_green`; the agents and the people follow them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fast_track_rules_without_a_testing_stage_finish_every_item() {
    let report = run(&SimOptions {
        items: 12,
        drop_rate: 0.3,
        reject_rate: 0.3,
        ask_rate: 0.3,
        seed: 5,
        rules: Some(fast_track()),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    assert_eq!(report.done, 12, "Plane shows Done: {report:#?}");
    assert_eq!(report.done_in_orch, 12, "{report:#?}");
    assert!(report.rejections > 0, "{report:#?}");
    assert_eq!(report.answered, report.questions, "{report:#?}");
    assert_eq!(report.duplicates, 0, "{report:#?}");
    assert_eq!(report.webhooks_rejected, 0, "{report:#?}");
}

#[test]
fn orch_simulate_with_the_fast_track_rules_ends_with_every_item_done() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(["simulate", "--items", "4", "--drop-rate", "0.2", "--rules"])
        .arg(fast_track())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("items done                  4 / 4"), "{text}");
}

#[test]
fn orch_simulate_refuses_an_invalid_rule_set_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in orch::policy::EMBEDDED {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let pipeline = dir.path().join("pipeline.toml");
    let text = std::fs::read_to_string(&pipeline).unwrap();
    std::fs::write(
        &pipeline,
        text.replace("next = \"done\"", "next = \"nowhere\""),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(["simulate", "--items", "1", "--rules"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pipeline.toml:"), "{err}");
    assert!(err.contains("nowhere"), "{err}");
}

/// Another pipeline with names of its own: two human gates (triage, signoff), its own agents
/// and its own Plane states ("Doing" starts, "LGTM" approves, "Waiting on you" asks a person).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reshaped_pipeline_with_two_human_gates_and_its_own_states_finishes() {
    let report = run(&SimOptions {
        items: 8,
        drop_rate: 0.3,
        cancel_rate: 0.25,
        ask_rate: 0.25,
        seed: 2,
        rules: Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rules/reshaped")),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    assert!(report.cancel_requested > 0, "{report:#?}");
    assert_eq!(report.done + report.cancelled, 8, "{report:#?}");
    assert_eq!(
        report.done_in_orch, report.done,
        "Plane shows Shipped: {report:#?}"
    );
    assert_eq!(report.cancels_not_honoured, 0, "{report:#?}");
    assert_eq!(report.answered, report.questions, "{report:#?}");
    assert_eq!(report.duplicates, 0, "{report:#?}");
}
