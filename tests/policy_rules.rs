//! Loading and validating rule sets: every error located as file:line:col.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use orch::policy;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Errors of the default rules after `edits`, as `file:line:col: message` strings with the
/// directory prefix removed.
fn errors_after(edits: &[(&str, &str, &str)]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let rules = common::rules_copy(dir.path(), edits);
    let errs = policy::load_dir(&rules).expect_err("the edit must be rejected");
    errs.0
        .iter()
        .map(|e| e.to_string().replace(&format!("{}/", rules.display()), ""))
        .collect()
}

fn line_of(file: &str, needle: &str) -> usize {
    let text = std::fs::read_to_string(root().join("rules").join(file)).unwrap();
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn a_misspelt_key_is_an_error_at_its_position() {
    let errs = errors_after(&[("pipeline.toml", "next = \"review\"", "nxt = \"review\"")]);
    let line = line_of("pipeline.toml", "next = \"review\"");
    assert!(
        errs.iter()
            .any(|e| e.starts_with(&format!("pipeline.toml:{line}:1: unknown field `nxt`"))),
        "{errs:?}"
    );
}

#[test]
fn references_to_unknown_things_are_located() {
    let errs = errors_after(&[
        ("pipeline.toml", "next = \"testing\"", "next = \"qa\""),
        (
            "pipeline.toml",
            "gate = \"ci_green\"",
            "gate = \"ci_grean\"",
        ),
        ("pipeline.toml", "agent = \"tester\"", "agent = \"qa-bot\""),
    ]);
    let joined = errs.join("\n");
    let l_next = line_of("pipeline.toml", "next = \"testing\"");
    let l_gate = line_of("pipeline.toml", "gate = \"ci_green\"");
    let l_agent = line_of("pipeline.toml", "agent = \"tester\"");
    assert!(
        joined.contains(&format!(
            "pipeline.toml:{l_next}:8: stage review: next names unknown stage \"qa\""
        )),
        "{joined}"
    );
    assert!(
        joined.contains(&format!(
            "pipeline.toml:{l_gate}:8: stage development: unknown gate check \"ci_grean\""
        )),
        "{joined}"
    );
    assert!(
        joined.contains(&format!(
            "pipeline.toml:{l_agent}:9: stage testing: unknown agent \"qa-bot\""
        )),
        "{joined}"
    );
    // testing is now unreachable (review goes to "qa"), and that is reported too.
    assert!(joined.contains("stage testing is unreachable"), "{joined}");
    assert!(
        errs.len() >= 4,
        "every error is reported, not just the first: {joined}"
    );
}

#[test]
fn the_sweep_can_never_be_given_a_path_out_of_a_human_gate() {
    let errs = errors_after(&[(
        "pipeline.toml",
        "human_gate = true\n",
        "human_gate = true\nsweep = true\n",
    )]);
    assert!(
        errs.iter()
            .any(|e| e.contains("human gate: the sweep must never advance it")),
        "{errs:?}"
    );
    let errs = errors_after(&[(
        "pipeline.toml",
        "gate = \"analysis_approved\"",
        "gate = \"ci_green\"",
    )]);
    assert!(
        errs.iter()
            .any(|e| e.contains("does not require analysis_approved")),
        "{errs:?}"
    );
}

#[test]
fn a_pipeline_without_an_end_is_rejected() {
    let errs = errors_after(&[(
        "pipeline.toml",
        "name = \"done\"\nterminal = true",
        "name = \"done\"\nagent = \"tester\"\nnext = \"done\"",
    )]);
    assert!(
        errs.iter().any(|e| e.contains("no terminal stage")),
        "{errs:?}"
    );
}

#[test]
fn rhai_syntax_errors_are_reported() {
    let errs = errors_after(&[(
        "pipeline.toml",
        "gate = \"review_approved\"",
        "gate = \"review_approved &&\"",
    )]);
    let l = line_of("pipeline.toml", "gate = \"review_approved\"");
    assert!(
        errs.iter()
            .any(|e| e.starts_with(&format!("pipeline.toml:{l}:8:"))
                && e.contains("not a valid Rhai expression")),
        "{errs:?}"
    );
    let errs = errors_after(&[(
        "reconcile.toml",
        "default = \"10m\"",
        "default = \"10m\"\nexpr = \"if task. { 1 }\"",
    )]);
    assert!(
        errs.iter()
            .any(|e| e.contains("grace.expr: Rhai syntax error")),
        "{errs:?}"
    );
}

#[test]
fn gaps_in_the_plane_state_map_are_rejected() {
    let errs = errors_after(&[
        ("plane.toml", "\"Approved\" = \"approve\"\n", ""),
        ("plane.toml", "blocked = \"Blocked\"\n", ""),
        ("plane.toml", "done = \"Done\"\n", ""),
    ]);
    let joined = errs.join("\n");
    assert!(
        joined.contains("no Plane state maps to approve"),
        "{joined}"
    );
    assert!(
        joined.contains("plane.outbound.blocked is missing"),
        "{joined}"
    );
    assert!(
        joined.contains("plane.outbound.entered.done is missing"),
        "{joined}"
    );
    assert!(
        errs.iter().all(|e| e.starts_with("plane.toml:")),
        "{joined}"
    );
}

#[test]
fn a_section_defined_in_two_files_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let rules = common::rules_copy(dir.path(), &[]);
    std::fs::write(rules.join("extra.toml"), "[reconcile]\nenabled = false\n").unwrap();
    let errs = policy::load_dir(&rules).unwrap_err().to_string();
    // Files are read in name order: the later one is the duplicate.
    assert!(
        errs.contains("reconcile.toml:3:1: [reconcile] is already defined in"),
        "{errs}"
    );
    assert!(
        errs.contains("extra.toml"),
        "the message names the other file: {errs}"
    );
}

#[test]
fn an_invalid_value_type_is_located() {
    let errs = errors_after(&[(
        "pipeline.toml",
        "max_attempts = 3\nbackoff = \"1m\"",
        "max_attempts = \"three\"\nbackoff = \"1m\"",
    )]);
    assert!(
        errs.iter()
            .any(|e| e.starts_with("pipeline.toml:") && e.contains("invalid type")),
        "{errs:?}"
    );
}

#[test]
fn a_start_budget_of_zero_runs_is_an_error_and_the_default_is_eight() {
    let errs = errors_after(&[(
        "pipeline.toml",
        "[agents.analyst]\nmax_attempts = 3",
        "[agents.analyst]\nstart_attempts = 0\nmax_attempts = 3",
    )]);
    assert!(
        errs.iter().any(|e| e.starts_with("pipeline.toml:")
            && e.contains("agents.analyst.start_attempts must be at least 1")),
        "{errs:?}"
    );
    let rules = orch::policy::load_embedded().unwrap();
    let analyst = rules.agent_policy("analyst").unwrap();
    assert_eq!((analyst.max_attempts, analyst.start_attempts), (3, 8));
    // The board's "attempt n of m": past max_attempts only start failures are retried.
    assert_eq!((analyst.budget_shown(3), analyst.budget_shown(4)), (3, 8));
}

fn orch(args: &[&str], cwd: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn cli_check_exits_0_on_the_shipped_rules_and_1_with_file_line_col_on_a_typo() {
    let (code, out, _) = orch(&["rules", "check", "rules"], &root());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("rules: ok"), "{out}");
    let (code, _, _) = orch(&["rules", "check", "rules/examples/fast-track"], &root());
    assert_eq!(code, 0);

    let dir = tempfile::tempdir().unwrap();
    let rules = common::rules_copy(
        dir.path(),
        &[(
            "reconcile.toml",
            "plane_enabled = true",
            "plane_enabeld = true",
        )],
    );
    let (code, _, err) = orch(&["rules", "check", rules.to_str().unwrap()], dir.path());
    assert_eq!(code, 1, "{err}");
    let line = line_of("reconcile.toml", "plane_enabled = true");
    assert!(
        err.contains(&format!(
            "{}:{line}:1: unknown field `plane_enabeld`",
            rules.join("reconcile.toml").display()
        )),
        "{err}"
    );
}

#[test]
fn cli_simulate_and_diff() {
    let (code, out, err) = orch(
        &[
            "rules",
            "simulate",
            "rules",
            "--scenarios",
            "tests/scenarios/default.toml",
        ],
        &root(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("gate green") && l.contains("advance development -> review")),
        "{out}"
    );
    let (code, out, _) = orch(
        &[
            "rules",
            "simulate",
            "rules",
            "--scenarios",
            "tests/scenarios/default.toml",
            "--format",
            "json",
        ],
        &root(),
    );
    assert_eq!(code, 0);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(rows.as_array().unwrap().len() > 20);

    let (code, out, _) = orch(
        &[
            "rules",
            "diff",
            "rules",
            "rules",
            "--scenarios",
            "tests/scenarios/default.toml",
        ],
        &root(),
    );
    assert_eq!(code, 0, "identical sets: no change: {out}");
    assert!(out.contains("no decision changes"));

    let dir = tempfile::tempdir().unwrap();
    let edited = common::rules_copy(
        dir.path(),
        &[("reconcile.toml", "default = \"10m\"", "default = \"1h\"")],
    );
    let scenarios = root().join("tests/scenarios/default.toml");
    let (code, out, _) = orch(
        &[
            "rules",
            "diff",
            "rules",
            edited.to_str().unwrap(),
            "--scenarios",
            scenarios.to_str().unwrap(),
        ],
        &root(),
    );
    assert_eq!(
        code, 1,
        "a change fails the diff so it can gate a pull request"
    );
    assert!(
        out.contains("wait 570s") && out.contains("wait 3570s"),
        "{out}"
    );
    let (_, out, _) = orch(
        &[
            "rules",
            "diff",
            "rules",
            edited.to_str().unwrap(),
            "--scenarios",
            scenarios.to_str().unwrap(),
            "--format",
            "json",
        ],
        &root(),
    );
    let changes: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        changes
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["old"] != c["new"])
    );
}

#[test]
fn a_misspelt_template_name_is_an_error() {
    let errs = errors_after(&[(
        "notifications.toml",
        "blocked = \"{work_item}",
        "blokced = \"{work_item}",
    )]);
    let line = line_of("notifications.toml", "[templates]");
    assert!(
        errs.iter()
            .any(|e| e.starts_with(&format!("notifications.toml:{line}:"))
                && e.contains("blokced is not a template orch sends")),
        "{errs:?}"
    );
}

#[test]
fn the_cancel_stage_must_be_terminal_single_and_present_when_cancel_is_mapped() {
    const STAGE: &str = "name = \"cancelled\"\nterminal = true\ncancel = true";
    // The edit drops `terminal = true`, so `cancel = true` moves up a line.
    let line = line_of("pipeline.toml", "cancel = true") - 1;
    let errs = errors_after(&[(
        "pipeline.toml",
        STAGE,
        "name = \"cancelled\"\ncancel = true\nnext = \"done\"",
    )]);
    assert!(
        errs.iter()
            .any(|e| e.starts_with(&format!("pipeline.toml:{line}:10:"))
                && e.contains("stage cancelled takes cancelled tasks and must be terminal")),
        "{errs:?}"
    );

    let errs = errors_after(&[(
        "pipeline.toml",
        STAGE,
        "name = \"cancelled\"\nterminal = true",
    )]);
    assert!(
        errs.iter().any(|e| e.starts_with("plane.toml:")
            && e.contains("maps a state to cancel, but no stage has cancel = true")),
        "{errs:?}"
    );

    let errs = errors_after(&[(
        "pipeline.toml",
        "name = \"done\"\nterminal = true",
        "name = \"done\"\nterminal = true\ncancel = true",
    )]);
    assert!(
        errs.iter().any(|e| e.contains("is a second cancel stage")),
        "{errs:?}"
    );
}

#[test]
fn the_cancel_stage_counts_as_reachable_and_needs_no_plane_state() {
    // The shipped rules: nothing leads to `cancelled` and no outbound state is set for it.
    let rules = policy::load_dir(&root().join("rules")).unwrap();
    assert_eq!(
        rules.cancel_stage().map(|s| s.name.as_str()),
        Some("cancelled")
    );
}

#[test]
fn a_red_backoff_cap_that_is_not_a_duration_is_located() {
    let errs = errors_after(&[(
        "reconcile.toml",
        "red_backoff_cap = \"1h\"",
        "red_backoff_cap = \"an hour\"",
    )]);
    let line = line_of("reconcile.toml", "red_backoff_cap");
    assert!(
        errs.iter()
            .any(|e| e.starts_with(&format!("reconcile.toml:{line}:"))
                && e.contains("reconcile.red_backoff_cap: \"an hour\" is not a duration")),
        "{errs:?}"
    );
}
