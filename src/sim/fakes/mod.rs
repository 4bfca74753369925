//! In-process fake Plane and Gitea: real HTTP servers speaking the subset of the peers' APIs
//! orch uses, so the simulation runs orch's real clients, webhooks and reconciler unchanged.
//!
//! Webhooks the fakes send (Plane state changes by the simulated humans, Gitea CI statuses)
//! are dropped with a seeded probability: that is the chaos the reconciler must heal.

use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod gitea;
mod plane;

pub use gitea::FakeGitea;
pub use plane::{FakeComment, FakePlane, PlaneData, PlaneItem, PlaneRequests};

pub const STATES: &[(&str, &str)] = &[
    ("Backlog", "backlog"),
    ("In Progress", "started"),
    ("In Review", "started"),
    ("Approved", "started"),
    ("Rejected", "started"),
    ("Needs Input", "started"),
    ("Blocked", "started"),
    ("Done", "completed"),
    ("Cancelled", "cancelled"),
];

pub fn state_id(name: &str) -> String {
    format!("state-{}", name.to_lowercase().replace(' ', "-"))
}

/// The states a fake Plane project has (name, group), and the two the fake marks on an item:
/// the one a person starts work with and the one a finished task shows.
#[derive(Debug, Clone)]
pub struct PlaneStates {
    pub all: Vec<(String, String)>,
    pub start: String,
    pub done: Option<String>,
}

impl Default for PlaneStates {
    /// Plane's states as the default rules name them.
    fn default() -> Self {
        PlaneStates {
            all: STATES
                .iter()
                .map(|(n, g)| (n.to_string(), g.to_string()))
                .collect(),
            start: "In Progress".into(),
            done: Some("Done".into()),
        }
    }
}

impl PlaneStates {
    pub(super) fn name_of(&self, id: &str) -> Option<String> {
        self.all
            .iter()
            .find(|(n, _)| state_id(n) == id)
            .map(|(n, _)| n.clone())
    }

    pub(super) fn group_of(&self, name: &str) -> String {
        self.all
            .iter()
            .find(|(n, _)| n == name)
            .map_or_else(|| "started".to_string(), |(_, g)| g.clone())
    }
}

/// Sends webhooks to orch, dropping some on purpose.
pub struct Hooks {
    client: reqwest::Client,
    /// The live engines' URLs, as a load balancer sees them; a restarted engine listens
    /// elsewhere.
    targets: Mutex<Vec<String>>,
    drop_rate: f64,
    /// Every delivery is signed, so the chaos run goes through signature checks as in production.
    secret: String,
    rng: Mutex<StdRng>,
    pub sent: std::sync::atomic::AtomicU64,
    pub dropped: std::sync::atomic::AtomicU64,
    /// Deliveries orch refused (an HTTP error): a healthy run has none.
    pub rejected: std::sync::atomic::AtomicU64,
    /// Deliveries that found no orch to answer (it was being killed and restarted): lost
    /// webhooks like a 502 during a deploy, healed like the dropped ones.
    pub unreachable: std::sync::atomic::AtomicU64,
}

impl Hooks {
    pub fn new(
        target: String,
        secret: String,
        drop_rate: f64,
        seed: u64,
    ) -> Result<Hooks, reqwest::Error> {
        Ok(Hooks {
            client: crate::http_client::build(Duration::from_secs(5))?,
            targets: Mutex::new(vec![target]),
            drop_rate,
            secret,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            sent: Default::default(),
            dropped: Default::default(),
            rejected: Default::default(),
            unreachable: Default::default(),
        })
    }

    /// Points the webhooks at the live engines (after every kill and restart).
    pub fn set_targets(&self, urls: Vec<String>) {
        *self.targets.lock().unwrap_or_else(|p| p.into_inner()) = urls;
    }

    /// The engines to try for one delivery, as a load balancer would: one picked with the
    /// seeded RNG, then the next once if that one refuses the connection.
    fn pick(&self) -> Vec<String> {
        let targets = self
            .targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match targets.len() {
            0 => Vec::new(),
            1 => targets,
            n => {
                let first = {
                    let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
                    rng.random_range(0..n)
                };
                vec![targets[first].clone(), targets[(first + 1) % n].clone()]
            }
        }
    }

    fn dropped_now(&self) -> bool {
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        rng.random::<f64>() < self.drop_rate
    }

    /// Delivers (or drops on purpose) one webhook, signed in `signature_header`.
    pub async fn send(
        &self,
        path: &str,
        signature_header: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) {
        use hmac::{Hmac, KeyInit, Mac};
        use std::sync::atomic::Ordering;
        if self.dropped_now() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let signature = match Hmac::<sha2::Sha256>::new_from_slice(self.secret.as_bytes()) {
            Ok(mut mac) => {
                mac.update(&body);
                hex::encode(mac.finalize().into_bytes())
            }
            Err(_) => String::new(),
        };
        let mut last_error = None;
        for target in self.pick() {
            let mut req = self
                .client
                .post(format!("{target}{path}"))
                .header(signature_header, signature.as_str())
                .body(body.clone());
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            match req.send().await {
                Ok(r) if r.status().is_success() => {
                    self.sent.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Ok(r) => {
                    tracing::warn!(status = %r.status(), path, "orch refused a simulated webhook");
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                // A replica just killed refuses the connection: the balancer tries the next.
                Err(e) if e.is_connect() => last_error = Some(e),
                // Anything else may have reached orch: not sent twice.
                Err(e) => {
                    last_error = Some(e);
                    break;
                }
            }
        }
        let error = last_error.map_or_else(|| "no engine is up".to_string(), |e| e.to_string());
        tracing::info!(error, path, "a simulated webhook did not reach orch");
        self.unreachable.fetch_add(1, Ordering::Relaxed);
    }
}
