//! `orch inbox dead` and `orch inbox retry`: an operator's view of deliveries given up on.

mod common;

use std::process::Command;

use orch::clock::Timestamp;
use orch::inbox::MAX_ATTEMPTS;
use orch::store::inbox;

const T0: Timestamp = Timestamp::from_millis(1_795_000_000_000);

fn orch(args: &[&str], config: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn dead_deliveries_are_listed_and_offered_again() {
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
    let (dead_id, pending_id) = {
        let store = common::open_store(&cfg);
        store
            .call_sync(|c| {
                let dead = inbox::insert(c, "plane", "issue", b"{\"a\":1}", T0)?.unwrap();
                inbox::mark_dead(c, dead, "malformed Plane payload: no data", MAX_ATTEMPTS)?;
                let pending = inbox::insert(c, "gitea", "push", b"{\"b\":2}", T0)?.unwrap();
                Ok((dead, pending))
            })
            .unwrap()
    };

    let (code, out, err) = orch(&["inbox", "dead"], &config);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("ID"), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with(&dead_id.to_string())
            && l.contains("plane")
            && l.contains("malformed Plane payload: no data")),
        "{out}"
    );
    assert!(
        !out.contains("gitea"),
        "a pending delivery is not dead: {out}"
    );

    // Asking for a delivery that is not dead changes nothing for it and says so.
    let (code, out, err) = orch(
        &[
            "inbox",
            "retry",
            &dead_id.to_string(),
            &pending_id.to_string(),
        ],
        &config,
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("1 deliveries offered again"), "{out}");
    assert!(err.contains(&pending_id.to_string()), "{err}");

    let store = common::open_store(&cfg);
    let revived = store
        .call_sync(move |c| inbox::get(c, dead_id))
        .unwrap()
        .unwrap();
    assert_eq!(revived.attempts, 0);
    assert!(revived.processed_at.is_none());
    let (code, out, _) = orch(&["inbox", "dead"], &config);
    assert_eq!(code, 0);
    assert!(out.contains("no dead deliveries"), "{out}");
    let (code, _, err) = orch(&["inbox", "retry"], &config);
    assert_ne!(code, 0, "ids or --all are required");
    assert!(err.contains("--all"), "{err}");
}
