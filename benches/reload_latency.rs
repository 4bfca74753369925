//! Save-to-active latency of a rule edit through the file watcher.
//!
//! Run: `cargo bench --bench reload_latency` (env `RELOAD_SAVES`, default 50)

use std::path::Path;
use std::time::{Duration, Instant};

use orch::policy::{self, RulesHandle};

fn copy_rules(dst: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    std::fs::create_dir_all(dst).expect("mkdir");
    for e in std::fs::read_dir(src).expect("rules") {
        let p = e.expect("entry").path();
        if p.extension().and_then(|x| x.to_str()) == Some("toml") {
            std::fs::copy(&p, dst.join(p.file_name().expect("name"))).expect("copy");
        }
    }
}

fn main() {
    let saves: usize = std::env::var("RELOAD_SAVES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules");
    copy_rules(&rules);
    let handle = RulesHandle::new(
        policy::load_dir(&rules).expect("valid rules"),
        rules.clone(),
    );
    let _watcher = policy::watch(handle.clone()).expect("watch");
    let file = rules.join("reconcile.toml");
    let original = std::fs::read_to_string(&file).expect("read");
    let mut latencies = Vec::with_capacity(saves);
    for i in 0..saves {
        let before = handle.current().version().to_string();
        let text = original.replace(
            "default = \"10m\"",
            &format!("default = \"{}s\"", 600 + i + 1),
        );
        let started = Instant::now();
        std::fs::write(&file, text).expect("write");
        while handle.current().version() == before {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "reload never happened"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        latencies.push(started.elapsed());
        // Let the watcher go quiet so saves do not coalesce.
        std::thread::sleep(Duration::from_millis(100));
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
    };
    println!("rule reload, save -> active through the watcher: {saves} saves");
    println!("  p50  {:>8.1} ms", pct(0.50));
    println!("  p99  {:>8.1} ms", pct(0.99));
    println!("  max  {:>8.1} ms", pct(1.0));
}
