//! The one duration syntax orch reads — in `orch.toml`, `ORCH_*` variables, rule files and
//! scenario files — so `90s` or `10m` means the same wherever someone writes it.
//!
//! It sits below `config` and `policy` because both read durations and neither may depend on
//! the other for it. It returns why a text failed, not a message: each caller words its own
//! error, naming the key or place a person has to fix.

use std::num::ParseIntError;
use std::time::Duration;

/// Why a text is not a duration.
#[derive(Debug)]
pub enum DurationError {
    /// Plain digits, read as seconds, that do not fit in a `u64`.
    Seconds(ParseIntError),
    /// Not humantime's syntax (`90s`, `10m`, `1h 30m`).
    Text(humantime::DurationError),
}

/// `90s`, `10m`, `2h`, `1h 30m`, surrounding whitespace ignored. Plain digits are seconds
/// only when `plain_seconds` is set, by the readers that have always taken bare seconds
/// (`ORCH_*_S` variables, grace overrides, rule files, scenarios); elsewhere a text needs its
/// unit.
pub fn parse(text: &str, plain_seconds: bool) -> Result<Duration, DurationError> {
    let t = text.trim();
    if plain_seconds && !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(DurationError::Seconds);
    }
    humantime::parse_duration(t).map_err(DurationError::Text)
}

/// `base` doubled `doublings` times, never past `cap`: the one backoff arithmetic (agent
/// retries, the sweep's per-task error backoff), saturating instead of overflowing.
pub fn doubled(
    base: std::time::Duration,
    doublings: u32,
    cap: std::time::Duration,
) -> std::time::Duration {
    base.saturating_mul(2u32.saturating_pow(doublings.min(31)))
        .min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_digits_are_seconds_only_when_asked() {
        assert_eq!(parse(" 45 ", true).unwrap(), Duration::from_secs(45));
        assert!(matches!(parse("45", false), Err(DurationError::Text(_))));
        assert_eq!(parse("1h 30m", false).unwrap(), Duration::from_secs(5400));
        assert!(matches!(
            parse("99999999999999999999", true),
            Err(DurationError::Seconds(_))
        ));
        assert!(matches!(parse("soon", true), Err(DurationError::Text(_))));
    }
}
