//! Token revocation (RFC 7009). A client may revoke only what was issued to it; revoking a
//! refresh token ends its whole family, access tokens included; a revoked access token is
//! remembered by `jti` until it expires. Unknown or invalid tokens are not an error (§2.2).

use super::bearer::check_access_token;
use super::{Bridge, OAuthError, Params};
use crate::audit;
use crate::clients::Client;
use crate::clock::UnixTime;
use crate::tokens::TokenHash;

pub(crate) async fn revoke(
    bridge: &Bridge,
    client: &Client,
    params: &Params,
    now: UnixTime,
) -> Result<(), OAuthError> {
    let token = params.require("token")?;
    // The hint only orders the lookups (§2.1): a wrong or unknown hint changes nothing.
    let access_first = params.get("token_type_hint") == Some("access_token");
    let ours = match access_first {
        true => {
            revoke_access_token(bridge, client, token, now).await?
                || revoke_refresh_token(bridge, client, token, now).await?
        }
        false => {
            revoke_refresh_token(bridge, client, token, now).await?
                || revoke_access_token(bridge, client, token, now).await?
        }
    };
    if ours {
        bridge.metrics.revoked();
    }
    Ok(())
}

/// Whether `token` is one of our refresh tokens (current or retired).
async fn revoke_refresh_token(
    bridge: &Bridge,
    client: &Client,
    token: &str,
    now: UnixTime,
) -> Result<bool, OAuthError> {
    let Some(family) = bridge
        .storage
        .refresh_family_of(&TokenHash::of(token))
        .await?
    else {
        return Ok(false);
    };
    if family.client_id != client.id {
        tracing::warn!(owner = %family.client_id, "refresh token revocation by another client refused");
        return Err(not_yours());
    }
    if bridge.storage.revoke_family(&family.id, now).await? {
        tracing::info!(family = %family.id, "refresh token revoked with its family");
        audit::record(&audit::Event::GrantRevoked {
            reason: audit::RevocationReason::ClientRequest,
            family_id: &family.id,
            client_id: &family.client_id,
            subject: Some(&family.identity.subject),
            provider: None,
        });
    }
    Ok(true)
}

/// Whether `token` is a live access token of ours.
async fn revoke_access_token(
    bridge: &Bridge,
    client: &Client,
    token: &str,
    now: UnixTime,
) -> Result<bool, OAuthError> {
    // An expired or already revoked token needs nothing more.
    let Ok(claims) = check_access_token(bridge, token, now).await? else {
        return Ok(false);
    };
    if claims.client_id != client.id {
        tracing::warn!(owner = %claims.client_id, "access token revocation by another client refused");
        return Err(not_yours());
    }
    bridge
        .storage
        .revoke_access_token(&claims.jti, UnixTime(claims.exp))
        .await?;
    tracing::info!(jti = %claims.jti, "access token revoked");
    audit::record(&audit::Event::AccessTokenRevoked {
        client_id: &claims.client_id,
        subject: &claims.sub,
        jti: &claims.jti,
    });
    Ok(true)
}

/// RFC 7009 §2.1: the request is refused when the token was issued to another client.
fn not_yours() -> OAuthError {
    OAuthError::UnauthorizedClient("this token was issued to another client".into())
}

/// Each grant a bulk revocation ended, in the audit trail (with the provider that ended them,
/// for a back-channel logout); how many of them gave access.
pub(crate) fn record_ended(
    grants: &[crate::storage::EndedGrant],
    reason: audit::RevocationReason,
    provider: Option<&str>,
) -> usize {
    for grant in grants {
        audit::record(&audit::Event::GrantRevoked {
            reason,
            family_id: &grant.family_id,
            client_id: &grant.client_id,
            subject: Some(&grant.subject),
            provider,
        });
    }
    grants.iter().filter(|grant| grant.was_live).count()
}
