//! Durable state: SQLite through rusqlite (the default) or PostgreSQL (`db_url`), behind a
//! backend-neutral connection ([`db::Conn`]).
//!
//! Invariants that every caller relies on:
//! - a work item has at most one task (`tasks.work_item` is unique; [`tasks::create_atomic`]);
//! - a task has at most one active (queued or running) job per agent (a partial unique index);
//! - a task's stage only changes through [`tasks::compare_and_set_stage`], which writes the
//!   history row in the same transaction;
//! - the store never reads a clock: every timestamp is passed in by the caller.
//!
//! One connection behind a mutex serves the whole process; async callers reach it through
//! [`Store::call`], which runs the closure on tokio's blocking pool so the runtime's worker
//! threads never wait on disk. WAL lets another process (`orch reconcile --once`) read and
//! write alongside, and the busy timeout absorbs short lock waits. On PostgreSQL each call
//! takes a pooled connection instead (`db::pg`).
//!
//! Not yet for several processes on one PostgreSQL database (issue 15's replicas): the
//! read-then-write transactions still rely on one writer at a time.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub mod db;
pub mod decisions;
pub mod gate_backoff;
pub mod gate_readings;
pub mod inbox;
mod claims;
pub mod jobs;
pub mod kv;
pub mod leases;
pub mod migrations;
mod migrations_pg;
pub mod outbox;
pub mod plane_seen;
pub mod replicas;
pub mod shadow;
pub mod stamp;
pub mod tasks;
pub mod verdicts;

pub use db::Conn;
pub use inbox::InboxItem;
pub use jobs::{Job, JobStatus};
pub use tasks::{HistoryRow, NewTask, OpenTask, Task, Trigger};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot create the database directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "database schema version {found} is newer than this orch supports ({supported}); upgrade orch"
    )]
    TooNew { found: i64, supported: i64 },
    #[error(
        "database schema version {found} is older than this orch's ({supported}); run orch serve once to migrate it"
    )]
    TooOld { found: i64, supported: i64 },
    #[error("schema migration to version {version} failed: {source}")]
    Migration {
        version: i64,
        source: rusqlite::Error,
    },
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the query returned no row: {0}")]
    NoRow(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the database worker thread failed: {0}")]
    Join(String),
    #[error("bad database URL: {0}")]
    Url(String),
    #[error("no PostgreSQL connection: {0}")]
    Pool(String),
    /// The message is the server's (tokio-postgres says only "db error" and keeps the rest in
    /// its causes), so this variant has no `source`: the text would repeat.
    #[error("database error: {}", db::pg::with_causes(.0))]
    Postgres(tokio_postgres::Error),
    #[error("schema migration to version {version} failed: {}", db::pg::with_causes(.source))]
    PgMigration {
        version: i64,
        source: tokio_postgres::Error,
    },
    /// A fenced write whose lease is no longer held with its token: nothing was written.
    #[error("lease {lease} (token {token}) is no longer held; nothing was written")]
    Fenced { lease: String, token: i64 },
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        StoreError::Postgres(e)
    }
}

/// A cheaply clonable handle to the database.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    /// Set on a [`Store::fenced`] clone: its writes check this lease's token first.
    fence: Option<Arc<leases::Fence>>,
}

#[derive(Clone)]
enum Backend {
    Sqlite {
        conn: Arc<Mutex<Connection>>,
        path: Arc<PathBuf>,
    },
    Pg {
        pool: Arc<db::pg::PgPool>,
        /// The URL without its password, for logs.
        shown: Arc<String>,
    },
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backend {
            Backend::Sqlite { path, .. } => f.debug_struct("Store").field("path", path).finish(),
            Backend::Pg { shown, .. } => f.debug_struct("Store").field("url", shown).finish(),
        }
    }
}

/// Connections kept open to PostgreSQL: the workers, the inbox lanes and the loops, with room.
const PG_POOL_SIZE: usize = 16;

/// `url` with its password (if any) replaced, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!("{}{}:***{}", &url[..scheme + 3], &userinfo[..colon], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Opens the database at `path` for reading only: no migration, no write, no file created.
/// For commands that must not change what they look at (`orch rules diff --db`); the schema
/// must be this orch's.
pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    this_schema(found)?;
    Ok(Store {
        backend: Backend::Sqlite {
            conn: Arc::new(Mutex::new(conn)),
            path: Arc::new(path.to_path_buf()),
        },
        fence: None,
    })
}

/// Connects to the PostgreSQL database at `url` for reading only, as [`open_read_only`] opens
/// a file: no migration, and sessions the server keeps from writing. The schema must be this
/// orch's.
pub fn open_url_read_only(url: &str) -> Result<Store, StoreError> {
    let store = Store {
        backend: Backend::Pg {
            pool: Arc::new(db::pg::PgPool::new(url, 2, true)?),
            shown: Arc::new(redact_url(url)),
        },
        fence: None,
    };
    // A database orch never migrated has no `orch_schema`: version 0, as an empty SQLite file.
    let found = store.call_sync(|c| {
        let known = c.query_row(
            "SELECT to_regclass('orch_schema') IS NOT NULL",
            args![],
            |r| r.get::<bool>(0),
        )?;
        if !known {
            return Ok(0);
        }
        c.query_row("SELECT version FROM orch_schema", args![], |r| {
            r.get::<i64>(0)
        })
    })?;
    this_schema(found)?;
    Ok(store)
}

/// A schema at `found` is the one this orch reads and writes.
fn this_schema(found: i64) -> Result<(), StoreError> {
    let supported = migrations::LATEST;
    if found > supported {
        return Err(StoreError::TooNew { found, supported });
    }
    if found < supported {
        return Err(StoreError::TooOld { found, supported });
    }
    Ok(())
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        configure(&conn).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        migrations::migrate(&mut conn)?;
        let conn = Arc::new(Mutex::new(conn));
        spawn_checkpointer(path, Arc::downgrade(&conn));
        Ok(Store {
            backend: Backend::Sqlite {
                conn,
                path: Arc::new(path.to_path_buf()),
            },
            fence: None,
        })
    }

    /// Connects to the PostgreSQL database at `url` (`postgres://…` or `key=value …`) and
    /// migrates it; replicas starting together migrate once (an advisory lock).
    pub fn open_url(url: &str) -> Result<Store, StoreError> {
        let pool = db::pg::PgPool::new(url, PG_POOL_SIZE, false)?;
        off_runtime(true, || migrations_pg::migrate(&pool.session()?))?;
        Ok(Store {
            backend: Backend::Pg {
                pool: Arc::new(pool),
                shown: Arc::new(redact_url(url)),
            },
            fence: None,
        })
    }

    /// The database `db_url` names when set (PostgreSQL), else the SQLite file at `db_path`.
    pub fn open_configured(db_url: Option<&str>, db_path: &Path) -> Result<Store, StoreError> {
        match db_url {
            Some(url) => Store::open_url(url),
            None => Store::open(db_path),
        }
    }

    /// Where the data is, for logs: the SQLite path or the PostgreSQL URL without password.
    pub fn location(&self) -> String {
        match &self.backend {
            Backend::Sqlite { path, .. } => path.display().to_string(),
            Backend::Pg { shown, .. } => shown.to_string(),
        }
    }

    /// A clone whose writes are fenced by `fence` (a lease this process holds): every write
    /// transaction (and a write statement outside one) first checks that the lease is still
    /// held with its token, and fails with [`StoreError::Fenced`], writing nothing, when it
    /// is not. Reads are not fenced.
    pub fn fenced(&self, fence: Arc<leases::Fence>) -> Store {
        Store {
            backend: self.backend.clone(),
            fence: Some(fence),
        }
    }

    /// True on PostgreSQL (replicas may share the database), false on SQLite (one process).
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Pg { .. })
    }

    /// Runs `f` with the connection on the blocking pool.
    pub async fn call<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Conn<'_>) -> Result<R, StoreError> + Send + 'static,
    {
        let (backend, fence) = (self.backend.clone(), self.fence.clone());
        tokio::task::spawn_blocking(move || run(&backend, fence.as_deref(), f))
            .await
            .map_err(|e| StoreError::Join(e.to_string()))?
    }

    /// Runs `f` with the connection on the current thread; for CLI commands and tests that
    /// are not inside a runtime.
    pub fn call_sync<R: Send>(
        &self,
        f: impl FnOnce(&Conn<'_>) -> Result<R, StoreError> + Send,
    ) -> Result<R, StoreError> {
        off_runtime(matches!(self.backend, Backend::Pg { .. }), || {
            run(&self.backend, self.fence.as_deref(), f)
        })
    }

    /// True when the database answers a trivial query; backs `GET /health`.
    pub async fn ping(&self) -> bool {
        self.call(|c| c.query_row("SELECT 1", args![], |r| r.get::<i64>(0)))
            .await
            .is_ok()
    }
}

/// Runs `f` where PostgreSQL's blocking bridge may wait: on a thread of its own when this one
/// is inside a tokio runtime (an async caller of `call_sync`, or `open_url` during an async
/// start), where `Handle::block_on` would panic. SQLite runs in place.
fn off_runtime<R: Send>(
    pg: bool,
    f: impl FnOnce() -> Result<R, StoreError> + Send,
) -> Result<R, StoreError> {
    if !pg || tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| {
        s.spawn(f)
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn run<R>(
    backend: &Backend,
    fence: Option<&leases::Fence>,
    f: impl FnOnce(&Conn<'_>) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    let fenced = |c: &Conn<'_>| match fence {
        Some(fence) => f(&Conn::Fenced(c, fence)),
        None => f(c),
    };
    match backend {
        Backend::Sqlite { conn, .. } => {
            let guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            fenced(&Conn::Sqlite(&guard))
        }
        Backend::Pg { pool, .. } => fenced(&Conn::Pg(&pool.session()?)),
    }
}

/// Checkpoints the WAL from a connection of its own, off the request path.
///
/// SQLite's automatic checkpoint runs inside whichever commit crosses the threshold and
/// fsyncs there: with webhooks arriving that made one request in a few hundred wait tens of
/// milliseconds. The store turns it off and checkpoints here every second instead. The
/// thread ends when the store is dropped.
fn spawn_checkpointer(path: &Path, alive: std::sync::Weak<Mutex<Connection>>) {
    let path = path.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            let conn = match Connection::open(&path).and_then(|c| c.busy_timeout(Duration::from_secs(5)).map(|_| c)) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "WAL checkpointer could not open the database; SQLite will grow the WAL until restart");
                    return;
                }
            };
            while alive.strong_count() > 0 {
                std::thread::sleep(CHECKPOINT_EVERY);
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the WAL checkpointer");
    }
}

const STATEMENT_CACHE: usize = 160;

const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    // Every statement goes through the cache (`db::Conn`); room for all of them.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(mode, "SQLite did not switch to WAL journal mode");
    }
    // NORMAL is durable across application crashes in WAL mode; only an OS crash can lose
    // the last transactions, which the reconciler is there to heal.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // Checkpoints run on their own thread (`spawn_checkpointer`), not inside commits.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    Ok(())
}
