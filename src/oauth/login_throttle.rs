//! Slows, then refuses, password guessing at the local login form (OWASP's authentication
//! guidance). A username guessed from one address is refused there after a few failures (hard,
//! per username and address); an address guessing many usernames is refused (hard, per address);
//! a username's failures from everywhere only slow its answers (soft, per username), so nobody
//! can lock a user out from elsewhere, and the slowdown is bounded. Attempts are counted when
//! they begin, under the same lock as the check, so parallel requests cannot all slip in under
//! the limit; a success takes its own count back and clears the username's (not the address's:
//! one right password must not buy an address more guesses at other accounts).

use std::collections::HashMap;
use std::net::IpAddr;
#[cfg(test)]
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::clock::UnixTime;

/// Keys tracked at most. Beyond it, finished windows are dropped, then the oldest window.
const MAX_TRACKED: usize = 100_000;
/// The slowdown grows with each failure up to this many steps.
const MAX_SLOWDOWN_STEPS: u32 = 5;

/// `oauth.login_throttle`: how the local login form slows and then refuses password guessing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleSettings {
    /// Failures for one username from one source address within `window` before that address
    /// may not try that username again.
    pub max_failures_per_user: u32,
    /// Failures per source address (IPv6 by /64) within `window` before it is refused.
    pub max_failures_per_address: u32,
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub window: Duration,
    /// Added to every answer per failure already counted (up to five times this).
    #[serde(deserialize_with = "crate::duration::deserialize")]
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
pub(crate) enum Verdict {
    /// Check the password, after waiting this long.
    Allowed { delay: Duration },
    /// Do not check anything; try again after this many seconds.
    Refused { retry_after: u64 },
}

/// SHA-256 of the lowercased username: a fixed size whatever is typed.
type UserDigest = [u8; 32];

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// One username from one address: refused at the limit.
    UserAtAddress(UserDigest, Option<IpAddr>),
    /// One address, whatever the usernames: refused at the limit.
    Address(IpAddr),
    /// One username, from everywhere: only ever slowed.
    User(UserDigest),
}

fn user_digest(username: &str) -> UserDigest {
    Sha256::digest(username.to_lowercase().as_bytes()).into()
}

pub(crate) struct LoginThrottle {
    settings: ThrottleSettings,
    /// When each key's window started, and its failures since.
    failures: Mutex<HashMap<Key, (UnixTime, u32)>>,
}

impl LoginThrottle {
    pub(crate) fn new(settings: ThrottleSettings) -> Self {
        LoginThrottle {
            settings,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn keys(username: &str, address: Option<IpAddr>) -> Vec<Key> {
        let user = user_digest(username);
        let mut keys = vec![Key::UserAtAddress(user, address), Key::User(user)];
        keys.extend(address.map(Key::Address));
        keys
    }

    /// The failures at which a key refuses; `None` for a key that only slows.
    fn limit(&self, key: &Key) -> Option<u32> {
        match key {
            Key::UserAtAddress(..) => Some(self.settings.max_failures_per_user),
            Key::Address(_) => Some(self.settings.max_failures_per_address),
            Key::User(_) => None,
        }
    }

    /// Begins an attempt for `username` from `address` (the caller's bucket of the source
    /// address, IPv6 by /64), before any password is checked: refused at a limit, otherwise
    /// counted as a failure until `record_success` says otherwise.
    pub(crate) fn begin_attempt(
        &self,
        username: &str,
        address: Option<IpAddr>,
        now: UnixTime,
    ) -> Verdict {
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
            if self.limit(key).is_some_and(|limit| count >= limit) {
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

    /// The attempt begun for `username` from `address` was right: the username starts afresh
    /// everywhere, and the address's count loses this attempt.
    pub(crate) fn record_success(&self, username: &str, address: Option<IpAddr>) {
        let Ok(mut failures) = self.failures.lock() else {
            return;
        };
        let user = user_digest(username);
        failures.remove(&Key::User(user));
        failures.remove(&Key::UserAtAddress(user, address));
        if let Some(entry) = address.and_then(|ip| failures.get_mut(&Key::Address(ip))) {
            entry.1 = entry.1.saturating_sub(1);
        }
    }
}

impl ThrottleSettings {
    /// Every problem of `oauth.login_throttle`, with its field path.
    pub(crate) fn validate(&self, problems: &mut Vec<String>) {
        if self.max_failures_per_user == 0 || self.max_failures_per_address == 0 {
            problems.push(
                "oauth.login_throttle: max_failures_per_user and max_failures_per_address must be above zero"
                    .to_owned(),
            );
        }
        problems.extend(crate::duration::whole_seconds(
            "oauth.login_throttle.window",
            self.window,
            1,
        ));
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
    fn failures_slow_each_answer_then_refuse_the_username_at_that_address_until_the_window_ends() {
        let throttle = throttle();
        let start = UnixTime(1_000);
        assert_eq!(throttle.begin_attempt("ada", HOME, start), allowed(0));
        assert_eq!(throttle.begin_attempt("Ada", HOME, start), allowed(100));
        assert_eq!(
            throttle.begin_attempt("ADA", HOME, start),
            allowed(200),
            "the username counts whatever its case"
        );
        assert_eq!(
            throttle.begin_attempt("ada", HOME, UnixTime(1_100)),
            Verdict::Refused { retry_after: 500 }
        );
        assert_eq!(
            throttle.begin_attempt("grace", ELSEWHERE, UnixTime(1_100)),
            allowed(0),
            "another user elsewhere is untouched"
        );
        assert_eq!(
            throttle.begin_attempt("ada", HOME, UnixTime(1_600)),
            allowed(0),
            "the window has ended"
        );
    }

    #[test]
    fn guesses_from_one_address_only_slow_the_user_elsewhere_and_boundedly() {
        let throttle = throttle();
        let now = UnixTime(1_000);
        for _ in 0..3 {
            throttle.begin_attempt("ada", HOME, now);
        }
        assert!(matches!(
            throttle.begin_attempt("ada", HOME, now),
            Verdict::Refused { .. }
        ));
        assert_eq!(
            throttle.begin_attempt("ada", ELSEWHERE, now),
            allowed(300),
            "slowed by the username's failures, never refused"
        );
    }

    #[test]
    fn guessing_one_username_from_many_addresses_never_refuses_and_the_delay_is_capped() {
        let throttle = throttle();
        let now = UnixTime(1_000);
        for n in 0..200u32 {
            let address = Some(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n)));
            let verdict = throttle.begin_attempt("ada", address, now);
            assert!(
                matches!(verdict, Verdict::Allowed { delay } if delay <= Duration::from_millis(500)),
                "{n}: {verdict:?}"
            );
        }
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
        throttle.begin_attempt("ada", ELSEWHERE, now);
        throttle.record_success("ADA", ELSEWHERE);
        assert_eq!(
            throttle.begin_attempt("ada", HOME, now),
            allowed(200),
            "the failures at HOME stay"
        );
        let throttle = self::throttle();
        for _ in 0..3 {
            throttle.begin_attempt("ada", HOME, now);
        }
        throttle.record_success("ada", HOME);
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
