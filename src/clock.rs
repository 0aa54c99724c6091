//! The one place that reads the system time; everything else receives `UnixTime` as an argument.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Seconds since the Unix epoch: the unit of JWT `exp`/`iat` and of every expiry we store.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct UnixTime(pub i64);

impl UnixTime {
    pub fn plus(self, duration: Duration) -> UnixTime {
        let secs = i64::try_from(duration.as_secs()).unwrap_or(i64::MAX);
        UnixTime(self.0.saturating_add(secs))
    }

    pub(crate) fn minus(self, duration: Duration) -> UnixTime {
        let secs = i64::try_from(duration.as_secs()).unwrap_or(i64::MAX);
        UnixTime(self.0.saturating_sub(secs))
    }

    pub fn seconds(self) -> i64 {
        self.0
    }
}

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> UnixTime;
}

pub type SharedClock = Arc<dyn Clock>;

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the single sanctioned reading of the wall clock
    fn now(&self) -> UnixTime {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        UnixTime(i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX))
    }
}

/// The wall-clock time to the millisecond, RFC 3339 in UTC: the time of a log line, which no
/// rule depends on (so not from `Clock`).
#[allow(clippy::disallowed_methods)]
pub fn timestamp_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A clock that only moves when told to; for tests of expiry rules.
#[derive(Debug)]
pub struct FixedClock(AtomicI64);

impl FixedClock {
    pub fn at(time: i64) -> Self {
        FixedClock(AtomicI64::new(time))
    }

    pub fn advance(&self, by: Duration) {
        let secs = i64::try_from(by.as_secs()).unwrap_or(i64::MAX);
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now(&self) -> UnixTime {
        UnixTime(self.0.load(Ordering::SeqCst))
    }
}
