//! Durations as the configuration writes them (`90s`, `10m`, `1h30m`), shared by every
//! module that owns settings.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("duration {0:?} is too large")]
    TooLarge(String),
    #[error("invalid duration {text:?}: unknown unit {unit:?} (use ms, s, m, h or d)")]
    UnknownUnit { text: String, unit: char },
    #[error("invalid duration {text:?}: a number must precede {unit:?}")]
    NoNumber { text: String, unit: &'static str },
    #[error("invalid duration {0:?}: the last number has no unit (use ms, s, m, h or d)")]
    NoUnit(String),
}

/// A duration written as `90s`, `10m`, `1h`, `30d` or a combination (`1h30m`); a bare number
/// (integer or all-digit string) is seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    pub(crate) fn parse(text: &str) -> Result<Duration, DurationError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(DurationError::Empty);
        }
        // A bare number is seconds, also as a string (`"600"`, or `${TTL}` from the environment).
        if text.bytes().all(|b| b.is_ascii_digit()) {
            return text
                .parse()
                .map(Duration::from_secs)
                .map_err(|_| DurationError::TooLarge(text.to_owned()));
        }
        let mut total_ms: u64 = 0;
        let mut digits = String::new();
        let mut chars = text.chars().peekable();
        while let Some(ch) = chars.next() {
            if ch.is_ascii_digit() {
                digits.push(ch);
                continue;
            }
            let (unit, unit_ms) = match ch {
                'm' if chars.peek() == Some(&'s') => {
                    chars.next();
                    ("ms", 1)
                }
                's' => ("s", 1_000),
                'm' => ("m", 60_000),
                'h' => ("h", 3_600_000),
                'd' => ("d", 86_400_000),
                _ => {
                    return Err(DurationError::UnknownUnit {
                        text: text.to_owned(),
                        unit: ch,
                    });
                }
            };
            let amount: u64 = digits.parse().map_err(|_| DurationError::NoNumber {
                text: text.to_owned(),
                unit,
            })?;
            total_ms = amount
                .checked_mul(unit_ms)
                .and_then(|ms| total_ms.checked_add(ms))
                .ok_or_else(|| DurationError::TooLarge(text.to_owned()))?;
            digits.clear();
        }
        if !digits.is_empty() {
            return Err(DurationError::NoUnit(text.to_owned()));
        }
        Ok(Duration::from_millis(total_ms))
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Seconds(secs) => Ok(ConfigDuration(Duration::from_secs(secs))),
            Raw::Text(text) => ConfigDuration::parse(&text)
                .map(ConfigDuration)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Durations that become token times and windows are kept to the second: a fraction would be
/// cut off silently (`500ms` would be no window at all), so it is refused.
pub(crate) fn whole_seconds(
    field: &str,
    value: impl Into<Duration>,
    at_least: u64,
) -> Option<String> {
    let value: Duration = value.into();
    if value.subsec_nanos() != 0 {
        Some(format!(
            "{field}: must be whole seconds ({}ms given)",
            value.as_millis()
        ))
    } else if value.as_secs() < at_least {
        Some(format!("{field}: must be at least {at_least}s"))
    } else {
        None
    }
}

impl From<ConfigDuration> for Duration {
    fn from(value: ConfigDuration) -> Self {
        value.0
    }
}

impl From<&ConfigDuration> for Duration {
    fn from(value: &ConfigDuration) -> Self {
        value.0
    }
}

/// For a plain `Duration` field of a settings type:
/// `#[serde(deserialize_with = "crate::duration::deserialize")]`.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    ConfigDuration::deserialize(deserializer).map(Duration::from)
}
