//! Telegram Bot API: `sendMessage` to one chat.

use async_trait::async_trait;
use serde_json::json;

use super::IntegrationError;
use super::retry::{RetryPolicy, execute};
use crate::secret::Secret;

#[async_trait]
pub trait Notifier: Send + Sync {
    async fn send(&self, text: &str) -> Result<(), IntegrationError>;
}

pub struct HttpTelegram {
    client: reqwest::Client,
    api_url: String,
    token: Secret,
    chat_id: String,
    retry: RetryPolicy,
}

impl HttpTelegram {
    pub fn new(
        api_url: &str,
        token: Secret,
        chat_id: &str,
        retry: RetryPolicy,
    ) -> Result<Self, IntegrationError> {
        let client = super::client("telegram", retry.attempt_timeout)?;
        Ok(HttpTelegram {
            client,
            api_url: api_url.trim_end_matches('/').to_string(),
            token,
            chat_id: chat_id.to_string(),
            retry,
        })
    }
}

#[async_trait]
impl Notifier for HttpTelegram {
    async fn send(&self, text: &str) -> Result<(), IntegrationError> {
        let url = format!("{}/bot{}/sendMessage", self.api_url, self.token.expose());
        let body =
            json!({ "chat_id": self.chat_id, "text": text, "disable_web_page_preview": true });
        // The path is reported without the token.
        execute(
            "telegram",
            "sendMessage",
            "/bot***/sendMessage",
            &self.retry,
            &[],
            || self.client.post(&url).json(&body),
        )
        .await?;
        Ok(())
    }
}

/// Telegram without credentials: messages are logged at debug level and dropped.
pub struct DisabledTelegram;

#[async_trait]
impl Notifier for DisabledTelegram {
    async fn send(&self, text: &str) -> Result<(), IntegrationError> {
        tracing::debug!(text, "telegram disabled; message not sent");
        Ok(())
    }
}
