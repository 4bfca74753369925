//! One place that builds outbound HTTP clients.
//!
//! reqwest is built with `rustls-no-provider` (ring is much cheaper to compile than aws-lc on
//! a 2-core machine), so the process-wide rustls crypto provider must be installed before the
//! first `Client` is built. Every client in orch goes through [`build`], which does that once.

use std::sync::Once;
use std::time::Duration;

static INSTALL: Once = Once::new();

/// Installs ring as the process-wide rustls provider; idempotent and safe to call from tests.
pub fn install_crypto() {
    INSTALL.call_once(|| {
        // Err means another provider is already installed, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A reqwest client with sane timeouts for talking to Plane, Gitea and Telegram.
pub fn build(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    install_crypto();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5).min(timeout))
        .user_agent(concat!("orch/", env!("CARGO_PKG_VERSION")))
        .build()
}
