//! Slows, then refuses, password guessing at the local login form. Attempts are counted per
//! username and per source address in a fixed window that starts at the first one: every
//! failure makes the next answer wait longer, and at the limit the form refuses to check any
//! password until the window ends. An attempt is counted as a failure when it begins, under the
//! same lock as the check, so parallel requests cannot all slip in under the limit; a success
//! then takes its own count back, and clears the username's (not the address's: one right
//! password must not buy an address more guesses at other accounts).

use std::collections::HashMap;
use std::net::IpAddr;
#[cfg(test)]
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::clock::UnixTime;

/// Keys tracked at most. Beyond it, finished windows are dropped, then the oldest window.
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
    /// SHA-256 of the lowercased username: a fixed size whatever is typed.
    User([u8; 32]),
    Address(IpAddr),
}

fn user_key(username: &str) -> Key {
    Key::User(Sha256::digest(username.to_lowercase().as_bytes()).into())
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
        let mut keys = vec![user_key(username)];
        keys.extend(address.map(Key::Address));
        keys
    }

    fn limit(&self, key: &Key) -> u32 {
        match key {
            Key::User(_) => self.settings.max_failures_per_user,
            Key::Address(_) => self.settings.max_failures_per_address,
        }
    }

    /// Begins an attempt for `username` from `address` (the caller's bucket of the source
    /// address, IPv6 by /64), before any password is checked: refused at the limit, otherwise
    /// counted as a failure until `record_success` says otherwise.
    pub fn begin_attempt(&self, username: &str, address: Option<IpAddr>, now: UnixTime) -> Verdict {
        let Ok(mut failures) = self.failures.lock() else {
            return Verdict::Refused { retry_after: 1 };
        };
        let window = self.settings.window;
        let keys = Self::keys(username, address);
        let mut worst = 0;
        for key in &keys {
            let Some((started, count)) = failures.get(key).copied() else {
                continue;
            };
            let ends = started.plus(window);
            if now >= ends {
                continue;
            }
            if count >= self.limit(key) {
                let retry_after = u64::try_from(ends.seconds() - now.seconds()).unwrap_or(1);
                return Verdict::Refused {
                    retry_after: retry_after.max(1),
                };
            }
            worst = worst.max(count);
        }
        if failures.len() + keys.len() > MAX_TRACKED {
            failures.retain(|_, (started, _)| now < started.plus(window));
            while failures.len() + keys.len() > MAX_TRACKED {
                let oldest = failures
                    .iter()
                    .min_by_key(|(_, (started, _))| started.seconds())
                    .map(|(key, _)| key.clone());
                match oldest {
                    Some(key) => failures.remove(&key),
                    None => break,
                };
            }
        }
        for key in keys {
            let entry = failures.entry(key).or_insert((now, 0));
            if now >= entry.0.plus(window) {
                *entry = (now, 0);
            }
            entry.1 = entry.1.saturating_add(1);
        }
        Verdict::Allowed {
            delay: self.settings.slowdown * worst.min(MAX_SLOWDOWN_STEPS),
        }
    }

    /// The attempt begun for `username` from `address` was right: the username starts afresh,
    /// and the address's count loses this attempt.
    pub fn record_success(&self, username: &str, address: Option<IpAddr>) {
        let Ok(mut failures) = self.failures.lock() else {
            return;
        };
        failures.remove(&user_key(username));
        if let Some(entry) = address.and_then(|ip| failures.get_mut(&Key::Address(ip))) {
            entry.1 = entry.1.saturating_sub(1);
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

    fn allowed(ms: u64) -> Verdict {
        Verdict::Allowed {
            delay: Duration::from_millis(ms),
        }
    }

    #[test]
    fn failures_slow_each_answer_then_refuse_the_username_until_the_window_ends() {
        let throttle = throttle();
        let start = UnixTime(1_000);
        assert_eq!(throttle.begin_attempt("ada", HOME, start), allowed(0));
        assert_eq!(throttle.begin_attempt("Ada", HOME, start), allowed(100));
        assert_eq!(
            throttle.begin_attempt("ADA", ELSEWHERE, start),
            allowed(200),
            "the username counts whatever its case and wherever the guess comes from"
        );
        assert_eq!(
            throttle.begin_attempt("ada", HOME, UnixTime(1_100)),
            Verdict::Refused { retry_after: 500 }
        );
        assert_eq!(
            throttle.begin_attempt("grace", ELSEWHERE, UnixTime(1_100)),
            allowed(100),
            "another user from a guessing address is slowed, not refused"
        );
        assert_eq!(
            throttle.begin_attempt("ada", HOME, UnixTime(1_600)),
            allowed(0),
            "the window has ended"
        );
    }

    #[test]
    fn attempts_count_when_they_begin_so_parallel_guesses_cannot_pass_the_limit() {
        let throttle = Arc::new(throttle());
        let now = UnixTime(1_000);
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let throttle = Arc::clone(&throttle);
                std::thread::spawn(move || throttle.begin_attempt("ada", None, now))
            })
            .collect();
        let admitted = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|v| matches!(v, Verdict::Allowed { .. }))
            .count();
        assert_eq!(admitted, 3);
    }

    #[test]
    fn an_address_guessing_many_usernames_is_refused() {
        let throttle = throttle();
        let now = UnixTime(1_000);
        for user in ["a", "b", "c", "d", "e"] {
            assert!(matches!(
                throttle.begin_attempt(user, HOME, now),
                Verdict::Allowed { .. }
            ));
        }
        assert!(matches!(
            throttle.begin_attempt("f", HOME, now),
            Verdict::Refused { .. }
        ));
        assert!(matches!(
            throttle.begin_attempt("f", ELSEWHERE, now),
            Verdict::Allowed { .. }
        ));
    }

    #[test]
    fn success_clears_the_username_and_takes_back_only_its_own_attempt_from_the_address() {
        let throttle = throttle();
        let now = UnixTime(1_000);
        for _ in 0..2 {
            throttle.begin_attempt("ada", HOME, now);
        }
        throttle.begin_attempt("ada", HOME, now);
        throttle.record_success("ADA", HOME);
        assert_eq!(throttle.begin_attempt("ada", ELSEWHERE, now), allowed(0));
        assert_eq!(
            throttle.begin_attempt("grace", HOME, now),
            allowed(200),
            "the address keeps its two failures"
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
            throttle.begin_attempt("ada", HOME, UnixTime(1_000));
        }
        assert_eq!(
            throttle.begin_attempt("ada", HOME, UnixTime(1_000)),
            Verdict::Allowed {
                delay: Duration::from_secs(5)
            }
        );
    }

    #[test]
    fn the_number_of_tracked_keys_is_capped() {
        let throttle = LoginThrottle::new(ThrottleSettings {
            max_failures_per_user: 5,
            max_failures_per_address: 5,
            window: Duration::from_secs(600),
            slowdown: Duration::ZERO,
        });
        for i in 0..(MAX_TRACKED + 10) {
            throttle.begin_attempt(&format!("user-{i}"), None, UnixTime(1_000 + i as i64));
        }
        assert!(throttle.failures.lock().unwrap().len() <= MAX_TRACKED);
    }
}
