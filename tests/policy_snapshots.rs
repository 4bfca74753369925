//! Every rule set under `rules/` is pinned by the decisions it makes for the shared scenario
//! files. A policy change shows up here as a snapshot diff to review.

mod common;

use std::path::{Path, PathBuf};

use orch::policy::{self, scenario};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `rules/` and every directory below it that holds `*.toml` files: each is a rule set.
fn rule_sets() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut has_toml = false;
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in &entries {
            if p.is_dir() {
                walk(p, out);
            } else if p.extension().and_then(|e| e.to_str()) == Some("toml") {
                has_toml = true;
            }
        }
        if has_toml {
            out.push(dir.to_path_buf());
        }
    }
    let mut out = Vec::new();
    walk(&root().join("rules"), &mut out);
    out.sort();
    out
}

fn snapshot_name(set: &Path, scenarios: &str) -> String {
    let rel = set
        .strip_prefix(root())
        .unwrap()
        .to_string_lossy()
        .replace(['/', '\\'], "-");
    format!("{rel}@{scenarios}")
}

#[test]
fn every_rule_set_is_pinned_by_its_decisions() {
    let sets = rule_sets();
    assert!(
        sets.len() >= 2,
        "the default set and at least one example: {sets:?}"
    );
    for scenarios in ["default", "kill-switch"] {
        let file =
            scenario::read(&root().join(format!("tests/scenarios/{scenarios}.toml"))).unwrap();
        for set in &sets {
            let rules = policy::load_dir(set).unwrap_or_else(|e| panic!("{}: {e}", set.display()));
            let rows = scenario::simulate(&rules, &file).unwrap();
            insta::with_settings!({
                snapshot_path => root().join("snapshots"),
                prepend_module_to_snapshot => false,
                description => format!("{} × tests/scenarios/{scenarios}.toml", set.strip_prefix(root()).unwrap().display()),
                omit_expression => true,
            }, {
                insta::assert_yaml_snapshot!(snapshot_name(set, scenarios), rows);
            });
        }
    }
}

#[test]
fn changing_one_grace_value_changes_the_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let edited = common::rules_copy(
        dir.path(),
        &[("reconcile.toml", "default = \"10m\"", "default = \"1h\"")],
    );
    let file = scenario::read(&root().join("tests/scenarios/default.toml")).unwrap();
    let before =
        scenario::simulate(&policy::load_dir(&root().join("rules")).unwrap(), &file).unwrap();
    let after = scenario::simulate(&policy::load_dir(&edited).unwrap(), &file).unwrap();
    assert_ne!(before, after, "the snapshot of the edited set would differ");
    let changes = scenario::diff(&before, &after);
    // 30 s-old tasks now wait 3570 s instead of 570 s; a 45-minute-quiet review task now waits.
    let subjects: Vec<_> = changes
        .iter()
        .map(|c| (c.scenario.as_str(), c.subject.as_str()))
        .collect();
    assert!(subjects.contains(&("fresh", "development")), "{subjects:?}");
    assert!(subjects.contains(&("quiet 45m", "review")), "{subjects:?}");
    let review = changes.iter().find(|c| c.scenario == "quiet 45m").unwrap();
    assert_eq!(review.old.as_deref(), Some("check gate [review_approved]"));
    assert_eq!(review.new.as_deref(), Some("wait 900s"));
    // Stuck (2 h) tasks and everything on the Plane side are unaffected.
    assert!(
        changes
            .iter()
            .all(|c| c.scenario != "stuck" && !c.subject.contains(" / ")),
        "{changes:?}"
    );
}
