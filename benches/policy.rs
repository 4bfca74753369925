//! Evaluator throughput: 100,000 task snapshots against a rule set, with and without a Rhai
//! grace expression.
//!
//! Run: `cargo bench --bench policy`

use std::path::PathBuf;
use std::time::Duration;

use divan::Bencher;
use divan::counter::ItemsCount;
use orch::clock::Timestamp;
use orch::policy::{self, Overrides, RuleSet, TaskSnapshot};

const N: usize = 100_000;
const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);

fn main() {
    divan::main();
}

fn load(rel: &str) -> RuleSet {
    policy::load_dir(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)).expect("rule set")
}

/// A realistic mix: every stage, fresh and stuck, some busy, some labelled urgent.
fn snapshots(rules: &RuleSet) -> Vec<TaskSnapshot> {
    let stages: Vec<String> = rules.stages().iter().map(|s| s.name.clone()).collect();
    (0..N)
        .map(|i| TaskSnapshot {
            work_item: format!("ET-{i}"),
            stage: stages[i % stages.len()].clone(),
            labels: if i % 7 == 0 {
                vec!["urgent".into()]
            } else {
                vec![]
            },
            updated_at: NOW.minus(Duration::from_secs((i as u64 * 37) % 7200)),
            has_active_job: i % 5 == 0,
            awaiting_input: false,
        })
        .collect()
}

fn run(bencher: Bencher, rules: RuleSet) {
    let tasks = snapshots(&rules);
    let ov = Overrides::default();
    bencher.counter(ItemsCount::new(N)).bench(|| {
        let mut checks = 0usize;
        for t in &tasks {
            let d = policy::decide_task(&rules, &ov, divan::black_box(t), None, NOW);
            checks += usize::from(matches!(d.outcome, policy::Outcome::CheckGate { .. }));
        }
        checks
    });
}

#[divan::bench(sample_count = 10)]
fn decide_100k_default_rules(bencher: Bencher) {
    run(bencher, load("rules"));
}

#[divan::bench(sample_count = 10)]
fn decide_100k_rhai_grace(bencher: Bencher) {
    run(bencher, load("rules/examples/fast-track"));
}
