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

use crate::clock::Timestamp;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, DEFAULT_RULES_DIR, PlaneSince};
use crate::git::Git;
pub use crate::http::{AppState, Loops};
use crate::metrics::Metrics;
use crate::outbox::Failpoint;
use crate::pipeline::Pipeline;
use crate::reconciler::{ReconcileState, Reconciler};
use crate::store::Store;
use crate::store::outbox::Peer;

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
        let store = Store::open_configured(config.db_url.as_deref(), &config.db_path)
            .with_context(|| match &config.db_url {
                Some(url) => format!("opening the database at {}", crate::store::redact_url(url)),
                None => format!("opening the database at {}", config.db_path.display()),
            })?;
        rules.set_guard(stage_guard(store.clone(), Arc::clone(&clock)));
        let shadow = load_shadow(&config)?;
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
            shadow: shadow.clone(),
        };
        let reconcile = Arc::new(Mutex::new(ReconcileState::default()));
        let plane_since = plane_since(&store, &config, clock.as_ref())?;
        let reconciler = Reconciler::new(pipeline.clone(), Arc::clone(&reconcile), plane_since);
        let loops = Arc::new(Loops::new(&metrics));
        let replica = crate::replica::ReplicaId::generate(config.replicas.name.as_deref());
        let leases = Arc::new(crate::lease::Leases::new(
            &store,
            &replica,
            config.replicas.lease_ttl,
            &metrics,
        ));
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
                loops,
                replica,
                liveness: Default::default(),
                leases,
            },
        })
    }
}

/// The shadow rule set (`--shadow-rules`, `rules.shadow_dir`): it must exist and be valid at
/// startup, like the live one — a candidate silently missing would report no divergences and
/// look like agreement.
fn load_shadow(config: &Config) -> anyhow::Result<Option<Arc<crate::pipeline::Shadow>>> {
    let Some(dir) = &config.shadow_rules_dir else {
        return Ok(None);
    };
    let rules = crate::policy::load_dir(dir).map_err(|e| {
        anyhow::anyhow!("the shadow rule set in {} is invalid:\n{e}", dir.display())
    })?;
    tracing::info!(dir = %dir.display(), version = %rules.version(), "shadow rules loaded: evaluated beside the live rules, never acting");
    let handle = crate::policy::RulesHandle::new(rules, dir.clone());
    Ok(Some(crate::pipeline::Shadow::new(handle)))
}

/// The oldest Plane change the Plane-side sweep may replay: the configured bound, or the
/// database's first start (recorded on it once), so that a new install does not start
/// agents on every In Progress item of the backlog.
fn plane_since(store: &Store, config: &Config, clock: &dyn Clock) -> anyhow::Result<Timestamp> {
    const KEY: &str = "orch.first_start";
    let now = clock.now();
    let first = store
        .call_sync(|c| {
            if let Some(v) = crate::store::kv::get(c, KEY)?
                && let Ok(ms) = v.parse::<i64>()
            {
                return Ok(Timestamp::from_millis(ms));
            }
            crate::store::kv::set(c, KEY, &now.as_millis().to_string())?;
            Ok(now)
        })
        .context("recording the database's first start")?;
    Ok(match config.reconcile.plane_since {
        None => first,
        Some(PlaneSince::Now) => now,
        Some(PlaneSince::At(t)) => t,
    })
}

/// Refuses a reload that would strand tasks in a stage the new rules no longer have, and
/// moves the tasks of a renamed stage (`renamed_from`) before the new rules are swapped in.
fn stage_guard(store: Store, clock: Arc<dyn Clock>) -> crate::policy::ReloadGuard {
    Arc::new(move |old, new| {
        let gone: Vec<&str> = old
            .stages()
            .iter()
            .map(|s| s.name.as_str())
            .filter(|n| new.stage(n).is_none())
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        let counts = store
            .call_sync(crate::store::tasks::counts_by_stage)
            .map_err(|e| format!("cannot count the tasks in the stages the new rules drop: {e}"))?;
        let tasks_in = |stage: &str| {
            counts
                .iter()
                .find(|(s, _)| s == stage)
                .map_or(0, |(_, n)| *n)
        };
        let successor = |stage: &str| {
            new.stages()
                .iter()
                .find(|s| s.renamed_from.iter().any(|r| r == stage))
                .map(|s| s.name.clone())
        };
        let stranded: Vec<String> = gone
            .iter()
            .filter(|g| successor(g).is_none() && tasks_in(g) > 0)
            .map(|g| format!("stage {g} ({} tasks in it)", tasks_in(g)))
            .collect();
        if !stranded.is_empty() {
            return Err(format!(
                "the new rules drop {} — finish or move those tasks first, or name the old stage in renamed_from = [\"…\"] on the stage that replaces it",
                stranded.join(", ")
            ));
        }
        for from in gone {
            let Some(to) = successor(from) else { continue };
            let (version, now) = (new.version().to_string(), clock.now());
            let moved = store
                .call_sync(|c| crate::store::tasks::rename_stage(c, from, &to, &version, now))
                .map_err(|e| format!("cannot move the tasks of stage {from} to {to}: {e}"))?;
            tracing::info!(from, to = %to, moved, "stage renamed by the rules; its tasks follow");
        }
        Ok(())
    })
}

/// A built, bound, not yet running service.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    failpoints: Vec<(Peer, Failpoint)>,
    systemd: bool,
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
            failpoints: Vec::new(),
            systemd: false,
        })
    }

    /// Crash injection for tests: `peer`'s background dispatcher runs with `failpoint` (which
    /// may stop it at a step boundary, or panic to exercise the supervisor).
    #[cfg_attr(orch_audit, allow(dead_code))]
    pub fn set_dispatcher_failpoint(&mut self, peer: Peer, failpoint: Failpoint) {
        self.failpoints.push((peer, failpoint));
    }

    /// Tells systemd when the service is ready and pets its watchdog while the loops run
    /// (`orch serve`; a no-op when `NOTIFY_SOCKET` is unset). Off by default so tests and
    /// one-shot commands never talk to a service manager they happen to run under.
    pub fn notify_systemd(&mut self) {
        self.systemd = true;
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

        recover_after_last_process(&state).await?;
        // Registered before anything claims a job: a job is claimed by a known replica.
        let heartbeat = heartbeat(&state, addr);
        heartbeat
            .register()
            .await
            .context("registering this replica")?;
        warn_about_unsigned_webhooks(&state.config);
        let watcher = match crate::policy::watch(state.rules.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, dir = %state.config.rules_dir.display(), "rule hot reload is off");
                None
            }
        };
        // The shadow set is hot-reloaded like the live one (no reload guard: it moves no task).
        let shadow_watcher = state.pipeline.shadow.as_ref().and_then(|s| {
            crate::policy::watch(s.rules.clone())
                .map_err(|e| tracing::warn!(error = %e, "shadow rule hot reload is off"))
                .ok()
        });

        // Every loop is supervised: each start takes a fresh future from its factory, so a
        // crashed loop is rebuilt from the same cheap handles (store, pipeline, clients).
        // Started first, stopped last: everything else owes them effects. Each dispatches only
        // while this process holds its peer's lease; Plane's only under `sweep` too, so the
        // sweep and the dispatcher, orch's only Plane callers, share one replica's budget.
        let loops = Arc::clone(&state.loops);
        let beat = Arc::clone(&heartbeat);
        loops.heartbeat.start(move |cancel| Arc::clone(&beat).run(cancel));
        for peer in Peer::ALL {
            let s = state.clone();
            let failpoint = self
                .failpoints
                .iter()
                .find(|(p, _)| *p == peer)
                .map(|(_, f)| Arc::clone(f));
            let (lease, under) = match peer {
                Peer::Plane => (
                    Arc::clone(&state.leases.dispatch_plane),
                    Some(Arc::clone(&state.leases.sweep)),
                ),
                Peer::Telegram => (Arc::clone(&state.leases.dispatch_telegram), None),
            };
            loops.dispatcher(peer).start(move |cancel| {
                let (s, failpoint) = (s.clone(), failpoint.clone());
                Arc::clone(&lease).run(cancel, under.clone(), move |held| {
                    let mut d = s.dispatcher(peer);
                    d.failpoint = failpoint.clone();
                    d.run_leased(held)
                })
            });
        }

        let pipeline = state.pipeline.clone();
        let concurrency = state.config.worker.concurrency;
        let (replica, liveness) = (state.replica.clone(), Arc::clone(&state.liveness));
        loops.worker.start(move |cancel| {
            crate::worker::Worker {
                pipeline: pipeline.clone(),
                concurrency,
                poll: Duration::from_secs(1),
                replica: replica.clone(),
                liveness: Arc::clone(&liveness),
            }
            .run(cancel)
        });

        let processor = inbox_processor(&state);
        loops
            .inbox
            .start(move |cancel| processor.clone().run(cancel));

        // Started last, stopped first: it replays through the other two. It sweeps while this
        // process holds the `sweep` lease.
        state
            .reconciler
            .start_leased(Arc::clone(&state.leases.sweep));

        tracing::info!(%addr, db = %state.store.location(), rules = %state.rules.current().version(), "orch listening");
        let app = crate::http::router(state.clone());
        // The listener is bound and every loop started: connections queue until `serve` takes
        // them, so this is the moment to say so.
        let watchdog = self.systemd.then(|| {
            let s = state.clone();
            crate::systemd::ready(move || s.loops_down().is_empty())
        });
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        if let Some(watchdog) = watchdog {
            watchdog.stopping().await;
        }

        state.reconciler.stop(STOP_TIMEOUT).await;
        loops.inbox.stop(STOP_TIMEOUT).await;
        loops.worker.stop(STOP_TIMEOUT).await;
        for peer in Peer::ALL {
            loops.dispatcher(peer).stop(STOP_TIMEOUT).await;
        }
        loops.heartbeat.stop(STOP_TIMEOUT).await;
        heartbeat.mark_stopped().await;
        drop(watcher);
        drop(shadow_watcher);
        served.context("HTTP server failed")?;
        tracing::info!("orch stopped");
        Ok(())
    }
}

mod run;
pub use run::shutdown_signal;
use run::{heartbeat, inbox_processor, recover_after_last_process, warn_about_unsigned_webhooks};
