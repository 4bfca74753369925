//! Logging setup: human-readable by default, JSON for machines, level from `RUST_LOG`.

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global subscriber. Safe to call more than once (later calls are no-ops), so
/// tests that start several apps in one process do not fight over it.
pub fn init(format: LogFormat) {
    init_with_default(format, "info");
}

/// Like [`init`], with the level used when `RUST_LOG` is not set (`orch simulate` keeps the
/// engine quiet so its progress line stays readable).
pub fn init_with_default(format: LogFormat, default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
