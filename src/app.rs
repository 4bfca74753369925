//! Startup and shutdown: builds every component from a [`Config`], binds the listener and
//! runs until a shutdown signal, stopping background work in reverse order of start.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;

/// Everything a request handler may touch. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    /// Wakes the inbox processor as soon as a delivery is stored.
    pub inbox_wakeup: Arc<tokio::sync::Notify>,
    pub reconcile: Arc<std::sync::Mutex<ReconcileState>>,
}

/// What the reconciler reports about itself between sweeps (counters live in [`Metrics`]).
#[derive(Debug, Default, Clone)]
pub struct ReconcileState {
    pub running: bool,
    pub last_sweep_at: Option<crate::clock::Timestamp>,
    pub last_unblocked: Option<String>,
}

impl AppState {
    /// The `reconcile` block of `GET /queue`.
    pub fn reconcile_status(&self) -> serde_json::Value {
        let s = self.reconcile.lock().map(|g| g.clone()).unwrap_or_default();
        let m = &self.metrics;
        serde_json::json!({
            "running": s.running,
            "enabled": self.config.reconcile.enabled,
            "plane_enabled": self.config.reconcile.plane_enabled,
            "interval_s": self.config.reconcile.interval.as_secs(),
            "last_sweep_at": s.last_sweep_at,
            "sweeps": m.reconcile_sweeps.get(),
            "unblocked_total": m.reconcile_unblocked.get(),
            "last_unblocked": s.last_unblocked,
            "replays": m.reconcile_replays.get(),
            "errors": m.reconcile_errors.get(),
        })
    }

    /// The `rules` block of `GET /queue`.
    pub fn rules_status(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

/// A built, bound, not yet running service.
pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    /// Opens the store and binds the listener (port 0 picks a free port, for tests).
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(
        config: Config,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Application> {
        let store = Store::open(&config.db_path)
            .with_context(|| format!("opening the database at {}", config.db_path.display()))?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let state = AppState {
            config: Arc::new(config),
            store,
            clock,
            metrics: Metrics::new(),
            inbox_wakeup: Arc::new(tokio::sync::Notify::new()),
            reconcile: Default::default(),
        };
        Ok(Application { listener, state })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then drains in-flight requests.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.local_addr()?;
        tracing::info!(%addr, db = %self.state.config.db_path.display(), "orch listening");
        let app = crate::http::router(self.state.clone());
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .context("HTTP server failed")?;
        tracing::info!("orch stopped");
        Ok(())
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
