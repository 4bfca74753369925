//! The active rule set and its hot reload.
//!
//! [`RulesHandle`] holds the active rule set in an `ArcSwap`: readers take a snapshot with
//! [`RulesHandle::current`] and keep it for one decision, so a reload never tears a decision
//! in half. A reload validates the whole directory first and swaps only a valid set; an
//! invalid edit is logged and reported in `/queue` while the last good set keeps serving.
//!
//! The watcher observes the rules directory *and its parent*, so both an editor's
//! write-to-temp-then-rename and a deploy that swaps a `rules` symlink are seen.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use notify_debouncer_full::notify::RecursiveMode;
use serde::Serialize;

use super::{PolicyError, RuleErrors, RuleSet, load_dir};
use crate::clock::{Clock, SystemClock, Timestamp};

struct Inner {
    active: ArcSwap<RuleSet>,
    dir: PathBuf,
    loaded_at: Mutex<Timestamp>,
    last_error: Mutex<Option<String>>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    generation: AtomicU64,
}

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
                reloads_ok: AtomicU64::new(0),
                reloads_failed: AtomicU64::new(0),
                generation: AtomicU64::new(1),
            }),
        }
    }

    pub fn current(&self) -> Arc<RuleSet> {
        self.inner.active.load_full()
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Validates the directory and swaps it in when valid and different. Returns the active
    /// version afterwards.
    pub fn reload(&self) -> Result<String, RuleErrors> {
        match load_dir(&self.inner.dir) {
            Ok(set) => {
                let version = set.version().to_string();
                *self
                    .inner
                    .last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = None;
                if version != self.current().version() {
                    self.inner.active.store(Arc::new(set));
                    *self
                        .inner
                        .loaded_at
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = SystemClock.now();
                    self.inner.generation.fetch_add(1, Ordering::SeqCst);
                    self.inner.reloads_ok.fetch_add(1, Ordering::SeqCst);
                    tracing::info!(version, dir = %self.inner.dir.display(), "rules reloaded");
                }
                Ok(version)
            }
            Err(errors) => {
                self.inner.reloads_failed.fetch_add(1, Ordering::SeqCst);
                let text = errors.to_string();
                tracing::error!(
                    dir = %self.inner.dir.display(),
                    keeping = %self.current().version(),
                    "rules reload rejected; the last good rule set keeps running:\n{text}"
                );
                *self
                    .inner
                    .last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(text);
                Err(errors)
            }
        }
    }

    pub fn status(&self) -> RulesStatus {
        let current = self.current();
        RulesStatus {
            version: current.version().to_string(),
            dir: self.inner.dir.clone(),
            loaded_at: *self
                .inner
                .loaded_at
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
            files: current.files().to_vec(),
            last_reload_error: self
                .inner
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            reloads_ok: self.inner.reloads_ok.load(Ordering::SeqCst),
            reloads_failed: self.inner.reloads_failed.load(Ordering::SeqCst),
            generation: self.inner.generation.load(Ordering::SeqCst),
        }
    }
}

/// Keeps the file watcher alive; dropping it stops watching.
pub struct RulesWatcher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RulesWatcher {
    pub fn stop(mut self) {
        self.shutdown();
    }

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

/// The debounce window: long enough to coalesce an editor's burst of events, short enough
/// that a save is active well within 250 ms.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Starts watching the handle's directory; every debounced batch of changes triggers one
/// reload.
pub fn watch(handle: RulesHandle) -> Result<RulesWatcher, PolicyError> {
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
            while let Err(mpsc::TryRecvError::Empty) = stop_rx.try_recv() {
                let batch = match events_rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(b) => b,
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                };
                let events = match batch {
                    Ok(events) => events,
                    Err(errors) => {
                        tracing::warn!(?errors, "rules watcher error");
                        Vec::new()
                    }
                };
                // The parent is watched for symlink swaps only: ignore its other entries
                // (the database next to `rules/` changes all the time).
                let relevant = events.iter().flat_map(|e| e.paths.iter()).any(|p| {
                    p.starts_with(&watched)
                        || p.file_name().is_some_and(|n| Some(n) == dir.file_name())
                });
                if !relevant {
                    continue;
                }
                // A swapped symlink points somewhere else now: follow it.
                if let Ok(now) = std::fs::canonicalize(&dir)
                    && now != watched
                {
                    let _ = debouncer.unwatch(&watched);
                    match debouncer.watch(&now, RecursiveMode::NonRecursive) {
                        Ok(()) => watched = now,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot watch the new rules directory")
                        }
                    }
                }
                let _ = handle.reload();
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
