//! `upstream.revalidate_on_refresh`: before our refresh grant rotates anything, the provider's
//! own refresh token is used, so a user disabled there, or whose session ended, loses access at
//! the next refresh. The provider's token is only ever stored sealed and never leaves the bridge.

use crate::clients::Client;
use crate::clock::UnixTime;
use crate::oauth::callback::upstream_refresh_name;
use crate::oauth::{Bridge, OAuthError, SignIn};
use crate::sealing::{SealedSecret, Sealer};
use crate::tokens::TokenHash;
use crate::tokens::refresh::RefreshFamily;
use crate::upstream::UpstreamError;
use crate::upstream::claims::{check_access, lookup, map_identity};

/// Asks the provider about the session behind `presented`. `Ok` carries the provider's
/// replacement refresh token when it rotated its own; a refusal revokes the family.
pub(super) async fn revalidate(
    bridge: &Bridge,
    sealer: &Sealer,
    client: &Client,
    presented: &TokenHash,
    now: UnixTime,
) -> Result<Option<SealedSecret>, OAuthError> {
    let SignIn::Upstream(upstream) = &bridge.sign_in else {
        return Ok(None);
    };
    let Some(family) = bridge.storage.refresh_family_of(presented).await? else {
        return Ok(None);
    };
    // Retired, revoked, expired or foreign tokens are the rotation rule's business; only a
    // token that would otherwise rotate is worth asking the provider about.
    let would_rotate = family.current == Some(*presented)
        && !family.revoked
        && family.client_id == client.id
        && now < family.current_expires_at
        && now < family.absolute_expires_at;
    if !would_rotate {
        return Ok(None);
    }
    let name = upstream_refresh_name(&family.id);
    let Some(sealed) = &family.upstream_refresh else {
        // Issued before re-validation was turned on: the session cannot be checked.
        return Err(refuse(bridge, &family, "no provider session is known for it", now).await);
    };
    let upstream_token = sealer.open_secret(&name, sealed).map_err(|error| {
        tracing::error!(%error, family = %family.id, "cannot open the provider's refresh token");
        OAuthError::ServerError
    })?;
    let refreshed = match upstream.refresh(&upstream_token, now).await {
        Ok(refreshed) => refreshed,
        Err(UpstreamError::NotReady | UpstreamError::Unreachable(_)) => {
            tracing::warn!(family = %family.id, "the provider is unreachable; refresh deferred");
            return Err(OAuthError::TemporarilyUnavailable);
        }
        Err(UpstreamError::RefreshRefused(reason) | UpstreamError::InvalidIdToken(reason)) => {
            tracing::info!(family = %family.id, %reason, "the provider refused the session");
            return Err(refuse(
                bridge,
                &family,
                "the identity provider ended this session",
                now,
            )
            .await);
        }
        Err(error) => {
            tracing::error!(family = %family.id, %error, "the provider's refresh answer is unusable");
            return Err(OAuthError::ServerError);
        }
    };
    if let Some(claims) = &refreshed.claims {
        // The provider spoke for the user again: it must be the same user, and still allowed.
        let mapping = &bridge.settings.claims;
        let still_allowed = map_identity(claims, mapping)
            .map(|mut identity| {
                // Providers that release claims only at UserInfo send a bare refreshed ID
                // token: what it does not say, we keep knowing from the sign-in.
                if lookup(claims, &mapping.groups).is_none() {
                    identity.groups.clone_from(&family.identity.groups);
                }
                if lookup(claims, &mapping.email).is_none() {
                    identity.email.clone_from(&family.identity.email);
                    identity.email_verified = family.identity.email_verified;
                }
                identity
            })
            .and_then(|identity| {
                if identity.subject != family.identity.subject {
                    return Err("the refreshed ID token is about another user".to_owned());
                }
                check_access(&identity, &bridge.settings.access_policy)
                    .map_err(|reason| reason.to_string())
            });
        if let Err(reason) = still_allowed {
            tracing::info!(family = %family.id, %reason, "refreshed identity refused");
            return Err(refuse(
                bridge,
                &family,
                "you are no longer allowed to use this service",
                now,
            )
            .await);
        }
    }
    refreshed
        .refresh_token
        .map(|token| sealer.seal_secret(&name, &token))
        .transpose()
        .map_err(|error| {
            tracing::error!(%error, "cannot seal the provider's refresh token");
            OAuthError::ServerError
        })
}

/// Revokes the family and says why; a storage failure while revoking is what the client hears.
async fn refuse(
    bridge: &Bridge,
    family: &RefreshFamily,
    reason: &'static str,
    now: UnixTime,
) -> OAuthError {
    match bridge.storage.revoke_family(&family.id, now).await {
        Ok(()) => OAuthError::invalid_grant(reason),
        Err(error) => error.into(),
    }
}
