//! Load benchmark for webhook intake: the real server on loopback, the inbox on disk.
//!
//! Drives `POST /webhooks/plane` with distinct signed deliveries from a fixed number of
//! concurrent connections and reports sustained deliveries/s and p50/p99 latency.
//!
//! Run: `cargo bench --bench webhook_load` (env: `LOAD_REQUESTS`, `LOAD_CONCURRENCY`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use orch::app::Application;
use orch::config::Config;
use orch::secret::Secret;
use sha2::Sha256;

const SECRET: &str = "plane_wh_bench";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn body(i: usize) -> Vec<u8> {
    // A realistic Plane v1 state change, made unique per request so nothing is deduplicated.
    format!(
        r##"{{"event": "issue", "action": "updated", "webhook_id": "8944ed18-1331-4eae-b9bb-7c40864b8abd", "workspace_id": "b54ecb0d-e3eb-4986-b238-f83fd8665e65", "data": {{"id": "775c5716-5302-4617-bb9f-{i:012}", "name": "Load item {i}", "sequence_id": {i}, "project": "00000000-0000-4000-8000-00000000bench", "state": {{"id": "067b88e5-304b-4221-ba09-94340dcc36e5", "name": "Backlog", "color": "#60646C", "group": "backlog"}}, "labels": [], "updated_at": "2026-05-19T14:02:47.550219Z"}}, "activity": {{"field": "state_id", "new_value": "067b88e5-304b-4221-ba09-94340dcc36e5", "old_value": null, "actor": {{"id": "88fc36c8-73b0-4547-81c7-96b70f61835e", "display_name": "raj"}}}}}}"##
    )
    .into_bytes()
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("hmac key");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn main() {
    let requests = env_usize("LOAD_REQUESTS", 20_000);
    let concurrency = env_usize("LOAD_CONCURRENCY", 8);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = Config {
            db_path: dir.path().join("orch.db"),
            repos_dir: dir.path().join("repos"),
            listen: "127.0.0.1:0".parse().expect("addr"),
            rules_dir: std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules"),
            plane: orch::config::PlaneConfig {
                webhook_secret: Some(Secret::new(SECRET)),
                ..Default::default()
            },
            ..Config::default()
        };
        let app = Application::build(cfg).await.expect("build");
        let url = format!("http://{}/webhooks/plane", app.local_addr().expect("addr"));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until(async move {
            let _ = stop_rx.await;
        }));

        let bodies: Arc<Vec<(Vec<u8>, String)>> = Arc::new(
            (0..requests)
                .map(|i| {
                    let b = body(i);
                    let s = sign(&b);
                    (b, s)
                })
                .collect(),
        );
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let started = Instant::now();
        let mut handles = Vec::new();
        for _ in 0..concurrency {
            let client = orch::http_client::build(Duration::from_secs(10)).expect("client");
            let (url, bodies, next) = (url.clone(), bodies.clone(), next.clone());
            handles.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut failures = 0usize;
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= bodies.len() {
                        break;
                    }
                    let (body, sig) = &bodies[i];
                    let t = Instant::now();
                    let r = client
                        .post(&url)
                        .header("X-Plane-Event", "issue")
                        .header("X-Plane-Signature", sig)
                        .body(body.clone())
                        .send()
                        .await;
                    lat.push(t.elapsed());
                    if !r.map(|r| r.status().as_u16() == 202).unwrap_or(false) {
                        failures += 1;
                    }
                }
                (lat, failures)
            }));
        }
        let mut all = Vec::with_capacity(requests);
        let mut failures = 0;
        for h in handles {
            let (lat, f) = h.await.expect("load task");
            all.extend(lat);
            failures += f;
        }
        let elapsed = started.elapsed();
        all.sort();
        println!(
            "webhook intake: {requests} deliveries, {concurrency} connections, inbox on disk (WAL)"
        );
        println!(
            "  throughput  {:>10.0} deliveries/s",
            requests as f64 / elapsed.as_secs_f64()
        );
        println!(
            "  p50         {:>10.2} ms",
            percentile(&all, 0.50).as_secs_f64() * 1e3
        );
        println!(
            "  p99         {:>10.2} ms",
            percentile(&all, 0.99).as_secs_f64() * 1e3
        );
        println!(
            "  max         {:>10.2} ms",
            all.last().copied().unwrap_or_default().as_secs_f64() * 1e3
        );
        println!("  non-202     {failures}");
        let _ = stop_tx.send(());
        let _ = server.await;
    });
}
