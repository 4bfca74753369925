//! `orch outbox dead` and `orch outbox retry`: an operator's view of effects given up on.

mod common;

use common::run_orch;
use orch::clock::Timestamp;
use orch::store::outbox::{self, Effect, EffectStatus, NewEffect};

const T0: Timestamp = Timestamp::from_millis(1_795_000_000_000);

fn orch(args: &[&str], config: &std::path::Path) -> (i32, String, String) {
    let config = config.to_string_lossy();
    let mut all = args.to_vec();
    all.extend(["--config", &config]);
    run_orch(&all)
}

#[test]
fn dead_effects_are_listed_and_offered_again() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::test_config(dir.path());
    let config = dir.path().join("orch.toml");
    std::fs::write(
        &config,
        format!(
            "{}repos_dir = \"{}\"\n",
            common::db_toml(&cfg),
            dir.path().join("repos").display()
        ),
    )
    .unwrap();
    let state = NewEffect::new(
        "ET-42",
        Effect::PlaneState {
            project: "p".into(),
            issue: "i".into(),
            state: "Done".into(),
        },
    );
    let message = NewEffect::new(
        "ET-42",
        Effect::Telegram {
            text: "ET-42 entered done".into(),
        },
    );
    let (dead_id, pending_id) = {
        let store = common::open_store(&cfg);
        store
            .call_sync(|c| {
                outbox::push(c, None, &state, T0)?;
                outbox::push(c, None, &message, T0)?;
                let rows = outbox::due(c, outbox::Peer::Plane, T0, 10)?;
                let dead = rows[0].id;
                outbox::begin(c, dead)?;
                outbox::end(
                    c,
                    dead,
                    EffectStatus::Dead,
                    Some("plane set_state /x: HTTP 403: forbidden"),
                    T0,
                )?;
                let pending = outbox::due(c, outbox::Peer::Telegram, T0, 10)?[0].id;
                Ok((dead, pending))
            })
            .unwrap()
    };

    let (code, out, err) = orch(&["outbox", "dead"], &config);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("ID"), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with(&dead_id.to_string())
            && l.contains("plane")
            && l.contains("ET-42")
            && l.contains("set state \"Done\"")
            && l.contains("HTTP 403: forbidden")),
        "{out}"
    );
    assert!(
        !out.contains("telegram"),
        "a pending effect is not dead: {out}"
    );
    let (code, out, _) = orch(&["outbox", "dead", "--format", "json"], &config);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["status"], "dead", "{v}");

    // Asking for an effect that is not dead changes nothing for it and says so.
    let (code, out, err) = orch(
        &[
            "outbox",
            "retry",
            &dead_id.to_string(),
            &pending_id.to_string(),
        ],
        &config,
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("1 effects offered again"), "{out}");
    assert!(err.contains(&pending_id.to_string()), "{err}");
    let store = common::open_store(&cfg);
    let dead = store.call_sync(outbox::dead).unwrap();
    assert!(dead.is_empty(), "{dead:?}");
    let (code, out, _) = orch(&["outbox", "dead"], &config);
    assert_eq!(code, 0);
    assert!(out.contains("no dead effects"), "{out}");
    let (code, _, err) = orch(&["outbox", "retry"], &config);
    assert_eq!(code, 2, "ids or --all are required: {err}");
}
