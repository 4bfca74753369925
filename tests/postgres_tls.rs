//! TLS to PostgreSQL: `sslmode` and `sslrootcert` in `db_url`. The handshake tests need the
//! test cluster to serve TLS (`.ci/pg` does when openssl is there and leaves its CA at
//! `DIR/ca.pem`; `.ci/run` exports it as `ORCH_TEST_PG_CA`); without it they skip, unless `CI`
//! is set.

mod common;

use std::io::{Read, Write};

use common::backends;
use orch::store::Store;

/// Whether this connection of `store` is encrypted, as the server sees it.
fn encrypted(store: &Store) -> bool {
    store
        .call_sync(|c| {
            c.query_row(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                orch::args![],
                |r| r.get(0),
            )
        })
        .unwrap()
}

/// The throwaway cluster's CA, or `None` (skipped) when it serves no TLS, outside CI.
fn cluster_ca() -> Option<String> {
    match std::env::var("ORCH_TEST_PG_CA") {
        Ok(ca) if std::path::Path::new(&ca).is_file() => Some(ca),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but ORCH_TEST_PG_CA names no file: .ci/pg makes one with openssl"
            );
            eprintln!("skipped: no TLS test cluster (set ORCH_TEST_PG_CA; see .ci/pg)");
            None
        }
    }
}

#[test]
fn sslmode_require_against_a_server_without_tls_fails_naming_tls() {
    // What a PostgreSQL server without TLS does: it answers the client's SSLRequest with 'N'.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut request = [0u8; 8];
            if conn.read_exact(&mut request).is_ok() {
                let _ = conn.write_all(b"N");
            }
        }
    });
    let err = Store::open_url(&format!(
        "postgres://orch@127.0.0.1:{port}/orch?sslmode=require"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("TLS"), "{err}");
}

#[test]
fn sslmode_disable_connects_in_plain_text() {
    let Some((_schema, url)) = backends::pg_schema() else {
        return;
    };
    let store = Store::open_url(&format!("{url}&sslmode=disable")).unwrap();
    assert!(!encrypted(&store));
}

#[test]
fn verify_full_with_the_cluster_ca_encrypts_and_an_unknown_ca_is_refused() {
    let Some(ca) = cluster_ca() else { return };
    let Some((_schema, url)) = backends::pg_schema() else {
        return;
    };
    let store = Store::open_url(&format!("{url}&sslmode=verify-full&sslrootcert={ca}")).unwrap();
    assert!(encrypted(&store), "verify-full");
    let store = Store::open_url(&format!("{url}&sslmode=verify-ca&sslrootcert={ca}")).unwrap();
    assert!(encrypted(&store), "verify-ca");
    let store = Store::open_url(&url).unwrap();
    assert!(
        encrypted(&store),
        "prefer (the default) encrypts when the server offers TLS"
    );
    let store = Store::open_url(&format!("{url}&sslmode=require")).unwrap();
    assert!(encrypted(&store), "require");

    // The system's roots do not know the throwaway CA.
    let err = Store::open_url(&format!("{url}&sslmode=verify-full"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("certificate"), "{err}");
}

#[test]
fn verify_full_checks_the_host_name_and_verify_ca_does_not() {
    let Some(ca) = cluster_ca() else { return };
    let Some((_schema, url)) = backends::pg_schema() else {
        return;
    };
    // The certificate names 127.0.0.1 and localhost; `hostaddr` reaches the same server under
    // a name it does not carry.
    let other = format!(
        "{}&hostaddr=127.0.0.1",
        url.replacen("@127.0.0.1:", "@db.example.invalid:", 1)
    );
    let err = Store::open_url(&format!("{other}&sslmode=verify-full&sslrootcert={ca}"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("certificate"), "{err}");
    let store = Store::open_url(&format!("{other}&sslmode=verify-ca&sslrootcert={ca}")).unwrap();
    assert!(encrypted(&store));
}
