//! A string that must never reach a log line or a `Debug` dump (tokens, webhook secrets).
//!
//! Backed by `secrecy`: the value is zeroed when dropped and only [`Secret::expose`] reads
//! it, so every place that sends a secret somewhere is one grep away.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

#[derive(Clone, Default)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(SecretString::from(s.into()))
    }

    /// The secret value itself; call only where it is sent to its destination.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("plane_wh_abcdef");
        assert!(!format!("{s:?}").contains("abcdef"));
        assert_eq!(s.expose(), "plane_wh_abcdef");
    }
}
