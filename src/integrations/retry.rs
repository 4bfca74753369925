//! One HTTP exchange with bounded retries (backon): network errors, 5xx and 429 are retried
//! with exponential backoff; a 429's `Retry-After` replaces the computed delay (capped).

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::header::HeaderMap;

use super::{IntegrationError, excerpt};

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// The longest `Retry-After` honoured; a longer one is cut to this.
    pub max_retry_after: Duration,
    /// The whole of one attempt (connect, send, read the reply); a slower peer counts as a
    /// network error and is retried.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(15),
        }
    }
}

impl RetryPolicy {
    /// Fast retries for tests.
    #[cfg_attr(orch_audit, allow(dead_code))]
    pub fn fast() -> Self {
        RetryPolicy {
            max_retries: 3,
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            max_retry_after: Duration::from_millis(1500),
            attempt_timeout: Duration::from_secs(5),
        }
    }
}

/// A successful (or explicitly accepted) response.
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

/// Sends the request built by `build` until it succeeds, fails for good, or runs out of
/// retries. Statuses in `accept` (e.g. 404, 409) are returned as replies, not errors.
pub async fn execute(
    peer: &'static str,
    op: &'static str,
    path: &str,
    policy: &RetryPolicy,
    accept: &[u16],
    build: impl Fn() -> reqwest::RequestBuilder,
) -> Result<Reply, IntegrationError> {
    execute_paced(
        peer,
        op,
        path,
        policy,
        accept,
        || std::future::ready(()),
        build,
    )
    .await
}

/// [`execute`], waiting for `pace` before every attempt, retries included, so a peer's rate
/// limit holds even while requests are being retried.
pub async fn execute_paced<P, F>(
    peer: &'static str,
    op: &'static str,
    path: &str,
    policy: &RetryPolicy,
    accept: &[u16],
    pace: P,
    build: impl Fn() -> reqwest::RequestBuilder,
) -> Result<Reply, IntegrationError>
where
    P: Fn() -> F,
    F: std::future::Future<Output = ()>,
{
    let attempt = || async {
        pace().await;
        let resp = build()
            .send()
            .await
            .map_err(|e| IntegrationError::Transport {
                peer,
                op,
                path: path.to_string(),
                // reqwest's message can include the URL; strip it so no query token ever leaks.
                message: e.without_url().to_string(),
            })?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        if status == 429 {
            let secs = headers
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(60);
            return Err(IntegrationError::RateLimited {
                peer,
                op,
                path: path.to_string(),
                retry_after: Duration::from_secs(secs).min(policy.max_retry_after),
            });
        }
        let body = resp.text().await.map_err(|e| IntegrationError::Transport {
            peer,
            op,
            path: path.to_string(),
            message: e.without_url().to_string(),
        })?;
        if (200..300).contains(&status) || accept.contains(&status) {
            Ok(Reply {
                status,
                headers,
                body,
            })
        } else {
            Err(IntegrationError::Status {
                peer,
                op,
                path: path.to_string(),
                status,
                body: excerpt(&body),
            })
        }
    };
    let backoff = ExponentialBuilder::default()
        .with_min_delay(policy.min_delay)
        .with_max_delay(policy.max_delay)
        .with_max_times(policy.max_retries)
        .with_jitter();
    attempt
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(IntegrationError::is_transient)
        .adjust(|e, delay| match e {
            IntegrationError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => delay,
        })
        .notify(|e, after| tracing::debug!(error = %e, ?after, "retrying"))
        .await
}

/// Decodes a JSON reply body, naming the operation on failure.
pub fn decode<T: serde::de::DeserializeOwned>(
    peer: &'static str,
    op: &'static str,
    path: &str,
    reply: &Reply,
) -> Result<T, IntegrationError> {
    serde_json::from_str(&reply.body).map_err(|e| IntegrationError::Decode {
        peer,
        op,
        path: path.to_string(),
        message: e.to_string(),
    })
}
