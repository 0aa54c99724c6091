//! A ceiling on unauthenticated state. Anyone who knows a client id can start an authorization,
//! and each one parks a record (a consent request or a pending upstream login) for ten minutes.
//! Past `max` live records new authorizations are refused; nothing in flight is ever evicted,
//! since that would let a flood cancel real users' sign-ins.
//!
//! Counting the records in storage on every request would cost a query each under exactly the
//! load this guards against, so the count is read at most once a second and the records this
//! instance admitted since are added to it. Records that ended since are still counted until the
//! next read, so one instance never overshoots; several instances sharing PostgreSQL may
//! together overshoot by what they admit within one second.

use std::sync::Mutex;

use super::OAuthError;
use crate::clock::UnixTime;
use crate::storage::Storage;

/// How often the storage is asked for the live count, in seconds.
const RECOUNT_EVERY: i64 = 1;
/// How often a refusal is logged at most, in seconds.
const WARN_EVERY: i64 = 60;

pub struct PendingCap {
    max: usize,
    state: Mutex<Count>,
}

#[derive(Default)]
struct Count {
    /// When storage was last counted, and what it said.
    counted: Option<(UnixTime, usize)>,
    /// Records admitted since that count.
    admitted_since: usize,
    last_warning: Option<UnixTime>,
}

impl PendingCap {
    pub fn new(max: usize) -> Self {
        PendingCap {
            max,
            state: Mutex::new(Count::default()),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Reserves room for one more record, or refuses with `temporarily_unavailable`.
    pub async fn admit(&self, storage: &dyn Storage, now: UnixTime) -> Result<(), OAuthError> {
        if self.is_stale(now) {
            let live = storage.count_pending(now).await?;
            if let Ok(mut count) = self.state.lock() {
                count.counted = Some((now, live));
                count.admitted_since = 0;
            }
        }
        let Ok(mut count) = self.state.lock() else {
            return Err(OAuthError::ServerError);
        };
        let live = count.counted.map_or(0, |(_, live)| live) + count.admitted_since;
        if live >= self.max {
            let warned_recently = count
                .last_warning
                .is_some_and(|at| now.seconds() - at.seconds() < WARN_EVERY);
            if !warned_recently {
                count.last_warning = Some(now);
                tracing::warn!(
                    max = self.max,
                    "new authorizations refused: the limit of live pending authorizations is reached"
                );
            }
            return Err(OAuthError::TemporarilyUnavailable);
        }
        count.admitted_since += 1;
        Ok(())
    }

    fn is_stale(&self, now: UnixTime) -> bool {
        self.state.lock().map_or(true, |count| {
            count
                .counted
                .is_none_or(|(at, _)| now.seconds() - at.seconds() >= RECOUNT_EVERY)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::storage::{
        AuthorizationRequest, Consent, ConsentRequest, MemoryStorage, PendingAuthorization,
    };
    use crate::tokens::TokenHash;

    fn request() -> AuthorizationRequest {
        AuthorizationRequest {
            client_id: "c".into(),
            redirect_uri: "http://127.0.0.1/cb".into(),
            redirect_uri_given: true,
            client_state: None,
            client_nonce: None,
            code_challenge: "x".repeat(43),
            scope: vec![],
            audience: "https://mcp.example.com".into(),
        }
    }

    #[tokio::test]
    async fn admits_up_to_the_maximum_counting_what_it_admitted_since_the_last_count() {
        let storage = MemoryStorage::new();
        let cap = PendingCap::new(3);
        let now = UnixTime(1_000);
        for _ in 0..3 {
            cap.admit(&storage, now).await.unwrap();
        }
        assert_eq!(
            cap.admit(&storage, now).await,
            Err(OAuthError::TemporarilyUnavailable)
        );
        // A second later storage is counted again: only what is really live still counts.
        let later = now.plus(Duration::from_secs(1));
        storage
            .put_consent_request(
                TokenHash::of("a"),
                ConsentRequest {
                    request: request(),
                    expires_at: later.plus(Duration::from_secs(600)),
                },
            )
            .await
            .unwrap();
        storage
            .put_pending(
                TokenHash::of("b"),
                PendingAuthorization {
                    request: request(),
                    consent: Consent::NotNeeded,
                    upstream_nonce: "n".into(),
                    upstream_pkce_verifier: "v".into(),
                    browser_binding: TokenHash::of("b"),
                    expires_at: later.plus(Duration::from_secs(600)),
                },
            )
            .await
            .unwrap();
        cap.admit(&storage, later).await.unwrap();
        assert!(cap.admit(&storage, later).await.is_err());
    }
}
