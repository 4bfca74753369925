//! `orch rules diff --db`: a database of 100,000 open tasks, read (read-only) and run through
//! the old and the new rule set, keeping only the decisions that change. Target: < 2 s.
//!
//! Run: `cargo bench --bench rules_impact`

use std::path::{Path, PathBuf};
use std::time::Duration;

use divan::Bencher;
use orch::clock::Timestamp;
use orch::policy::{self, Overrides, RuleSet};

const N: usize = 100_000;
const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);

fn main() {
    divan::main();
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped rules, and the same with review's grace raised to an hour: a typical edit
/// under review, changing the decisions of a slice of the tasks.
fn rule_sets(dir: &Path) -> (RuleSet, RuleSet) {
    let old = policy::load_dir(&root().join("rules")).expect("rules");
    let new_dir = dir.join("new-rules");
    std::fs::create_dir_all(&new_dir).expect("mkdir");
    for (name, text) in policy::EMBEDDED {
        let text = text.replace("# review = \"2h\"", "review = \"1h\"");
        std::fs::write(new_dir.join(name), text).expect("write rules");
    }
    let new = policy::load_dir(&new_dir).expect("new rules");
    (old, new)
}

/// 100,000 open tasks (every non-terminal stage, quiet from 0 to 2 h, some labelled urgent),
/// every fifth with a queued job.
fn database(dir: &Path, rules: &RuleSet) -> PathBuf {
    let path = dir.join("orch.db");
    drop(orch::store::Store::open(&path).expect("open"));
    let mut c = rusqlite::Connection::open(&path).expect("open");
    let stages: Vec<String> = rules
        .stages()
        .iter()
        .filter(|s| !s.terminal)
        .map(|s| s.name.clone())
        .collect();
    let tx = c.transaction().expect("tx");
    {
        let mut task = tx
            .prepare(
                "INSERT INTO tasks (id, work_item, repo, branch, stage, labels, created_at, updated_at)
                 VALUES (?1, ?2, 'acme/widget', ?3, ?4, ?5, ?6, ?6)",
            )
            .expect("prepare");
        let mut job = tx
            .prepare(
                "INSERT INTO jobs (task_id, agent, stage, status, not_before, created_at)
                 VALUES (?1, 'developer', ?2, 'queued', ?3, ?3)",
            )
            .expect("prepare");
        for i in 0..N {
            let stage = &stages[i % stages.len()];
            let labels = if i % 7 == 0 { "[\"urgent\"]" } else { "[]" };
            let at = NOW
                .minus(Duration::from_secs((i as u64 * 37) % 7200))
                .as_millis();
            let id = i as i64 + 1;
            task.execute(rusqlite::params![
                id,
                format!("ET-{i}"),
                format!("feature/ET-{i}-work"),
                stage,
                labels,
                at
            ])
            .expect("insert task");
            if i % 5 == 0 {
                job.execute(rusqlite::params![id, stage, at])
                    .expect("insert job");
            }
        }
    }
    tx.commit().expect("commit");
    path
}

#[divan::bench(sample_count = 10)]
fn diff_db_100k_open_tasks(bencher: Bencher) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (old, new) = rule_sets(dir.path());
    let db = database(dir.path(), &old);
    let ov = Overrides::default();
    bencher.bench(|| {
        let store = orch::store::open_read_only(&db).expect("open");
        let impact = orch::impact::over_db(&store, &old, &new, &ov, NOW).expect("impact");
        assert_eq!(impact.open_tasks, N);
        impact.changes.len()
    });
}
