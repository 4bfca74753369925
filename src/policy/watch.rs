//! The active rule set and its hot reload.
//!
//! [`RulesHandle`] holds the active rule set in an `ArcSwap`: readers take a snapshot with
//! [`RulesHandle::current`] and keep it for one decision, so a reload never tears a decision
//! in half. A reload validates the whole directory first and swaps only a valid set; an
//! invalid edit is logged and reported in `/queue` while the last good set keeps serving.
//!
//! The watcher observes the rules directory *and its parent*, so both an editor's
//! write-to-temp-then-rename and a deploy that swaps a `rules` symlink are seen.
//!
//! A save is not one event. Editors and scripts truncate a file and write it in chunks; a
//! deploy removes a link and makes a new one. Activating whatever the directory holds when the
//! first event arrives once swapped in the defaults of an empty `reconcile.toml` for a moment
//! (kill switches on: an operator's `enabled = false` undone by every save). So the watcher
//! *settles* first: it fingerprints every rule file (size, mtime, content hash), waits one
//! window, fingerprints again, and activates only content that stayed the same across the
//! window; anything else waits another window. The content it activates is the content it
//! fingerprinted, never a third read.
//!
//! An invalid set is reported (logged at ERROR, counted, shown in the status) once per
//! distinct content, however often it is looked at again: the watcher ignores the
//! open/close events its own reads cause, and a reload of content already rejected is quiet.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use notify_debouncer_full::notify::RecursiveMode;
use serde::Serialize;

use sha2::{Digest, Sha256};

use super::ruleset::version_of;
use super::{PolicyError, RuleError, RuleErrors, RuleSet, load_sources, read_dir};
use crate::clock::{Clock, SystemClock, Timestamp};

struct Inner {
    active: ArcSwap<RuleSet>,
    dir: PathBuf,
    loaded_at: Mutex<Timestamp>,
    last_error: Mutex<Option<String>>,
    /// The content (see [`content_key`]) of the last rejected set: the same content is
    /// reported once, not on every look at it.
    last_rejected: Mutex<Option<String>>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    generation: AtomicU64,
    /// Asked before a valid set is swapped in; its refusal is the reload's error.
    guard: Mutex<Option<ReloadGuard>>,
}

/// Asked with the active set and a valid candidate just before the swap. An `Err` (a
/// sentence saying why) refuses the reload and keeps the active set; the guard may also
/// prepare the swap (move tasks of renamed stages). It is the one place a reload meets the
/// state the policy itself never reads.
pub type ReloadGuard = Arc<dyn Fn(&RuleSet, &RuleSet) -> Result<(), String> + Send + Sync>;

/// The active rule set, shared by everything that decides. Cheap to clone.
#[derive(Clone)]
pub struct RulesHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RulesHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RulesHandle")
            .field("dir", &self.inner.dir)
            .field("version", &self.current().version())
            .finish()
    }
}

/// The `rules` block of `GET /queue`.
#[derive(Debug, Clone, Serialize)]
pub struct RulesStatus {
    pub version: String,
    pub dir: PathBuf,
    pub loaded_at: Timestamp,
    pub files: Vec<PathBuf>,
    pub last_reload_error: Option<String>,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    /// Bumps on every successful swap; the reconciler re-evaluates every task when it moves.
    pub generation: u64,
}

impl RulesHandle {
    pub fn new(initial: RuleSet, dir: PathBuf) -> RulesHandle {
        RulesHandle {
            inner: Arc::new(Inner {
                active: ArcSwap::from_pointee(initial),
                dir,
                loaded_at: Mutex::new(SystemClock.now()),
                last_error: Mutex::new(None),
                last_rejected: Mutex::new(None),
                reloads_ok: AtomicU64::new(0),
                reloads_failed: AtomicU64::new(0),
                generation: AtomicU64::new(1),
                guard: Mutex::new(None),
            }),
        }
    }

    pub fn current(&self) -> Arc<RuleSet> {
        self.inner.active.load_full()
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Installs the check every later reload must pass before it is swapped in.
    pub fn set_guard(&self, guard: ReloadGuard) {
        *lock(&self.inner.guard) = Some(guard);
    }

    /// Validates the directory and swaps it in when valid and different. Returns the active
    /// version afterwards. A rejection of content already rejected is returned but not logged
    /// or counted again.
    #[cfg_attr(orch_audit, allow(dead_code))]
    pub fn reload(&self) -> Result<String, RuleErrors> {
        self.apply(read_dir(&self.inner.dir))
    }

    /// Activates `files` (as read from the directory) when they form a valid set that differs
    /// from the active one; reports a rejection once per distinct content.
    fn apply(
        &self,
        files: Result<Vec<(PathBuf, String)>, RuleErrors>,
    ) -> Result<String, RuleErrors> {
        let key = content_key(&files);
        let checked = files.and_then(load_sources).and_then(|set| {
            if set.version() == self.current().version() {
                return Ok(set);
            }
            let guard = lock(&self.inner.guard).clone();
            match guard.map(|g| g(&self.current(), &set)) {
                Some(Err(why)) => Err(RuleErrors(vec![crate::policy::RuleError {
                    file: self.inner.dir.clone(),
                    line: 0,
                    col: 0,
                    message: why,
                }])),
                _ => Ok(set),
            }
        });
        match checked {
            Ok(set) => {
                let version = set.version().to_string();
                *lock(&self.inner.last_error) = None;
                *lock(&self.inner.last_rejected) = None;
                if version != self.current().version() {
                    self.inner.active.store(Arc::new(set));
                    *lock(&self.inner.loaded_at) = SystemClock.now();
                    self.inner.generation.fetch_add(1, Ordering::SeqCst);
                    self.inner.reloads_ok.fetch_add(1, Ordering::SeqCst);
                    tracing::info!(version, dir = %self.inner.dir.display(), "rules reloaded");
                }
                Ok(version)
            }
            Err(errors) => {
                let mut last = lock(&self.inner.last_rejected);
                if last.as_deref() == Some(key.as_str()) {
                    return Err(errors);
                }
                *last = Some(key);
                drop(last);
                self.inner.reloads_failed.fetch_add(1, Ordering::SeqCst);
                let text = errors.to_string();
                tracing::error!(
                    dir = %self.inner.dir.display(),
                    keeping = %self.current().version(),
                    "rules reload rejected; the last good rule set keeps running:\n{text}"
                );
                *lock(&self.inner.last_error) = Some(text);
                Err(errors)
            }
        }
    }

    pub fn status(&self) -> RulesStatus {
        let current = self.current();
        RulesStatus {
            version: current.version().to_string(),
            dir: self.inner.dir.clone(),
            loaded_at: *lock(&self.inner.loaded_at),
            files: current.files().to_vec(),
            last_reload_error: lock(&self.inner.last_error).clone(),
            reloads_ok: self.inner.reloads_ok.load(Ordering::SeqCst),
            reloads_failed: self.inner.reloads_failed.load(Ordering::SeqCst),
            generation: self.inner.generation.load(Ordering::SeqCst),
        }
    }
}

/// A poisoned lock still holds a usable value here (plain data, no invariant across fields).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a rejection is remembered by: the set's content (names and texts), or the read error
/// when the directory could not be read.
fn content_key(files: &Result<Vec<(PathBuf, String)>, RuleErrors>) -> String {
    match files {
        Ok(files) => format!("content:{}", version_of(files)),
        Err(errors) => format!("unreadable:{errors}"),
    }
}

/// Keeps the file watcher alive; dropping it stops watching.
pub struct RulesWatcher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RulesWatcher {
    fn shutdown(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RulesWatcher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// How long notify coalesces a burst of events before the watcher looks at the directory.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// The default settle window: content is activated once it has stayed the same this long.
/// Longer than the pauses between an editor's or a script's writes of one save; short enough
/// that a save is active within about 150 ms (debounce + window + validation).
pub const SETTLE_WINDOW: Duration = Duration::from_millis(100);

/// One rule file as the watcher saw it. Size and mtime catch a rewrite the hash alone would
/// call equal only by reading the file again; the hash catches a write within the mtime's
/// granularity.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    path: PathBuf,
    len: u64,
    modified: Option<std::time::SystemTime>,
    hash: [u8; 32],
}

/// The directory as seen at one moment: where it resolves to, each file's stamp, and the
/// texts (what gets activated when the snapshot proves stable). Unreadable → the error.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    target: Option<PathBuf>,
    stamps: Result<Vec<Stamp>, RuleErrors>,
    texts: Result<Vec<(PathBuf, String)>, RuleErrors>,
}

impl Snapshot {
    fn take(dir: &Path) -> Snapshot {
        let target = std::fs::canonicalize(dir).ok();
        let files = read_dir(dir);
        let stamps = files.as_ref().map_err(Clone::clone).and_then(|files| {
            files
                .iter()
                .map(|(path, text)| {
                    let meta = std::fs::metadata(path).map_err(|e| {
                        RuleErrors(vec![RuleError {
                            file: path.clone(),
                            line: 0,
                            col: 0,
                            message: format!("cannot read: {e}"),
                        }])
                    })?;
                    Ok(Stamp {
                        path: path.clone(),
                        len: meta.len(),
                        modified: meta.modified().ok(),
                        hash: Sha256::digest(text.as_bytes()).into(),
                    })
                })
                .collect()
        });
        Snapshot {
            target,
            stamps,
            texts: files,
        }
    }

    /// Same files, same sizes, mtimes and contents, same symlink target.
    fn same_as(&self, other: &Snapshot) -> bool {
        self.target == other.target && self.stamps == other.stamps
    }
}

/// Starts watching the handle's directory with the default [`SETTLE_WINDOW`].
pub fn watch(handle: RulesHandle) -> Result<RulesWatcher, PolicyError> {
    watch_with_window(handle, SETTLE_WINDOW)
}

/// Starts watching the handle's directory: every batch of changes is followed until the
/// directory has stayed the same for `window`, and that content is reloaded once.
pub fn watch_with_window(
    handle: RulesHandle,
    window: Duration,
) -> Result<RulesWatcher, PolicyError> {
    let dir = handle.dir().to_path_buf();
    let werr = |e: &dyn std::fmt::Display| PolicyError::Watch {
        path: dir.clone(),
        message: e.to_string(),
    };
    if !dir.is_dir() {
        return Err(werr(&"not a directory (running on the embedded rules)"));
    }
    let (events_tx, events_rx) = mpsc::channel();
    let mut debouncer =
        notify_debouncer_full::new_debouncer(DEBOUNCE, Some(Duration::from_millis(10)), events_tx)
            .map_err(|e| werr(&e))?;
    let target = std::fs::canonicalize(&dir).map_err(|e| werr(&e))?;
    debouncer
        .watch(&target, RecursiveMode::NonRecursive)
        .map_err(|e| werr(&e))?;
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    if let Err(e) = debouncer.watch(&parent, RecursiveMode::NonRecursive) {
        tracing::debug!(error = %e, "cannot watch the rules directory's parent; symlink swaps will not be seen");
    }
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let spawn_err = werr(&"cannot start the watcher thread");
    let dir_in_thread = dir.clone();
    let thread = std::thread::Builder::new()
        .name("rules-watcher".into())
        .spawn(move || {
            let dir = dir_in_thread;
            let mut watched = target;
            'watching: while let Err(mpsc::TryRecvError::Empty) = stop_rx.try_recv() {
                let batch = match events_rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(b) => b,
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                };
                if !relevant(batch, &watched, &dir) {
                    continue;
                }
                // Settle: look, wait a window, look again; activate only what stayed put.
                let mut seen = Snapshot::take(&dir);
                loop {
                    follow_symlink(&mut debouncer, &dir, &mut watched);
                    match stop_rx.recv_timeout(window) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        _ => break 'watching,
                    }
                    // Events that arrived meanwhile are about changes the next look sees.
                    while events_rx.try_recv().is_ok() {}
                    let now = Snapshot::take(&dir);
                    if now.same_as(&seen) {
                        break;
                    }
                    seen = now;
                }
                let _ = handle.apply(seen.texts);
            }
            debouncer.stop();
        })
        .map_err(|e| {
            tracing::warn!(error = %e, "rules watcher thread");
            spawn_err
        })?;
    Ok(RulesWatcher {
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

type Debouncer = notify_debouncer_full::Debouncer<
    notify_debouncer_full::notify::RecommendedWatcher,
    notify_debouncer_full::RecommendedCache,
>;

/// True when a batch may have changed the rule set. The parent is watched for symlink swaps
/// only, so its other entries are ignored (the database next to `rules/` changes all the
/// time); so are accesses (opens and closes), which the watcher's own reads cause — counting
/// them reloaded the directory every window, forever.
fn relevant(batch: notify_debouncer_full::DebounceEventResult, watched: &Path, dir: &Path) -> bool {
    use notify_debouncer_full::notify::EventKind;
    let events = match batch {
        Ok(events) => events,
        Err(errors) => {
            tracing::warn!(?errors, "rules watcher error");
            return false;
        }
    };
    events
        .iter()
        .filter(|e| !matches!(e.event.kind, EventKind::Access(_)))
        .flat_map(|e| e.paths.iter())
        .any(|p| {
            p.starts_with(watched) || p.file_name().is_some_and(|n| Some(n) == dir.file_name())
        })
}

/// A swapped symlink points somewhere else now: watch the new target instead.
fn follow_symlink(debouncer: &mut Debouncer, dir: &Path, watched: &mut PathBuf) {
    if let Ok(now) = std::fs::canonicalize(dir)
        && now != *watched
    {
        let _ = debouncer.unwatch(&*watched);
        match debouncer.watch(&now, RecursiveMode::NonRecursive) {
            Ok(()) => *watched = now,
            Err(e) => tracing::warn!(error = %e, "cannot watch the new rules directory"),
        }
    }
}
