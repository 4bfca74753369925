//! The pure evaluator: facts and `now` in, decisions out.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use orch::clock::Timestamp;
use orch::policy::{
    self, CheckResult, Outcome, Overrides, PlaneItemSnapshot, PlaneOutcome, SkipReason,
    TaskSnapshot,
};

const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);

fn rules() -> policy::RuleSet {
    policy::load_dir(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules")).unwrap()
}

fn task(stage: &str, age_s: u64) -> TaskSnapshot {
    TaskSnapshot {
        work_item: "ET-1".into(),
        stage: stage.into(),
        labels: vec![],
        updated_at: NOW.minus(Duration::from_secs(age_s)),
        has_active_job: false,
        awaiting_input: false,
    }
}

#[test]
fn tc04_the_grace_boundary_is_inclusive() {
    let r = rules();
    let ov = Overrides::default();
    let at = policy::decide_task(&r, &ov, &task("development", 600), None, NOW);
    assert!(matches!(at.outcome, Outcome::CheckGate { .. }), "{at:?}");
    let before = policy::decide_task(&r, &ov, &task("development", 599), None, NOW);
    assert_eq!(before.outcome, Outcome::Wait { remaining_s: 1 });
    assert_eq!(before.grace_left_s, Some(1));
}

#[test]
fn tc05_grace_precedence_environment_over_rules() {
    let r = rules();
    let mut ov = Overrides {
        grace_default: Some(Duration::from_secs(120)),
        ..Overrides::default()
    };
    ov.grace_by_stage
        .insert("development".into(), Duration::from_secs(30));
    let g = |stage: &str, ov: &Overrides| policy::grace_for(&r, ov, &task(stage, 0), NOW).unwrap();
    assert_eq!(
        g("development", &ov),
        Duration::from_secs(30),
        "env per stage"
    );
    assert_eq!(g("review", &ov), Duration::from_secs(120), "env default");
    assert_eq!(
        g("review", &Overrides::default()),
        Duration::from_secs(600),
        "rules default"
    );
    let d = policy::decide_task(&r, &ov, &task("development", 10), None, NOW);
    assert_eq!(d.rule, "env.grace_overrides.development");
}

#[test]
fn tc08_and_tc03_human_gates_and_busy_tasks_never_reach_the_gate() {
    let r = rules();
    let ov = Overrides::default();
    let green = policy::GateOutcome {
        green: true,
        reason: "approved".into(),
    };
    let d = policy::decide_task(&r, &ov, &task("analysis", 99_999), Some(&green), NOW);
    assert_eq!(
        d.outcome,
        Outcome::Skip {
            why: SkipReason::HumanGate
        }
    );
    let mut busy = task("review", 99_999);
    busy.has_active_job = true;
    let d = policy::decide_task(&r, &ov, &busy, None, NOW);
    assert_eq!(
        d.outcome,
        Outcome::Skip {
            why: SkipReason::Busy
        }
    );
    let d = policy::decide_task(&r, &ov, &task("nonexistent", 99_999), None, NOW);
    assert_eq!(
        d.outcome,
        Outcome::Skip {
            why: SkipReason::UnknownStage
        }
    );
}

#[test]
fn kill_switches_environment_false_wins_and_true_cannot_override_the_rules() {
    let r = rules();
    let off = Overrides {
        reconcile_enabled: Some(false),
        ..Overrides::default()
    };
    let d = policy::decide_task(&r, &off, &task("development", 99_999), None, NOW);
    assert_eq!(
        d.outcome,
        Outcome::Skip {
            why: SkipReason::Disabled
        }
    );
    assert_eq!(d.rule, "env.ORCH_RECONCILE_ENABLED");

    let dir = tempfile::tempdir().unwrap();
    let paused = policy::load_dir(&common::rules_copy(
        dir.path(),
        &[("reconcile.toml", "enabled = true", "enabled = false")],
    ))
    .unwrap();
    let on = Overrides {
        reconcile_enabled: Some(true),
        ..Overrides::default()
    };
    let d = policy::decide_task(&paused, &on, &task("development", 99_999), None, NOW);
    assert_eq!(
        (d.outcome, d.rule.as_str()),
        (
            Outcome::Skip {
                why: SkipReason::Disabled
            },
            "reconcile.enabled"
        )
    );

    let plane_off = Overrides {
        plane_enabled: Some(false),
        ..Overrides::default()
    };
    let item = PlaneItemSnapshot {
        work_item: "ET-1".into(),
        state_name: "In Progress".into(),
        state_group: Some("started".into()),
        updated_at: NOW,
        task: None,
        applied_at: None,
        first_seen_at: None,
    };
    assert!(matches!(
        policy::decide_plane_item(&r, &plane_off, &item, NOW).outcome,
        PlaneOutcome::Ignore { .. }
    ));
    assert!(matches!(
        policy::decide_task(&r, &plane_off, &task("development", 99_999), None, NOW).outcome,
        Outcome::CheckGate { .. }
    ));
}

#[test]
fn a_gate_expression_combines_its_checks() {
    let r = policy::load_dir(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules/examples/fast-track"),
    )
    .unwrap();
    assert_eq!(r.gate_checks("review"), ["ci_green", "review_approved"]);
    let result = |ci: bool, review: bool| {
        let mut m = BTreeMap::new();
        m.insert(
            "ci_green".to_string(),
            CheckResult {
                green: ci,
                reason: format!("ci {ci}"),
            },
        );
        m.insert(
            "review_approved".to_string(),
            CheckResult {
                green: review,
                reason: format!("review {review}"),
            },
        );
        r.gate_outcome("review", &m).unwrap()
    };
    assert!(result(true, true).green);
    assert!(!result(true, false).green);
    assert!(!result(false, true).green);
    assert!(result(false, true).reason.contains("ci false"));
    // A check the caller did not evaluate is an error, not a silent red.
    assert!(r.gate_outcome("review", &BTreeMap::new()).is_err());
}

#[test]
fn an_endless_rhai_loop_fails_only_its_own_decision() {
    let dir = tempfile::tempdir().unwrap();
    let rules = common::rules_copy(
        dir.path(),
        &[(
            "reconcile.toml",
            "default = \"10m\"",
            "default = \"10m\"\nexpr = '''\nif task.labels.contains(\"loop\") { loop { } }\ndefault_s\n'''",
        )],
    );
    let r = policy::load_dir(&rules).unwrap();
    let ov = Overrides::default();
    let mut runaway = task("development", 99_999);
    runaway.labels = vec!["loop".into()];
    let started = std::time::Instant::now();
    let d = policy::decide_task(&r, &ov, &runaway, None, NOW);
    match &d.outcome {
        Outcome::Error { message } => assert!(message.contains("operations"), "{message}"),
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(d.rule, "grace.expr");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the operation limit"
    );
    // The other decisions of the same sweep complete normally.
    let fine = policy::decide_task(&r, &ov, &task("development", 99_999), None, NOW);
    assert!(
        matches!(fine.outcome, Outcome::CheckGate { .. }),
        "{fine:?}"
    );
    let done = policy::decide_task(&r, &ov, &runaway_in("done"), None, NOW);
    assert_eq!(
        done.outcome,
        Outcome::Skip {
            why: SkipReason::Terminal
        }
    );
}

// Issue 11: a grace expression returning a number no duration can hold panicked in
// `Duration::from_secs_f64`, on the sweep's loop and on `/explain`. It is that decision's
// error now, and `answer_check_due` falls back to the default grace instead of panicking.
#[test]
fn a_grace_expression_too_large_for_a_duration_is_its_decisions_error() {
    for value in ["1e20", "1e300", "18446744073709551616.0"] {
        let dir = tempfile::tempdir().unwrap();
        let edit = format!("default = \"10m\"\nexpr = '''\n{value}\n'''");
        let rules = common::rules_copy(
            dir.path(),
            &[("reconcile.toml", "default = \"10m\"", &edit)],
        );
        let r = policy::load_dir(&rules).unwrap();
        let ov = Overrides::default();
        let t = task("development", 99_999);
        let d = policy::decide_task(&r, &ov, &t, None, NOW);
        match &d.outcome {
            Outcome::Error { message } => {
                assert!(message.contains("fits a duration"), "{value}: {message}")
            }
            other => panic!("{value}: expected an error, got {other:?}"),
        }
        assert_eq!(d.rule, "grace.expr");
        assert!(policy::grace_for(&r, &ov, &t, NOW).is_err(), "{value}");
        assert!(policy::answer_check_due(
            &r,
            &ov,
            &t,
            NOW.minus(Duration::from_secs(601)),
            None,
            NOW
        ));
    }
}

fn runaway_in(stage: &str) -> TaskSnapshot {
    let mut t = task(stage, 99_999);
    t.labels = vec!["loop".into()];
    t
}

#[test]
fn the_sandbox_has_no_clock_no_modules_and_bounded_values() {
    for (expr, what) in [
        ("timestamp(); 1", "timestamp"),
        ("import \"x\" as y; 1", "import"),
        ("let s = \"x\"; for i in 0..20 { s += s; } 1", "string size"),
        (
            "let a = []; for i in 0..5000 { a.push(i); } 1",
            "array size",
        ),
        ("fn f(n) { f(n + 1) } f(0)", "call depth"),
        ("eval(\"1\")", "eval"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let edit = format!("default = \"10m\"\nexpr = '''\n{expr}\n'''");
        let rules = common::rules_copy(
            dir.path(),
            &[("reconcile.toml", "default = \"10m\"", &edit)],
        );
        match policy::load_dir(&rules) {
            Err(_) => {} // rejected when compiled: fine
            Ok(r) => {
                let d = policy::decide_task(
                    &r,
                    &Overrides::default(),
                    &task("development", 99_999),
                    None,
                    NOW,
                );
                assert!(matches!(d.outcome, Outcome::Error { .. }), "{what}: {d:?}");
            }
        }
    }
}

#[test]
fn plane_replays_are_idempotent() {
    let r = rules();
    let ov = Overrides::default();
    let mut item = PlaneItemSnapshot {
        work_item: "ET-1".into(),
        state_name: "Approved".into(),
        state_group: Some("started".into()),
        updated_at: NOW.minus(Duration::from_secs(60)),
        task: Some(task("analysis", 3600)),
        applied_at: None,
        first_seen_at: None,
    };
    // Seconds old: its webhook may still arrive, so not yet.
    let d = policy::decide_plane_item(&r, &ov, &item, NOW);
    assert_eq!(
        d.outcome,
        PlaneOutcome::Ignore {
            why: "recent".into()
        }
    );
    // Older than the grace and newer than the task: the verdict was lost, replay it.
    item.updated_at = NOW.minus(Duration::from_secs(1800));
    assert!(matches!(
        policy::decide_plane_item(&r, &ov, &item, NOW).outcome,
        PlaneOutcome::Replay { .. }
    ));
    // After the replay the task moved on (and was updated after the Plane change).
    item.task = Some(task("development", 0));
    assert_eq!(
        policy::decide_plane_item(&r, &ov, &item, NOW).outcome,
        PlaneOutcome::InSync
    );
    // Even if it were still in analysis, a change after the Plane state means it was applied.
    item.task = Some(task("analysis", 0));
    assert_eq!(
        policy::decide_plane_item(&r, &ov, &item, NOW).outcome,
        PlaneOutcome::InSync
    );
}

#[test]
fn decisions_are_pure_functions_of_their_inputs() {
    let r = rules();
    let ov = Overrides::default();
    let t = task("review", 1234);
    let a = policy::decide_task(&r, &ov, &t, None, NOW);
    let b = policy::decide_task(&r, &ov, &t, None, NOW);
    assert_eq!(a, b);
    assert_eq!(a.rules_version, r.version());
    let json = serde_json::to_value(&a).unwrap();
    assert_eq!(json["outcome"]["kind"], "check_gate");
}

#[test]
fn a_lost_answer_is_looked_for_after_the_grace_and_then_once_per_grace() {
    let r = rules();
    let ov = Overrides::default();
    let mut waiting = task("analysis", 0);
    waiting.awaiting_input = true;
    let asked = NOW.minus(Duration::from_secs(600));
    let due =
        |asked_at, last, now| policy::answer_check_due(&r, &ov, &waiting, asked_at, last, now);
    // The answer's own webhook gets the grace first.
    assert!(!due(NOW.minus(Duration::from_secs(599)), None, NOW));
    assert!(due(asked, None, NOW));
    // Looked 599 s ago: not yet; 600 s ago: again.
    assert!(!due(asked, Some(NOW.minus(Duration::from_secs(599))), NOW));
    assert!(due(asked, Some(NOW.minus(Duration::from_secs(600))), NOW));
    // A look from before the question (an earlier question) does not count.
    assert!(!due(
        NOW.minus(Duration::from_secs(10)),
        Some(NOW.minus(Duration::from_secs(3600))),
        NOW
    ));
    // The environment's grace wins here too.
    let fast = Overrides {
        grace_default: Some(Duration::from_secs(5)),
        ..Overrides::default()
    };
    assert!(policy::answer_check_due(
        &r,
        &fast,
        &waiting,
        NOW.minus(Duration::from_secs(5)),
        None,
        NOW
    ));
}

#[test]
fn a_red_gate_waits_one_two_four_intervals_up_to_the_cap() {
    let rules = orch::policy::load_embedded().unwrap();
    assert_eq!(rules.red_backoff_cap(), Duration::from_secs(3600));
    let t0 = Timestamp::from_millis(1_800_000_000_000);
    let minute = Duration::from_secs(60);
    let waits: Vec<u64> = (1..=8)
        .map(|reds| {
            orch::policy::next_gate_check(&rules, t0, reds, minute)
                .since(t0)
                .as_secs()
        })
        .collect();
    assert_eq!(waits, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
}
