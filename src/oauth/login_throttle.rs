//! Slows, then refuses, password guessing at the local login form. Failures are counted per
//! username and per source address in a fixed window that starts at the first failure: every
//! failure makes the next answer wait longer, and at the limit the form refuses to check any
//! password until the window ends. A successful login clears the username's count (not the
//! address's: one right password must not buy an address more guesses at other accounts).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use crate::clock::UnixTime;

/// Keys tracked at most; beyond it, finished windows are dropped first.
const MAX_TRACKED: usize = 100_000;
/// The slowdown grows with each failure up to this many steps.
const MAX_SLOWDOWN_STEPS: u32 = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleSettings {
    /// Failures per username within `window` before the form refuses that username.
    pub max_failures_per_user: u32,
    /// Failures per source address (IPv6 by /64) within `window` before it is refused.
    pub max_failures_per_address: u32,
    pub window: Duration,
    /// Added to every answer per failure already counted (up to five times this).
    pub slowdown: Duration,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        ThrottleSettings {
            max_failures_per_user: 5,
            max_failures_per_address: 20,
            window: Duration::from_secs(15 * 60),
            slowdown: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Check the password, after waiting this long.
    Allowed { delay: Duration },
    /// Do not check anything; try again after this many seconds.
    Refused { retry_after: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Address(IpAddr),
}

pub struct LoginThrottle {
    settings: ThrottleSettings,
    /// When each key's window started, and its failures since.
    failures: Mutex<HashMap<Key, (UnixTime, u32)>>,
}

impl LoginThrottle {
    pub fn new(settings: ThrottleSettings) -> Self {
        LoginThrottle {
            settings,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn keys(username: &str, address: Option<IpAddr>) -> Vec<Key> {
        let mut keys = vec![Key::User(username.to_lowercase())];
        keys.extend(address.map(Key::Address));
        keys
    }

    fn limit(&self, key: &Key) -> u32 {
        match key {
            Key::User(_) => self.settings.max_failures_per_user,
            Key::Address(_) => self.settings.max_failures_per_address,
        }
    }

    /// What to do with an attempt for `username` from `address` (the caller's bucket of the
    /// source address, IPv6 by /64), before any password is checked.
    pub fn check(&self, username: &str, address: Option<IpAddr>, now: UnixTime) -> Verdict {
        let Ok(failures) = self.failures.lock() else {
            return Verdict::Refused { retry_after: 1 };
        };
        let mut worst = 0;
        for key in Self::keys(username, address) {
            let Some((started, count)) = failures.get(&key).copied() else {
                continue;
            };
            let ends = started.plus(self.settings.window);
            if now >= ends {
                continue;
            }
            if count >= self.limit(&key) {
                let retry_after = u64::try_from(ends.seconds() - now.seconds()).unwrap_or(1);
                return Verdict::Refused {
                    retry_after: retry_after.max(1),
                };
            }
            worst = worst.max(count);
        }
        Verdict::Allowed {
            delay: self.settings.slowdown * worst.min(MAX_SLOWDOWN_STEPS),
        }
    }

    pub fn record_failure(&self, username: &str, address: Option<IpAddr>, now: UnixTime) {
        let Ok(mut failures) = self.failures.lock() else {
            return;
        };
        let window = self.settings.window;
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, (started, _)| now < started.plus(window));
        }
        for key in Self::keys(username, address) {
            let entry = failures.entry(key).or_insert((now, 0));
            if now >= entry.0.plus(window) {
                *entry = (now, 0);
            }
            entry.1 = entry.1.saturating_add(1);
        }
    }

    pub fn record_success(&self, username: &str) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(&Key::User(username.to_lowercase()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> LoginThrottle {
        LoginThrottle::new(ThrottleSettings {
            max_failures_per_user: 3,
            max_failures_per_address: 5,
            window: Duration::from_secs(600),
            slowdown: Duration::from_millis(100),
        })
    }

    const HOME: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)));
    const ELSEWHERE: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)));

    #[test]
    fn failures_slow_each_answer_then_refuse_the_username_until_the_window_ends() {
        let throttle = throttle();
        let start = UnixTime(1_000);
        assert_eq!(
            throttle.check("ada", HOME, start),
            Verdict::Allowed {
                delay: Duration::ZERO
            }
        );
        throttle.record_failure("ada", HOME, start);
        assert_eq!(
            throttle.check("ada", HOME, start),
            Verdict::Allowed {
                delay: Duration::from_millis(100)
            }
        );
        throttle.record_failure("Ada", HOME, start);
        assert_eq!(
            throttle.check("ADA", ELSEWHERE, start),
            Verdict::Allowed {
                delay: Duration::from_millis(200)
            },
            "the username counts whatever its case and wherever the guess comes from"
        );
        throttle.record_failure("ada", ELSEWHERE, start);
        assert_eq!(
            throttle.check("ada", HOME, UnixTime(1_100)),
            Verdict::Refused { retry_after: 500 }
        );
        assert_eq!(
            throttle.check("grace", ELSEWHERE, UnixTime(1_100)),
            Verdict::Allowed {
                delay: Duration::from_millis(100)
            },
            "another user from a guessing address is slowed, not refused"
        );
        assert_eq!(
            throttle.check("ada", HOME, UnixTime(1_600)),
            Verdict::Allowed {
                delay: Duration::ZERO
            },
            "the window has ended"
        );
    }

    #[test]
    fn an_address_guessing_many_usernames_is_refused() {
        let throttle = throttle();
        let now = UnixTime(1_000);
        for user in ["a", "b", "c", "d", "e"] {
            throttle.record_failure(user, HOME, now);
        }
        assert!(matches!(
            throttle.check("f", HOME, now),
            Verdict::Refused { .. }
        ));
        assert!(matches!(
            throttle.check("f", ELSEWHERE, now),
            Verdict::Allowed { .. }
        ));
    }

    #[test]
    fn success_clears_the_username_but_not_the_address() {
        let throttle = throttle();
        let now = UnixTime(1_000);
        for _ in 0..2 {
            throttle.record_failure("ada", HOME, now);
        }
        throttle.record_success("ADA");
        assert_eq!(
            throttle.check("ada", ELSEWHERE, now),
            Verdict::Allowed {
                delay: Duration::ZERO
            }
        );
        assert_eq!(
            throttle.check("ada", HOME, now),
            Verdict::Allowed {
                delay: Duration::from_millis(200)
            }
        );
    }

    #[test]
    fn the_slowdown_stops_growing_after_five_steps() {
        let throttle = LoginThrottle::new(ThrottleSettings {
            max_failures_per_user: 100,
            max_failures_per_address: 100,
            window: Duration::from_secs(600),
            slowdown: Duration::from_secs(1),
        });
        for _ in 0..20 {
            throttle.record_failure("ada", HOME, UnixTime(1_000));
        }
        assert_eq!(
            throttle.check("ada", HOME, UnixTime(1_000)),
            Verdict::Allowed {
                delay: Duration::from_secs(5)
            }
        );
    }
}
