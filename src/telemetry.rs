//! Logging setup: human-readable by default, JSON for machines, level from `RUST_LOG`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global subscriber. Safe to call more than once (later calls are no-ops), so
/// tests that start several apps in one process do not fight over it.
#[cfg_attr(orch_audit, allow(dead_code))]
pub fn init(format: LogFormat) {
    init_with_default(format, "info");
}

/// Like [`init`], with the level used when `RUST_LOG` is not set (`orch simulate` keeps the
/// engine quiet so its progress line stays readable).
pub fn init_with_default(format: LogFormat, default: &str) {
    let (filter, bad_rust_log) = filter_from(std::env::var("RUST_LOG").ok().as_deref(), default);
    // Colour codes are for people at a terminal; under systemd, docker or a pipe they only
    // garble the journal.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if let Some((value, error)) = bad_rust_log {
        // Logged through the subscriber just installed, so it reaches wherever logs go.
        tracing::warn!(%value, %error, default, "RUST_LOG is not a valid filter; using the default level");
    }
}

/// The filter for `RUST_LOG` (unset or empty → `default`). An invalid value falls back to
/// `default` too, and is handed back with its parse error so the caller can say so: a typo in
/// the log level must not silently hide the logs someone asked for.
fn filter_from(rust_log: Option<&str>, default: &str) -> (EnvFilter, Option<(String, String)>) {
    match rust_log.map(str::trim).filter(|v| !v.is_empty()) {
        None => (EnvFilter::new(default), None),
        Some(value) => match EnvFilter::try_new(value) {
            Ok(filter) => (filter, None),
            Err(error) => (
                EnvFilter::new(default),
                Some((value.to_owned(), error.to_string())),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_or_empty_rust_log_uses_the_default_silently() {
        assert_eq!(filter_from(None, "info").0.to_string(), "info");
        assert_eq!(filter_from(Some("  "), "warn").0.to_string(), "warn");
        assert!(filter_from(None, "info").1.is_none());
    }

    #[test]
    fn a_valid_rust_log_is_used() {
        let (filter, bad) = filter_from(Some("orch=debug"), "info");
        assert_eq!(filter.to_string(), "orch=debug");
        assert!(bad.is_none());
    }

    #[test]
    fn an_invalid_rust_log_falls_back_and_is_reported() {
        let (filter, bad) = filter_from(Some("orch=loud"), "info");
        assert_eq!(filter.to_string(), "info");
        let (value, error) = bad.expect("the bad value is reported");
        assert_eq!(value, "orch=loud");
        assert!(!error.is_empty());
    }
}
