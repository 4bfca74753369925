//! Clients for the peers: Plane (tracker), Gitea (forge), Telegram (notifier).
//!
//! Each peer sits behind a small dyn-compatible trait with one real HTTP implementation and a
//! `Disabled` one. A peer without credentials is disabled with a single log line at startup;
//! its calls are logged no-ops, never errors, so `orch serve` runs with nothing configured.
//! Tests point the real clients at local HTTP servers (wiremock, the simulation's fakes)
//! instead of mocking these traits.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;

pub mod gitea;
pub mod plane;
pub mod retry;
pub mod telegram;

pub use gitea::{Branch, CiState, CombinedStatus, Forge};
pub use plane::{PlaneStateInfo, PlaneWorkItem, Tracker, WorkItemPage};
pub use telegram::Notifier;

/// A failed call to a peer. Never contains a token: URLs are reported by path only.
#[derive(Debug, thiserror::Error)]
pub enum IntegrationError {
    #[error("{peer} {op} {path}: request failed: {message}")]
    Transport {
        peer: &'static str,
        op: &'static str,
        path: String,
        message: String,
    },
    #[error("{peer} {op} {path}: HTTP {status}: {body}")]
    Status {
        peer: &'static str,
        op: &'static str,
        path: String,
        status: u16,
        body: String,
    },
    #[error("{peer} {op} {path}: unexpected response: {message}")]
    Decode {
        peer: &'static str,
        op: &'static str,
        path: String,
        message: String,
    },
    #[error("{peer} {op} {path}: rate limited (retry after {retry_after:?})")]
    RateLimited {
        peer: &'static str,
        op: &'static str,
        path: String,
        retry_after: Duration,
    },
    #[error("{peer}: {message}")]
    Invalid { peer: &'static str, message: String },
}

impl IntegrationError {
    /// Worth another attempt: the network or the server failed, not the request.
    pub fn is_transient(&self) -> bool {
        match self {
            IntegrationError::Transport { .. } | IntegrationError::RateLimited { .. } => true,
            IntegrationError::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// The three peers, ready for the pipeline.
#[derive(Clone)]
pub struct Integrations {
    pub tracker: Arc<dyn Tracker>,
    pub forge: Arc<dyn Forge>,
    pub notifier: Arc<dyn Notifier>,
}

/// Builds the clients the configuration has credentials for; logs one line for each peer
/// that is disabled.
pub fn from_config(cfg: &Config) -> Result<Integrations, IntegrationError> {
    let policy = retry::RetryPolicy {
        max_retries: cfg.http.retries,
        min_delay: cfg.http.retry_base_delay,
        max_delay: std::time::Duration::from_secs(5).max(cfg.http.retry_base_delay),
        attempt_timeout: cfg.http.timeout,
        ..retry::RetryPolicy::default()
    };
    let tracker: Arc<dyn Tracker> = match (
        &cfg.plane.url,
        &cfg.plane.api_token,
        &cfg.plane.workspace,
    ) {
        (Some(url), Some(token), Some(ws)) => Arc::new(plane::HttpPlane::new(
            url,
            token.clone(),
            ws,
            cfg.plane.requests_per_minute,
            policy.clone(),
        )?),
        _ => {
            tracing::info!(
                "plane integration disabled: ORCH_PLANE_URL, ORCH_PLANE_API_TOKEN and ORCH_PLANE_WORKSPACE are not all set"
            );
            Arc::new(plane::DisabledPlane)
        }
    };
    let forge: Arc<dyn Forge> = match (&cfg.gitea.url, &cfg.gitea.token) {
        (Some(url), Some(token)) => {
            Arc::new(gitea::HttpGitea::new(url, token.clone(), policy.clone())?)
        }
        _ => {
            tracing::info!("gitea integration disabled: ORCH_GITEA_URL/ORCH_GITEA_TOKEN not set");
            Arc::new(gitea::DisabledGitea)
        }
    };
    let notifier: Arc<dyn Notifier> = match (&cfg.telegram.bot_token, &cfg.telegram.chat_id) {
        (Some(token), Some(chat)) => Arc::new(telegram::HttpTelegram::new(
            &cfg.telegram.api_url,
            token.clone(),
            chat,
            policy.clone(),
        )?),
        _ => {
            tracing::info!(
                "telegram integration disabled: ORCH_TELEGRAM_BOT_TOKEN/ORCH_TELEGRAM_CHAT_ID not set"
            );
            Arc::new(telegram::DisabledTelegram)
        }
    };
    Ok(Integrations {
        tracker,
        forge,
        notifier,
    })
}

/// The HTTP client of one peer; a failure names the peer.
pub(crate) fn client(
    peer: &'static str,
    attempt_timeout: Duration,
) -> Result<reqwest::Client, IntegrationError> {
    crate::http_client::build(attempt_timeout).map_err(|e| IntegrationError::Invalid {
        peer,
        message: format!("cannot build HTTP client: {e}"),
    })
}

/// The body of an error response, shortened for messages.
pub(crate) fn excerpt(body: &str) -> String {
    const MAX: usize = 300;
    let body = body.trim();
    if body.len() <= MAX {
        return body.to_string();
    }
    let mut end = MAX;
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &body[..end])
}
