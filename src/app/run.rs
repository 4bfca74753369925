//! What `Application::run_until` runs around the server: recovery after the last process,
//! the heartbeat, the inbox processor, warnings, and the shutdown signal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::http::AppState;
use crate::pipeline::Pipeline;

/// What the last process left half-done: its agents still running are killed (see
/// `agent::orphans`), the lock files of its killed gits go (see `git::locks`), jobs it was
/// running go back to the queue (with
/// PostgreSQL the running jobs may be other replicas': they come back when their replica is
/// silent for the lease time, by the heartbeat loop, this process's previous run's included).
/// Effects it was sending are recovered by each peer's dispatcher when it takes the peer's
/// lease (`Dispatcher::run_leased`).
pub(super) async fn recover_after_last_process(state: &AppState) -> anyhow::Result<()> {
    let repos_dir = state.pipeline.config.repos_dir.clone();
    let orphans = tokio::task::spawn_blocking(move || crate::agent::kill_orphans(&repos_dir))
        .await
        .unwrap_or_default();
    if orphans > 0 {
        tracing::warn!(
            orphans,
            "agent processes left running by the last process were killed"
        );
    }
    let locks = state.pipeline.git.clear_locks_left_by_last_process().await;
    if locks > 0 {
        tracing::warn!(locks, "git lock files left by the last process were removed");
    }
    let requeued = state
        .store
        .call(|c| {
            if c.is_postgres() {
                Ok(0)
            } else {
                crate::store::jobs::requeue_running(c)
            }
        })
        .await?;
    if requeued > 0 {
        tracing::info!(
            requeued,
            "jobs left running by the last process were put back in the queue"
        );
    }
    Ok(())
}

/// The heartbeat loop of this replica, serving on `addr`.
pub(super) fn heartbeat(state: &AppState, addr: SocketAddr) -> Arc<crate::heartbeat::Heartbeat> {
    Arc::new(crate::heartbeat::Heartbeat {
        store: state.store.clone(),
        clock: Arc::clone(&state.clock),
        metrics: Arc::clone(&state.metrics),
        info: crate::store::replicas::ReplicaInfo {
            id: state.replica.to_string(),
            host: crate::replica::host_name(),
            pid: i64::from(std::process::id()),
            version: env!("CARGO_PKG_VERSION").to_string(),
            listen: Some(addr.to_string()),
        },
        lease_ttl: state.config.replicas.lease_ttl,
        liveness: Arc::clone(&state.liveness),
        job_wakeup: Arc::clone(&state.pipeline.job_wakeup),
    })
}

/// One line per webhook endpoint without a secret: refused, or accepted unsigned by choice.
pub(super) fn warn_about_unsigned_webhooks(config: &Config) {
    for (peer, secret, allow_unsigned) in [
        (
            "plane",
            &config.plane.webhook_secret,
            config.plane.allow_unsigned,
        ),
        (
            "gitea",
            &config.gitea.webhook_secret,
            config.gitea.allow_unsigned,
        ),
    ] {
        if secret.as_ref().is_some_and(|s| !s.is_empty()) {
            continue;
        }
        let up = peer.to_uppercase();
        if allow_unsigned {
            tracing::warn!(
                peer,
                "webhooks from {peer} are accepted without a signature check ({peer}.allow_unsigned): set ORCH_{up}_WEBHOOK_SECRET"
            );
        } else {
            tracing::warn!(
                peer,
                "webhooks from {peer} are refused (401) until ORCH_{up}_WEBHOOK_SECRET is set, or ORCH_{up}_ALLOW_UNSIGNED=true"
            );
        }
    }
}

/// The inbox processor, applying each delivery through the pipeline.
pub(super) fn inbox_processor(state: &AppState) -> crate::inbox::Processor {
    let pipeline = state.pipeline.clone();
    crate::inbox::Processor {
        store: state.store.clone(),
        clock: Arc::clone(&state.clock),
        metrics: Arc::clone(&state.metrics),
        wakeup: Arc::clone(&state.inbox_wakeup),
        handler: Arc::new(move |item, store| {
            // The lane's store: fenced by the lane's lease on PostgreSQL.
            let pipeline = Pipeline {
                store,
                ..pipeline.clone()
            };
            Box::pin(async move {
                pipeline
                    .handle_delivery(&item)
                    .await
                    .map(|outcome| tracing::debug!(id = item.id, ?outcome, "delivery applied"))
                    .map_err(|e| crate::inbox::Failure {
                        permanent: e.is_permanent(),
                        message: e.to_string(),
                    })
            })
        }),
        poll: Duration::from_secs(1),
        prune_under: Some(Arc::clone(&state.leases.sweep)),
        lane_leases: state
            .store
            .is_shared()
            .then(|| crate::lease::LaneLeases {
                store: state.store.clone(),
                holder: state.replica.clone(),
                ttl: state.config.replicas.lease_ttl,
                metrics: Arc::clone(&state.metrics),
            }),
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        _ = term => tracing::info!("SIGTERM received, shutting down"),
    }
}
