//! `orch rules snapshot` and `orch rules verify`, black-box: a rules repository outside orch's
//! source tree pins its decisions and its CI catches an edit that changes one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn orch(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A team's rules repository: the shipped rules and the default scenarios.
fn repository() -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(repo.path().join("rules")).unwrap();
    for entry in std::fs::read_dir(root().join("rules")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().and_then(|e| e.to_str()) == Some("toml") {
            std::fs::copy(&p, repo.path().join("rules").join(p.file_name().unwrap())).unwrap();
        }
    }
    std::fs::create_dir_all(repo.path().join("scenarios")).unwrap();
    std::fs::copy(
        root().join("tests/scenarios/default.toml"),
        repo.path().join("scenarios/default.toml"),
    )
    .unwrap();
    repo
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} has no {from:?}", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

const SCENARIOS: &[&str] = &["--scenarios", "scenarios/default.toml"];

fn args<'a>(cmd: &'a [&'a str]) -> Vec<&'a str> {
    cmd.iter().chain(SCENARIOS).copied().collect()
}

#[test]
fn a_pinned_rules_repository_fails_verify_after_a_grace_edit_until_it_is_accepted() {
    let repo = repository();
    let dir = repo.path();
    let out = orch(dir, &args(&["rules", "snapshot", "rules", "--accept"]));
    assert!(out.status.success(), "{out:?}");
    let snap = dir.join("snapshots/rules@default.snap");
    let pinned = std::fs::read_to_string(&snap).unwrap();
    assert!(
        pinned.starts_with("---\nsource: orch rules snapshot\n"),
        "{pinned}"
    );
    let out = orch(dir, &args(&["rules", "verify", "rules"]));
    assert!(out.status.success(), "{out:?}");

    edit(
        &dir.join("rules/reconcile.toml"),
        "default = \"10m\"",
        "default = \"1h\"",
    );
    let out = orch(dir, &args(&["rules", "verify", "rules"]));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("decisions changed:"), "{text}");
    // The review task quiet for 45 minutes: its gate was due, now it waits.
    let line = text
        .lines()
        .find(|l| l.starts_with("quiet 45m"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("check gate [review_approved]"), "{line}");
    assert!(line.contains("wait 900s"), "{line}");
    assert!(
        !text.contains("stuck "),
        "2 h-quiet tasks do not change: {text}"
    );

    // Without --accept the new table waits for review beside the pinned one.
    let out = orch(dir, &args(&["rules", "snapshot", "rules"]));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(std::fs::read_to_string(&snap).unwrap(), pinned);
    let pending = std::fs::read_to_string(dir.join("snapshots/rules@default.snap.new")).unwrap();
    assert!(pending.contains("decision: wait 900s"), "{pending}");

    let out = orch(dir, &args(&["rules", "snapshot", "rules", "--accept"]));
    assert!(out.status.success(), "{out:?}");
    assert!(!dir.join("snapshots/rules@default.snap.new").exists());
    let out = orch(dir, &args(&["rules", "verify", "rules"]));
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn an_expectation_that_does_not_hold_fails_verify_with_its_file_and_line() {
    let repo = repository();
    let dir = repo.path();
    std::fs::write(
        dir.join("scenarios/expect.toml"),
        "now = \"2026-01-01T12:00:00Z\"\n\n\
         [[task]]\nname = \"analysis never swept\"\nstage = \"analysis\"\nage = \"2h\"\nexpect = \"skip (human_gate)\"\n\n\
         [[task]]\nname = \"review advances\"\nstage = \"review\"\nage = \"2h\"\ngate = \"green\"\nexpect = \"advance review -> testing\"\n\n\
         [[task]]\nname = \"development goes straight on\"\nstage = \"development\"\nage = \"2h\"\nexpect = \"advance\"\n\n\
         [[plane]]\nname = \"start\"\nstate = \"In Progress\"\nexpect = \"replay\"\n",
    )
    .unwrap();
    let cmd = [
        "rules",
        "snapshot",
        "rules",
        "--accept",
        "--scenarios",
        "scenarios/expect.toml",
    ];
    assert!(orch(dir, &cmd).status.success());
    let out = orch(
        dir,
        &[
            "rules",
            "verify",
            "rules",
            "--scenarios",
            "scenarios/expect.toml",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = stdout(&out);
    // Line 20: the development task's `expect`; it is not green, so its gate is checked.
    assert!(
        text.contains("scenarios/expect.toml:20: scenario \"development goes straight on\""),
        "{text}"
    );
    assert!(text.contains("decided \"check gate [ci_green]\""), "{text}");
    assert!(
        text.contains("1 failure(s)"),
        "the other three hold: {text}"
    );
}

#[test]
fn an_unknown_expectation_is_an_error_naming_file_and_line() {
    let repo = repository();
    let dir = repo.path();
    std::fs::write(
        dir.join("scenarios/bad.toml"),
        "[[task]]\nname = \"x\"\nstage = \"review\"\nage = \"1h\"\nexpect = \"teleport\"\n",
    )
    .unwrap();
    let out = orch(
        dir,
        &[
            "rules",
            "verify",
            "rules",
            "--scenarios",
            "scenarios/bad.toml",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("scenarios/bad.toml:5:10"), "{err}");
    assert!(err.contains("unknown expectation \"teleport\""), "{err}");
    assert!(!dir.join("snapshots").exists(), "nothing written");
}

/// The CLI writes orch's own snapshots as `cargo test` pins them: the same rows, byte for
/// byte, under the same names; only `source:` names the writer. Re-pinning orch's rules over
/// the committed snapshots changes no byte, and `verify` accepts them.
#[test]
fn the_cli_pins_orch_rules_exactly_as_the_committed_snapshots() {
    let scenarios = [
        "--scenarios",
        "tests/scenarios/default.toml",
        "tests/scenarios/kill-switch.toml",
    ];
    let fresh = tempfile::tempdir().unwrap();
    let fresh_dir = fresh.path().to_str().unwrap();
    let mut cmd = vec![
        "rules",
        "snapshot",
        "rules",
        "--accept",
        "--snapshots",
        fresh_dir,
    ];
    cmd.extend(scenarios);
    assert!(orch(&root(), &cmd).status.success());
    let mut names: Vec<_> = std::fs::read_dir(fresh.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "rules-examples-fast-track@default.snap",
            "rules-examples-fast-track@kill-switch.snap",
            "rules@default.snap",
            "rules@kill-switch.snap"
        ]
    );
    for name in &names {
        let ours = std::fs::read_to_string(fresh.path().join(name)).unwrap();
        let committed = std::fs::read_to_string(root().join("snapshots").join(name)).unwrap();
        assert_eq!(
            ours.replacen("source: orch rules snapshot\n", "", 1),
            committed.replacen("source: tests/policy_snapshots.rs\n", "", 1),
            "{name}"
        );
    }

    let copy = tempfile::tempdir().unwrap();
    for name in &names {
        std::fs::copy(root().join("snapshots").join(name), copy.path().join(name)).unwrap();
    }
    let copy_dir = copy.path().to_str().unwrap();
    let mut cmd = vec![
        "rules",
        "snapshot",
        "rules",
        "--accept",
        "--snapshots",
        copy_dir,
    ];
    cmd.extend(scenarios);
    let out = orch(&root(), &cmd);
    assert!(out.status.success(), "{out:?}");
    for name in &names {
        assert_eq!(
            std::fs::read(copy.path().join(name)).unwrap(),
            std::fs::read(root().join("snapshots").join(name)).unwrap(),
            "{name} unchanged"
        );
    }
    let mut cmd = vec!["rules", "verify", "rules"];
    cmd.extend(scenarios);
    let out = orch(&root(), &cmd);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("ok: 4 snapshot(s)"), "{out:?}");
}
