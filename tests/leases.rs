//! Leases with fencing tokens (`store::leases`, `Store::fenced`): acquire, renew, release and
//! expiry on both backends; the races that need concurrent writers on PostgreSQL only
//! (`ORCH_TEST_PG_URL`; see `store_portable/backends.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use orch::store::leases::{self, Fence};
use orch::store::{Store, StoreError, kv};

#[macro_use]
mod common;
use common::backends;

const TTL_MS: i64 = 60_000;

fn acquire(s: &Store, name: &str, holder: &str, ttl_ms: i64) -> Option<i64> {
    let (name, holder) = (name.to_string(), holder.to_string());
    s.call_sync(|c| leases::acquire(c, &name, &holder, ttl_ms, false))
        .unwrap()
}

fn kv_get(s: &Store, key: &str) -> Option<String> {
    s.call_sync(|c| kv::get(c, key)).unwrap()
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One holder at a time; renewal keeps it; release hands it over at once with the next token.
fn acquire_renew_release_hand_over(s: &Store) {
    assert_eq!(acquire(s, "sweep", "a", TTL_MS), Some(1));
    assert_eq!(acquire(s, "sweep", "b", TTL_MS), None, "held by a");
    let renewed = s
        .call_sync(|c| leases::renew(c, "sweep", "a", 1, TTL_MS))
        .unwrap();
    assert!(renewed.is_some());
    assert_eq!(
        s.call_sync(|c| leases::renew(c, "sweep", "b", 1, TTL_MS))
            .unwrap(),
        None,
        "only the holder renews"
    );
    assert_eq!(
        s.call_sync(|c| leases::holder(c, "sweep")).unwrap(),
        Some(("a".to_string(), 1))
    );
    assert!(
        s.call_sync(|c| leases::release(c, "sweep", "a", 1))
            .unwrap()
    );
    assert_eq!(s.call_sync(|c| leases::holder(c, "sweep")).unwrap(), None);
    assert_eq!(acquire(s, "sweep", "b", TTL_MS), Some(2));
    // A stale release (old token) changes nothing.
    assert!(
        !s.call_sync(|c| leases::release(c, "sweep", "a", 1))
            .unwrap()
    );
    let rows = s.call_sync(leases::list).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].name, "sweep");
    assert_eq!(rows[0].holder.as_deref(), Some("b"));
    assert_eq!(rows[0].token, 2);
    assert!(rows[0].valid);
    assert!(rows[0].expires_at > rows[0].since);
}
both_backends!(acquire_renew_release_hand_over);

/// After expiry (by the database's clock) the next acquirer gets token + 1; the old holder's
/// renewal and fenced writes fail, and nothing it writes lands.
fn expiry_hands_over_and_fences_the_old_holder(s: &Store) {
    assert_eq!(acquire(s, "sweep", "a", 100), Some(1));
    let fence = Arc::new(Fence::new("sweep", "a", 1));
    let a = s.fenced(Arc::clone(&fence));
    a.call_sync(|c| kv::set(c, "k", "a while valid")).unwrap();
    assert_eq!(kv_get(s, "k").as_deref(), Some("a while valid"));

    let mut b_token = None;
    eventually("the lease to expire", Duration::from_secs(5), || {
        b_token = acquire(s, "sweep", "b", TTL_MS);
        b_token.is_some()
    });
    assert_eq!(b_token, Some(2));
    assert_eq!(
        s.call_sync(|c| leases::renew(c, "sweep", "a", 1, TTL_MS))
            .unwrap(),
        None
    );

    let err = a
        .call_sync(|c| kv::set(c, "k", "a after losing"))
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Fenced { lease, token: 1 } if lease == "sweep"),
        "{err:?}"
    );
    assert!(
        fence.lost.is_cancelled(),
        "a failed fence check cancels the work"
    );
    // A transaction: the fence check comes first, nothing of it is written.
    let err = a
        .call_sync(|c| {
            c.write(|tx| {
                kv::set(tx, "k", "a in a transaction")?;
                kv::set(tx, "k2", "x")
            })
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err:?}");
    // A write statement run as a query is a write too.
    let err = a
        .call_sync(|c| {
            c.query_opt(
                "INSERT INTO kv (key, value) VALUES ('k3', 'x') RETURNING key",
                orch::args![],
                |r| r.get::<String>(0),
            )
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err:?}");
    assert_eq!(kv_get(s, "k").as_deref(), Some("a while valid"));
    assert_eq!(kv_get(s, "k2"), None);
    assert_eq!(kv_get(s, "k3"), None);
    // Reads are not fenced.
    assert_eq!(
        a.call_sync(|c| kv::get(c, "k")).unwrap().as_deref(),
        Some("a while valid")
    );
    // The new holder's fenced writes go through.
    let b = s.fenced(Arc::new(Fence::new("sweep", "b", 2)));
    b.call_sync(|c| kv::set(c, "k", "b")).unwrap();
    assert_eq!(kv_get(s, "k").as_deref(), Some("b"));
}
both_backends!(expiry_hands_over_and_fences_the_old_holder);

/// `take_over` (SQLite at startup: the previous incarnation's leases are void) takes a lease
/// that is still valid, with the next token.
fn take_over_bumps_the_token(s: &Store) {
    assert_eq!(acquire(s, "dispatch:telegram", "old", TTL_MS), Some(1));
    let taken = s
        .call_sync(|c| leases::acquire(c, "dispatch:telegram", "new", TTL_MS, true))
        .unwrap();
    assert_eq!(taken, Some(2));
    assert_eq!(
        s.call_sync(|c| leases::holder(c, "dispatch:telegram"))
            .unwrap(),
        Some(("new".to_string(), 2))
    );
}
both_backends!(take_over_bumps_the_token);

/// PostgreSQL: ten replicas racing for a free lease → exactly one gets it (token 1).
#[test]
fn lease_race_has_one_winner_postgres() {
    let Some(db) = backends::postgres() else {
        return;
    };
    let s = db.store.clone();
    let handles: Vec<_> = (0..10)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || acquire(&s, "sweep", &format!("r{i}"), TTL_MS))
        })
        .collect();
    let tokens: Vec<i64> = handles
        .into_iter()
        .filter_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(tokens, vec![1], "exactly one contender holds the lease");
}

/// PostgreSQL: a takeover waits for the old holder's fenced transaction in progress (its
/// `FOR SHARE` on the lease row), so nothing the old holder commits lands after the new
/// holder took over.
#[test]
fn a_fenced_transaction_in_progress_delays_the_takeover_postgres() {
    let Some(db) = backends::postgres() else {
        return;
    };
    let s = db.store.clone();
    assert_eq!(acquire(&s, "sweep", "a", 300), Some(1));
    let a = s.fenced(Arc::new(Fence::new("sweep", "a", 1)));
    let (checked_tx, checked) = std::sync::mpsc::channel();
    let a_thread = std::thread::spawn(move || {
        a.call_sync(move |c| {
            c.write(|tx| {
                // The fence check already ran (first statement): the row is share-locked.
                checked_tx.send(()).unwrap();
                // Hold the transaction open past the lease's expiry.
                std::thread::sleep(Duration::from_millis(1500));
                kv::set(tx, "k", "a")?;
                Ok(Instant::now())
            })
        })
    });
    checked.recv().unwrap();
    eventually("the lease to expire", Duration::from_secs(5), || {
        s.call_sync(|c| leases::holder(c, "sweep"))
            .unwrap()
            .is_none()
    });
    let b_token = acquire(&s, "sweep", "b", TTL_MS);
    let b_done = Instant::now();
    let a_last_write = a_thread.join().unwrap().unwrap();
    assert_eq!(b_token, Some(2));
    assert!(
        b_done >= a_last_write,
        "the takeover went through while the old holder's fenced transaction was open"
    );
    assert_eq!(
        kv_get(&s, "k").as_deref(),
        Some("a"),
        "a's transaction committed"
    );
}

/// SQLite serves one `orch serve` process: at startup it takes over what its previous
/// incarnation held (here a lease still valid for a minute) at once, and `/queue` and the
/// metrics show the leases it holds.
#[tokio::test]
async fn serve_on_sqlite_takes_over_its_previous_incarnations_leases_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::test_config(dir.path());
    // SQLite by nature, also in the suite's PostgreSQL pass (ORCH_TEST_DB=postgres).
    cfg.db_url = None;
    {
        let s = Store::open(&cfg.db_path).unwrap();
        for name in ["sweep", "dispatch:plane", "dispatch:telegram"] {
            assert_eq!(acquire(&s, name, "orch:1:deadbeef", TTL_MS), Some(1));
        }
    }
    let app = common::TestApp::spawn_in(dir, cfg).await;
    let me = app.state.replica.to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    let leases = loop {
        let leases = common::get_json(&app, "/queue").await["leases"].clone();
        let all_mine = leases
            .as_array()
            .is_some_and(|l| l.len() == 3 && l.iter().all(|x| x["holder"] == me.as_str()));
        if all_mine {
            break leases;
        }
        assert!(
            Instant::now() < deadline,
            "this process holds every lease: {leases}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for l in leases.as_array().unwrap() {
        assert_eq!(l["token"], 2, "{l}");
        assert_eq!(l["valid"], true, "{l}");
        assert!(l["since"].is_string() && l["expires_at"].is_string(), "{l}");
    }
    let metrics = common::get_text(&app, "/metrics").await;
    assert!(
        metrics.contains("orch_lease_held{lease=\"sweep\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("orch_lease_acquired_total{lease=\"dispatch:telegram\"} 1"),
        "{metrics}"
    );
    let state = app.state.clone();
    app.stop().await;
    // A graceful stop releases them.
    let held = state
        .store
        .call(leases::list)
        .await
        .unwrap()
        .into_iter()
        .filter(|l| l.valid)
        .count();
    assert_eq!(held, 0);
}

/// PostgreSQL: a subject's inbox lane runs under its lease (`inbox:<order key>`): while
/// another replica holds it, this one leaves that subject's deliveries alone (and applies
/// the others); once it is released they are applied here.
#[tokio::test]
async fn an_inbox_lane_held_by_another_replica_waits_for_it_postgres() {
    let Some((_schema, url)) = backends::pg_schema() else {
        return;
    };
    let app = common::TestApp::spawn(|c| {
        c.reconcile.enabled = Some(false);
        c.db_url = Some(url.clone());
    })
    .await;
    let store = app.state.store.clone();
    let token = store
        .call(|c| {
            leases::acquire(
                c,
                "inbox:plane:issue-held",
                "other:1:00000000",
                TTL_MS,
                false,
            )
        })
        .await
        .unwrap()
        .unwrap();
    let now = app.state.clock.now();
    let (held, free) = store
        .call(move |c| {
            let held = orch::store::inbox::insert(
                c,
                "plane",
                "issue",
                br#"{"data":{"id":"issue-held"}}"#,
                now,
            )?;
            let free = orch::store::inbox::insert(
                c,
                "plane",
                "issue",
                br#"{"data":{"id":"issue-free"}}"#,
                now,
            )?;
            Ok((held.unwrap(), free.unwrap()))
        })
        .await
        .unwrap();
    app.state.inbox_wakeup.notify_one();
    let touched = |id: i64| {
        let store = store.clone();
        async move {
            let item = store
                .call(move |c| orch::store::inbox::get(c, id))
                .await
                .unwrap()
                .unwrap();
            item.processed_at.is_some() || item.attempts > 0 || item.error.is_some()
        }
    };
    common::eventually(
        "the free lane's delivery to be applied",
        Duration::from_secs(10),
        || touched(free),
    )
    .await;
    assert!(
        !touched(held).await,
        "the held lane's delivery was left to its holder"
    );
    assert!(
        store
            .call(move |c| leases::release(c, "inbox:plane:issue-held", "other:1:00000000", token))
            .await
            .unwrap()
    );
    common::eventually(
        "the released lane's delivery to be applied here",
        Duration::from_secs(10),
        || touched(held),
    )
    .await;
    let queue = common::get_json(&app, "/queue").await;
    assert!(
        queue["leases"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| !l["name"].as_str().unwrap().starts_with("inbox:")),
        "inbox lanes are not listed one by one: {queue}"
    );
    app.stop().await;
}
