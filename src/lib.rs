//! orch: a delivery-pipeline orchestrator that heals itself when webhooks get lost.
//!
//! See `ARCHITECTURE.md` for the codemap.

// A `pub` item no one outside can reach is dead weight the compiler cannot point at.
#![cfg_attr(not(orch_audit), warn(unreachable_pub))]

/// The parameters of one statement, borrowed like rusqlite's `params!`:
/// `conn.execute("… WHERE id = ?1", args![id])`.
#[macro_export]
macro_rules! args {
    () => {{
        let none: &[$crate::store::db::Param<'_>] = &[];
        none
    }};
    ($($p:expr),+ $(,)?) => {
        &[$($crate::store::db::ToParam::to_param(&$p)),+][..]
    };
}

/// Declares the modules: public, because the integration tests drive the library directly;
/// crate-private under `--cfg orch_audit`, which `.ci/dead-code` uses to compile the library
/// as only the binary sees it, so the compiler points at anything nothing calls. Items kept
/// only for the tests say so with `#[cfg_attr(orch_audit, allow(dead_code))]`.
macro_rules! modules {
    ($($name:ident),* $(,)?) => {
        $(
            #[cfg(not(orch_audit))]
            pub mod $name;
            #[cfg(orch_audit)]
            pub(crate) mod $name;
        )*
    };
}

modules! {
    agent,
    app,
    clock,
    config,
    duration,
    git,
    heartbeat,
    http,
    http_client,
    impact,
    inbox,
    integrations,
    lease,
    metrics,
    outbox,
    pipeline,
    policy,
    reconciler,
    replica,
    secret,
    service,
    sim,
    store,
    systemd,
    telemetry,
    worker,
}

// What `main.rs` calls.
pub mod cli;
pub mod report;
