//! Property tests for issue 11: nothing a rule value, a Rhai result or a webhook body holds
//! can panic the service. Each property runs a fixed number of generated cases (more than
//! 10,000 in all) and is bounded to finish in seconds: inputs are small, and the webhook
//! properties run through the real parsers against a real SQLite file in a tempdir.

mod common;

use std::sync::Arc;
use std::time::Duration;

use orch::clock::{ManualClock, Timestamp};
use orch::pipeline::subjects::Subject;
use orch::policy::{self, Outcome, Overrides, TaskSnapshot};
use orch::store::InboxItem;
use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestRunner};
use serde_json::Value;

const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);

/// No files written on failure (CI runs in a fresh clone); the seed is printed instead.
fn runner(cases: u32) -> TestRunner {
    TestRunner::new(PtConfig {
        cases,
        failure_persistence: None,
        ..PtConfig::default()
    })
}

fn task(stage: &str, labels: Vec<String>, age_s: u64) -> TaskSnapshot {
    TaskSnapshot {
        work_item: "ET-1".into(),
        stage: stage.into(),
        labels,
        updated_at: NOW.minus(Duration::from_secs(age_s)),
        has_active_job: false,
        awaiting_input: false,
    }
}

/// Numbers as a rule or a script may write them: ordinary seconds, the edges of every
/// integer and float type, and their text.
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|i| i.to_string()),
        any::<u64>().prop_map(|i| i.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        (0.0f64..1e25).prop_map(|f| format!("{f:?}")),
        (-400i32..400).prop_map(|e| format!("1e{e}")),
        Just("1e20".to_string()),
        Just("18446744073709551616.0".to_string()),
        Just("-0.0".to_string()),
    ]
}

// A grace expression returns whatever number a task's label holds: every Rhai number (int or
// float, huge, negative, NaN, infinite) is either a grace or that decision's error.
#[test]
fn any_number_a_grace_expression_returns_is_a_grace_or_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let expr = "let v = task.labels[0];\n\
                if v.contains(\".\") || v.contains(\"e\") || v.contains(\"N\") || v.contains(\"inf\") \
                { parse_float(v) } else { parse_int(v) }";
    let edit = format!("default = \"10m\"\nexpr = '''\n{expr}\n'''");
    let rules = common::rules_copy(
        dir.path(),
        &[("reconcile.toml", "default = \"10m\"", &edit)],
    );
    let r = policy::load_dir(&rules).unwrap();
    let ov = Overrides::default();
    let errors = std::sync::atomic::AtomicU32::new(0);
    runner(4_000)
        .run(&(number_text(), any::<u64>()), |(n, age)| {
            let t = task("development", vec![n.clone()], age % 10_000_000_000);
            let d = policy::decide_task(&r, &ov, &t, None, NOW);
            let g = policy::grace_for(&r, &ov, &t, NOW);
            match (&d.outcome, &g) {
                (Outcome::Error { .. }, Err(_)) => {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                (Outcome::Error { message }, Ok(g)) => {
                    prop_assert!(false, "{n}: error {message} but grace {g:?}")
                }
                (_, Ok(_)) => {}
                (other, Err(e)) => prop_assert!(false, "{n}: {other:?} but grace error {e}"),
            }
            policy::answer_check_due(
                &r,
                &ov,
                &t,
                NOW.minus(Duration::from_secs(age % 1000)),
                None,
                NOW,
            );
            Ok(())
        })
        .unwrap();
    assert!(
        errors.into_inner() > 0,
        "some generated numbers are out of range"
    );
}

// Grace values in the rules and in the environment go through the one duration parser and the
// overrides parser: any text is a duration or an error, never a panic, and any duration the
// environment gives is a grace the evaluator can use.
#[test]
fn any_grace_value_in_the_rules_or_the_environment_is_a_duration_or_an_error() {
    let r = policy::load_dir(&std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules"))
        .unwrap();
    let text = prop_oneof![
        number_text(),
        number_text().prop_map(|n| format!("{n}s")),
        "[0-9a-z .]{0,24}",
        any::<String>(),
    ];
    runner(2_000)
        .run(&(text.clone(), text), |(a, b)| {
            let _ = orch::duration::parse(&a, true);
            let _ = orch::duration::parse(&a, false);
            let json = format!(r#"{{"development": {a}, "review": {b:?}}}"#);
            if let Ok(map) = orch::config::parse_grace_overrides_json(&json) {
                let ov = Overrides {
                    grace_by_stage: map,
                    ..Overrides::default()
                };
                for stage in ["development", "review"] {
                    let t = task(stage, vec![], 3600);
                    let _ = policy::decide_task(&r, &ov, &t, None, NOW);
                }
            }
            let _ = orch::config::Config::load_from(None, &|k| {
                (k == "ORCH_RECONCILE_GRACE_OVERRIDES_JSON").then(|| json.clone())
            });
            Ok(())
        })
        .unwrap();
}

/// Keys the parsers look for, so generated bodies reach past the first check.
const KEYS: &[&str] = &[
    "event",
    "action",
    "data",
    "activity",
    "version",
    "previous_attributes",
    "issue",
    "id",
    "name",
    "sequence_id",
    "project",
    "project_id",
    "state",
    "state_id",
    "labels",
    "group",
    "field",
    "actor",
    "display_name",
    "comment_html",
    "external_source",
    "repository",
    "full_name",
    "ref",
    "pull_request",
    "head",
    "sha",
    "review",
    "number",
    "merged",
    "updated_at",
    "type",
    "content",
];

/// Texts the parsers compare against.
const WORDS: &[&str] = &[
    "issue",
    "issue_comment",
    "created",
    "updated",
    "v2",
    "workitem.updated",
    "workitem.created",
    "issue.created",
    "state",
    "state_id",
    "Todo",
    "In Progress",
    "Done",
    "Cancelled",
    "Approved",
    "started",
    "completed",
    "cancelled",
    "unstarted",
    common::PROJECT_ID,
    common::ISSUE_ID,
    common::REPO,
    "refs/heads/feature/ET-1-x",
    "feature/ET-1-x",
    "success",
    "failure",
    "pending",
    "<p>yes</p>",
    "",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        proptest::sample::select(WORDS).prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(proptest::sample::select(KEYS), inner, 0..8).prop_map(
                |m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            ),
        ]
    })
}

/// A delivery as the inbox stores it: a source, an event header and a body that is JSON
/// shaped like the peers' (or not JSON at all).
fn delivery() -> impl Strategy<Value = InboxItem> {
    let source = proptest::sample::select(&["plane", "gitea", "other"][..]);
    let event = proptest::sample::select(
        &[
            "issue",
            "issue_comment",
            "push",
            "status",
            "pull_request",
            "pull_request_review_approved",
            "x",
        ][..],
    );
    let body = prop_oneof![
        4 => json_value().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
        1 => proptest::collection::vec(any::<u8>(), 0..64),
    ];
    (source, event, body).prop_map(|(source, event, body)| InboxItem {
        id: 1,
        source: source.to_string(),
        event: event.to_string(),
        body,
        body_hash: String::new(),
        received_at: NOW,
        processed_at: None,
        error: None,
        attempts: 0,
    })
}

#[test]
fn any_stored_delivery_has_a_subject_without_panicking() {
    runner(3_000)
        .run(&delivery(), |d| {
            let s = Subject::of(&d);
            let _ = s.order_key();
            Ok(())
        })
        .unwrap();
}

// Through the real parser and pipeline, on a SQLite file: every stored delivery ends in an
// outcome or an error, never a panic.
#[test]
fn any_stored_delivery_is_applied_or_refused_without_panicking() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::test_config(dir.path());
    cfg.projects = vec![orch::config::Project {
        plane_project_id: common::PROJECT_ID.into(),
        identifier: "ET".into(),
        repo: common::REPO.into(),
        clone_url: None,
    }];
    let clock = Arc::new(ManualClock::new(NOW));
    let parts = rt
        .block_on(async { orch::app::Components::build(cfg, clock) })
        .unwrap();
    let pipeline = parts.state.pipeline.clone();
    runner(1_500)
        .run(&delivery(), |d| {
            let _ = rt.block_on(pipeline.handle_delivery(&d));
            Ok(())
        })
        .unwrap();
}
