//! The provider chooser: with several identity providers and no `login_hint` naming one of
//! their email domains, the authorization endpoint parks the request under a state and asks the
//! user where they have an account. The choice parks the request again under a new state, sent
//! to that provider alone: only its callback can complete the sign-in.

use super::authorize::{AuthorizeError, SignInPage, UpstreamRedirect, park_sign_in};
use super::sign_in::{peek_pending_sign_in, take_pending_sign_in};
use super::{Bridge, OAuthError, SignIn};
use crate::clock::UnixTime;
use crate::storage::PendingAuthorization;
use crate::upstream::providers::Providers;

/// A provider as the chooser shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Choice {
    pub(crate) name: &'static str,
    pub(crate) display_name: String,
}

fn providers(bridge: &Bridge) -> Result<&Providers, AuthorizeError> {
    match &bridge.sign_in {
        SignIn::Upstream(providers) if providers.all().len() > 1 => Ok(providers),
        _ => Err(AuthorizeError::Page(OAuthError::invalid_request(
            "this service has one way to sign in; start again from the application",
        ))),
    }
}

/// The providers to show, if the sign-in named by `state` is alive, was started by this browser
/// and waits for a choice; nothing is consumed, so the page can be shown again.
pub(crate) async fn choices(
    bridge: &Bridge,
    state: &str,
    binding: Option<&str>,
    now: UnixTime,
) -> Result<Vec<Choice>, AuthorizeError> {
    let providers = providers(bridge)?;
    waiting_for_choice(&*peek_pending_sign_in(bridge, state, binding, now).await?)?;
    Ok(providers
        .all()
        .iter()
        .map(|provider| Choice {
            name: provider.name,
            display_name: provider.display_name.clone(),
        })
        .collect())
}

/// The user chose `name`: the sign-in goes on at that provider, under a new state.
pub(crate) async fn choose(
    bridge: &Bridge,
    state: &str,
    binding: Option<&str>,
    name: &str,
    now: UnixTime,
) -> Result<UpstreamRedirect, AuthorizeError> {
    let providers = providers(bridge)?;
    // Checked before the sign-in is consumed: a forged name must not end the user's sign-in.
    let provider = providers.named(name).ok_or_else(|| {
        AuthorizeError::Page(OAuthError::invalid_request(
            "no such identity provider; choose one of those listed",
        ))
    })?;
    // A sign-in already sent to a provider is refused before it is consumed.
    waiting_for_choice(&*peek_pending_sign_in(bridge, state, binding, now).await?)?;
    // A pending authorization never changes once stored: what was peeked is what is taken.
    let pending = take_pending_sign_in(bridge, state, binding, now).await?;
    tracing::info!(
        client_id = %pending.request.client_id,
        provider = provider.name,
        "identity provider chosen"
    );
    park_sign_in(
        bridge,
        pending.request,
        pending.consent,
        &SignInPage::Provider(provider),
        now,
    )
    .await
}

/// A sign-in already sent to a provider is that provider's to complete: a choice cannot move it.
fn waiting_for_choice(pending: &PendingAuthorization) -> Result<(), AuthorizeError> {
    match &pending.provider {
        None => Ok(()),
        Some(_) => Err(AuthorizeError::Page(OAuthError::invalid_request(
            "this sign-in has already gone to an identity provider; start again from the application",
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::oauth::authorize::{AuthorizationStep, start_authorization};
    use crate::oauth::test_support::*;
    use crate::upstream::providers::Providers;

    async fn started(harness: &Harness, login_hint: Option<&str>) -> UpstreamRedirect {
        let mut params = harness.authorization_params(PUBLIC_CLIENT, "openid email");
        if let Some(hint) = login_hint {
            params.insert("login_hint", hint);
        }
        match start_authorization(&harness.bridge, &params, None, harness.now())
            .await
            .unwrap()
        {
            AuthorizationStep::Upstream(started) => started,
            AuthorizationStep::Consent { .. } => panic!("the public client skips consent"),
        }
    }

    /// A sign-in without a hint, sent to the partner from the chooser: where it went.
    async fn sent_to_partner(harness: &Harness, login_hint: Option<&str>) -> UpstreamRedirect {
        let parked = started(harness, login_hint).await;
        let state = query(&parked)["state"].clone();
        choose(
            &harness.bridge,
            &state,
            Some(&parked.binding_cookie.value),
            "partner",
            harness.now(),
        )
        .await
        .unwrap()
    }

    fn query(started: &UpstreamRedirect) -> HashMap<String, String> {
        started.url.query_pairs().into_owned().collect()
    }

    /// Why the chooser is not shown for `login`'s sign-in.
    async fn choices_refused(harness: &Harness, login: &Login) -> String {
        page_error(
            choices(
                &harness.bridge,
                &login.state,
                Some(&login.binding),
                harness.now(),
            )
            .await,
        )
    }

    fn page_error(result: Result<impl std::fmt::Debug, AuthorizeError>) -> String {
        match result {
            Err(AuthorizeError::Page(error)) => error.to_string(),
            other => panic!("expected an error page, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn without_a_hint_naming_a_provider_the_user_chooses_one() {
        let (harness, partner) = Harness::with_two_providers();
        let now = harness.now();
        let parked = started(&harness, Some("ada@elsewhere.example")).await;
        assert!(
            parked
                .url
                .as_str()
                .starts_with("https://bridge.example.com/oauth/choose?state="),
            "{}",
            parked.url
        );
        let state = query(&parked)["state"].clone();
        let binding = parked.binding_cookie.value.clone();
        let shown = choices(&harness.bridge, &state, Some(&binding), now)
            .await
            .unwrap();
        assert_eq!(
            shown,
            [
                Choice {
                    name: "corp",
                    display_name: "corp".into()
                },
                Choice {
                    name: "partner",
                    display_name: "Partner Inc.".into()
                }
            ]
        );
        assert!(
            page_error(choices(&harness.bridge, &state, Some("another-browser"), now).await)
                .contains("another browser")
        );
        // A name that was not offered changes nothing: the user can still choose.
        assert!(
            page_error(choose(&harness.bridge, &state, Some(&binding), "evil", now).await)
                .contains("no such identity provider")
        );
        let sent = choose(&harness.bridge, &state, Some(&binding), "partner", now)
            .await
            .unwrap();
        assert!(
            sent.url.as_str().starts_with(PARTNER_ISSUER),
            "{}",
            sent.url
        );
        let login = Harness::login_from(sent);
        assert_ne!(
            login.state, state,
            "a new state for the provider's round trip"
        );
        assert_eq!(
            login.upstream_challenge.len(),
            43,
            "the provider gets our PKCE challenge"
        );
        // The choice is spent: it cannot be made again, nor the sign-in moved to another provider.
        assert!(
            page_error(choose(&harness.bridge, &state, Some(&binding), "corp", now).await)
                .contains("expired or was already completed")
        );
        // Back from the partner, at the partner's callback: signed in as the partner's user.
        let signed_in = harness
            .return_to(
                Some("partner"),
                &login,
                &[("code", "partner-code"), ("iss", PARTNER_ISSUER)],
            )
            .await
            .unwrap();
        assert_eq!(partner.last_exchange().unwrap().code, "partner-code");
        assert!(
            harness.upstream.last_exchange().is_none(),
            "corp was never asked"
        );
        let code = code_in(&signed_in.url);
        let tokens = harness.redeem(&code).await.unwrap();
        let claims = harness.verify_access_token(&tokens.access_token);
        assert_eq!(claims.sub, "partner|user-1");
    }

    #[tokio::test]
    async fn a_hint_at_a_providers_domain_goes_straight_there_is_passed_on_and_stays() {
        let (harness, _) = Harness::with_two_providers();
        let sent = started(&harness, Some("Ada@CORP.example")).await;
        assert!(
            sent.url.as_str().starts_with(UPSTREAM_ISSUER),
            "{}",
            sent.url
        );
        assert_eq!(query(&sent)["login_hint"], "Ada@CORP.example");
        // Sent to corp: the chooser cannot move it.
        let login = Harness::login_from(sent);
        assert!(
            choices_refused(&harness, &login)
                .await
                .contains("already gone to an identity provider")
        );
        // Nor can a forged choice move or spend it.
        assert!(
            page_error(
                choose(
                    &harness.bridge,
                    &login.state,
                    Some(&login.binding),
                    "partner",
                    harness.now()
                )
                .await
            )
            .contains("already gone to an identity provider")
        );
        let signed_in = harness
            .return_to(Some("corp"), &login, &[("code", "corp-code")])
            .await
            .unwrap();
        assert!(signed_in.url.as_str().starts_with(PUBLIC_REDIRECT));
    }

    #[tokio::test]
    async fn an_answer_at_another_providers_callback_or_naming_another_issuer_is_refused() {
        let (harness, partner) = Harness::with_two_providers();
        let refused = |result: Result<_, AuthorizeError>| match result {
            Err(AuthorizeError::Redirect(redirect)) => redirect.error.to_string(),
            other => panic!("expected the client to hear of it, got {other:?}"),
        };
        for callback in [Some("corp"), None, Some("unknown")] {
            let login = Harness::login_from(sent_to_partner(&harness, None).await);
            let text = refused(
                harness
                    .return_to(callback, &login, &[("code", "stolen-code")])
                    .await,
            );
            assert!(
                text.contains("another identity provider"),
                "{callback:?}: {text}"
            );
        }
        // RFC 9207: the partner's callback, but the answer says it is corp's.
        let login = Harness::login_from(sent_to_partner(&harness, None).await);
        let text = refused(
            harness
                .return_to(
                    Some("partner"),
                    &login,
                    &[("code", "partner-code"), ("iss", UPSTREAM_ISSUER)],
                )
                .await,
        );
        assert!(text.contains("could not be verified"), "{text}");
        assert!(partner.last_exchange().is_none(), "no code was exchanged");
        assert!(harness.upstream.last_exchange().is_none());
    }

    #[tokio::test]
    async fn a_sign_in_waiting_for_a_choice_completes_at_no_callback() {
        let (harness, partner) = Harness::with_two_providers();
        for callback in [Some("partner"), Some("corp"), None] {
            let parked = started(&harness, None).await;
            let login = Login {
                state: query(&parked)["state"].clone(),
                nonce: String::new(),
                upstream_challenge: String::new(),
                binding: parked.binding_cookie.value.clone(),
            };
            match harness.return_to(callback, &login, &[("code", "x")]).await {
                Err(AuthorizeError::Redirect(redirect)) => assert!(
                    redirect
                        .error
                        .to_string()
                        .contains("another identity provider"),
                    "{callback:?}: {}",
                    redirect.error
                ),
                other => panic!("{callback:?}: {other:?}"),
            }
        }
        assert!(partner.last_exchange().is_none());
        assert!(harness.upstream.last_exchange().is_none());
    }

    #[tokio::test]
    async fn a_provider_chosen_instead_of_the_hints_is_not_told_it() {
        let (harness, _) = Harness::with_two_providers();
        // Chosen on the page although the hint is corp's address: the partner is not told it.
        let sent = sent_to_partner(&harness, Some("ada@elsewhere.example")).await;
        assert!(!query(&sent).contains_key("login_hint"), "{}", sent.url);
    }

    #[tokio::test]
    async fn a_grant_of_a_provider_no_longer_configured_ends_at_its_next_refresh() {
        let (mut harness, partner) = Harness::with_two_providers();
        let sent = sent_to_partner(&harness, None).await;
        let signed_in = harness
            .return_to(
                Some("partner"),
                &Harness::login_from(sent),
                &[("code", "c")],
            )
            .await
            .unwrap();
        let code = code_in(&signed_in.url);
        let tokens = harness.redeem(&code).await.unwrap();
        let refreshed = harness
            .refresh(tokens.refresh_token.as_ref().unwrap())
            .await
            .unwrap();
        // The partner is removed from the configuration.
        let corp = provider("corp", Some("corp"), harness.upstream.clone());
        harness.bridge.sign_in = SignIn::Upstream(std::sync::Arc::new(Providers::new(vec![corp])));
        let refused = harness
            .refresh(refreshed.refresh_token.as_ref().unwrap())
            .await
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "invalid_grant: the identity provider of this sign-in is no longer configured"
        );
        let claims = harness.verify_access_token(&refreshed.access_token);
        assert!(
            harness
                .bridge
                .storage
                .is_access_token_revoked(&claims.jti, harness.now())
                .await
                .unwrap(),
            "its access tokens go with it"
        );
        drop(partner);
    }

    #[tokio::test]
    async fn a_sub_no_provider_may_send_signs_no_one_in() {
        let harness = Harness::new();
        for sub in ["user\u{7}1".to_owned(), "u".repeat(1025)] {
            harness
                .upstream
                .set_claims(serde_json::json!({"sub": sub, "email": "user@corp.com"}));
            let login = harness.authorize_public().await;
            match harness.callback(&login, &[("code", "c")]).await {
                Err(AuthorizeError::Redirect(redirect)) => {
                    assert_eq!(redirect.error.code(), "access_denied")
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn with_one_provider_there_is_nothing_to_choose() {
        let harness = Harness::new();
        let login = harness.authorize_public().await;
        assert!(
            choices_refused(&harness, &login)
                .await
                .contains("one way to sign in")
        );
    }
}
