//! A ceiling on unauthenticated state. Anyone who knows a client id can start an authorization,
//! and each one parks a record (a consent request or a pending upstream login) for ten minutes.
//! Past `max` live records new authorizations are refused; nothing in flight is ever evicted,
//! since that would let a flood cancel real users' sign-ins.
//!
//! Counting the records in storage on every request would cost a query each under exactly the
//! load this guards against, so storage is counted at most once a second, by one request at a
//! time, and what this instance admitted since that count began is added to it. Admissions whose
//! record was not stored yet when the count began are added too; a record may so be counted
//! twice, never not at all, so one instance never overshoots. Several instances sharing
//! PostgreSQL may together overshoot by what the others admit within one second.

use std::sync::Mutex;

use super::{Cause, OAuthError};
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
    /// When storage was last counted, and what it said plus the admissions not stored then.
    counted: Option<(UnixTime, usize)>,
    /// Every admission so far, and how many there were when the last count began.
    admitted: u64,
    admitted_at_count: u64,
    /// Admitted, record not stored yet (an `Admission` is alive).
    unstored: usize,
    recounting: bool,
    last_warning: Option<UnixTime>,
}

/// Room for one record, held until it is stored (or given up).
#[must_use = "the room is held until the record is stored"]
pub(crate) struct Admission<'a> {
    cap: &'a PendingCap,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if let Ok(mut count) = self.cap.state.lock() {
            count.unstored = count.unstored.saturating_sub(1);
        }
    }
}

impl PendingCap {
    pub fn new(max: usize) -> Self {
        PendingCap {
            max,
            state: Mutex::new(Count::default()),
        }
    }

    /// Reserves room for one more record, or refuses with `temporarily_unavailable`.
    pub(crate) async fn admit(
        &self,
        storage: &dyn Storage,
        now: UnixTime,
    ) -> Result<Admission<'_>, OAuthError> {
        if let Some((admitted, unstored)) = self.start_recount(now) {
            let counted = storage.count_pending(now).await;
            let mut count = self.state.lock().map_err(|_| poisoned())?;
            count.recounting = false;
            let live = counted?;
            count.counted = Some((now, live + unstored));
            count.admitted_at_count = admitted;
        }
        let mut count = self.state.lock().map_err(|_| poisoned())?;
        let since = usize::try_from(count.admitted - count.admitted_at_count).unwrap_or(usize::MAX);
        let live = count
            .counted
            .map_or(0, |(_, live)| live)
            .saturating_add(since);
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
            return Err(OAuthError::unavailable(Cause::because(
                "the limit of live pending authorizations is reached",
            )));
        }
        count.admitted += 1;
        count.unstored += 1;
        Ok(Admission { cap: self })
    }

    /// Live pending authorizations as last counted, plus those admitted since.
    pub(crate) fn estimate(&self) -> usize {
        self.state.lock().map_or(0, |count| {
            let since =
                usize::try_from(count.admitted - count.admitted_at_count).unwrap_or(usize::MAX);
            count
                .counted
                .map_or(0, |(_, live)| live)
                .saturating_add(since)
        })
    }

    /// When a count is due and nobody is counting: this caller counts, from these figures.
    fn start_recount(&self, now: UnixTime) -> Option<(u64, usize)> {
        let mut count = self.state.lock().ok()?;
        let stale = count
            .counted
            .is_none_or(|(at, _)| now.seconds() - at.seconds() >= RECOUNT_EVERY);
        if !stale || count.recounting {
            return None;
        }
        count.recounting = true;
        Some((count.admitted, count.unstored))
    }
}

fn poisoned() -> OAuthError {
    OAuthError::internal(Cause::because(
        "the pending-authorization count lock is poisoned",
    ))
}

impl crate::metrics::Gauges for PendingCap {
    fn read(&self) -> Vec<crate::metrics::GaugeReading> {
        vec![crate::metrics::GaugeReading::new(
            "pending_authorizations",
            "authorizations in flight (consent pages and sign-ins), as last counted plus those started since",
            i64::try_from(self.estimate()).unwrap_or(i64::MAX),
        )]
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
            login_hint: None,
        }
    }

    #[tokio::test]
    async fn admits_up_to_the_maximum_counting_what_it_admitted_since_the_last_count() {
        let storage = MemoryStorage::new();
        let cap = PendingCap::new(3);
        let now = UnixTime(1_000);
        for _ in 0..3 {
            drop(cap.admit(&storage, now).await.unwrap());
        }
        assert!(matches!(
            cap.admit(&storage, now).await,
            Err(OAuthError::TemporarilyUnavailable(_))
        ));
        // A second later storage is counted again: only what is really live still counts.
        let later = now.plus(Duration::from_secs(1));
        storage
            .put_consent_request(
                TokenHash::of("a"),
                ConsentRequest {
                    request: request(),
                    already_approved: Vec::new(),
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
                    provider: None,
                    browser_binding: TokenHash::of("b"),
                    expires_at: later.plus(Duration::from_secs(600)),
                },
            )
            .await
            .unwrap();
        drop(cap.admit(&storage, later).await.unwrap());
        assert!(cap.admit(&storage, later).await.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_admissions_across_recounts_never_pass_the_maximum() {
        let storage = std::sync::Arc::new(MemoryStorage::new());
        let cap = std::sync::Arc::new(PendingCap::new(50));
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(200));
        let admitted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let (storage, cap, start, admitted) = (
                    std::sync::Arc::clone(&storage),
                    std::sync::Arc::clone(&cap),
                    std::sync::Arc::clone(&start),
                    std::sync::Arc::clone(&admitted),
                );
                tokio::spawn(async move {
                    start.wait().await;
                    // Seconds apart, so that recounts run while others admit.
                    let now = UnixTime(1_000 + i64::from(i % 4));
                    if let Ok(admission) = cap.admit(storage.as_ref(), now).await {
                        admitted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        // Stored as an authorization would store it, then the room is the record's.
                        let token = TokenHash::of(&format!("r-{i}"));
                        storage
                            .put_consent_request(
                                token,
                                ConsentRequest {
                                    request: request(),
                                    already_approved: Vec::new(),
                                    expires_at: UnixTime(100_000),
                                },
                            )
                            .await
                            .unwrap();
                        drop(admission);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let admitted = admitted.load(std::sync::atomic::Ordering::SeqCst);
        assert!(admitted <= 50, "{admitted} admitted past a cap of 50");
        assert!(admitted >= 25, "the cap let too few through: {admitted}");
        assert_eq!(
            storage.count_pending(UnixTime(1_003)).await.unwrap(),
            admitted
        );
    }
}
