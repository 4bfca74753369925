//! Value parsers shared by the file and the environment, so a duration, a boolean or a
//! number means the same wherever an operator writes it. The duration syntax itself is
//! [`crate::duration`]'s, shared with the rule files.
//!
//! Every failure is a [`ConfigError::Invalid`] that quotes the key and the value as written
//! and says what was expected: someone fixing a config needs all three, and a message
//! without the key sends them searching every source. `line_col` is public because the rule
//! loader places its errors with it too.

use std::net::SocketAddr;
use std::time::Duration;

use super::ConfigError;
use crate::duration::{self, DurationError};

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

pub(super) fn invalid(key: &str, value: &str, expected: &'static str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
        expected,
    }
}

/// Booleans as operators write them: true/false, 1/0, yes/no, on/off (any case).
pub fn parse_bool(key: &str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(invalid(key, v, "one of true/false/1/0/yes/no")),
    }
}

/// [`crate::duration::parse`], with errors that name the key.
pub fn parse_duration(key: &str, v: &str, plain_seconds: bool) -> Result<Duration, ConfigError> {
    duration::parse(v, plain_seconds).map_err(|e| match e {
        DurationError::Seconds(_) => invalid(key, v, "a number of seconds"),
        DurationError::Text(_) if plain_seconds => {
            invalid(key, v, "seconds, or a duration such as 90s, 10m, 2h")
        }
        DurationError::Text(_) => invalid(key, v, "a duration such as 90s, 10m, 2h"),
    })
}

pub(super) fn parse_listen(key: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.trim()
        .parse()
        .map_err(|_| invalid(key, v, "host:port, e.g. 127.0.0.1:8080"))
}

pub(super) fn parse_positive<T: std::str::FromStr + PartialOrd + Default>(
    key: &str,
    v: &str,
) -> Result<T, ConfigError> {
    match v.trim().parse::<T>() {
        Ok(n) if n > T::default() => Ok(n),
        _ => Err(invalid(key, v, "a positive whole number")),
    }
}

pub(super) fn positive<T: PartialOrd + Default + ToString>(
    key: &str,
    n: T,
) -> Result<T, ConfigError> {
    if n > T::default() {
        Ok(n)
    } else {
        Err(invalid(key, &n.to_string(), "a positive whole number"))
    }
}

/// A duration from the environment that must be positive; the error quotes the value as set.
pub(super) fn nonzero_env(
    key: &str,
    raw: &str,
    plain_seconds: bool,
) -> Result<Duration, ConfigError> {
    let d = parse_duration(key, raw, plain_seconds)?;
    if d.is_zero() {
        Err(invalid(key, raw, "a duration greater than zero"))
    } else {
        Ok(d)
    }
}

pub(super) fn nonzero(key: &str, d: Duration) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        Err(invalid(key, "0", "a duration greater than zero"))
    } else {
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_is_one_based() {
        assert_eq!(line_col("a\nbc", 3), (2, 2));
        assert_eq!(line_col("abc", 0), (1, 1));
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("k", "90s", false).unwrap(),
            Duration::from_secs(90)
        );
        assert_eq!(
            parse_duration("k", "10m", false).unwrap(),
            Duration::from_secs(600)
        );
        assert_eq!(
            parse_duration("k", "2h", false).unwrap(),
            Duration::from_secs(7200)
        );
        assert_eq!(
            parse_duration("k", "45", true).unwrap(),
            Duration::from_secs(45)
        );
        assert!(parse_duration("k", "45", false).is_err());
        assert!(parse_duration("k", "soon", true).is_err());
    }
}
