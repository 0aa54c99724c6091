//! Token exchange for the identity provider's own access token (`audience=upstream`, or the
//! provider's name): for an MCP server that calls the provider's APIs (UserInfo, a directory) as
//! the user. The token kept (sealed) from the user's sign-in is handed on as the provider issued
//! it, renewed at the provider first when it has expired or is about to. Only a live grant of a
//! provider with `keep_tokens` has one; anything else is `invalid_target` (RFC 8693 §2.2.2: no
//! token can be issued for that audience), saying why.

use std::time::Duration;

use super::TokenResponse;
use super::revalidation::{refreshed_identity, refuse, store_successor};
use crate::audit;
use crate::clients::Client;
use crate::clock::UnixTime;
use crate::oauth::{Bridge, OAuthError, SignIn};
use crate::sealing::Sealer;
use crate::tokens::jwt::AccessTokenClaims;
use crate::tokens::refresh::RefreshFamily;
use crate::upstream::providers::Provider;
use crate::upstream::{ProviderAccessToken, UpstreamError, kept};

/// A token with less left than this is renewed first: the server that gets it must still have
/// time to use it.
const LEAST_REMAINING: Duration = Duration::from_secs(30);

fn unable(why: &'static str) -> OAuthError {
    OAuthError::InvalidTarget(why.into())
}

pub(super) async fn release(
    bridge: &Bridge,
    client: &Client,
    subject: &AccessTokenClaims,
    named_provider: Option<&str>,
    now: UnixTime,
) -> Result<TokenResponse, OAuthError> {
    let SignIn::Upstream(providers) = &bridge.sign_in else {
        return Err(unable(
            "users sign in here with a password, at no identity provider",
        ));
    };
    let Some(sealer) = &bridge.sealer else {
        return Err(unable(
            "no identity provider's tokens are kept here (upstream.keep_tokens)",
        ));
    };
    let Some(family_id) = subject.sid.as_deref() else {
        return Err(OAuthError::invalid_request(
            "the subject token belongs to no user's grant",
        ));
    };
    let family = current(bridge, family_id).await?;
    let Some(session) = &family.upstream_session else {
        return Err(unable(
            "the user's grant did not come from a sign-in at an identity provider",
        ));
    };
    let Some(provider) = providers.named(&session.provider) else {
        return Err(unable(
            "the identity provider the user signed in at is no longer configured",
        ));
    };
    if named_provider.is_some_and(|named| named != provider.name) {
        return Err(unable(
            "the user signed in at another identity provider than the one named",
        ));
    }
    if !provider.keep_tokens {
        return Err(unable(
            "the tokens of the user's identity provider are not kept (upstream.keep_tokens)",
        ));
    }
    if family.upstream_access.is_none() {
        return Err(unable(
            "no token of the identity provider was kept at the user's sign-in (was keep_tokens turned on since?)",
        ));
    }
    let (token, refreshed) = match fresh_kept(sealer, &family, now)? {
        Some(token) => (token, false),
        None => (renewed(bridge, sealer, provider, &family, now).await?, true),
    };
    audit::record(&audit::Event::UpstreamTokenReleased {
        client_id: &client.id,
        subject: &family.identity.subject,
        provider: provider.name,
        family_id: &family.id,
        scope: token.scope.as_deref(),
        expires_at: token.expires_at.seconds(),
        refreshed,
    });
    tracing::info!(
        client_id = %client.id,
        provider = provider.name,
        refreshed,
        "the identity provider's token handed on by an exchange"
    );
    Ok(TokenResponse::of_provider(token, now))
}

/// The kept access token, if it has time enough left.
fn fresh_kept(
    sealer: &Sealer,
    family: &RefreshFamily,
    now: UnixTime,
) -> Result<Option<ProviderAccessToken>, OAuthError> {
    let Some(sealed) = &family.upstream_access else {
        return Ok(None);
    };
    let token = kept::open_access(sealer, &family.id, sealed).map_err(OAuthError::internal)?;
    Ok((now.plus(LEAST_REMAINING) < token.expires_at).then_some(token))
}

/// A new access token from the provider, with the kept refresh token; both kept again for the
/// next exchange (and the next re-validation). One renewal per grant at a time: a request that
/// waited for another's takes its result.
async fn renewed(
    bridge: &Bridge,
    sealer: &Sealer,
    provider: &Provider,
    family: &RefreshFamily,
    now: UnixTime,
) -> Result<ProviderAccessToken, OAuthError> {
    let _turn = bridge.renewals.turn_of(&family.id).await;
    let family = current(bridge, &family.id).await?;
    if let Some(token) = fresh_kept(sealer, &family, now)? {
        return Ok(token);
    }
    let Some(sealed_refresh) = &family.upstream_refresh else {
        return Err(unable(
            "the identity provider's token has run out, and it gave no refresh token to renew it; the user must sign in again",
        ));
    };
    let refresh_token = sealer
        .open_secret(&kept::refresh_name(&family.id), sealed_refresh)
        .map_err(OAuthError::internal)?;
    let refreshed = match provider.upstream.refresh(&refresh_token, now).await {
        Ok(refreshed) => refreshed,
        Err(UpstreamError::RefreshRefused(reason)) => {
            // Another instance may have spent the refresh token first: its renewal is as good.
            let latest = current(bridge, &family.id).await?;
            if latest.upstream_refresh != family.upstream_refresh
                && let Some(token) = fresh_kept(sealer, &latest, now)?
            {
                return Ok(token);
            }
            tracing::info!(family = %family.id, provider = provider.name, %reason, "the provider refused to renew its token");
            return Err(ended(
                bridge,
                provider,
                &family,
                "the identity provider ended the user's session; the user must sign in again",
                now,
            )
            .await);
        }
        // The provider may well answer in a moment.
        Err(error) => return Err(OAuthError::unavailable(error)),
    };
    // The provider spoke for the user again: the same user, still allowed, or nothing. Asked
    // before anything is kept, so that a refused user's new token is not kept for a later ask.
    let refused = match &refreshed.claims {
        Some(claims) => refreshed_identity(provider, &family, claims).err(),
        None => None,
    };
    // The refresh token used is spent at the provider whatever comes next.
    let keep_access = refused.is_none();
    store_successor(
        bridge,
        sealer,
        provider,
        &family,
        sealed_refresh,
        &refreshed,
        keep_access,
    )
    .await?;
    if let Some(reason) = refused {
        tracing::info!(family = %family.id, %reason, "renewed identity refused");
        return Err(ended(
            bridge,
            provider,
            &family,
            "the user is no longer allowed to use this service",
            now,
        )
        .await);
    }
    refreshed
        .access_token
        .ok_or_else(|| unable("the identity provider renewed its token, but not as a bearer token"))
}

/// The grant as stored now, while it stands.
async fn current(bridge: &Bridge, family_id: &str) -> Result<RefreshFamily, OAuthError> {
    match bridge.storage.refresh_family(family_id).await? {
        Some(family) if !family.revoked => Ok(family),
        _ => Err(OAuthError::invalid_request(
            "the subject token's grant has been revoked",
        )),
    }
}

/// The provider no longer vouches for the user: no token, and with `revalidate_on_refresh` the
/// grant ends here as its next refresh would end it.
async fn ended(
    bridge: &Bridge,
    provider: &Provider,
    family: &RefreshFamily,
    why: &'static str,
    now: UnixTime,
) -> OAuthError {
    if provider.revalidate_on_refresh {
        let revoked = refuse(bridge, family, why, now).await;
        if revoked.cause().is_some() {
            return revoked;
        }
    }
    unable(why)
}
