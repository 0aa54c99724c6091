//! The upstream's return (OIDC Core §3.1.2.5): consume our state, exchange the upstream code,
//! validate the ID token, apply the access policy; `sign_in` then mints our own authorization code.

use super::authorize::{AuthorizeError, ClientRedirect};
use super::sign_in::{
    ProviderTokens, SignedIn, SignedInUser, finish_sign_in, outcome_of, record_failed_sign_in,
    take_pending_sign_in,
};
use super::{Bridge, Cause, OAuthError, Params, SignIn};
use crate::clock::UnixTime;
use crate::storage::PendingAuthorization;
use crate::upstream::UpstreamError;
use crate::upstream::claims::check_access;
use crate::upstream::providers::Provider;

/// Completes the login; on success the URL sends the user back to the client with our code.
/// `callback` is the provider segment of the callback's path (`/oauth/callback/<name>`), `None`
/// for `/oauth/callback`; `binding` is the value of the browser cookie named after `state`.
pub(crate) async fn complete_authorization(
    bridge: &Bridge,
    callback: Option<&str>,
    params: &Params,
    binding: Option<&str>,
    now: UnixTime,
) -> Result<SignedIn, AuthorizeError> {
    let page = AuthorizeError::Page;
    let SignIn::Upstream(providers) = &bridge.sign_in else {
        return Err(page(OAuthError::invalid_request(
            "this service has no upstream identity provider",
        )));
    };
    let state = params
        .get("state")
        .ok_or_else(|| page(OAuthError::invalid_request("state is missing")))?;
    let pending = take_pending_sign_in(bridge, state, binding, now).await?;
    let Some(provider) = providers.returning_to(callback, pending.provider.as_deref()) else {
        // A provider's answer for a sign-in sent elsewhere (a mix-up attack, RFC 9700 §4.4),
        // or for one still waiting for the user's choice: nothing of it is used.
        tracing::warn!(
            client_id = %pending.request.client_id,
            callback,
            sent_to = pending.provider.as_deref(),
            "a sign-in came back to the callback of another identity provider"
        );
        let error = ClientRedirect::error(
            &pending.request,
            OAuthError::AccessDenied(
                "the sign-in came back from another identity provider than it was sent to".into(),
            ),
        );
        if let Some(sent_to) = pending
            .provider
            .as_deref()
            .and_then(|name| providers.named(name))
        {
            bridge.metrics.sign_in(INVALID_RESPONSE, sent_to.name);
            record_failed_sign_in(
                sent_to.name,
                INVALID_RESPONSE,
                Some(&pending.request.client_id),
                None,
                &error,
            );
        }
        return Err(error);
    };
    let mut attempt = Attempt::default();
    let signed_in = sign_in_upstream(bridge, provider, &pending, params, now, &mut attempt).await;
    let outcome = match attempt.unverified {
        true => INVALID_RESPONSE,
        false => outcome_of(&signed_in),
    };
    bridge.metrics.sign_in(outcome, provider.name);
    if let Err(error) = &signed_in {
        record_failed_sign_in(
            provider.name,
            outcome,
            Some(&pending.request.client_id),
            attempt.subject.as_deref(),
            error,
        );
    }
    signed_in
}

/// The outcome of a sign-in whose answer did not verify, in the metrics and the audit trail.
const INVALID_RESPONSE: &str = "invalid_response";

/// How far a sign-in that failed got, for the metrics and the audit trail.
#[derive(Default)]
struct Attempt {
    /// The provider answered, but its answer did not verify.
    unverified: bool,
    /// The verified user, once known (the access policy, or what came after, refused them).
    subject: Option<String>,
}

/// The provider's answer for `pending`, turned into our code for the client, or the refusal.
async fn sign_in_upstream(
    bridge: &Bridge,
    provider: &Provider,
    pending: &PendingAuthorization,
    params: &Params,
    now: UnixTime,
    attempt: &mut Attempt,
) -> Result<SignedIn, AuthorizeError> {
    let client_id = pending.request.client_id.as_str();
    let redirect = |error: OAuthError| ClientRedirect::error(&pending.request, error);

    // RFC 9207: a provider that names itself in its answer (an error too) must name the one
    // it was sent to.
    if params
        .get("iss")
        .is_some_and(|iss| iss != provider.upstream.issuer())
    {
        attempt.unverified = true;
        tracing::warn!(
            client_id,
            provider = provider.name,
            "the answer's iss is not the identity provider the sign-in was sent to"
        );
        return Err(redirect(OAuthError::AccessDenied(
            "the identity provider's answer could not be verified".into(),
        )));
    }
    if let Some(upstream_error) = params.get("error") {
        let error = map_upstream_error(upstream_error);
        // A failure (with a cause) is logged once with the answer; a refusal is said here, by
        // its mapped code only: the raw value is whatever arrived in the query string.
        if error.cause().is_none() {
            tracing::info!(
                client_id,
                error = error.code(),
                "the upstream provider returned an error"
            );
        }
        return Err(redirect(error));
    }
    let code = params.get("code").ok_or_else(|| {
        redirect(OAuthError::internal(Cause::because(
            "the upstream provider returned neither code nor error",
        )))
    })?;
    let login = provider
        .upstream
        .exchange_code(
            code,
            pending.upstream_pkce_verifier.expose(),
            pending.upstream_nonce.expose(),
            now,
        )
        .await
        .map_err(|error| {
            redirect(match error {
                UpstreamError::NotReady | UpstreamError::Unreachable(_) => {
                    OAuthError::unavailable(error)
                }
                UpstreamError::Rejected(_) | UpstreamError::RefreshRefused(_) => {
                    OAuthError::internal(error)
                }
                // Not our failure: no cause travels with it, so it is said here.
                UpstreamError::InvalidIdToken(_) | UpstreamError::InvalidUserInfo(_) => {
                    // Refused to the client like a denial, but no one said no: for the metrics.
                    attempt.unverified = true;
                    tracing::warn!(client_id, %error, "upstream login could not be completed");
                    OAuthError::AccessDenied(
                        "the identity provider's answer could not be verified".into(),
                    )
                }
            })
        })?;
    let claims = &login.claims;
    let identity = provider
        .identity_of(claims)
        .map_err(|reason| redirect(OAuthError::internal(reason)))?;
    // Known from here on: whatever refuses the sign-in now refuses this user.
    attempt.subject = Some(identity.subject.clone());
    check_access(&identity, &provider.access_policy).map_err(|reason| {
        tracing::info!(client_id, subject = %identity.subject, %reason, "user refused by policy");
        redirect(OAuthError::AccessDenied(
            "you are not allowed to use this service".into(),
        ))
    })?;
    // Every grant names the provider session it came from, or no logout could find it: a `sub`
    // OIDC Core would not allow (control characters, past 1 KiB) is no answer to sign in with.
    let Some(session) = upstream_session(provider, claims) else {
        attempt.unverified = true;
        tracing::warn!(
            client_id,
            provider = provider.name,
            "the ID token's sub cannot be kept"
        );
        return Err(redirect(OAuthError::AccessDenied(
            "the identity provider's answer could not be verified".into(),
        )));
    };
    let auth_time = upstream_auth_time(claims.get("auth_time"), now);
    let signed_in = SignedInUser {
        provider: provider.name,
        identity,
        auth_time,
        provider_tokens: (provider.revalidate_on_refresh || provider.keep_tokens).then(|| {
            ProviderTokens {
                refresh: login.refresh_token,
                access: login.access_token.filter(|_| provider.keep_tokens),
                revalidated: provider.revalidate_on_refresh,
                kept: provider.keep_tokens,
            }
        }),
        upstream_session: Some(session),
    };
    finish_sign_in(bridge, pending, signed_in, now).await
}

/// OIDC `auth_time` when the provider sent a plausible one (a reused upstream session), else now.
/// Glewlwyd 2.7 sends `auth_time: 0`; a time before 2001 or in the future is no sign-in time, and
/// passed on it would tell our clients the user signed in in 1970 (or not yet).
fn upstream_auth_time(claim: Option<&serde_json::Value>, now: UnixTime) -> UnixTime {
    const EARLIEST_PLAUSIBLE: i64 = 1_000_000_000;
    match claim.and_then(serde_json::Value::as_i64) {
        Some(seconds) if (EARLIEST_PLAUSIBLE..=now.seconds()).contains(&seconds) => {
            UnixTime(seconds)
        }
        _ => now,
    }
}

/// Passes the upstream's refusal on in RFC 6749 terms; the upstream's description is not
/// forwarded (it may reveal details of the provider's configuration).
fn map_upstream_error(code: &str) -> OAuthError {
    match code {
        "access_denied"
        | "login_required"
        | "consent_required"
        | "interaction_required"
        | "account_selection_required" => {
            OAuthError::AccessDenied("the identity provider denied the sign-in".into())
        }
        "temporarily_unavailable" => OAuthError::unavailable(Cause::because(
            "the identity provider answered temporarily_unavailable",
        )),
        _ => OAuthError::internal(Cause::because(
            "the identity provider refused the sign-in with an error of its own",
        )),
    }
}

/// The provider session an ID token names (`sub`, and `sid` when the provider sends one):
/// what its back-channel logout will name. Values no provider would make are not kept.
fn upstream_session(
    provider: &Provider,
    claims: &serde_json::Value,
) -> Option<crate::identity::UpstreamSession> {
    let text = |name: &str| {
        claims
            .get(name)
            .and_then(serde_json::Value::as_str)
            .filter(|value| !value.is_empty() && value.len() <= MAX_SESSION_CLAIM_BYTES)
            // As a logout token's are checked: one with a control character could never match.
            .filter(|value| !value.chars().any(char::is_control))
            .map(str::to_owned)
    };
    Some(provider.session(text("sub")?, text("sid")))
}

/// Longer `sub` or `sid` values are not stored (OIDC Core caps `sub` at 255 ASCII characters).
const MAX_SESSION_CLAIM_BYTES: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::test_support::*;
    use std::collections::HashMap;
    use url::Url;

    #[test]
    fn the_provider_session_is_its_sub_and_sid_as_stored_safely() {
        use serde_json::json;
        let harness = Harness::new();
        let provider = provider("corp", Some("corp"), harness.upstream.clone());
        let upstream_session = |claims| upstream_session(&provider, &claims);
        let session = upstream_session(json!({"sub": "u-1", "sid": "s-1"})).unwrap();
        assert_eq!(session.provider, "corp");
        assert_eq!(session.subject, "u-1");
        assert_eq!(session.session_id.as_deref(), Some("s-1"));
        let without = upstream_session(json!({"sub": "u-1"})).unwrap();
        assert_eq!(without.session_id, None);
        for sid in [
            json!("s\u{0}1"),
            json!("x".repeat(1025)),
            json!(7),
            json!(""),
        ] {
            let session = upstream_session(json!({"sub": "u-1", "sid": sid})).unwrap();
            assert_eq!(session.session_id, None, "{sid}");
        }
        assert!(upstream_session(json!({"sid": "s-1"})).is_none());
    }

    #[test]
    fn only_a_plausible_upstream_auth_time_is_kept() {
        let now = UnixTime(1_800_000_000);
        let at = |value: serde_json::Value| upstream_auth_time(Some(&value), now);
        assert_eq!(
            at(serde_json::json!(1_799_999_000)),
            UnixTime(1_799_999_000)
        );
        assert_eq!(
            at(serde_json::json!(1_000_000_000)),
            UnixTime(1_000_000_000)
        );
        assert_eq!(at(serde_json::json!(999_999_999)), now);
        // Glewlwyd's 0, a time in the future, a string, nothing at all: the sign-in is now.
        assert_eq!(at(serde_json::json!(0)), now);
        assert_eq!(at(serde_json::json!(1_800_000_001)), now);
        assert_eq!(at(serde_json::json!("1799999000")), now);
        assert_eq!(upstream_auth_time(None, now), now);
    }

    fn query(url: &Url) -> HashMap<String, String> {
        url.query_pairs().into_owned().collect()
    }

    fn redirect_error(result: Result<Url, AuthorizeError>) -> ClientRedirect {
        match result {
            Err(AuthorizeError::Redirect(redirect)) => redirect,
            other => panic!("expected an error redirect, got {other:?}"),
        }
    }

    fn page_error(result: Result<Url, AuthorizeError>) -> OAuthError {
        match result {
            Err(AuthorizeError::Page(error)) => error,
            other => panic!("expected an error page, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn successful_login_redirects_with_code_state_and_iss() {
        let harness = Harness::new();
        let login = harness.authorize_public().await;
        let url = harness
            .callback(&login, &[("code", "upstream-code")])
            .await
            .unwrap();
        let query = query(&url);
        assert!(url.as_str().starts_with("http://127.0.0.1:4321/callback?"));
        assert_eq!(query["state"], "client-state");
        assert_eq!(query["iss"], ISSUER);
        assert_eq!(query["code"].len(), 43);
        let exchange = harness.upstream.last_exchange().unwrap();
        assert_eq!(exchange.code, "upstream-code");
        assert_eq!(exchange.nonce, login.nonce);
        assert_eq!(
            crate::oauth::pkce::s256(&exchange.verifier),
            login.upstream_challenge
        );
    }

    #[tokio::test]
    async fn state_is_single_use() {
        let harness = Harness::new();
        let login = harness.authorize_public().await;
        harness.callback(&login, &[("code", "c")]).await.unwrap();
        let err = page_error(harness.callback(&login, &[("code", "c")]).await);
        assert_eq!(err.code(), "invalid_request");
    }

    #[tokio::test]
    async fn unknown_missing_or_expired_state_is_an_error_page() {
        let harness = Harness::new();
        let login = harness.authorize_public().await;
        let params = Params::from([("state", "forged"), ("code", "c")]);
        let err = page_error(
            complete_authorization(
                &harness.bridge,
                None,
                &params,
                Some(&login.binding),
                harness.now(),
            )
            .await
            .map(|signed_in| signed_in.url),
        );
        assert_eq!(err.code(), "invalid_request");
        let params = Params::from([("code", "c")]);
        let err = page_error(
            complete_authorization(
                &harness.bridge,
                None,
                &params,
                Some(&login.binding),
                harness.now(),
            )
            .await
            .map(|signed_in| signed_in.url),
        );
        assert_eq!(err, OAuthError::invalid_request("state is missing"));
        harness
            .clock
            .advance(crate::oauth::PENDING_AUTHORIZATION_TTL);
        assert_eq!(
            page_error(harness.callback(&login, &[("code", "c")]).await).code(),
            "invalid_request"
        );
    }

    #[tokio::test]
    async fn callback_in_another_browser_is_refused() {
        let harness = Harness::new();
        let login = harness.authorize_public().await;
        let params = Params::from([("state", login.state.as_str()), ("code", "c")]);
        let err = page_error(
            complete_authorization(&harness.bridge, None, &params, Some("other"), harness.now())
                .await
                .map(|signed_in| signed_in.url),
        );
        assert_eq!(
            err,
            OAuthError::invalid_request("this sign-in was started in another browser; start again")
        );
        assert!(
            harness.upstream.last_exchange().is_none(),
            "no upstream exchange for an unbound callback"
        );
        // The stranger did not cancel the sign-in: the right browser still completes it.
        assert!(harness.callback(&login, &[("code", "c")]).await.is_ok());
    }

    #[tokio::test]
    async fn upstream_errors_reach_the_client() {
        for (upstream, expected) in [
            ("access_denied", "access_denied"),
            ("login_required", "access_denied"),
            ("server_error", "server_error"),
        ] {
            let harness = Harness::new();
            let login = harness.authorize_public().await;
            let redirect = redirect_error(harness.callback(&login, &[("error", upstream)]).await);
            assert_eq!(redirect.error.code(), expected);
            assert_eq!(redirect.state.as_deref(), Some("client-state"));
        }
    }

    #[tokio::test]
    async fn invalid_id_token_is_access_denied_and_no_code_is_issued() {
        let harness = Harness::new();
        harness
            .upstream
            .fail_with(UpstreamError::InvalidIdToken("Invalid nonce".into()));
        let login = harness.authorize_public().await;
        let redirect = redirect_error(harness.callback(&login, &[("code", "c")]).await);
        assert_eq!(redirect.error.code(), "access_denied");
    }

    #[tokio::test]
    async fn unreachable_upstream_is_temporarily_unavailable() {
        let harness = Harness::new();
        harness
            .upstream
            .fail_with(UpstreamError::Unreachable("connection refused".into()));
        let login = harness.authorize_public().await;
        let redirect = redirect_error(harness.callback(&login, &[("code", "c")]).await);
        assert_eq!(
            redirect.error,
            OAuthError::TemporarilyUnavailable(Cause::default())
        );
    }

    #[tokio::test]
    async fn policy_refusal_is_access_denied() {
        let mut harness = Harness::new();
        harness.provider_mut().access_policy.allowed_groups = vec!["admins".into()];
        let login = harness.authorize_public().await;
        let redirect = redirect_error(harness.callback(&login, &[("code", "c")]).await);
        assert_eq!(
            redirect.error,
            OAuthError::AccessDenied("you are not allowed to use this service".into())
        );
    }

    #[tokio::test]
    async fn mapped_claims_follow_dotted_paths() {
        let mut harness = Harness::new();
        harness.provider_mut().claims.groups = "realm_access.roles".into();
        harness.provider_mut().access_policy.allowed_groups = vec!["mcp-user".into()];
        harness.upstream.set_claims(serde_json::json!({
            "sub": "kc-1", "email": "k@corp.com", "realm_access": {"roles": ["mcp-user"]}
        }));
        let login = harness.authorize_public().await;
        let url = harness.callback(&login, &[("code", "c")]).await.unwrap();
        let code = query(&url)["code"].clone();
        let tokens = harness.redeem(&code).await.unwrap();
        let claims = harness.verify_access_token(&tokens.access_token);
        assert_eq!(claims.sub, "kc-1");
        assert_eq!(claims.groups, vec!["mcp-user"]);
    }
}
