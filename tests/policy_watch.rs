//! Hot reload through the file watcher: edits, invalid edits, rename-style saves, symlink
//! swaps; saves made in steps (truncate then chunks, temp file then rename, a link removed
//! and made again) never activate what is in between; an invalid set is reported once per
//! content. Each waits for the watcher by polling with a deadline.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
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

// ---------------------------------------------------------------------------------------------
// Saves as editors and scripts make them: nothing in between may ever be active.

/// A window much longer than the pauses the saves below make, so a busy machine cannot
/// stretch a pause past it.
const WINDOW: Duration = Duration::from_millis(300);
const PAUSE: Duration = Duration::from_millis(20);

/// Records every (version, sweep enabled) pair `RulesHandle::current()` shows while it runs.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<BTreeSet<(String, bool)>>,
}

impl Sampler {
    fn start(h: &RulesHandle) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let (h, flag) = (h.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut seen = BTreeSet::new();
            // One more sample after the stop is seen: the version the test waited for is
            // recorded even if this thread was starved meanwhile (a busy machine).
            loop {
                let done = flag.load(Ordering::SeqCst);
                let set = h.current();
                seen.insert((set.version().to_string(), set.switches().reconcile_enabled));
                if done {
                    break seen;
                }
                std::thread::yield_now();
            }
        });
        Sampler { stop, thread }
    }

    fn finish(self) -> BTreeSet<(String, bool)> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

/// Truncates `path`, then writes `text` in four chunks with a pause before each.
fn write_in_chunks(path: &Path, text: &str) {
    let mut f = std::fs::File::create(path).unwrap();
    for chunk in text.as_bytes().chunks(text.len().div_ceil(4)) {
        std::thread::sleep(PAUSE);
        f.write_all(chunk).unwrap();
        f.sync_data().unwrap();
    }
}

/// The operator paused the sweep: every version the tests activate keeps it paused, and the
/// defaults an empty `reconcile.toml` would give (sweep on) must never show.
fn paused_rules(root: &Path) -> std::path::PathBuf {
    common::rules_copy(
        root,
        &[("reconcile.toml", "enabled = true", "enabled = false")],
    )
}

fn assert_only(seen: &BTreeSet<(String, bool)>, before: &str, after: &str) {
    let expected: BTreeSet<(String, bool)> =
        [(before.to_string(), false), (after.to_string(), false)]
            .into_iter()
            .collect();
    assert!(
        seen.is_subset(&expected),
        "an intermediate rule set was active: saw {seen:?}, expected only {expected:?}"
    );
    assert!(seen.contains(&(after.to_string(), false)), "{seen:?}");
}

#[test]
fn a_truncate_then_chunked_write_activates_only_the_finished_file() {
    let dir = tempfile::tempdir().unwrap();
    let rules = paused_rules(dir.path());
    let h = RulesHandle::new(policy::load_dir(&rules).unwrap(), rules.clone());
    let _w = policy::watch_with_window(h.clone(), WINDOW).unwrap();
    let v0 = h.current().version().to_string();
    assert!(!h.current().switches().reconcile_enabled);
    let file = rules.join("reconcile.toml");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("default = \"10m\"", "default = \"20m\"");

    let sampler = Sampler::start(&h);
    write_in_chunks(&file, &text);
    let v1 = policy::load_dir(&rules).unwrap().version().to_string();
    wait_for("the finished file is active", || {
        h.current().version() == v1
    });
    let seen = sampler.finish();

    assert_only(&seen, &v0, &v1);
    assert_eq!(grace_default(&h), Duration::from_secs(1200));
    // The watcher counts the reload just after it swaps the set in.
    wait_for("the reload is counted", || h.status().reloads_ok >= 1);
    let s = h.status();
    assert_eq!(s.reloads_ok, 1, "one save, one activation");
    assert_eq!(
        s.reloads_failed, 0,
        "a half-written file was never reported"
    );
    assert!(s.last_reload_error.is_none());
}

#[test]
fn a_temp_file_renamed_over_activates_only_the_finished_file() {
    let dir = tempfile::tempdir().unwrap();
    let rules = paused_rules(dir.path());
    let h = RulesHandle::new(policy::load_dir(&rules).unwrap(), rules.clone());
    let _w = policy::watch_with_window(h.clone(), WINDOW).unwrap();
    let v0 = h.current().version().to_string();
    let file = rules.join("reconcile.toml");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("default = \"10m\"", "default = \"30m\"");

    let sampler = Sampler::start(&h);
    // Next to the original, as vim and most editors do; not a `*.toml`, so not a rule file.
    let tmp = rules.join(".reconcile.toml.swp");
    write_in_chunks(&tmp, &text);
    std::fs::rename(&tmp, &file).unwrap();
    let v1 = policy::load_dir(&rules).unwrap().version().to_string();
    wait_for("the renamed file is active", || h.current().version() == v1);
    let seen = sampler.finish();

    assert_only(&seen, &v0, &v1);
    assert_eq!(grace_default(&h), Duration::from_secs(1800));
    assert_eq!(h.status().reloads_failed, 0);
}

#[test]
fn a_symlinked_directory_swapped_in_steps_activates_only_the_new_target() {
    let dir = tempfile::tempdir().unwrap();
    let a = paused_rules(&dir.path().join("a"));
    let link = dir.path().join("rules");
    std::os::unix::fs::symlink(&a, &link).unwrap();
    let h = RulesHandle::new(policy::load_dir(&link).unwrap(), link.clone());
    let _w = policy::watch_with_window(h.clone(), WINDOW).unwrap();
    let v0 = h.current().version().to_string();

    let sampler = Sampler::start(&h);
    // A deploy script: fill the new release file by file, then re-point the link the
    // non-atomic way (remove, then create), leaving a moment with no rules directory at all.
    let b = dir.path().join("b").join("rules");
    std::fs::create_dir_all(&b).unwrap();
    for entry in std::fs::read_dir(&a).unwrap() {
        let p = entry.unwrap().path();
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace("default = \"10m\"", "default = \"40m\"");
        std::thread::sleep(PAUSE);
        std::fs::write(b.join(p.file_name().unwrap()), text).unwrap();
    }
    std::fs::remove_file(&link).unwrap();
    std::thread::sleep(PAUSE);
    std::os::unix::fs::symlink(&b, &link).unwrap();
    let v1 = policy::load_dir(&link).unwrap().version().to_string();
    wait_for("the new target is active", || h.current().version() == v1);

    // The new target is watched: a chunked save inside it settles too.
    let file = b.join("reconcile.toml");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("default = \"40m\"", "default = \"50m\"");
    write_in_chunks(&file, &text);
    let v2 = policy::load_dir(&link).unwrap().version().to_string();
    wait_for("the edit in the new target is active", || {
        h.current().version() == v2
    });
    let seen = sampler.finish();

    // v1 may be missed by a starved sampler; nothing else may ever be seen.
    let expected: BTreeSet<(String, bool)> = [v0, v1, v2.clone()]
        .into_iter()
        .map(|v| (v, false))
        .collect();
    assert!(
        seen.is_subset(&expected),
        "an intermediate rule set was active: saw {seen:?}, expected only {expected:?}"
    );
    assert!(seen.contains(&(v2, false)), "{seen:?}");
    assert_eq!(grace_default(&h), Duration::from_secs(3000));
    wait_for("both reloads are counted", || h.status().reloads_ok >= 2);
    let s = h.status();
    assert_eq!(s.reloads_ok, 2);
    assert_eq!(
        s.reloads_failed, 0,
        "the moment without a directory was never reported"
    );
}

// ---------------------------------------------------------------------------------------------
// An invalid set is reported once per distinct content.

/// Every event logged in this test binary, one string per event.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<String>>>);

struct EventWriter {
    buf: Vec<u8>,
    sink: Arc<Mutex<Vec<String>>>,
}

impl Write for EventWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let line = String::from_utf8_lossy(&self.buf).into_owned();
        self.sink.lock().unwrap().push(line);
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = EventWriter;
    fn make_writer(&'a self) -> EventWriter {
        EventWriter {
            buf: Vec::new(),
            sink: self.0.clone(),
        }
    }
}

fn captured_logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    })
}

/// ERROR lines reporting a rejected reload of `dir` (other tests log about their own dirs).
fn rejections_logged(dir: &Path) -> usize {
    let dir = dir.display().to_string();
    captured_logs()
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.contains("ERROR") && e.contains("rules reload rejected") && e.contains(&dir))
        .count()
}

#[test]
fn an_invalid_file_is_reported_once_while_it_stays_the_same() {
    captured_logs();
    let dir = tempfile::tempdir().unwrap();
    let rules = common::rules_copy(dir.path(), &[]);
    let (h, _w) = handle_on(&rules);
    let v0 = h.current().version().to_string();
    let file = rules.join("pipeline.toml");
    let good = std::fs::read_to_string(&file).unwrap();
    let bad = good.replace("next = \"review\"", "next = \"reveiw\"");
    std::fs::write(&file, &bad).unwrap();
    wait_for("the error is reported", || {
        h.status().last_reload_error.is_some()
    });

    // Left alone for a while, it is not reported again (it used to be every ~50 ms).
    let until = Instant::now() + 6 * policy::SETTLE_WINDOW;
    while Instant::now() < until {
        assert_eq!(
            h.status().reloads_failed,
            1,
            "reported again while unchanged"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Saved again unchanged, and touched: still the same content, still reported once.
    std::fs::write(&file, &bad).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    // A different invalid content is a new report; seeing it means the saves before it were
    // looked at already (the watcher handles changes in order).
    let other = bad.replace("next = \"reveiw\"", "next = \"reveiw2\"");
    std::fs::write(&file, &other).unwrap();
    wait_for("the second error is reported", || {
        h.status()
            .last_reload_error
            .is_some_and(|e| e.contains("reveiw2"))
    });
    let s = h.status();
    assert_eq!(s.reloads_failed, 2, "one report per distinct content");
    assert_eq!(s.version, v0, "the last good set kept running");
    wait_for("both rejections are logged", || {
        rejections_logged(&rules) >= 2
    });
    assert_eq!(
        rejections_logged(&rules),
        2,
        "one ERROR per distinct content"
    );

    // Back to good: active, the error cleared; and the first bad content, saved again after
    // a good one, is a new report (it is not the last rejected content any more).
    std::fs::write(
        &file,
        good.replace("next = \"review\"", "next = \"review\"\n# ok"),
    )
    .unwrap();
    wait_for("the fix is active", || h.current().version() != v0);
    assert!(h.status().last_reload_error.is_none());
    std::fs::write(&file, &bad).unwrap();
    wait_for("the old error is reported again", || {
        h.status().reloads_failed == 3
    });
}
