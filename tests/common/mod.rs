//! Shared helpers for black-box tests: the real server on port 0 with a SQLite file in a
//! tempdir.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use orch::app::{AppState, Application};
use orch::config::Config;
use sha2::Sha256;

pub struct TestApp {
    pub base: String,
    pub state: AppState,
    pub dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// A config for tests: everything under a fresh tempdir, listening on a free port.
pub fn test_config(dir: &std::path::Path) -> Config {
    Config {
        db_path: dir.join("orch.db"),
        repos_dir: dir.join("repos"),
        listen: "127.0.0.1:0".parse().unwrap(),
        rules_dir: std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules"),
        ..Config::default()
    }
}

impl TestApp {
    pub async fn spawn(configure: impl FnOnce(&mut Config)) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = test_config(dir.path());
        configure(&mut cfg);
        Self::spawn_in(dir, cfg).await
    }

    pub async fn spawn_in(dir: tempfile::TempDir, cfg: Config) -> TestApp {
        let app = Application::build(cfg).await.unwrap();
        let base = format!("http://{}", app.local_addr().unwrap());
        let state = app.state().clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(app.run_until(async move {
            let _ = rx.await;
        }));
        TestApp {
            base,
            state,
            dir,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.unwrap().unwrap();
        }
    }
}

pub fn client() -> reqwest::Client {
    orch::http_client::build(Duration::from_secs(10)).unwrap()
}

pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Polls `cond` until it holds or the deadline passes.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}
