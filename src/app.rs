//! Startup and shutdown: builds every component from a [`Config`], binds the listener and
//! runs until a shutdown signal, stopping background work in reverse order of start.
//!
//! [`Components::build`] is shared by `orch serve` and the one-shot commands (`orch
//! reconcile --once`, `orch explain`), so they all see the same store, rules and clients.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, DEFAULT_RULES_DIR};
use crate::git::Git;
use crate::metrics::Metrics;
use crate::outbox::Dispatcher;
use crate::pipeline::Pipeline;
use crate::policy::RulesHandle;
use crate::reconciler::{ReconcileState, Reconciler};
use crate::service::Background;
use crate::store::Store;
use crate::store::outbox::Peer;

/// Everything a request handler may touch. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub rules: RulesHandle,
    pub pipeline: Pipeline,
    pub reconciler: Arc<Reconciler>,
    /// Wakes the inbox processor as soon as a delivery is stored.
    pub inbox_wakeup: Arc<Notify>,
    /// Where Telegram effects are delivered (Plane's client is the pipeline's tracker).
    pub notifier: Arc<dyn crate::integrations::Notifier>,
    pub reconcile: Arc<Mutex<ReconcileState>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// The dispatcher of `peer`'s effects.
    pub fn dispatcher(&self, peer: Peer) -> Dispatcher {
        Dispatcher {
            peer,
            store: self.store.clone(),
            clock: Arc::clone(&self.clock),
            metrics: Arc::clone(&self.metrics),
            tracker: Arc::clone(&self.pipeline.tracker),
            notifier: Arc::clone(&self.notifier),
            pipeline: self.pipeline.clone(),
            wakeup: Arc::clone(&self.pipeline.outbox_wakeup),
            poll: Duration::from_secs(1),
            failpoint: None,
        }
    }

    /// Delivers every effect that is due now, to every peer; for one-shot commands and tests
    /// that run without the background dispatchers. Returns how many were handled.
    pub async fn drain_outbox(&self) -> Result<usize, crate::store::StoreError> {
        let cancel = tokio_util::sync::CancellationToken::new();
        let mut handled = 0;
        for peer in Peer::ALL {
            handled += self.dispatcher(peer).drain(&cancel).await?;
        }
        Ok(handled)
    }

    /// The `reconcile` block of `GET /queue`.
    pub fn reconcile_status(&self) -> serde_json::Value {
        let s = self.reconcile.lock().map(|g| g.clone()).unwrap_or_default();
        let m = &self.metrics;
        let switches = self
            .reconciler
            .overrides()
            .effective_switches(&self.rules.current());
        serde_json::json!({
            "running": s.running,
            "enabled": switches.reconcile_enabled,
            "plane_enabled": switches.reconcile_enabled && switches.plane_enabled,
            "notify_unblock": switches.notify_unblock,
            "interval_s": self.config.reconcile.interval.as_secs(),
            "last_sweep_at": s.last_sweep_at,
            "sweeps": m.reconcile_sweeps.get(),
            "unblocked_total": m.reconcile_unblocked.get(),
            "last_unblocked": s.last_unblocked,
            "replays": m.reconcile_replays.get(),
            "errors": m.reconcile_errors.get(),
            "decision_errors": m.decision_errors.get(),
        })
    }

    /// The `decision_errors` list of `GET /queue`: the tasks the last sweep could not decide.
    pub fn decision_errors(&self) -> Vec<crate::reconciler::DecisionError> {
        self.reconcile
            .lock()
            .map(|g| g.decision_errors.clone())
            .unwrap_or_default()
    }

    /// The `rules` block of `GET /queue`.
    pub fn rules_status(&self) -> serde_json::Value {
        serde_json::to_value(self.rules.status()).unwrap_or_default()
    }
}

/// The service's parts, wired but not running.
pub struct Components {
    pub state: AppState,
}

impl Components {
    pub fn build(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Components> {
        // A directory someone named (--rules, rules_dir, ORCH_RULES_DIR) that is not there is a
        // mistake: running on the embedded defaults instead would quietly ignore their policy,
        // kill switches included.
        if !config.rules_dir.exists() && config.rules_dir != Path::new(DEFAULT_RULES_DIR) {
            anyhow::bail!(
                "rules directory {} does not exist (set by --rules, rules_dir or ORCH_RULES_DIR); \
                 create it, or leave it unset to run on the embedded default rules",
                config.rules_dir.display()
            );
        }
        let config = Arc::new(config);
        // The rules first: a startup refused over bad policy writes nothing.
        let rules = crate::policy::load_active(&config.rules_dir).map_err(|e| {
            anyhow::anyhow!(
                "the rule set in {} is invalid:\n{e}",
                config.rules_dir.display()
            )
        })?;
        // An override for a stage the rules do not have would never apply: a typo in a unit
        // file must stop the start, not leave a grace silently at its default.
        let unknown = crate::reconciler::unknown_override_stages(
            &config.reconcile.grace_overrides,
            &rules.current(),
        );
        if !unknown.is_empty() {
            anyhow::bail!(
                "reconcile.grace_overrides (ORCH_RECONCILE_GRACE_OVERRIDES_JSON) names {}, not a stage of the rules in {}",
                unknown
                    .iter()
                    .map(|s| format!("{s:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                config.rules_dir.display()
            );
        }
        let store = Store::open(&config.db_path)
            .with_context(|| format!("opening the database at {}", config.db_path.display()))?;
        let metrics = Metrics::new();
        metrics.set_rules_version(rules.current().version());
        let integrations = crate::integrations::from_config(&config)?;
        let pipeline = Pipeline {
            config: Arc::clone(&config),
            store: store.clone(),
            rules: rules.clone(),
            clock: Arc::clone(&clock),
            metrics: Arc::clone(&metrics),
            tracker: Arc::clone(&integrations.tracker),
            forge: integrations.forge,
            git: Git::new(config.repos_dir.clone(), config.worker.git_timeout),
            job_wakeup: Arc::new(Notify::new()),
            outbox_wakeup: Arc::new(Notify::new()),
            running_jobs: Default::default(),
        };
        let reconcile = Arc::new(Mutex::new(ReconcileState::default()));
        let reconciler = Reconciler::new(pipeline.clone(), Arc::clone(&reconcile));
        Ok(Components {
            state: AppState {
                config,
                store,
                clock,
                metrics,
                rules,
                pipeline,
                reconciler,
                inbox_wakeup: Arc::new(Notify::new()),
                notifier: integrations.notifier,
                reconcile,
            },
        })
    }
}

/// A built, bound, not yet running service.
pub struct Application {
    listener: TcpListener,
    state: AppState,
}

/// How long each background service gets to stop at shutdown.
const STOP_TIMEOUT: Duration = Duration::from_secs(1);

impl Application {
    /// Opens the store and binds the listener (port 0 picks a free port, for tests).
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(
        config: Config,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Application> {
        let listen = config.listen;
        let components = Components::build(config, clock)?;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        Ok(Application {
            listener,
            state: components.state,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Starts the background services, serves until `shutdown` completes, then drains
    /// in-flight requests and stops the services in reverse order.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.local_addr()?;
        let state = self.state.clone();

        let requeued = state
            .store
            .call(|c| crate::store::jobs::requeue_running(c))
            .await?;
        if requeued > 0 {
            tracing::info!(
                requeued,
                "jobs left running by the last process were put back in the queue"
            );
        }
        for (peer, secret) in [
            ("plane", &state.config.plane.webhook_secret),
            ("gitea", &state.config.gitea.webhook_secret),
        ] {
            if secret.as_ref().is_none_or(|s| s.is_empty()) {
                tracing::warn!(
                    peer,
                    "webhooks from {peer} are accepted without a signature check: set ORCH_{}_WEBHOOK_SECRET",
                    peer.to_uppercase()
                );
            }
        }
        crate::outbox::recover(&state.store, state.clock.as_ref()).await?;
        let watcher = match crate::policy::watch(state.rules.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, dir = %state.config.rules_dir.display(), "rule hot reload is off");
                None
            }
        };

        // Started first, stopped last: everything else owes them effects.
        let dispatchers = [
            (Background::new("outbox-plane"), Peer::Plane),
            (Background::new("outbox-telegram"), Peer::Telegram),
        ];
        for (service, peer) in &dispatchers {
            let d = state.dispatcher(*peer);
            service.start(move |cancel| d.run(cancel));
        }

        let worker = Background::new("worker");
        let w = crate::worker::Worker {
            pipeline: state.pipeline.clone(),
            concurrency: state.config.worker.concurrency,
            poll: Duration::from_secs(1),
        };
        worker.start(move |cancel| w.run(cancel));

        let inbox = Background::new("inbox");
        let pipeline = state.pipeline.clone();
        let processor = crate::inbox::Processor {
            store: state.store.clone(),
            clock: Arc::clone(&state.clock),
            metrics: Arc::clone(&state.metrics),
            wakeup: Arc::clone(&state.inbox_wakeup),
            handler: Arc::new(move |item| {
                let pipeline = pipeline.clone();
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
        };
        inbox.start(move |cancel| processor.run(cancel));

        // Started last, stopped first: it replays through the other two.
        state.reconciler.start();

        tracing::info!(%addr, db = %state.config.db_path.display(), rules = %state.rules.current().version(), "orch listening");
        let app = crate::http::router(state.clone());
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await;

        state.reconciler.stop(STOP_TIMEOUT).await;
        inbox.stop(STOP_TIMEOUT).await;
        worker.stop(STOP_TIMEOUT).await;
        for (service, _) in &dispatchers {
            service.stop(STOP_TIMEOUT).await;
        }
        drop(watcher);
        served.context("HTTP server failed")?;
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
