//! `revalidate_on_refresh` of the provider a grant came from: before our refresh grant rotates anything, the provider's
//! own refresh token is used, so a user disabled there, or whose session ended, loses access at
//! the next refresh. The provider's token is only ever stored sealed and never leaves the bridge.

use crate::audit;
use crate::clients::Client;
use crate::clock::UnixTime;
use crate::identity::Identity;
use crate::oauth::{Bridge, OAuthError, SignIn};
use crate::sealing::{SealedSecret, Sealer};
use crate::tokens::TokenHash;
use crate::tokens::refresh::{RefreshFamily, RefreshRequest};
use crate::upstream::claims::{NoSubject, Refusal, check_access, lookup};
use crate::upstream::kept;
use crate::upstream::providers::Provider;
use crate::upstream::{UpstreamError, UpstreamRefresh};

/// Asks the provider about the session behind `presented`. `Ok` carries the user as the provider
/// describes them now, when it sent a new ID token. Only the provider's explicit refusal of its
/// refresh token revokes the grant; an outage or an odd answer only fails this request.
pub(super) async fn revalidate(
    bridge: &Bridge,
    sealer: &Sealer,
    client: &Client,
    presented: &TokenHash,
    request: &RefreshRequest<'_>,
    now: UnixTime,
) -> Result<Option<Identity>, OAuthError> {
    let SignIn::Upstream(providers) = &bridge.sign_in else {
        return Ok(None);
    };
    let Some(family) = bridge.storage.refresh_family_of(presented).await? else {
        return Ok(None);
    };
    let provider = providers.of_session(family.upstream_session.as_ref());
    match provider {
        Some(provider) if !provider.revalidate_on_refresh => return Ok(None),
        // Its provider is no longer configured: the refresh grant ends it, asking no one.
        None if family.upstream_session.is_some() => return Ok(None),
        _ => {}
    }
    // Retired, revoked, expired, foreign or over-reaching requests are the rotation rule's to
    // refuse; only a request that would otherwise rotate is worth the provider's time.
    let would_rotate = family.current == Some(*presented)
        && !family.revoked
        && family.client_id == client.id
        && now < family.current_expires_at
        && now < family.absolute_expires_at
        && family.exceeded_by(request).is_none();
    if !would_rotate {
        return Ok(None);
    }
    let name = kept::refresh_name(&family.id);
    let Some(sealed) = &family.upstream_refresh else {
        // Issued before re-validation was turned on: the session cannot be checked.
        return Err(refuse(bridge, &family, "no provider session is known for it", now).await);
    };
    let Some(provider) = provider else {
        return Err(refuse(bridge, &family, "no provider session is known for it", now).await);
    };
    let _turn = bridge.renewals.turn_of(&family.id).await;
    if renewed_meanwhile(bridge, presented, sealed).await? {
        // A token exchange (or a concurrent refresh) of this grant renewed at the provider
        // while this request waited: the session stood moments ago. Our rotation decides the
        // rest (a revoked or rotated grant is refused there).
        return Ok(None);
    }
    let upstream_token = sealer
        .open_secret(&name, sealed)
        .map_err(OAuthError::internal)?;
    let refreshed = match provider.upstream.refresh(&upstream_token, now).await {
        Ok(refreshed) => refreshed,
        Err(UpstreamError::RefreshRefused(reason)) => {
            // Another instance renewed first: the session is fine, as above.
            if renewed_meanwhile(bridge, presented, sealed).await? {
                return Ok(None);
            }
            tracing::info!(family = %family.id, provider = provider.name, %reason, "the provider refused the session");
            return Err(refuse(
                bridge,
                &family,
                "the identity provider ended this session",
                now,
            )
            .await);
        }
        // The refresh is deferred, not refused: the session may well stand.
        Err(error) => return Err(OAuthError::unavailable(error)),
    };
    store_successor(bridge, sealer, provider, &family, sealed, &refreshed, true).await?;
    let Some(claims) = &refreshed.claims else {
        return Ok(None);
    };
    match refreshed_identity(provider, &family, claims) {
        Ok(identity) => Ok(Some(identity)),
        Err(reason) => {
            tracing::info!(family = %family.id, %reason, "refreshed identity refused");
            Err(refuse(
                bridge,
                &family,
                "you are no longer allowed to use this service",
                now,
            )
            .await)
        }
    }
}

/// Whether the grant's kept refresh token is no longer `used`: another renewal spent it.
async fn renewed_meanwhile(
    bridge: &Bridge,
    presented: &TokenHash,
    used: &SealedSecret,
) -> Result<bool, OAuthError> {
    let current = bridge.storage.refresh_family_of(presented).await?;
    Ok(current.is_some_and(|family| family.upstream_refresh.as_ref() != Some(used)))
}

/// Stores the provider's new tokens at once, whatever becomes of our rotation: the old refresh
/// token is spent at the provider either way. Without `keep_access`, its new access token is not
/// kept (the user it was renewed for was refused).
pub(super) async fn store_successor(
    bridge: &Bridge,
    sealer: &Sealer,
    provider: &Provider,
    family: &RefreshFamily,
    used: &SealedSecret,
    refreshed: &UpstreamRefresh,
    keep_access: bool,
) -> Result<(), OAuthError> {
    let access = match (&refreshed.access_token, provider.keep_tokens && keep_access) {
        (Some(token), true) => {
            Some(kept::seal_access(sealer, &family.id, token).map_err(OAuthError::internal)?)
        }
        _ => None,
    };
    let refresh = match &refreshed.refresh_token {
        Some(token) => sealer
            .seal_secret(&kept::refresh_name(&family.id), token)
            .map_err(OAuthError::internal)?,
        // The provider does not rotate its refresh tokens: the one used stays.
        None if access.is_some() => used.clone(),
        None => return Ok(()),
    };
    if !bridge
        .storage
        .replace_upstream_tokens(&family.id, used, refresh, access)
        .await?
    {
        tracing::info!(family = %family.id, "a concurrent refresh stored the provider's tokens first");
    }
    Ok(())
}

/// Why the identity of a refreshed ID token is not accepted.
#[derive(Debug, thiserror::Error)]
pub(super) enum IdentityChange {
    #[error(transparent)]
    Unmapped(#[from] NoSubject),
    #[error("the refreshed ID token is about another user")]
    AnotherUser,
    #[error(transparent)]
    Refused(#[from] Refusal),
}

/// The provider spoke for the user again: it must be the same user, and still allowed. Providers
/// that release claims only at UserInfo send a bare ID token; what it does not say, we keep
/// knowing from the sign-in.
pub(super) fn refreshed_identity(
    provider: &Provider,
    family: &RefreshFamily,
    claims: &serde_json::Value,
) -> Result<Identity, IdentityChange> {
    let mapping = &provider.claims;
    let mut identity = provider.identity_of(claims)?;
    if identity.subject != family.identity.subject {
        return Err(IdentityChange::AnotherUser);
    }
    if lookup(claims, &mapping.groups).is_none() {
        identity.groups.clone_from(&family.identity.groups);
    }
    if lookup(claims, &mapping.email).is_none() {
        identity.email.clone_from(&family.identity.email);
        identity.email_verified = family.identity.email_verified;
    }
    if lookup(claims, &mapping.name).is_none() {
        identity.name.clone_from(&family.identity.name);
    }
    check_access(&identity, &provider.access_policy)?;
    Ok(identity)
}

/// Revokes the family and says why; a storage failure while revoking is what the client hears.
pub(super) async fn refuse(
    bridge: &Bridge,
    family: &RefreshFamily,
    reason: &'static str,
    now: UnixTime,
) -> OAuthError {
    match bridge.storage.revoke_family(&family.id, now).await {
        Ok(revoked) => {
            if revoked {
                audit::record(&audit::Event::GrantRevoked {
                    reason: audit::RevocationReason::UpstreamSessionEnded,
                    family_id: &family.id,
                    client_id: &family.client_id,
                    subject: Some(&family.identity.subject),
                    provider: family
                        .upstream_session
                        .as_ref()
                        .map(|session| session.provider.as_str()),
                });
            }
            OAuthError::invalid_grant(reason)
        }
        Err(error) => error.into(),
    }
}
