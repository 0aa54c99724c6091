//! Refresh-token families and the rotation rule (SPEC §4, RFC 9700 §4.14.2).
//!
//! Every use rotates the token. The token just rotated out may be presented once more for as long
//! as its successor has not been used: that is a client retrying after losing the response, and
//! the unused successor is replaced. Any other presentation of a retired token is reuse, and the
//! whole family is revoked.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::TokenHash;
use crate::clock::UnixTime;
use crate::identity::Identity;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedAccessToken {
    pub jti: String,
    pub expires_at: UnixTime,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshFamily {
    pub id: String,
    pub client_id: String,
    pub identity: Identity,
    pub scope: Vec<String>,
    /// The audience (RFC 8707 resource) the family's tokens are bound to.
    pub audience: String,
    pub created_at: UnixTime,
    pub absolute_expires_at: UnixTime,
    pub current: TokenHash,
    pub current_expires_at: UnixTime,
    pub previous: Option<(TokenHash, UnixTime)>,
    pub revoked: bool,
    /// Access tokens issued from this family that may still be live; revoked with it.
    pub access_tokens: Vec<IssuedAccessToken>,
}

/// What a presentation of a refresh token turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presentation {
    Rotated,
    /// The previous token again while its successor is unused: the successor was replaced.
    RetriedLostResponse,
    /// A retired token: the family is now revoked.
    Reused,
    Expired,
    Revoked,
    /// Presented by a client the family does not belong to; nothing changes.
    WrongClient,
}

/// The token that replaces the presented one, and the access token issued with it.
#[derive(Debug, Clone)]
pub struct Replacement {
    pub hash: TokenHash,
    pub access_token: IssuedAccessToken,
    pub ttl: Duration,
}

impl RefreshFamily {
    pub fn sliding_expiry(&self, now: UnixTime, ttl: Duration) -> UnixTime {
        now.plus(ttl).min(self.absolute_expires_at)
    }

    /// Applies the rotation rule; the caller persists `self` atomically with the lookup.
    pub fn present(
        &mut self,
        presented: &TokenHash,
        client_id: &str,
        replacement: Replacement,
        now: UnixTime,
    ) -> Presentation {
        if self.revoked {
            return Presentation::Revoked;
        }
        if self.client_id != client_id {
            return Presentation::WrongClient;
        }
        if now >= self.absolute_expires_at {
            return Presentation::Expired;
        }
        let outcome = if *presented == self.current {
            if now >= self.current_expires_at {
                return Presentation::Expired;
            }
            self.previous = Some((self.current, self.current_expires_at));
            Presentation::Rotated
        } else {
            match self.previous {
                Some((previous, expires_at)) if previous == *presented => {
                    if now >= expires_at {
                        return Presentation::Expired;
                    }
                    Presentation::RetriedLostResponse
                }
                _ => {
                    self.revoked = true;
                    return Presentation::Reused;
                }
            }
        };
        self.current = replacement.hash;
        self.current_expires_at = self.sliding_expiry(now, replacement.ttl);
        self.access_tokens.retain(|t| t.expires_at > now);
        self.access_tokens.push(replacement.access_token);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86400);

    fn hash(n: u8) -> TokenHash {
        TokenHash([n; 32])
    }

    fn family(now: UnixTime) -> RefreshFamily {
        RefreshFamily {
            id: "fam".into(),
            client_id: "client".into(),
            identity: Identity {
                subject: "u".into(),
                email: None,
                email_verified: None,
                name: None,
                groups: vec![],
            },
            scope: vec!["openid".into()],
            audience: "https://mcp.example.com".into(),
            created_at: now,
            absolute_expires_at: now.plus(DAY * 90),
            current: hash(0),
            current_expires_at: now.plus(DAY * 30),
            previous: None,
            revoked: false,
            access_tokens: vec![],
        }
    }

    fn replacement(n: u8, now: UnixTime) -> Replacement {
        Replacement {
            hash: hash(n),
            access_token: IssuedAccessToken {
                jti: format!("jti-{n}"),
                expires_at: now.plus(Duration::from_secs(3600)),
            },
            ttl: DAY * 30,
        }
    }

    #[test]
    fn current_token_rotates() {
        let now = UnixTime(1_000);
        let mut fam = family(now);
        assert_eq!(
            fam.present(&hash(0), "client", replacement(1, now), now),
            Presentation::Rotated
        );
        assert_eq!(fam.current, hash(1));
        assert_eq!(fam.previous.map(|p| p.0), Some(hash(0)));
        assert_eq!(fam.access_tokens.len(), 1);
    }

    #[test]
    fn previous_token_may_retry_while_successor_is_unused_and_replaces_it() {
        let now = UnixTime(1_000);
        let mut fam = family(now);
        fam.present(&hash(0), "client", replacement(1, now), now);
        assert_eq!(
            fam.present(&hash(0), "client", replacement(2, now), now),
            Presentation::RetriedLostResponse
        );
        assert_eq!(fam.current, hash(2));
        // The replaced successor is dead: presenting it is reuse.
        assert_eq!(
            fam.present(&hash(1), "client", replacement(3, now), now),
            Presentation::Reused
        );
        assert!(fam.revoked);
    }

    #[test]
    fn previous_token_after_successor_was_used_revokes_the_family() {
        let now = UnixTime(1_000);
        let mut fam = family(now);
        fam.present(&hash(0), "client", replacement(1, now), now);
        assert_eq!(
            fam.present(&hash(1), "client", replacement(2, now), now),
            Presentation::Rotated
        );
        assert_eq!(
            fam.present(&hash(0), "client", replacement(3, now), now),
            Presentation::Reused
        );
        assert!(fam.revoked);
        assert_eq!(
            fam.present(&hash(2), "client", replacement(4, now), now),
            Presentation::Revoked
        );
    }

    #[test]
    fn expired_tokens_and_families_are_refused_without_revoking() {
        let now = UnixTime(1_000);
        let mut fam = family(now);
        let later = now.plus(DAY * 31);
        assert_eq!(
            fam.present(&hash(0), "client", replacement(1, later), later),
            Presentation::Expired
        );
        assert!(!fam.revoked);
        let mut fam = family(now);
        let much_later = now.plus(DAY * 91);
        assert_eq!(
            fam.present(&hash(0), "client", replacement(1, much_later), much_later),
            Presentation::Expired
        );
    }

    #[test]
    fn sliding_expiry_never_passes_the_absolute_limit() {
        let now = UnixTime(1_000);
        let mut fam = family(now);
        let late = now.plus(DAY * 80);
        fam.current_expires_at = late.plus(DAY);
        assert_eq!(
            fam.present(&hash(0), "client", replacement(1, late), late),
            Presentation::Rotated
        );
        assert_eq!(fam.current_expires_at, fam.absolute_expires_at);
    }

    #[test]
    fn another_clients_presentation_changes_nothing() {
        let now = UnixTime(1_000);
        let mut fam = family(now);
        assert_eq!(
            fam.present(&hash(0), "intruder", replacement(1, now), now),
            Presentation::WrongClient
        );
        assert_eq!(fam.current, hash(0));
        assert!(!fam.revoked);
    }
}
