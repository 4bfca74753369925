//! The store on both backends: a fresh SQLite file, or a fresh schema of the PostgreSQL
//! database at `ORCH_TEST_PG_URL` (`.ci/pg` starts a throwaway one). Without that variable the
//! PostgreSQL cases say "skipped" and pass, unless `CI` is set: then they fail.
//!
//! `ORCH_TEST_DB=postgres` runs the whole suite on PostgreSQL: `suite_db_url` (used by
//! `tests/common`'s `test_config`) gives each test a schema of its own, dropped when the test's
//! thread ends. No test needs to skip there: the few about the SQLite file itself (WAL,
//! `user_version`, `rules diff --db FILE`, `orch serve` on defaults) open a file by path, not
//! `test_config`'s database, and keep running on SQLite.

use std::sync::atomic::{AtomicU32, Ordering};

use orch::clock::Timestamp;
use orch::store::{NewTask, Store, Trigger, tasks};

/// A test's store and what to remove after it (dropped in this order: store first).
pub struct TestDb {
    #[allow(dead_code)]
    pub store: Store,
    _place: Place,
}

pub enum Place {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { url: String, schema: String },
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Place::Postgres { url, schema } = self {
            if let Err(e) = admin(url, &format!("DROP SCHEMA IF EXISTS {schema} CASCADE")) {
                eprintln!("cannot drop test schema {schema}: {e}");
            }
        }
    }
}

#[allow(dead_code)]
pub fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("orch.db")).unwrap();
    TestDb {
        store,
        _place: Place::Sqlite(dir),
    }
}

/// A store in a schema of its own, or `None` (skipped) without PostgreSQL outside CI.
#[allow(dead_code)]
pub fn postgres() -> Option<TestDb> {
    let (place, url) = pg_schema()?;
    let store = Store::open_url(&url).unwrap();
    Some(TestDb {
        store,
        _place: place,
    })
}

/// A URL for a fresh schema of its own (dropped with the guard), or `None` (skipped).
pub fn pg_schema() -> Option<(Place, String)> {
    let url = match std::env::var("ORCH_TEST_PG_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but ORCH_TEST_PG_URL is not: start PostgreSQL with .ci/pg"
            );
            eprintln!("skipped: no PostgreSQL (set ORCH_TEST_PG_URL; see .ci/pg)");
            return None;
        }
    };
    static N: AtomicU32 = AtomicU32::new(0);
    let schema = format!(
        "t_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    admin(&url, &format!("CREATE SCHEMA {schema}")).unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    let place = Place::Postgres {
        url: url.clone(),
        schema: schema.clone(),
    };
    let schema_url = format!("{url}{sep}options=-c%20search_path%3D{schema}");
    Some((place, schema_url))
}

/// The database the whole suite runs on: `ORCH_TEST_DB` = `sqlite` (or unset) or `postgres`.
#[allow(dead_code)]
pub fn suite_on_postgres() -> bool {
    match std::env::var("ORCH_TEST_DB").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Ok("") | Err(_) => false,
        Ok(other) => panic!("ORCH_TEST_DB is {other:?}: use sqlite or postgres"),
    }
}

/// Under `ORCH_TEST_DB=postgres`, the URL of a fresh schema for this test (dropped when the
/// test's thread ends); `None` on SQLite. Fails without `ORCH_TEST_PG_URL`: the run asked for
/// PostgreSQL.
#[allow(dead_code)]
pub fn suite_db_url() -> Option<String> {
    if !suite_on_postgres() {
        return None;
    }
    assert!(
        std::env::var("ORCH_TEST_PG_URL").is_ok_and(|u| !u.trim().is_empty()),
        "ORCH_TEST_DB=postgres needs ORCH_TEST_PG_URL (start PostgreSQL with .ci/pg)"
    );
    let (place, url) = pg_schema()?;
    SCHEMAS.with(|s| s.borrow_mut().push(place));
    Some(url)
}

thread_local! {
    /// The schemas this test thread made; dropped (`DROP SCHEMA … CASCADE`) when it ends, which
    /// is after the test's runtime, and so its store, is gone.
    static SCHEMAS: std::cell::RefCell<Vec<Place>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `sql` on a connection of its own, on a thread of its own (callers may be async).
fn admin(url: &str, sql: &str) -> Result<(), String> {
    let (url, sql) = (url.to_string(), sql.to_string());
    std::thread::spawn(move || admin_here(&url, &sql))
        .join()
        .map_err(|_| "the admin thread panicked".to_string())?
}

fn admin_here(url: &str, sql: &str) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(|e| e.to_string())?;
        let driver = tokio::spawn(conn);
        let done = client.batch_execute(sql).await.map_err(|e| e.to_string());
        drop(client);
        let _ = driver.await;
        done
    })
}

/// `both_backends!(f)`: tests `f::sqlite` and `f::postgres`, each calling `f(&store)`.
#[allow(unused_macros)]
macro_rules! both_backends {
    ($name:ident) => {
        mod $name {
            #[test]
            fn sqlite() {
                let db = super::backends::sqlite();
                super::$name(&db.store);
            }

            #[test]
            fn postgres() {
                if let Some(db) = super::backends::postgres() {
                    super::$name(&db.store);
                }
            }
        }
    };
}

/// The store tests' "now".
#[allow(dead_code)]
pub const T0: Timestamp = Timestamp::from_millis(1_795_000_000_000);

/// Task `wi` in `stage` (with `agent`'s job queued when given), created at [`T0`]; its id.
#[allow(dead_code)]
pub fn task(store: &Store, wi: &str, stage: &str, agent: Option<&str>) -> i64 {
    let new = NewTask {
        work_item: wi.into(),
        plane_issue_id: None,
        plane_project_id: None,
        title: "t".into(),
        repo: "acme/widget".into(),
        branch: format!("feature/{wi}"),
        stage: stage.into(),
        labels: vec![],
    };
    store
        .call_sync(|c| tasks::create_atomic(c, &new, agent, "v1", Trigger::Webhook, T0))
        .unwrap()
        .0
        .id
}
