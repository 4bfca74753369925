//! The engine under simulation, in a runtime of its own so it can be killed.
//!
//! A kill drops the runtime with everything in flight (requests, agents' supervision, the
//! dispatchers mid-call, sweeps mid-page): nothing stops gracefully, as with `kill -9`. What
//! cannot be interrupted in-process is a SQLite transaction already handed to the blocking
//! pool; it commits or rolls back whole, which is what SQLite guarantees a real kill too.

use anyhow::Context;
use tokio::sync::oneshot;

use crate::app::{AppState, Application};
use crate::config::Config;

pub(crate) struct Engine {
    runtime: Option<tokio::runtime::Runtime>,
    pub state: AppState,
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Engine {
    /// Builds and starts `orch serve` on `cfg` (its database, rules and peers).
    pub(crate) async fn start(cfg: Config) -> anyhow::Result<Engine> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("orch-engine")
            .enable_all()
            .build()
            .context("starting the engine's runtime")?;
        let app = runtime
            .spawn(Application::build(cfg))
            .await
            .context("building the engine")??;
        let url = format!("http://{}", app.local_addr()?);
        let state = app.state().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = runtime.spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        Ok(Engine {
            runtime: Some(runtime),
            state,
            url,
            stop: Some(stop),
            server: Some(server),
        })
    }

    /// Kills the engine: no graceful stop, every task dropped where it is.
    pub(crate) fn kill(&mut self) {
        self.stop.take();
        self.server.take();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }

    /// Stops the engine as SIGTERM would.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
