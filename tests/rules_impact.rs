//! `orch rules diff OLD NEW --db`: the decisions a rule edit changes for the tasks open in a
//! database, black-box on a small database, and read-only.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use orch::clock::Timestamp;
use orch::store::{self, NewTask, Trigger};

const AT: &str = "2026-01-01T12:00:00Z";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped rules with review's grace raised from the default 10 minutes to an hour.
fn review_grace_1h(dir: &Path) -> PathBuf {
    let new = dir.join("new-rules");
    std::fs::create_dir_all(&new).unwrap();
    for entry in std::fs::read_dir(root().join("rules")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().and_then(|e| e.to_str()) == Some("toml") {
            let mut text = std::fs::read_to_string(&p).unwrap();
            if p.ends_with("reconcile.toml") {
                assert!(text.contains("# review = \"2h\""));
                text = text.replace("# review = \"2h\"", "review = \"1h\"");
            }
            std::fs::write(new.join(p.file_name().unwrap()), text).unwrap();
        }
    }
    new
}

/// Seven tasks: review ones quiet 45 m, 2 h and 5 m, one busy; one in analysis; one done.
fn database(dir: &Path) -> PathBuf {
    let path = dir.join("orch.db");
    fill(&store::Store::open(&path).unwrap());
    path
}

fn fill(store: &store::Store) {
    let now = Timestamp::parse_rfc3339(AT).unwrap();
    let tasks: &[(&str, &str, u64, Option<&str>)] = &[
        ("ET-1", "review", 45 * 60, None),
        ("ET-3", "review", 2 * 3600, None),
        ("ET-4", "review", 5 * 60, None),
        ("ET-5", "review", 45 * 60, Some("reviewer")),
        ("ET-6", "done", 2 * 3600, None),
        ("ET-7", "analysis", 2 * 3600, None),
    ];
    for (wi, stage, age, agent) in tasks {
        let new = NewTask {
            work_item: wi.to_string(),
            title: format!("Work item {wi}"),
            repo: "acme/widget".into(),
            branch: format!("feature/{wi}-work"),
            stage: stage.to_string(),
            ..NewTask::default()
        };
        let at = now.minus(Duration::from_secs(*age));
        store
            .call_sync(|c| store::tasks::create_atomic(c, &new, *agent, "v", Trigger::Manual, at))
            .unwrap();
    }
}

fn diff(dir: &Path, db: &Path, format: &str) -> Output {
    diff_on(dir, db.as_os_str(), format)
}

fn diff_on(dir: &Path, db: &std::ffi::OsStr, format: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(["rules", "diff"])
        .arg(root().join("rules"))
        .arg(review_grace_1h(dir))
        .arg("--db")
        .arg(db)
        .args(["--at", AT, "--format", format])
        .current_dir(dir)
        .env_remove("ORCH_RECONCILE_GRACE_DEFAULT_S")
        .env_remove("ORCH_RECONCILE_GRACE_OVERRIDES_JSON")
        .env_remove("ORCH_RECONCILE_ENABLED")
        .output()
        .unwrap()
}

fn digest(db: &Path) -> Vec<u8> {
    let c = rusqlite::Connection::open(db).unwrap();
    let rows: Vec<(String, String, i64)> = c
        .prepare("SELECT work_item, stage, updated_at FROM tasks ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let jobs: i64 = c
        .query_row("SELECT COUNT(*) FROM jobs", [], |r| r.get(0))
        .unwrap();
    format!("{rows:?} {jobs}").into_bytes()
}

#[test]
fn only_the_changed_decisions_of_open_tasks_with_counts_per_kind() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path());
    let before = digest(&db);
    let out = diff(dir.path(), &db, "text");
    assert_eq!(out.status.code(), Some(1), "changes exit 1: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let version_line = text.lines().last().unwrap().to_string();
    let expected = format!(
        "\
WORK ITEM  STAGE   OLD                           NEW         RULE
ET-1       review  check gate [review_approved]  wait 900s   stage.review.gate -> grace.stages.review
ET-4       review  wait 300s                     wait 3300s  grace.default -> grace.stages.review

CHANGE              TASKS
check gate -> wait  1
wait -> wait        1
{version_line}
"
    );
    assert_eq!(text, expected);
    assert!(
        version_line.starts_with("2 of 5 open task(s) change at 2026-01-01T12:00:00"),
        "{version_line}"
    );
    assert_eq!(digest(&db), before, "read-only");
}

#[test]
fn markdown_and_json_carry_the_same_changes() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path());
    let out = diff(dir.path(), &db, "markdown");
    let md = String::from_utf8(out.stdout).unwrap();
    assert!(
        md.starts_with("**Decision changes**: 2 of 5 open task(s)"),
        "{md}"
    );
    assert!(md.contains("| `check gate -> wait` | 1 |"), "{md}");
    assert!(
        md.contains("| ET-1 | review | check gate [review_approved] | wait 900s | stage.review.gate -> grace.stages.review |"),
        "{md}"
    );

    let out = diff(dir.path(), &db, "json");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["open_tasks"], 5);
    assert_eq!(v["counts"]["wait -> wait"], 1);
    let items: Vec<&str> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["work_item"].as_str().unwrap())
        .collect();
    // Oldest update first, as the sweep takes them.
    assert_eq!(items, ["ET-1", "ET-4"]);
    assert_eq!(v["changes"][0]["old"]["outcome"]["kind"], "check_gate");
    assert_eq!(v["changes"][0]["new"]["outcome"]["kind"], "wait");
}

#[test]
fn the_same_rules_change_nothing_and_a_missing_database_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(["rules", "diff", "rules", "rules", "--db"])
        .arg(&db)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("no decision changes: 0 of 5 open task(s)"),
        "{text}"
    );

    // Without a path: the configured database (ORCH_DB_PATH here).
    let out = Command::new(env!("CARGO_BIN_EXE_orch"))
        .args([
            "rules", "diff", "rules", "rules", "--format", "json", "--db",
        ])
        .env("ORCH_DB_PATH", &db)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["open_tasks"], 5);

    let missing = dir.path().join("nope.db");
    let out = Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(["rules", "diff", "rules", "rules", "--db"])
        .arg(&missing)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no database at"),
        "{out:?}"
    );
    assert!(!missing.exists(), "nothing created");
}

/// The shipped rules with a Plane state "Ready" that starts a task (unmapped before).
fn ready_starts(dir: &Path) -> PathBuf {
    let new = dir.join("ready-rules");
    std::fs::create_dir_all(&new).unwrap();
    for entry in std::fs::read_dir(root().join("rules")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().and_then(|e| e.to_str()) == Some("toml") {
            let mut text = std::fs::read_to_string(&p).unwrap();
            if p.ends_with("plane.toml") {
                assert!(text.contains("\"In Progress\" = \"start\""));
                text = text.replace(
                    "\"In Progress\" = \"start\"",
                    "\"In Progress\" = \"start\"\n\"Ready\" = \"start\"",
                );
            }
            std::fs::write(new.join(p.file_name().unwrap()), text).unwrap();
        }
    }
    new
}

#[test]
fn the_plane_items_the_sweep_last_saw_are_decided_too() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path());
    let now = Timestamp::parse_rfc3339(AT).unwrap();
    let hour_ago = now.minus(Duration::from_secs(3600));
    {
        let store = store::Store::open(&db).unwrap();
        for (wi, state) in [("ET-20", "Ready"), ("ET-21", "Backlog")] {
            let item = store::plane_seen::SeenItem {
                work_item: wi.into(),
                state_name: state.into(),
                state_group: Some("unstarted".into()),
                updated_at: hour_ago,
                first_seen_at: Some(hour_ago),
            };
            store
                .call_sync(move |c| store::plane_seen::record(c, &item))
                .unwrap();
        }
    }
    let before = digest(&db);
    let out = Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(["rules", "diff"])
        .arg(root().join("rules"))
        .arg(ready_starts(dir.path()))
        .arg("--db")
        .arg(&db)
        .args(["--at", AT])
        .current_dir(dir.path())
        .env_remove("ORCH_RECONCILE_GRACE_DEFAULT_S")
        .env_remove("ORCH_RECONCILE_GRACE_OVERRIDES_JSON")
        .env_remove("ORCH_RECONCILE_ENABLED")
        .env_remove("ORCH_RECONCILE_PLANE_ENABLED")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    // Only ET-20 changes: "Ready" now starts it; "Backlog" means nothing to either set.
    assert!(text.contains("ET-20"), "{text}");
    assert!(text.contains("replay start"), "{text}");
    assert!(!text.contains("ET-21"), "{text}");
    assert!(
        text.contains("1 of 2 Plane item(s) last seen change"),
        "{text}"
    );
    assert!(text.contains("0 of 5 open task(s) change"), "{text}");
    assert_eq!(digest(&db), before, "read-only");

    let json = Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(["rules", "diff"])
        .arg(root().join("rules"))
        .arg(ready_starts(dir.path()))
        .arg("--db")
        .arg(&db)
        .args(["--at", AT, "--format", "json"])
        .current_dir(dir.path())
        .env_remove("ORCH_RECONCILE_ENABLED")
        .env_remove("ORCH_RECONCILE_PLANE_ENABLED")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["plane_items"], 2);
    assert_eq!(v["plane_changes"][0]["work_item"], "ET-20");
    assert_eq!(v["plane_counts"]["ignore -> replay start"], 1, "{v}");
}

/// A deployment on PostgreSQL reviews an edit the same way: `--db postgres://…` reads the
/// database in sessions the server keeps from writing, and finds the same changes as on
/// SQLite. A schema orch has not migrated is refused, not migrated.
#[test]
fn a_postgres_database_is_read_by_url_and_left_unchanged() {
    let Some((_place, url)) = common::backends::pg_schema() else {
        return;
    };
    let store = store::Store::open_url(&url).unwrap();
    fill(&store);
    let digest = || {
        store
            .call_sync(|c| {
                c.query_map(
                    "SELECT work_item, stage, updated_at FROM tasks ORDER BY id",
                    orch::args![],
                    |r| {
                        Ok(format!(
                            "{}/{}/{}",
                            r.get::<String>(0)?,
                            r.get::<String>(1)?,
                            r.get::<i64>(2)?
                        ))
                    },
                )
            })
            .unwrap()
    };
    let before = digest();
    let dir = tempfile::tempdir().unwrap();
    let out = diff_on(dir.path(), url.as_ref(), "json");
    assert_eq!(out.status.code(), Some(1), "changes exit 1: {out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let changed: Vec<&str> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["work_item"].as_str().unwrap())
        .collect();
    assert_eq!(changed, ["ET-1", "ET-4"], "{v}");
    assert_eq!(v["open_tasks"], 5);
    assert_eq!(digest(), before, "read-only");

    let ro = store::open_url_read_only(&url).unwrap();
    let err = ro
        .call_sync(|c| c.execute("DELETE FROM tasks", orch::args![]))
        .unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");

    let (_empty, empty_url) = common::backends::pg_schema().unwrap();
    let out = diff_on(dir.path(), empty_url.as_ref(), "text");
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("schema version 0 is older than this orch's"),
        "{err}"
    );
    assert!(!err.contains("secret"), "no password in errors: {err}");
}
