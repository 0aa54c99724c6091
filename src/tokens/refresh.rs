//! Grants and their refresh-token families, and the rotation rule (RFC 9700 §4.14.2).
//!
//! Every use rotates the token. The token just rotated out may be presented again for as long as
//! its successor has not been used, at most `retry_window` after it was rotated out and at most
//! `MAX_RETRIES` times: that is a client retrying after losing the response, and the unused
//! successor is replaced. Any other presentation of a retired token is reuse, and the whole
//! family is revoked.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::TokenHash;
use crate::clock::UnixTime;
use crate::identity::Identity;
use crate::sealing::SealedSecret;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedAccessToken {
    pub(crate) jti: String,
    pub(crate) expires_at: UnixTime,
}

/// A token rotated out, kept so that a lost response can be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredToken {
    pub hash: TokenHash,
    pub(crate) rotated_at: UnixTime,
    /// Times it was presented again since; each retry mints an access token, so they are few.
    #[serde(default)]
    pub(crate) retries: u32,
}

/// Retries of one retired token before a further presentation counts as reuse: enough for a
/// client whose responses got lost, never a source of unlimited parallel access tokens.
pub(crate) const MAX_RETRIES: u32 = 3;

/// Everything one authorization code produced. A grant whose client may not refresh has no
/// refresh token, but still records its access tokens so that a code replay can revoke them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshFamily {
    pub id: String,
    pub client_id: String,
    pub identity: Identity,
    pub scope: Vec<String>,
    /// The audience (RFC 8707 resource) the family's tokens are bound to.
    pub audience: String,
    pub absolute_expires_at: UnixTime,
    pub current: Option<TokenHash>,
    pub current_expires_at: UnixTime,
    pub previous: Option<RetiredToken>,
    pub revoked: bool,
    /// Access tokens issued from this family that may still be live; revoked with it.
    pub access_tokens: Vec<IssuedAccessToken>,
    /// The provider's refresh token, sealed, when sessions are re-validated on refresh or the
    /// provider's tokens are kept.
    #[serde(default)]
    pub upstream_refresh: Option<SealedSecret>,
    /// The provider's access token and its lifetime, sealed, when its tokens are kept. Boxed: most
    /// grants have none, and a million of them in memory should not pay for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_access: Option<Box<SealedSecret>>,
    /// The provider session the user signed in with (none for local users and ID-JAGs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_session: Option<crate::identity::UpstreamSession>,
    /// When the grant began; 0 for families stored before it was kept.
    #[serde(default)]
    pub created_at: UnixTime,
    /// The last rotation, if any.
    #[serde(default)]
    pub last_used_at: Option<UnixTime>,
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
    /// The request asked for scope beyond the grant's; nothing changes (RFC 6749 §6).
    ScopeExceeded,
    /// The request named another resource than the grant's; nothing changes (RFC 8707 §2.2).
    WrongResource,
}

/// What storage must write, besides the family itself, once a token was presented: decided here
/// so that every backend persists the same outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Persist {
    /// Index the replacement token under the family.
    IndexReplacement,
    /// Revoke the whole family (and its access tokens).
    RevokeFamily,
    Nothing,
}

impl Presentation {
    pub(crate) fn persist(self) -> Persist {
        match self {
            Presentation::Rotated | Presentation::RetriedLostResponse => Persist::IndexReplacement,
            Presentation::Reused => Persist::RevokeFamily,
            Presentation::Expired
            | Presentation::Revoked
            | Presentation::WrongClient
            | Presentation::ScopeExceeded
            | Presentation::WrongResource => Persist::Nothing,
        }
    }
}

/// How long a revocation of a family that does not exist yet is remembered (by both backends).
pub(crate) const REVOKED_FAMILY_TOMBSTONE_TTL: Duration = Duration::from_secs(3600);

/// What the refresh request asks for, checked before anything changes.
#[derive(Debug, Clone, Copy)]
pub struct RefreshRequest<'a> {
    pub client_id: &'a str,
    pub scope: Option<&'a [String]>,
    pub(crate) resource: Option<&'a str>,
}

/// The token that replaces the presented one, the access token issued with it, and the policy.
#[derive(Debug, Clone)]
pub struct Replacement {
    pub hash: TokenHash,
    pub access_token: IssuedAccessToken,
    pub(crate) ttl: Duration,
    pub(crate) retry_window: Duration,
    /// The user as the provider described them again on re-validation.
    pub(crate) identity: Option<Identity>,
}

/// Live access tokens one family keeps track of. A client that refreshes faster than its access
/// tokens expire gets its oldest ones revoked early rather than growing the family without bound.
pub(crate) const MAX_TRACKED_ACCESS_TOKENS: usize = 32;

impl RefreshFamily {
    /// Marks the grant revoked, and lets go of the provider's tokens it kept: nothing may use
    /// them for it again.
    pub(crate) fn revoke(&mut self) {
        self.revoked = true;
        self.upstream_refresh = None;
        self.upstream_access = None;
    }

    /// Removes the oldest tracked access tokens beyond the limit; the caller revokes them.
    pub(crate) fn evict_excess_access_tokens(&mut self) -> Vec<IssuedAccessToken> {
        let excess = self
            .access_tokens
            .len()
            .saturating_sub(MAX_TRACKED_ACCESS_TOKENS);
        self.access_tokens.drain(..excess).collect()
    }

    pub(crate) fn sliding_expiry(&self, now: UnixTime, ttl: Duration) -> UnixTime {
        now.plus(ttl).min(self.absolute_expires_at)
    }

    /// What a request asks beyond the grant, checked before anything changes (RFC 6749 §6,
    /// RFC 8707 §2.2).
    pub(crate) fn exceeded_by(&self, request: &RefreshRequest<'_>) -> Option<Presentation> {
        if let Some(scope) = request.scope
            && scope.iter().any(|s| !self.scope.contains(s))
        {
            return Some(Presentation::ScopeExceeded);
        }
        if request
            .resource
            .is_some_and(|resource| resource != self.audience)
        {
            return Some(Presentation::WrongResource);
        }
        None
    }

    /// Whether the grant still gives access: not revoked, and a refresh token or an access
    /// token of it not expired.
    pub(crate) fn is_live(&self, now: UnixTime) -> bool {
        !self.revoked
            && (now < self.current_expires_at.min(self.absolute_expires_at)
                || self
                    .access_tokens
                    .iter()
                    .any(|token| token.expires_at > now))
    }

    /// Applies the rotation rule; the caller persists `self` atomically with the lookup.
    pub(crate) fn present(
        &mut self,
        presented: &TokenHash,
        request: &RefreshRequest<'_>,
        replacement: Replacement,
        now: UnixTime,
    ) -> Presentation {
        if self.revoked {
            return Presentation::Revoked;
        }
        if self.client_id != request.client_id {
            return Presentation::WrongClient;
        }
        if now >= self.absolute_expires_at {
            return Presentation::Expired;
        }
        let is_current = self.current == Some(*presented);
        if is_current {
            if now >= self.current_expires_at {
                return Presentation::Expired;
            }
        } else {
            let retry_allowed = self.previous.is_some_and(|retired| {
                retired.hash == *presented
                    && now < retired.rotated_at.plus(replacement.retry_window)
                    && retired.retries < MAX_RETRIES
            });
            if !retry_allowed {
                self.revoke();
                return Presentation::Reused;
            }
        }
        if let Some(refusal) = self.exceeded_by(request) {
            return refusal;
        }
        let outcome = if is_current {
            self.previous = self.current.map(|hash| RetiredToken {
                hash,
                rotated_at: now,
                retries: 0,
            });
            Presentation::Rotated
        } else {
            if let Some(retired) = self.previous.as_mut() {
                retired.retries += 1;
            }
            Presentation::RetriedLostResponse
        };
        self.current = Some(replacement.hash);
        self.last_used_at = Some(now);
        if let Some(identity) = replacement.identity {
            self.identity = identity;
        }
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
    const RETRY_WINDOW: Duration = Duration::from_secs(300);
    const CLIENT: RefreshRequest<'static> = RefreshRequest {
        client_id: "client",
        scope: None,
        resource: None,
    };

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
            scope: vec!["openid".into(), "email".into()],
            audience: "https://mcp.example.com".into(),
            absolute_expires_at: now.plus(DAY * 90),
            current: Some(hash(0)),
            current_expires_at: now.plus(DAY * 30),
            previous: None,
            revoked: false,
            access_tokens: vec![],
            upstream_refresh: None,
            upstream_access: None,
            upstream_session: None,
            created_at: now,
            last_used_at: None,
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
            retry_window: RETRY_WINDOW,
            identity: None,
        }
    }

    #[test]
    fn current_token_rotates() {
        let now = UnixTime(1_000);
        let mut fam = family(now);
        assert_eq!(
            fam.present(&hash(0), &CLIENT, replacement(1, now), now),
            Presentation::Rotated
        );
        assert_eq!(fam.current, Some(hash(1)));
        assert_eq!(
            fam.previous,
            Some(RetiredToken {
                hash: hash(0),
                rotated_at: now,
                retries: 0,
            })
        );
        assert_eq!(fam.access_tokens.len(), 1);
    }

    #[test]
    fn previous_token_may_retry_while_successor_is_unused_and_replaces_it() {
        let now = UnixTime(1_000);
        let mut fam = family(now);
        fam.present(&hash(0), &CLIENT, replacement(1, now), now);
        let retry = now.plus(RETRY_WINDOW - Duration::from_secs(1));
        assert_eq!(
            fam.present(&hash(0), &CLIENT, replacement(2, retry), retry),
            Presentation::RetriedLostResponse
        );
        assert_eq!(fam.current, Some(hash(2)));
        // The replaced successor is dead: presenting it is reuse.
        assert_eq!(
            fam.present(&hash(1), &CLIENT, replacement(3, now), now),
            Presentation::Reused
        );
        assert!(fam.revoked);
    }

    #[test]
    fn a_retired_token_is_retried_at_most_three_times_then_it_is_reuse() {
        let now = UnixTime(1_000);
        let mut fam = family(now);
        fam.present(&hash(0), &CLIENT, replacement(1, now), now);
        for n in 0..MAX_RETRIES {
            let successor = u8::try_from(n + 2).unwrap();
            assert_eq!(
                fam.present(&hash(0), &CLIENT, replacement(successor, now), now),
                Presentation::RetriedLostResponse,
                "retry {n}"
            );
        }
        assert_eq!(fam.access_tokens.len(), 1 + MAX_RETRIES as usize);
        assert_eq!(
            fam.present(&hash(0), &CLIENT, replacement(9, now), now),
            Presentation::Reused
        );
        assert!(fam.revoked);
    }

    #[test]
    fn previous_token_after_the_retry_window_revokes_the_family() {
        let now = UnixTime(1_000);
        let mut fam = family(now);
        fam.present(&hash(0), &CLIENT, replacement(1, now), now);
        let late = now.plus(RETRY_WINDOW);
        assert_eq!(
            fam.present(&hash(0), &CLIENT, replacement(2, late), late),
            Presentation::Reused
        );
        assert!(fam.revoked);
    }

    #[test]
    fn previous_token_after_successor_was_used_revokes_the_family() {
        let now = UnixTime(1_000);
        let mut fam = family(now);
        fam.present(&hash(0), &CLIENT, replacement(1, now), now);
        assert_eq!(
            fam.present(&hash(1), &CLIENT, replacement(2, now), now),
            Presentation::Rotated
        );
        assert_eq!(
            fam.present(&hash(0), &CLIENT, replacement(3, now), now),
            Presentation::Reused
        );
        assert!(fam.revoked);
        assert_eq!(
            fam.present(&hash(2), &CLIENT, replacement(4, now), now),
            Presentation::Revoked
        );
    }

    #[test]
    fn expired_tokens_and_families_are_refused_without_revoking() {
        let now = UnixTime(1_000);
        let mut fam = family(now);
        let later = now.plus(DAY * 31);
        assert_eq!(
            fam.present(&hash(0), &CLIENT, replacement(1, later), later),
            Presentation::Expired
        );
        assert!(!fam.revoked);
        let mut fam = family(now);
        let much_later = now.plus(DAY * 91);
        assert_eq!(
            fam.present(&hash(0), &CLIENT, replacement(1, much_later), much_later),
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
            fam.present(&hash(0), &CLIENT, replacement(1, late), late),
            Presentation::Rotated
        );
        assert_eq!(fam.current_expires_at, fam.absolute_expires_at);
    }

    #[test]
    fn another_clients_presentation_changes_nothing() {
        let now = UnixTime(1_000);
        let mut fam = family(now);
        let intruder = RefreshRequest {
            client_id: "intruder",
            ..CLIENT
        };
        assert_eq!(
            fam.present(&hash(0), &intruder, replacement(1, now), now),
            Presentation::WrongClient
        );
        assert_eq!(fam.current, Some(hash(0)));
        assert!(!fam.revoked);
    }

    #[test]
    fn wider_scope_or_another_resource_is_refused_before_anything_changes() {
        let now = UnixTime(1_000);
        let mut fam = family(now);
        let wider = vec!["openid".to_owned(), "admin".to_owned()];
        let request = RefreshRequest {
            scope: Some(&wider),
            ..CLIENT
        };
        assert_eq!(
            fam.present(&hash(0), &request, replacement(1, now), now),
            Presentation::ScopeExceeded
        );
        let request = RefreshRequest {
            resource: Some("https://other.example.com"),
            ..CLIENT
        };
        assert_eq!(
            fam.present(&hash(0), &request, replacement(1, now), now),
            Presentation::WrongResource
        );
        assert_eq!(
            fam.current,
            Some(hash(0)),
            "the presented token is still the current one"
        );
        let narrower = vec!["email".to_owned()];
        let request = RefreshRequest {
            scope: Some(&narrower),
            resource: Some("https://mcp.example.com"),
            ..CLIENT
        };
        assert_eq!(
            fam.present(&hash(0), &request, replacement(1, now), now),
            Presentation::Rotated
        );
    }

    #[test]
    fn a_family_tracks_a_bounded_number_of_access_tokens_oldest_out_first() {
        let now = UnixTime(1_000);
        let mut fam = family(now);
        for n in 1..=(MAX_TRACKED_ACCESS_TOKENS as u8 + 3) {
            let current = fam.current.unwrap();
            fam.present(&current, &CLIENT, replacement(n, now), now);
        }
        let evicted = fam.evict_excess_access_tokens();
        assert_eq!(
            evicted.iter().map(|t| t.jti.as_str()).collect::<Vec<_>>(),
            ["jti-1", "jti-2", "jti-3"]
        );
        assert_eq!(fam.access_tokens.len(), MAX_TRACKED_ACCESS_TOKENS);
        assert!(fam.evict_excess_access_tokens().is_empty());
    }

    #[test]
    fn reuse_is_detected_even_when_the_request_is_also_malformed() {
        let now = UnixTime(1_000);
        let mut fam = family(now);
        fam.present(&hash(0), &CLIENT, replacement(1, now), now);
        fam.present(&hash(1), &CLIENT, replacement(2, now), now);
        let request = RefreshRequest {
            resource: Some("https://other.example.com"),
            ..CLIENT
        };
        assert_eq!(
            fam.present(&hash(0), &request, replacement(3, now), now),
            Presentation::Reused
        );
    }
}
