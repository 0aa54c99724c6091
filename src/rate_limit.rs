//! A fixed-window request counter per source address, for endpoints anyone may call, and the
//! setting that sizes one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;

use crate::clock::UnixTime;
use crate::duration::{ConfigDuration, whole_seconds};

/// At most `requests` per source address in each `window`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub requests: u32,
    pub window: ConfigDuration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            requests: 10,
            window: ConfigDuration(Duration::from_secs(60)),
        }
    }
}

impl RateLimitConfig {
    /// Problems of the setting at `field`, with their path.
    pub(crate) fn validate(&self, field: &str, problems: &mut Vec<String>) {
        problems.extend(whole_seconds(&format!("{field}.window"), self.window, 1));
        if self.requests == 0 {
            problems.push(format!("{field}.requests: must be above zero"));
        }
    }
}

/// Addresses tracked at most; beyond it, finished windows are dropped first, then the oldest
/// tenth (whose addresses start afresh: under such a flood that is the lesser harm).
const MAX_TRACKED: usize = 100_000;

/// The address a limit applies to: IPv4 as is, IPv6 by its /64 (one host usually has a whole /64).
pub(crate) fn bucket_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

pub(crate) struct RateLimiter {
    max_requests: u32,
    window: Duration,
    windows: Mutex<HashMap<Option<IpAddr>, (UnixTime, u32)>>,
}

impl RateLimiter {
    pub(crate) fn configured(config: &RateLimitConfig) -> Self {
        RateLimiter::new(config.requests, config.window.0)
    }

    pub(crate) fn new(max_requests: u32, window: Duration) -> Self {
        RateLimiter {
            max_requests,
            window,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a request; `Err(seconds)` says how long until the address may try again.
    /// Requests whose address is unknown share one window.
    pub(crate) fn check(&self, address: Option<IpAddr>, now: UnixTime) -> Result<(), u64> {
        let Ok(mut windows) = self.windows.lock() else {
            return Ok(());
        };
        if windows.len() >= MAX_TRACKED {
            let window = self.window;
            windows.retain(|_, (started, _)| now < started.plus(window));
            if windows.len() >= MAX_TRACKED {
                let mut oldest: Vec<(i64, Option<IpAddr>)> = windows
                    .iter()
                    .map(|(address, (started, _))| (started.seconds(), *address))
                    .collect();
                let tenth = oldest.len() / 10;
                oldest.select_nth_unstable(tenth);
                for (_, address) in &oldest[..tenth] {
                    windows.remove(address);
                }
            }
        }
        let entry = windows.entry(address).or_insert((now, 0));
        if now >= entry.0.plus(self.window) {
            *entry = (now, 0);
        }
        if entry.1 >= self.max_requests {
            let retry = entry.0.plus(self.window).seconds() - now.seconds();
            return Err(u64::try_from(retry).unwrap_or(1).max(1));
        }
        entry.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_share_their_64_and_mapped_ipv4_is_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(bucket_of(a), bucket_of(b));
        assert_ne!(bucket_of(a), bucket_of(c));
        assert_eq!(
            bucket_of("::ffff:10.0.0.1".parse().unwrap()),
            IpAddr::from([10, 0, 0, 1])
        );
    }

    #[test]
    fn the_tracked_addresses_stay_bounded_while_every_window_is_live() {
        let limiter = RateLimiter::new(5, Duration::from_secs(3600));
        for n in 0..(MAX_TRACKED as u32 + 1_000) {
            let address = Some(IpAddr::V4(std::net::Ipv4Addr::from(n)));
            // All in one second: ties must not make the whole table go at once.
            let _ = limiter.check(address, UnixTime(1_000));
        }
        let tracked = limiter.windows.lock().unwrap().len();
        assert!(tracked <= MAX_TRACKED, "{tracked}");
        assert!(
            tracked >= MAX_TRACKED * 8 / 10,
            "only the oldest are forgotten, not everybody: {tracked}"
        );
    }

    #[test]
    fn each_address_gets_its_own_window_and_the_window_resets() {
        let limiter = RateLimiter::new(2, Duration::from_secs(60));
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let b = Some(IpAddr::from([10, 0, 0, 2]));
        let start = UnixTime(1_000);
        assert!(limiter.check(a, start).is_ok());
        assert!(limiter.check(a, start).is_ok());
        assert_eq!(limiter.check(a, UnixTime(1_010)), Err(50));
        assert!(limiter.check(b, UnixTime(1_010)).is_ok());
        assert!(limiter.check(a, UnixTime(1_060)).is_ok());
    }
}
