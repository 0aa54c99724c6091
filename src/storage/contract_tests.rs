//! The storage contract: one suite that every backend must pass.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::tokens::refresh::IssuedAccessToken;
use tokio::sync::Barrier;

pub(crate) const NOW: UnixTime = UnixTime(1_700_000_000);
const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(86400);
pub(crate) const CLIENT: RefreshRequest<'static> = RefreshRequest {
    client_id: "client",
    scope: None,
    resource: None,
};

/// A backend under test: a fresh, empty storage per rule, and what to clean up after.
pub(crate) trait Backend: Sized {
    type Storage: Storage;
    /// `None` when the backend cannot run here (the rule's test then passes, having said why).
    async fn start() -> Option<Self>;
    fn storage(&self) -> Arc<Self::Storage>;
    async fn finish(self) {}
}

/// One `#[tokio::test]` per rule of the contract for `$backend` (a `Backend`), named after the
/// rule, so that a failure says which rule a backend breaks.
macro_rules! storage_contract {
    ($backend:ty) => {
        $crate::storage::contract_tests::storage_contract!(@rules $backend;
            borrowed:
            pending_authorization_is_taken_once,
            peeking_at_a_pending_authorization_leaves_it_in_place,
            pending_authorization_survives_another_browser,
            expired_pending_authorization_is_gone,
            live_pending_state_is_counted,
            code_is_redeemed_once_and_replay_names_the_family,
            a_code_presented_by_another_client_is_left_untouched,
            expired_code_is_refused,
            redeeming_stores_the_grant_it_builds,
            grant_without_refresh_token_still_revokes_its_access_tokens,
            consent_requests_are_single_use_and_expire,
            registered_clients_are_capped_and_deleted_when_unused,
            deleting_a_client_revokes_its_grants_and_no_other,
            consent_grants_cover_their_subject_client_redirect_and_scopes,
            rapid_refreshing_revokes_the_oldest_access_tokens_instead_of_growing,
            refresh_rotation_and_reuse_revokes_family_and_its_access_tokens,
            family_revoked_before_creation_is_never_created,
            sweep_removes_only_expired_entries,
            the_first_shared_secret_stored_is_the_one_everybody_gets,
            revoked_access_tokens_are_remembered_until_they_expire,
            a_refresh_token_current_or_retired_names_its_family,
            shared_secrets_are_listed_by_prefix_and_deleted,
            a_key_is_used_once_until_it_expires_then_swept,
            registered_clients_are_listed_oldest_first_with_their_last_use,
            a_clients_last_use_is_written_at_most_once_per_precision,
            a_users_grants_are_listed_then_revoked_with_codes_and_consents_alone,
            a_clients_grants_are_revoked_with_its_consents_alone,
            a_provider_session_ends_its_grants_and_those_of_its_user_without_one,
            a_grant_is_live_until_revoked,
            the_providers_tokens_kept_for_a_grant_are_replaced_only_from_the_current_ones;
            shared:
            concurrent_redemptions_succeed_exactly_once,
            concurrent_rotations_of_one_token_rotate_exactly_once,
            a_reuse_racing_a_revocation_revokes_without_failing
        );
    };
    (@rules $backend:ty; borrowed: $($rule:ident),*; shared: $($shared:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $rule() {
                use $crate::storage::contract_tests::Backend;
                let Some(backend) = <$backend>::start().await else { return };
                let storage = backend.storage();
                $crate::storage::contract_tests::$rule(storage.as_ref()).await;
                drop(storage);
                backend.finish().await;
            }
        )*
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $shared() {
                use $crate::storage::contract_tests::Backend;
                let Some(backend) = <$backend>::start().await else { return };
                $crate::storage::contract_tests::$shared(backend.storage()).await;
                backend.finish().await;
            }
        )*
    };
}
pub(crate) use storage_contract;

pub(crate) async fn revoked_access_tokens_are_remembered_until_they_expire(storage: &dyn Storage) {
    assert!(!storage.is_access_token_revoked("j-1", NOW).await.unwrap());
    storage
        .revoke_access_token("j-1", NOW.plus(MINUTE))
        .await
        .unwrap();
    // Revoking again changes nothing.
    storage
        .revoke_access_token("j-1", NOW.plus(MINUTE))
        .await
        .unwrap();
    assert!(storage.is_access_token_revoked("j-1", NOW).await.unwrap());
    assert!(
        !storage
            .is_access_token_revoked("j-1", NOW.plus(MINUTE))
            .await
            .unwrap()
    );
    assert_eq!(storage.sweep_expired(NOW.plus(MINUTE)).await.unwrap(), 1);
}

pub(crate) async fn a_refresh_token_current_or_retired_names_its_family(storage: &dyn Storage) {
    assert!(
        storage
            .create_family(family("fam-of", TokenHash::of("of-0")))
            .await
            .unwrap()
    );
    storage
        .rotate_refresh(&TokenHash::of("of-0"), &CLIENT, replacement("of-1"), NOW)
        .await
        .unwrap()
        .unwrap();
    for token in ["of-0", "of-1"] {
        let found = storage
            .refresh_family_of(&TokenHash::of(token))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.id, "fam-of");
        assert_eq!(found.current, Some(TokenHash::of("of-1")));
    }
    assert!(
        storage
            .refresh_family_of(&TokenHash::of("other"))
            .await
            .unwrap()
            .is_none()
    );
}

pub(crate) async fn shared_secrets_are_listed_by_prefix_and_deleted(storage: &dyn Storage) {
    for name in ["signing-key/1", "signing-key/2", "cookie-key"] {
        storage
            .shared_secret(name, b"x".to_vec().into())
            .await
            .unwrap();
    }
    let mut names = storage.shared_secret_names("signing-key/").await.unwrap();
    names.sort();
    assert_eq!(names, ["signing-key/1", "signing-key/2"]);
    storage.delete_shared_secret("signing-key/1").await.unwrap();
    assert_eq!(
        storage.shared_secret_names("signing-key/").await.unwrap(),
        ["signing-key/2"]
    );
    let fresh = storage
        .shared_secret("signing-key/1", b"new".to_vec().into())
        .await
        .unwrap();
    assert_eq!(fresh, b"new");
}

pub(crate) async fn a_key_is_used_once_until_it_expires_then_swept(storage: &dyn Storage) {
    let until = NOW.plus(MINUTE);
    assert!(storage.use_once("jti-a", until, NOW).await.unwrap());
    assert!(!storage.use_once("jti-a", until, NOW).await.unwrap());
    assert!(
        !storage
            .use_once(
                "jti-a",
                until.plus(MINUTE),
                until.minus(Duration::from_secs(1))
            )
            .await
            .unwrap(),
        "still remembered until it expires"
    );
    assert!(storage.use_once("jti-b", until, NOW).await.unwrap());
    // Once expired it counts as forgotten, swept or not.
    assert!(
        storage
            .use_once("jti-a", until.plus(MINUTE), until)
            .await
            .unwrap()
    );
    assert!(
        !storage
            .use_once("jti-a", until.plus(MINUTE), until)
            .await
            .unwrap()
    );
    storage.sweep_expired(until.plus(MINUTE)).await.unwrap();
    assert!(
        storage
            .use_once("jti-b", until.plus(DAY), until.plus(MINUTE))
            .await
            .unwrap()
    );
}

pub(crate) async fn the_first_shared_secret_stored_is_the_one_everybody_gets(
    storage: &dyn Storage,
) {
    storage.ping().await.unwrap();
    assert_eq!(
        storage.existing_shared_secret("cookie-key").await.unwrap(),
        None
    );
    let first = storage
        .shared_secret("cookie-key", b"first".to_vec().into())
        .await
        .unwrap();
    assert_eq!(first, b"first");
    let again = storage
        .shared_secret("cookie-key", b"second".to_vec().into())
        .await
        .unwrap();
    assert_eq!(again, b"first");
    let existing = storage.existing_shared_secret("cookie-key").await.unwrap();
    assert_eq!(
        existing.as_ref().map(|s| s.expose()),
        Some(b"first".as_slice())
    );
    let other = storage
        .shared_secret("signing-key", b"pem".to_vec().into())
        .await
        .unwrap();
    assert_eq!(other, b"pem");
}

fn identity() -> Identity {
    Identity {
        subject: "user-1".into(),
        email: Some("u@example.com".into()),
        email_verified: Some(true),
        name: None,
        groups: vec![],
    }
}

fn request(scope: &[&str]) -> AuthorizationRequest {
    AuthorizationRequest {
        client_id: "client".into(),
        redirect_uri: "http://127.0.0.1/cb".into(),
        redirect_uri_given: true,
        client_state: Some("xyz".into()),
        client_nonce: None,
        code_challenge: "c".repeat(43),
        scope: scope.iter().map(|s| s.to_string()).collect(),
        audience: "https://mcp.example.com".into(),
        login_hint: None,
    }
}

fn pending(expires_at: UnixTime) -> PendingAuthorization {
    PendingAuthorization {
        request: request(&["openid"]),
        consent: Consent::NotNeeded,
        upstream_nonce: "n".into(),
        upstream_pkce_verifier: "v".into(),
        provider: None,
        browser_binding: TokenHash::of("binding"),
        expires_at,
    }
}

fn code(family_id: &str, expires_at: UnixTime) -> AuthorizationCodeRecord {
    AuthorizationCodeRecord {
        client_id: "client".into(),
        redirect_uri: "http://127.0.0.1/cb".into(),
        redirect_uri_given: true,
        code_challenge: "c".repeat(43),
        scope: vec!["openid".into()],
        audience: "https://mcp.example.com".into(),
        identity: identity(),
        auth_time: NOW,
        client_nonce: None,
        family_id: family_id.into(),
        expires_at,
        upstream_refresh: None,
        upstream_access: None,
        upstream_session: None,
    }
}

pub(crate) fn family(id: &str, first_token: TokenHash) -> RefreshFamily {
    RefreshFamily {
        id: id.into(),
        client_id: "client".into(),
        identity: identity(),
        scope: vec!["openid".into()],
        audience: "https://mcp.example.com".into(),
        absolute_expires_at: NOW.plus(DAY * 90),
        current: Some(first_token),
        current_expires_at: NOW.plus(DAY * 30),
        previous: None,
        revoked: false,
        access_tokens: vec![IssuedAccessToken {
            jti: format!("{id}-at-0"),
            expires_at: NOW.plus(MINUTE * 60),
        }],
        upstream_refresh: None,
        upstream_access: None,
        upstream_session: None,
        created_at: NOW,
        last_used_at: None,
    }
}

pub(crate) fn replacement(token: &str) -> Replacement {
    Replacement {
        hash: TokenHash::of(token),
        access_token: IssuedAccessToken {
            jti: format!("{token}-at"),
            expires_at: NOW.plus(MINUTE * 60),
        },
        ttl: DAY * 30,
        retry_window: MINUTE * 5,
        identity: None,
    }
}

async fn take(
    storage: &dyn Storage,
    state: &TokenHash,
    binding: &str,
    now: UnixTime,
) -> PendingTake {
    storage
        .take_pending(state, Some(&TokenHash::of(binding)), now)
        .await
        .unwrap()
}

pub(crate) async fn pending_authorization_is_taken_once(storage: &dyn Storage) {
    let state = TokenHash::of("state");
    storage
        .put_pending(state, pending(NOW.plus(MINUTE * 10)))
        .await
        .unwrap();
    match take(storage, &state, "binding", NOW).await {
        PendingTake::Taken(taken) => assert_eq!(taken.request.client_state.as_deref(), Some("xyz")),
        other => panic!("first take must succeed, got {other:?}"),
    }
    assert!(
        matches!(
            take(storage, &state, "binding", NOW).await,
            PendingTake::Missing
        ),
        "second take must fail"
    );
}

pub(crate) async fn peeking_at_a_pending_authorization_leaves_it_in_place(storage: &dyn Storage) {
    let state = TokenHash::of("state");
    storage
        .put_pending(state, pending(NOW.plus(MINUTE * 10)))
        .await
        .unwrap();
    let peek = |binding: &'static str, now: UnixTime| async move {
        storage
            .peek_pending(&state, Some(&TokenHash::of(binding)), now)
            .await
            .unwrap()
    };
    assert!(matches!(
        peek("stranger", NOW).await,
        PendingTake::OtherBrowser
    ));
    for _ in 0..2 {
        assert!(matches!(peek("binding", NOW).await, PendingTake::Taken(_)));
    }
    assert!(matches!(
        peek("binding", NOW.plus(MINUTE * 10)).await,
        PendingTake::Missing
    ));
    assert!(matches!(
        take(storage, &state, "binding", NOW).await,
        PendingTake::Taken(_)
    ));
    assert!(matches!(peek("binding", NOW).await, PendingTake::Missing));
}

pub(crate) async fn pending_authorization_survives_another_browser(storage: &dyn Storage) {
    let state = TokenHash::of("state");
    storage
        .put_pending(state, pending(NOW.plus(MINUTE * 10)))
        .await
        .unwrap();
    assert!(matches!(
        take(storage, &state, "stranger", NOW).await,
        PendingTake::OtherBrowser
    ));
    assert!(matches!(
        storage.take_pending(&state, None, NOW).await.unwrap(),
        PendingTake::OtherBrowser
    ));
    assert!(matches!(
        take(storage, &state, "binding", NOW).await,
        PendingTake::Taken(_)
    ));
}

pub(crate) async fn live_pending_state_is_counted(storage: &dyn Storage) {
    assert_eq!(storage.count_pending(NOW).await.unwrap(), 0);
    for (i, expires) in [MINUTE, MINUTE * 10].into_iter().enumerate() {
        storage
            .put_pending(TokenHash::of(&format!("p-{i}")), pending(NOW.plus(expires)))
            .await
            .unwrap();
        storage
            .put_consent_request(
                TokenHash::of(&format!("c-{i}")),
                ConsentRequest {
                    request: request(&["openid"]),
                    already_approved: Vec::new(),
                    expires_at: NOW.plus(expires),
                },
            )
            .await
            .unwrap();
    }
    assert_eq!(storage.count_pending(NOW).await.unwrap(), 4);
    assert_eq!(
        storage.count_pending(NOW.plus(MINUTE)).await.unwrap(),
        2,
        "expired records do not count, swept or not"
    );
    take(storage, &TokenHash::of("p-1"), "binding", NOW).await;
    assert_eq!(storage.count_pending(NOW).await.unwrap(), 3);
}

pub(crate) async fn expired_pending_authorization_is_gone(storage: &dyn Storage) {
    let state = TokenHash::of("state");
    storage
        .put_pending(state, pending(NOW.plus(MINUTE * 10)))
        .await
        .unwrap();
    assert!(matches!(
        take(storage, &state, "binding", NOW.plus(MINUTE * 10)).await,
        PendingTake::Missing
    ));
}

pub(crate) async fn code_is_redeemed_once_and_replay_names_the_family(storage: &dyn Storage) {
    let hash = TokenHash::of("code");
    storage
        .put_code(hash, code("fam-1", NOW.plus(MINUTE * 10)))
        .await
        .unwrap();
    assert!(matches!(
        redeem(storage, &hash, NOW).await,
        CodeRedemption::Redeemed(_)
    ));
    match redeem(storage, &hash, NOW).await {
        CodeRedemption::Replayed {
            family_id,
            client_id,
        } => {
            assert_eq!(family_id, "fam-1");
            assert_eq!(client_id, "client");
        }
        other => panic!("expected a replay, got {other:?}"),
    }
    assert!(matches!(
        redeem(storage, &TokenHash::of("nope"), NOW).await,
        CodeRedemption::Unknown
    ));
}

pub(crate) async fn a_code_presented_by_another_client_is_left_untouched(storage: &dyn Storage) {
    let hash = TokenHash::of("code");
    storage
        .put_code(hash, code("fam-o", NOW.plus(MINUTE * 10)))
        .await
        .unwrap();
    let mut issued = false;
    let mut issue = |record: &AuthorizationCodeRecord| {
        issued = true;
        Some(family(&record.family_id, TokenHash::of("o-0")))
    };
    let stranger = storage
        .redeem_code(&hash, "stranger", NOW, &mut issue)
        .await
        .unwrap();
    assert!(
        matches!(stranger, CodeRedemption::OtherClient),
        "{stranger:?}"
    );
    assert!(!issued, "nothing is built for another client");
    assert!(matches!(
        redeem(storage, &hash, NOW).await,
        CodeRedemption::Redeemed(_)
    ));
    // Spent, it is still another client's code to a stranger, never a replay it could use.
    let after = storage
        .redeem_code(
            &hash,
            "stranger",
            NOW,
            &mut |_: &AuthorizationCodeRecord| None,
        )
        .await
        .unwrap();
    assert!(matches!(after, CodeRedemption::OtherClient), "{after:?}");
}

pub(crate) async fn expired_code_is_refused(storage: &dyn Storage) {
    let hash = TokenHash::of("code");
    storage
        .put_code(hash, code("fam-1", NOW.plus(MINUTE * 10)))
        .await
        .unwrap();
    assert!(matches!(
        redeem(storage, &hash, NOW.plus(MINUTE * 10)).await,
        CodeRedemption::Expired
    ));
}

/// Redeems a code whose token request fails its checks: nothing is issued.
async fn redeem(storage: &dyn Storage, code: &TokenHash, now: UnixTime) -> CodeRedemption {
    storage
        .redeem_code(code, "client", now, &mut |_: &AuthorizationCodeRecord| None)
        .await
        .unwrap()
}

pub(crate) async fn redeeming_stores_the_grant_it_builds(storage: &dyn Storage) {
    let hash = TokenHash::of("code");
    storage
        .put_code(hash, code("fam-g", NOW.plus(MINUTE)))
        .await
        .unwrap();
    let mut seen = None;
    let redemption = storage
        .redeem_code(
            &hash,
            "client",
            NOW,
            &mut |record: &AuthorizationCodeRecord| {
                seen = Some(record.family_id.clone());
                Some(family(&record.family_id, TokenHash::of("g-0")))
            },
        )
        .await
        .unwrap();
    assert!(matches!(redemption, CodeRedemption::Redeemed(_)));
    assert_eq!(seen.as_deref(), Some("fam-g"));
    let (outcome, _) = storage
        .rotate_refresh(&TokenHash::of("g-0"), &CLIENT, replacement("g-1"), NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome, Presentation::Rotated);

    // A failed check spends the code all the same, and stores nothing.
    let failed = TokenHash::of("code-2");
    storage
        .put_code(failed, code("fam-f", NOW.plus(MINUTE)))
        .await
        .unwrap();
    assert!(matches!(
        redeem(storage, &failed, NOW).await,
        CodeRedemption::Redeemed(_)
    ));
    assert!(matches!(
        redeem(storage, &failed, NOW).await,
        CodeRedemption::Replayed { .. }
    ));
}

/// Every loser sees the replay only once the winner's grant is stored, so revoking it works.
pub(crate) async fn concurrent_redemptions_succeed_exactly_once<S: Storage>(storage: Arc<S>) {
    let hash = TokenHash::of("contended");
    storage
        .put_code(hash, code("fam-c", NOW.plus(MINUTE)))
        .await
        .unwrap();
    let contenders = 16;
    let start = Arc::new(Barrier::new(contenders));
    let attempts: Vec<_> = (0..contenders)
        .map(|i| {
            let storage = Arc::clone(&storage);
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                start.wait().await;
                let first_token = TokenHash::of(&format!("c-{i}"));
                let mut issue =
                    |record: &AuthorizationCodeRecord| Some(family(&record.family_id, first_token));
                let redemption = storage
                    .redeem_code(&hash, "client", NOW, &mut issue)
                    .await
                    .unwrap();
                if let CodeRedemption::Replayed { family_id, .. } = &redemption {
                    storage.revoke_family(family_id, NOW).await.unwrap();
                }
                (first_token, redemption)
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut replays = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            (token, CodeRedemption::Redeemed(_)) => winners.push(token),
            (_, CodeRedemption::Replayed { .. }) => replays += 1,
            (_, other) => panic!("expected a redemption or a replay, got {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1);
    assert_eq!(replays, contenders - 1);
    let (outcome, _) = storage
        .rotate_refresh(&winners[0], &CLIENT, replacement("c-next"), NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome, Presentation::Revoked);
}

pub(crate) async fn concurrent_rotations_of_one_token_rotate_exactly_once<S: Storage>(
    storage: Arc<S>,
) {
    let first = TokenHash::of("race-0");
    assert!(
        storage
            .create_family(family("fam-race", first))
            .await
            .unwrap()
    );
    let contenders = 8;
    let start = Arc::new(Barrier::new(contenders));
    let attempts: Vec<_> = (0..contenders)
        .map(|i| {
            let storage = Arc::clone(&storage);
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                start.wait().await;
                let replacement = replacement(&format!("race-{}", i + 1));
                let (outcome, _) = storage
                    .rotate_refresh(&first, &CLIENT, replacement, NOW)
                    .await
                    .unwrap()
                    .unwrap();
                outcome
            })
        })
        .collect();
    let (mut rotated, mut retried, mut reused) = (0, 0, 0);
    for attempt in attempts {
        match attempt.await.unwrap() {
            Presentation::Rotated => rotated += 1,
            Presentation::RetriedLostResponse => retried += 1,
            // Beyond the retries a lost response may take, the rest is reuse; once the family is
            // revoked, later ones find it so.
            Presentation::Reused | Presentation::Revoked => reused += 1,
            other => panic!("a presentation inside the window must not be {other:?}"),
        }
    }
    // A non-atomic read-modify-write would let several presentations see the token as current,
    // or more of them count as retries than the rule allows.
    assert_eq!(rotated, 1, "exactly one presentation rotates");
    assert_eq!(retried, crate::tokens::refresh::MAX_RETRIES as usize);
    assert_eq!(reused, contenders - 1 - retried);
}

/// A stolen token replayed while the user signs out: the rotation that finds the reuse revokes
/// the family while `revoke_family` revokes it too. Both take the family's locks in the same
/// order, so neither waits for the other forever (PostgreSQL would abort one as a deadlock).
pub(crate) async fn a_reuse_racing_a_revocation_revokes_without_failing<S: Storage>(
    storage: Arc<S>,
) {
    let families = 16;
    let mut racers = Vec::new();
    for f in 0..families {
        let id = format!("fam-clash-{f}");
        let retired = TokenHash::of(&format!("clash-{f}-0"));
        assert!(storage.create_family(family(&id, retired)).await.unwrap());
        let mut current = retired;
        // Two rotations: the first token is no longer the one a lost response may retry.
        for n in 1..=2 {
            let next = replacement(&format!("clash-{f}-{n}"));
            let hash = next.hash;
            storage
                .rotate_refresh(&current, &CLIENT, next, NOW)
                .await
                .unwrap()
                .unwrap();
            current = hash;
        }
        let start = Arc::new(Barrier::new(4));
        for racer in 0..4 {
            let storage = Arc::clone(&storage);
            let start = Arc::clone(&start);
            let id = id.clone();
            racers.push(tokio::spawn(async move {
                start.wait().await;
                if racer % 2 == 0 {
                    let next = replacement(&format!("{id}-replay-{racer}"));
                    let (outcome, _) = storage
                        .rotate_refresh(&retired, &CLIENT, next, NOW)
                        .await
                        .expect("a reuse racing a revocation must not fail")
                        .expect("the family exists");
                    assert!(
                        matches!(outcome, Presentation::Reused | Presentation::Revoked),
                        "{outcome:?}"
                    );
                } else {
                    storage
                        .revoke_family(&id, NOW)
                        .await
                        .expect("a revocation racing a reuse must not fail");
                }
            }));
        }
    }
    for racer in racers {
        racer.await.unwrap();
    }
    for f in 0..families {
        for jti in [
            format!("fam-clash-{f}-at-0"),
            format!("clash-{f}-1-at"),
            format!("clash-{f}-2-at"),
        ] {
            assert!(
                storage.is_access_token_revoked(&jti, NOW).await.unwrap(),
                "{jti} must be revoked"
            );
        }
        let current = TokenHash::of(&format!("clash-{f}-2"));
        let (outcome, _) = storage
            .rotate_refresh(&current, &CLIENT, replacement("after"), NOW)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(outcome, Presentation::Revoked);
    }
}

pub(crate) async fn rapid_refreshing_revokes_the_oldest_access_tokens_instead_of_growing(
    storage: &dyn Storage,
) {
    let mut current = TokenHash::of("fast-0");
    assert!(
        storage
            .create_family(family("fam-fast", current))
            .await
            .unwrap()
    );
    for n in 1..=crate::tokens::refresh::MAX_TRACKED_ACCESS_TOKENS {
        let next = replacement(&format!("fast-{n}"));
        let hash = next.hash;
        let (_, fam) = storage
            .rotate_refresh(&current, &CLIENT, next, NOW)
            .await
            .unwrap()
            .unwrap();
        assert!(fam.access_tokens.len() <= crate::tokens::refresh::MAX_TRACKED_ACCESS_TOKENS);
        current = hash;
    }
    assert!(
        storage
            .is_access_token_revoked("fam-fast-at-0", NOW)
            .await
            .unwrap()
    );
    assert!(
        !storage
            .is_access_token_revoked("fast-1-at", NOW)
            .await
            .unwrap()
    );
}

pub(crate) async fn consent_requests_are_single_use_and_expire(storage: &dyn Storage) {
    let token = TokenHash::of("consent");
    let pending = ConsentRequest {
        request: request(&["openid"]),
        already_approved: Vec::new(),
        expires_at: NOW.plus(MINUTE * 10),
    };
    storage.put_consent_request(token, pending).await.unwrap();
    assert!(
        storage
            .get_consent_request(&token, NOW)
            .await
            .unwrap()
            .is_some(),
        "reading does not use it up"
    );
    assert!(
        storage
            .get_consent_request(&token, NOW.plus(MINUTE * 10))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        storage
            .take_consent_request(&token, NOW)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        storage
            .take_consent_request(&token, NOW)
            .await
            .unwrap()
            .is_none()
    );
}

pub(crate) async fn consent_grants_cover_their_subject_client_redirect_and_scopes(
    storage: &dyn Storage,
) {
    let grant = |scope: &[&str]| ConsentGrant {
        subject: "user-1".into(),
        client_id: "client".into(),
        redirect_uri: "http://127.0.0.1/cb".into(),
        scope: scope.iter().map(|s| s.to_string()).collect(),
        audience: "https://mcp.example.com".into(),
        expires_at: NOW.plus(DAY),
    };
    storage
        .put_consent_grant(grant(&["openid"]), NOW)
        .await
        .unwrap();
    assert!(
        storage
            .has_consent("user-1", &request(&["openid"]), NOW)
            .await
            .unwrap()
    );
    assert!(
        !storage
            .has_consent("user-1", &request(&["openid", "email"]), NOW)
            .await
            .unwrap()
    );
    assert!(
        !storage
            .has_consent("user-2", &request(&["openid"]), NOW)
            .await
            .unwrap()
    );
    let mut elsewhere = request(&["openid"]);
    elsewhere.redirect_uri = "https://other.example.com/cb".into();
    assert!(
        !storage
            .has_consent("user-1", &elsewhere, NOW)
            .await
            .unwrap()
    );
    let mut other_resource = request(&["openid"]);
    other_resource.audience = "https://other.example.com/mcp".into();
    assert!(
        !storage
            .has_consent("user-1", &other_resource, NOW)
            .await
            .unwrap()
    );
    // A later approval adds its scopes to the earlier one.
    storage
        .put_consent_grant(grant(&["email"]), NOW)
        .await
        .unwrap();
    assert!(
        storage
            .has_consent("user-1", &request(&["openid", "email"]), NOW)
            .await
            .unwrap()
    );
    assert!(
        !storage
            .has_consent("user-1", &request(&["openid"]), NOW.plus(DAY))
            .await
            .unwrap()
    );
    // What was approved, as one set, for showing only what a new request adds.
    let mut consented = storage
        .consented_scopes("user-1", &request(&["mcp:tools"]), NOW)
        .await
        .unwrap()
        .unwrap();
    consented.sort();
    assert_eq!(consented, ["email", "openid"]);
    assert_eq!(
        storage
            .consented_scopes("user-2", &request(&["openid"]), NOW)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        storage
            .consented_scopes("user-1", &request(&["openid"]), NOW.plus(DAY))
            .await
            .unwrap(),
        None
    );
    // Once expired, an approval is not revived by the next one: only the new scopes count.
    let later = NOW.plus(DAY).plus(DAY);
    let mut renewed = grant(&["mcp:tools"]);
    renewed.expires_at = later.plus(DAY);
    storage.put_consent_grant(renewed, later).await.unwrap();
    assert_eq!(
        storage
            .consented_scopes("user-1", &request(&["openid"]), later)
            .await
            .unwrap(),
        Some(vec!["mcp:tools".to_owned()])
    );
}

pub(crate) fn registered(id: &str) -> RegisteredClient {
    RegisteredClient {
        issued_at: NOW,
        registration_token_hash: Some(TokenHash::of("registration-token")),
        ..RegisteredClient::example(id)
    }
}

pub(crate) async fn deleting_a_client_revokes_its_grants_and_no_other(storage: &dyn Storage) {
    assert!(
        storage
            .register_client(registered("leaving"), 10)
            .await
            .unwrap()
    );
    assert!(
        storage
            .register_client(registered("staying"), 10)
            .await
            .unwrap()
    );
    for (family_id, client_id) in [("l-1", "leaving"), ("l-2", "leaving"), ("s-1", "staying")] {
        let mut grant = family(family_id, TokenHash::of(family_id));
        grant.client_id = client_id.into();
        assert!(storage.create_family(grant).await.unwrap());
    }
    // A code the client was given and has not redeemed yet: its grant must not outlive the client.
    let in_flight = TokenHash::of("code-in-flight");
    let mut record = code("l-3", NOW.plus(MINUTE));
    record.client_id = "leaving".into();
    storage.put_code(in_flight, record).await.unwrap();
    assert_eq!(
        storage.get_client("leaving").await.unwrap().unwrap(),
        registered("leaving"),
        "the registration token's hash is kept"
    );
    let ended = storage
        .delete_client("leaving", NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ended_ids(ended),
        ["l-1 (live)", "l-2 (live)", "l-3"],
        "its families and the grant of its code in flight"
    );
    assert!(storage.get_client("leaving").await.unwrap().is_none());
    assert!(
        storage
            .delete_client("leaving", NOW)
            .await
            .unwrap()
            .is_none(),
        "deleted once"
    );
    let leaving = RefreshRequest {
        client_id: "leaving",
        ..CLIENT
    };
    for family_id in ["l-1", "l-2"] {
        assert!(
            storage
                .is_access_token_revoked(&format!("{family_id}-at-0"), NOW)
                .await
                .unwrap(),
            "{family_id}'s access token"
        );
        let (presentation, _) = storage
            .rotate_refresh(
                &TokenHash::of(family_id),
                &leaving,
                replacement(&format!("{family_id}-next")),
                NOW,
            )
            .await
            .unwrap()
            .expect("the family is still known, as revoked");
        assert_eq!(presentation, Presentation::Revoked, "{family_id}");
    }
    // Redeemed after the deletion (the token endpoint had authenticated the client before it):
    // the family it stores is revoked at once, its access token with it.
    redeem_in_flight(storage, &in_flight, "leaving", NOW, "l-3", |grant| {
        grant.client_id = "leaving".into();
    })
    .await;
    assert!(
        storage
            .is_access_token_revoked("l-3-at-0", NOW)
            .await
            .unwrap()
    );
    assert!(
        !storage
            .is_access_token_revoked("s-1-at-0", NOW)
            .await
            .unwrap()
    );
    let staying = RefreshRequest {
        client_id: "staying",
        ..CLIENT
    };
    let (presentation, _) = storage
        .rotate_refresh(
            &TokenHash::of("s-1"),
            &staying,
            replacement("s-1-next"),
            NOW,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(presentation, Presentation::Rotated);
}

pub(crate) async fn registered_clients_are_capped_and_deleted_when_unused(storage: &dyn Storage) {
    let client = |id: &str| RegisteredClient {
        registration_token_hash: None,
        id_token_signed_response_alg: None,
        jwks: None,
        jwks_uri: None,
        ..registered(id)
    };
    assert!(storage.register_client(client("a"), 2).await.unwrap());
    assert!(storage.register_client(client("b"), 2).await.unwrap());
    assert!(
        !storage.register_client(client("c"), 2).await.unwrap(),
        "the cap holds"
    );
    assert_eq!(
        storage.get_client("a").await.unwrap().unwrap().client_id,
        "a"
    );
    storage.touch_client("a", NOW.plus(DAY)).await.unwrap();
    assert_eq!(
        storage
            .delete_unused_clients(NOW.plus(MINUTE), NOW.plus(MINUTE))
            .await
            .unwrap(),
        1
    );
    assert!(storage.get_client("b").await.unwrap().is_none());
    assert!(storage.get_client("a").await.unwrap().is_some());
}

pub(crate) async fn grant_without_refresh_token_still_revokes_its_access_tokens(
    storage: &dyn Storage,
) {
    let mut grant = family("fam-no-refresh", TokenHash::of("unused"));
    grant.current = None;
    assert!(storage.create_family(grant).await.unwrap());
    storage.revoke_family("fam-no-refresh", NOW).await.unwrap();
    assert!(
        storage
            .is_access_token_revoked("fam-no-refresh-at-0", NOW)
            .await
            .unwrap()
    );
    assert!(
        storage
            .rotate_refresh(&TokenHash::of("unused"), &CLIENT, replacement("x"), NOW)
            .await
            .unwrap()
            .is_none()
    );
}

pub(crate) async fn refresh_rotation_and_reuse_revokes_family_and_its_access_tokens(
    storage: &dyn Storage,
) {
    let first = TokenHash::of("rt-0");
    assert!(storage.create_family(family("fam-r", first)).await.unwrap());
    let (outcome, fam) = storage
        .rotate_refresh(&first, &CLIENT, replacement("rt-1"), NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome, Presentation::Rotated);
    assert_eq!(fam.current, Some(TokenHash::of("rt-1")));
    let (outcome, _) = storage
        .rotate_refresh(&TokenHash::of("rt-1"), &CLIENT, replacement("rt-2"), NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome, Presentation::Rotated);
    assert!(
        !storage
            .is_access_token_revoked("fam-r-at-0", NOW)
            .await
            .unwrap()
    );
    let (outcome, _) = storage
        .rotate_refresh(&first, &CLIENT, replacement("rt-x"), NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome, Presentation::Reused);
    for jti in ["fam-r-at-0", "rt-1-at", "rt-2-at"] {
        assert!(
            storage.is_access_token_revoked(jti, NOW).await.unwrap(),
            "{jti} must be revoked"
        );
    }
    let (outcome, _) = storage
        .rotate_refresh(&TokenHash::of("rt-2"), &CLIENT, replacement("rt-3"), NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome, Presentation::Revoked);
    assert!(
        storage
            .rotate_refresh(&TokenHash::of("rt-x"), &CLIENT, replacement("rt-4"), NOW)
            .await
            .unwrap()
            .is_none()
    );
}

pub(crate) async fn family_revoked_before_creation_is_never_created(storage: &dyn Storage) {
    storage.revoke_family("fam-late", NOW).await.unwrap();
    assert!(
        !storage
            .create_family(family("fam-late", TokenHash::of("late")))
            .await
            .unwrap()
    );
    assert!(
        storage
            .rotate_refresh(&TokenHash::of("late"), &CLIENT, replacement("l2"), NOW)
            .await
            .unwrap()
            .is_none()
    );
}

pub(crate) async fn sweep_removes_only_expired_entries(storage: &dyn Storage) {
    storage
        .put_pending(TokenHash::of("p-old"), pending(NOW.plus(MINUTE)))
        .await
        .unwrap();
    storage
        .put_pending(TokenHash::of("p-new"), pending(NOW.plus(MINUTE * 20)))
        .await
        .unwrap();
    storage
        .put_code(TokenHash::of("c-old"), code("f", NOW.plus(MINUTE)))
        .await
        .unwrap();
    storage
        .create_family(family("fam-s", TokenHash::of("s-0")))
        .await
        .unwrap();
    let removed = storage.sweep_expired(NOW.plus(MINUTE * 5)).await.unwrap();
    assert_eq!(removed, 2);
    let later = NOW.plus(MINUTE * 5);
    assert!(matches!(
        take(storage, &TokenHash::of("p-new"), "binding", later).await,
        PendingTake::Taken(_)
    ));
    assert!(matches!(
        redeem(storage, &TokenHash::of("c-old"), later).await,
        CodeRedemption::Unknown
    ));
    // Past the refresh token's expiry the family goes, and its token is unknown.
    storage.sweep_expired(NOW.plus(DAY * 31)).await.unwrap();
    assert!(
        storage
            .rotate_refresh(
                &TokenHash::of("s-0"),
                &CLIENT,
                replacement("s-1"),
                NOW.plus(DAY * 31)
            )
            .await
            .unwrap()
            .is_none()
    );
}

/// Every token request of a registered client touches it; most of them write nothing.
pub(crate) async fn a_clients_last_use_is_written_at_most_once_per_precision(
    storage: &dyn Storage,
) {
    use crate::storage::LAST_USE_PRECISION;
    assert!(
        storage
            .register_client(registered("busy"), 10)
            .await
            .unwrap()
    );
    let last_use = || async {
        storage
            .get_client("busy")
            .await
            .unwrap()
            .unwrap()
            .last_used_at
    };
    storage.touch_client("busy", NOW).await.unwrap();
    assert_eq!(last_use().await, Some(NOW));
    let just_short = UnixTime(NOW.0 + LAST_USE_PRECISION.as_secs() as i64 - 1);
    storage.touch_client("busy", just_short).await.unwrap();
    assert_eq!(last_use().await, Some(NOW), "within the precision");
    let later = NOW.plus(LAST_USE_PRECISION);
    storage.touch_client("busy", later).await.unwrap();
    assert_eq!(last_use().await, Some(later));
    // An instance whose clock is behind does not move the last use back.
    storage.touch_client("busy", NOW).await.unwrap();
    assert_eq!(last_use().await, Some(later));
    storage.touch_client("nobody", later).await.unwrap();
    assert!(storage.get_client("nobody").await.unwrap().is_none());
}

pub(crate) async fn registered_clients_are_listed_oldest_first_with_their_last_use(
    storage: &dyn Storage,
) {
    assert!(storage.list_clients().await.unwrap().is_empty());
    let later = RegisteredClient {
        issued_at: NOW.plus(MINUTE),
        ..registered("a-later")
    };
    assert!(storage.register_client(later, 10).await.unwrap());
    assert!(
        storage
            .register_client(registered("z-first"), 10)
            .await
            .unwrap()
    );
    storage
        .touch_client("z-first", NOW.plus(DAY))
        .await
        .unwrap();
    let listed = storage.list_clients().await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|c| c.client_id.as_str()).collect();
    assert_eq!(ids, ["z-first", "a-later"]);
    assert_eq!(listed[0].last_used_at, Some(NOW.plus(DAY)));
    assert_eq!(listed[1].last_used_at, None);
}

/// Redeems `code` (not redeemed yet) for `client_id`, storing the grant its record names, with
/// `first_token` as its refresh token, as `shape` makes it.
async fn redeem_in_flight(
    storage: &dyn Storage,
    code: &TokenHash,
    client_id: &str,
    now: UnixTime,
    first_token: &str,
    shape: impl Fn(&mut RefreshFamily) + Send + Sync,
) {
    let redemption = storage
        .redeem_code(code, client_id, now, &mut |record| {
            let mut grant = family(&record.family_id, TokenHash::of(first_token));
            shape(&mut grant);
            Some(grant)
        })
        .await
        .unwrap();
    assert!(matches!(redemption, CodeRedemption::Redeemed(_)));
}

/// The ended grants' ids, sorted, each marked `(live)` when it was.
fn ended_ids(ended: Vec<EndedGrant>) -> Vec<String> {
    let mut ids: Vec<String> = ended
        .into_iter()
        .map(|grant| match grant.was_live {
            true => format!("{} (live)", grant.family_id),
            false => grant.family_id,
        })
        .collect();
    ids.sort();
    ids
}

/// A grant of `subject` for `client_id`, created at `created_at`.
fn grant_of(id: &str, subject: &str, client_id: &str, created_at: UnixTime) -> RefreshFamily {
    let mut grant = family(id, TokenHash::of(id));
    grant.identity.subject = subject.into();
    grant.client_id = client_id.into();
    grant.created_at = created_at;
    grant
}

fn consent_of(subject: &str, client_id: &str) -> ConsentGrant {
    ConsentGrant {
        subject: subject.into(),
        client_id: client_id.into(),
        redirect_uri: "http://127.0.0.1/cb".into(),
        scope: vec!["openid".into()],
        audience: "https://mcp.example.com".into(),
        expires_at: NOW.plus(DAY),
    }
}

fn consent_request_of(client_id: &str) -> AuthorizationRequest {
    AuthorizationRequest {
        client_id: client_id.into(),
        ..request(&["openid"])
    }
}

pub(crate) async fn a_users_grants_are_listed_then_revoked_with_codes_and_consents_alone(
    storage: &dyn Storage,
) {
    for grant in [
        grant_of("ada-2", "ada", "c2", NOW.plus(MINUTE)),
        grant_of("ada-1", "ada", "c1", NOW),
        grant_of("ada-revoked", "ada", "c1", NOW),
        grant_of("bob-1", "bob", "c1", NOW),
    ] {
        assert!(storage.create_family(grant).await.unwrap());
    }
    storage.revoke_family("ada-revoked", NOW).await.unwrap();
    let mut ended = grant_of("ada-ended", "ada", "c1", NOW);
    ended.current_expires_at = NOW.plus(MINUTE);
    ended.access_tokens.clear();
    assert!(storage.create_family(ended).await.unwrap());
    let used = NOW.plus(MINUTE * 2);
    let ada_2 = RefreshRequest {
        client_id: "c2",
        ..CLIENT
    };
    storage
        .rotate_refresh(
            &TokenHash::of("ada-2"),
            &ada_2,
            replacement("ada-2-next"),
            used,
        )
        .await
        .unwrap();
    let in_flight = TokenHash::of("ada-code");
    let mut record = code("ada-3", NOW.plus(MINUTE * 10));
    record.identity.subject = "ada".into();
    storage.put_code(in_flight, record).await.unwrap();
    for (subject, client_id) in [("ada", "c1"), ("bob", "c1")] {
        storage
            .put_consent_grant(consent_of(subject, client_id), NOW)
            .await
            .unwrap();
    }

    let now = NOW.plus(MINUTE * 3);
    let ids = |grants: Vec<RefreshFamily>| -> Vec<String> {
        grants.into_iter().map(|grant| grant.id).collect()
    };
    let ada = storage
        .live_grants(GrantOwner::Subject("ada"), now)
        .await
        .unwrap();
    assert_eq!(ada[1].last_used_at, Some(used));
    assert_eq!(ada[0].created_at, NOW);
    assert_eq!(
        ids(ada),
        ["ada-1", "ada-2"],
        "oldest first; not the revoked or ended"
    );
    assert_eq!(
        ids(storage
            .live_grants(GrantOwner::Client("c1"), now)
            .await
            .unwrap()),
        ["ada-1", "bob-1"]
    );
    assert!(
        storage
            .live_grants(GrantOwner::Subject("ad\0a"), now)
            .await
            .unwrap()
            .is_empty()
    );

    let bob_code = TokenHash::of("bob-code");
    let mut record = code("bob-2", NOW.plus(MINUTE * 10));
    record.identity.subject = "bob".into();
    storage.put_code(bob_code, record).await.unwrap();
    assert_eq!(
        ended_ids(
            storage
                .revoke_grants(GrantOwner::Subject("ada"), now)
                .await
                .unwrap()
        ),
        ["ada-1 (live)", "ada-2 (live)", "ada-3", "ada-ended"],
        "not ada-revoked, revoked before"
    );
    for jti in ["ada-1-at-0", "ada-2-next-at"] {
        assert!(
            storage.is_access_token_revoked(jti, now).await.unwrap(),
            "{jti}"
        );
    }
    assert!(
        !storage
            .is_access_token_revoked("bob-1-at-0", now)
            .await
            .unwrap()
    );
    let (presentation, _) = storage
        .rotate_refresh(&TokenHash::of("ada-2-next"), &ada_2, replacement("x"), now)
        .await
        .unwrap()
        .expect("known, as revoked");
    assert_eq!(presentation, Presentation::Revoked);
    redeem_in_flight(storage, &in_flight, "client", now, "ada-3", |grant| {
        grant.identity.subject = "ada".into();
    })
    .await;
    assert!(
        storage
            .is_access_token_revoked("ada-3-at-0", now)
            .await
            .unwrap(),
        "the code's grant starts revoked"
    );
    assert_eq!(
        storage
            .consented_scopes("ada", &consent_request_of("c1"), now)
            .await
            .unwrap(),
        None
    );
    assert!(
        storage
            .has_consent("bob", &consent_request_of("c1"), now)
            .await
            .unwrap()
    );
    assert!(
        storage
            .live_grants(GrantOwner::Subject("ada"), now)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        storage
            .revoke_grants(GrantOwner::Subject("ada"), now)
            .await
            .unwrap()
            .is_empty(),
        "nothing is left to end"
    );
    redeem_in_flight(storage, &bob_code, "client", now, "bob-2", |grant| {
        grant.identity.subject = "bob".into();
    })
    .await;
    assert!(
        !storage
            .is_access_token_revoked("bob-2-at-0", now)
            .await
            .unwrap(),
        "another user's code is left alone"
    );
    assert_eq!(
        ids(storage
            .live_grants(GrantOwner::Subject("bob"), now)
            .await
            .unwrap()),
        ["bob-1", "bob-2"]
    );
    assert!(storage.revoke_family("bob-1", now).await.unwrap());
    assert!(!storage.revoke_family("bob-1", now).await.unwrap(), "once");
    assert!(storage.revoke_family("not-yet", now).await.unwrap());
    assert!(
        !storage.revoke_family("not-yet", now).await.unwrap(),
        "once"
    );
}

pub(crate) async fn a_clients_grants_are_revoked_with_its_consents_alone(storage: &dyn Storage) {
    for grant in [
        grant_of("c1-ada", "ada", "c1", NOW),
        grant_of("c1-bob", "bob", "c1", NOW),
        grant_of("c2-ada", "ada", "c2", NOW),
    ] {
        assert!(storage.create_family(grant).await.unwrap());
    }
    for client_id in ["c1", "c2"] {
        storage
            .put_consent_grant(consent_of("ada", client_id), NOW)
            .await
            .unwrap();
    }
    let in_flight = TokenHash::of("c1-code");
    let mut record = code("c1-pending", NOW.plus(MINUTE * 10));
    record.client_id = "c1".into();
    storage.put_code(in_flight, record).await.unwrap();
    assert_eq!(
        ended_ids(
            storage
                .revoke_grants(GrantOwner::Client("c1"), NOW)
                .await
                .unwrap()
        ),
        ["c1-ada (live)", "c1-bob (live)", "c1-pending"]
    );
    redeem_in_flight(storage, &in_flight, "c1", NOW, "c1-pending", |grant| {
        grant.client_id = "c1".into();
    })
    .await;
    assert!(
        storage
            .is_access_token_revoked("c1-pending-at-0", NOW)
            .await
            .unwrap(),
        "the code's grant starts revoked"
    );
    for (jti, revoked) in [
        ("c1-ada-at-0", true),
        ("c1-bob-at-0", true),
        ("c2-ada-at-0", false),
    ] {
        assert_eq!(
            storage.is_access_token_revoked(jti, NOW).await.unwrap(),
            revoked,
            "{jti}"
        );
    }
    assert!(
        !storage
            .has_consent("ada", &consent_request_of("c1"), NOW)
            .await
            .unwrap()
    );
    assert!(
        storage
            .has_consent("ada", &consent_request_of("c2"), NOW)
            .await
            .unwrap()
    );
}

pub(crate) async fn a_provider_session_ends_its_grants_and_those_of_its_user_without_one(
    storage: &dyn Storage,
) {
    let at = |provider: &str, subject: &str, sid: Option<&str>| {
        Some(crate::identity::UpstreamSession {
            provider: provider.into(),
            subject: subject.into(),
            session_id: sid.map(str::to_owned),
        })
    };
    let session = |subject: &str, sid: Option<&str>| at("corp", subject, sid);
    for (id, upstream) in [
        // Another provider's user and session go by the same values: they are someone else.
        ("partner-u1-s1", at("partner", "u1", Some("s1"))),
        ("u1-s1", session("u1", Some("s1"))),
        ("u1-s2", session("u1", Some("s2"))),
        ("u1-none", session("u1", None)),
        ("u2-s1", session("u2", Some("s1"))),
        ("u2-s3", session("u2", Some("s3"))),
        ("local", None),
    ] {
        let mut grant = family(id, TokenHash::of(id));
        grant.upstream_session = upstream;
        assert!(storage.create_family(grant).await.unwrap());
    }
    let mut record = code("u1-code", NOW.plus(MINUTE * 10));
    record.upstream_session = session("u1", Some("s1"));
    storage
        .put_code(TokenHash::of("u1-code"), record)
        .await
        .unwrap();
    let end = |subject: Option<&'static str>, session_id: Option<&'static str>| async move {
        ended_ids(
            storage
                .revoke_grants(
                    GrantOwner::ProviderSession {
                        provider: "corp",
                        subject,
                        session_id,
                    },
                    NOW,
                )
                .await
                .unwrap(),
        )
    };
    assert!(end(None, None).await.is_empty(), "a logout names something");
    assert!(
        end(Some("u3"), Some("s1")).await.is_empty(),
        "sid matches, sub does not"
    );
    assert_eq!(
        end(Some("u1"), Some("s1")).await,
        ["u1-code", "u1-none (live)", "u1-s1 (live)"]
    );
    assert_eq!(end(None, Some("s3")).await, ["u2-s3 (live)"]);
    assert_eq!(end(Some("u2"), None).await, ["u2-s1 (live)"]);
    for (jti, revoked) in [
        ("u1-s2-at-0", false),
        ("local-at-0", false),
        ("u1-s1-at-0", true),
        ("partner-u1-s1-at-0", false),
    ] {
        assert_eq!(
            storage.is_access_token_revoked(jti, NOW).await.unwrap(),
            revoked,
            "{jti}"
        );
    }
    let partner = GrantOwner::ProviderSession {
        provider: "partner",
        subject: Some("u1"),
        session_id: Some("s1"),
    };
    assert_eq!(
        ended_ids(storage.revoke_grants(partner, NOW).await.unwrap()),
        ["partner-u1-s1 (live)"],
        "the other provider's logout ends its own session"
    );
}

pub(crate) async fn a_grant_is_live_until_revoked(storage: &dyn Storage) {
    assert!(!storage.grant_is_live("never-stored").await.unwrap());
    assert!(
        storage
            .create_family(family("g1", TokenHash::of("g1")))
            .await
            .unwrap()
    );
    assert!(storage.grant_is_live("g1").await.unwrap());
    assert!(storage.revoke_family("g1", NOW).await.unwrap());
    assert!(!storage.grant_is_live("g1").await.unwrap());
    let revoked = storage.refresh_family("g1").await.unwrap().unwrap();
    assert!(revoked.revoked, "read as it is, revoked");
}

pub(crate) async fn the_providers_tokens_kept_for_a_grant_are_replaced_only_from_the_current_ones(
    storage: &dyn Storage,
) {
    let sealer = crate::sealing::Sealer::new(&crate::secret::SecretString::new(
        "contract-test-encryption-key-0123456789",
    ));
    let seal = |value: &str| {
        sealer
            .seal_secret("kept", &crate::secret::SecretString::new(value))
            .unwrap()
    };
    let (first_refresh, first_access) = (seal("rt-1"), seal("at-1"));
    let mut kept = family("kept", TokenHash::of("kept"));
    kept.upstream_refresh = Some(first_refresh.clone());
    kept.upstream_access = Some(Box::new(first_access.clone()));
    assert!(storage.create_family(kept).await.unwrap());
    assert!(
        storage
            .refresh_family("never-stored")
            .await
            .unwrap()
            .is_none()
    );
    let stored = storage.refresh_family("kept").await.unwrap().unwrap();
    assert_eq!(stored.upstream_access.as_deref(), Some(&first_access));

    let (second_refresh, second_access) = (seal("rt-2"), seal("at-2"));
    assert!(
        storage
            .replace_upstream_tokens(
                "kept",
                &first_refresh,
                second_refresh.clone(),
                Some(second_access.clone())
            )
            .await
            .unwrap()
    );
    // A renewal that started from the first tokens lost the race: nothing of it is stored.
    assert!(
        !storage
            .replace_upstream_tokens(
                "kept",
                &first_refresh,
                seal("rt-late"),
                Some(seal("at-late"))
            )
            .await
            .unwrap()
    );
    let stored = storage.refresh_family("kept").await.unwrap().unwrap();
    assert_eq!(stored.upstream_refresh.as_ref(), Some(&second_refresh));
    assert_eq!(stored.upstream_access.as_deref(), Some(&second_access));

    // Without an access token (re-validation alone), the one kept stays.
    let third_refresh = seal("rt-3");
    assert!(
        storage
            .replace_upstream_tokens("kept", &second_refresh, third_refresh.clone(), None)
            .await
            .unwrap()
    );
    let stored = storage.refresh_family("kept").await.unwrap().unwrap();
    assert_eq!(stored.upstream_refresh.as_ref(), Some(&third_refresh));
    assert_eq!(stored.upstream_access.as_deref(), Some(&second_access));
    // Rotating the grant keeps them.
    let rotated = storage
        .rotate_refresh(&TokenHash::of("kept"), &CLIENT, replacement("kept-2"), NOW)
        .await
        .unwrap();
    assert!(matches!(rotated, Some((Presentation::Rotated, _))));
    let stored = storage.refresh_family("kept").await.unwrap().unwrap();
    assert_eq!(stored.upstream_refresh.as_ref(), Some(&third_refresh));
    assert_eq!(stored.upstream_access.as_deref(), Some(&second_access));
    assert!(
        !storage
            .replace_upstream_tokens("unknown", &third_refresh, seal("x"), None)
            .await
            .unwrap()
    );
    // Revoked, the grant lets go of them: nothing may use them for it again.
    assert!(storage.revoke_family("kept", NOW).await.unwrap());
    let stored = storage.refresh_family("kept").await.unwrap().unwrap();
    assert!(stored.upstream_refresh.is_none() && stored.upstream_access.is_none());
    assert!(
        !storage
            .replace_upstream_tokens("kept", &third_refresh, seal("y"), Some(seal("z")))
            .await
            .unwrap()
    );
}
