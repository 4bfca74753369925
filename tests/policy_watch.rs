//! Hot reload through the file watcher: edits, invalid edits, rename-style saves, symlink
//! swaps. Each waits for the watcher by polling with a deadline.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use orch::policy::{self, RulesHandle};

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn handle_on(dir: &Path) -> (RulesHandle, policy::RulesWatcher) {
    let handle = RulesHandle::new(policy::load_dir(dir).unwrap(), dir.to_path_buf());
    let watcher = policy::watch(handle.clone()).unwrap();
    (handle, watcher)
}

fn grace_default(h: &RulesHandle) -> Duration {
    let t = policy::TaskSnapshot {
        work_item: "ET-1".into(),
        stage: "review".into(),
        labels: vec![],
        updated_at: orch::clock::Timestamp::EPOCH,
        has_active_job: false,
        awaiting_input: false,
    };
    policy::grace_for(
        &h.current(),
        &policy::Overrides::default(),
        &t,
        orch::clock::Timestamp::EPOCH,
    )
    .unwrap()
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from));
    std::fs::write(path, text.replace(from, to)).unwrap();
}

#[test]
fn an_edit_becomes_active() {
    let dir = tempfile::tempdir().unwrap();
    let rules = common::rules_copy(dir.path(), &[]);
    let (h, _w) = handle_on(&rules);
    let v0 = h.current().version().to_string();
    edit(
        &rules.join("reconcile.toml"),
        "default = \"10m\"",
        "default = \"20m\"",
    );
    wait_for("new version active", || h.current().version() != v0);
    assert_eq!(grace_default(&h), Duration::from_secs(1200));
    // The counters follow the swap (the watcher thread bumps them just after it): poll them.
    wait_for("the reload is counted", || h.status().generation == 2);
    let s = h.status();
    assert_eq!(s.reloads_ok, 1);
    assert_eq!(s.version, h.current().version());
    assert!(s.last_reload_error.is_none());
}

#[test]
fn an_invalid_edit_is_rejected_and_the_last_good_set_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let rules = common::rules_copy(dir.path(), &[]);
    let (h, _w) = handle_on(&rules);
    let v0 = h.current().version().to_string();
    edit(
        &rules.join("pipeline.toml"),
        "next = \"review\"",
        "next = \"reveiw\"",
    );
    wait_for("the error is reported", || {
        h.status().last_reload_error.is_some()
    });
    let s = h.status();
    assert_eq!(s.version, v0, "the old rule set is still active");
    assert!(s.reloads_failed >= 1);
    let err = s.last_reload_error.unwrap();
    assert!(
        err.contains("pipeline.toml:") && err.contains("unknown stage \"reveiw\""),
        "{err}"
    );
    // Fixing it activates the fix and clears the error.
    edit(
        &rules.join("pipeline.toml"),
        "next = \"reveiw\"",
        "next = \"review\"\n# fixed",
    );
    wait_for("fixed version active", || h.current().version() != v0);
    assert!(h.status().last_reload_error.is_none());
}

#[test]
fn a_rename_style_save_is_seen() {
    let dir = tempfile::tempdir().unwrap();
    let rules = common::rules_copy(dir.path(), &[]);
    let (h, _w) = handle_on(&rules);
    let v0 = h.current().version().to_string();
    // What editors do: write a temporary file, then rename it over the original.
    let text = std::fs::read_to_string(rules.join("reconcile.toml"))
        .unwrap()
        .replace("default = \"10m\"", "default = \"30m\"");
    let tmp = dir.path().join("reconcile.toml.swp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, rules.join("reconcile.toml")).unwrap();
    wait_for("renamed file reloaded", || h.current().version() != v0);
    assert_eq!(grace_default(&h), Duration::from_secs(1800));
}

#[test]
fn a_symlink_swap_of_the_rules_directory_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let a = common::rules_copy(&dir.path().join("a"), &[]);
    let b = common::rules_copy(
        &dir.path().join("b"),
        &[("reconcile.toml", "default = \"10m\"", "default = \"40m\"")],
    );
    let link = dir.path().join("rules");
    std::os::unix::fs::symlink(&a, &link).unwrap();
    let (h, _w) = handle_on(&link);
    let v0 = h.current().version().to_string();
    // Atomic re-point: a new link renamed over the old one, as deploy tools do.
    let next = dir.path().join("rules.next");
    std::os::unix::fs::symlink(&b, &next).unwrap();
    std::fs::rename(&next, &link).unwrap();
    wait_for("the new target is active", || h.current().version() != v0);
    assert_eq!(grace_default(&h), Duration::from_secs(2400));
    // And edits in the new target are watched from now on.
    let v1 = h.current().version().to_string();
    edit(
        &b.join("reconcile.toml"),
        "default = \"40m\"",
        "default = \"50m\"",
    );
    wait_for("edit in the new target", || h.current().version() != v1);
    assert_eq!(grace_default(&h), Duration::from_secs(3000));
}

#[test]
fn an_unchanged_save_does_not_bump_the_generation() {
    let dir = tempfile::tempdir().unwrap();
    let rules = common::rules_copy(dir.path(), &[]);
    let h = RulesHandle::new(policy::load_dir(&rules).unwrap(), rules.clone());
    assert_eq!(h.reload().unwrap(), h.current().version());
    assert_eq!(h.status().generation, 1);
    assert_eq!(h.status().reloads_ok, 0);
}
