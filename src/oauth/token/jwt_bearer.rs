//! `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` (RFC 7523 §2.1) with an ID-JAG:
//! an access token for the user the company's identity provider vouches for, for the client it
//! issued the grant to, without a sign-in here. A refresh token too when the trusted issuer's
//! `refresh_tokens` is on and the client may refresh.

use super::request::JwtBearerGrant;
use super::{Grant, TokenResponse, issue_access_token};
use crate::clients::Client;
use crate::clock::UnixTime;
use crate::oauth::client_assertion::{remembered_until, single_use_key};
use crate::oauth::{Bridge, GrantType, OAuthError, resource, scope};
use crate::tokens::generate_token;
use crate::tokens::opaque::random_string;
use crate::tokens::refresh::{IssuedAccessToken, RefreshFamily};

pub(super) async fn exchange(
    bridge: &Bridge,
    client: &Client,
    request: &JwtBearerGrant,
    now: UnixTime,
) -> Result<TokenResponse, OAuthError> {
    let Some(assertions) = &bridge.identity_assertions else {
        return Err(OAuthError::UnsupportedGrantType(
            "no identity provider is trusted for jwt-bearer grants here".into(),
        ));
    };
    if client.is_public() {
        return Err(OAuthError::UnauthorizedClient(
            "the jwt-bearer grant is for confidential clients".into(),
        ));
    }
    let grant = assertions
        .verify(
            request.assertion.expose(),
            &client.id,
            &bridge.settings.issuer,
            now,
        )
        .await
        .map_err(|refusal| {
            tracing::info!(client_id = %client.id, reason = refusal.0, "identity assertion refused");
            OAuthError::invalid_grant("the identity assertion is not valid")
        })?;
    // RFC 8707 §2.2: a resource in the request must be one the provider granted; with several
    // granted, the request must say which.
    let wanted = match (request.resource.as_deref(), grant.resources.as_slice()) {
        (Some(asked), granted) if !granted.is_empty() && !granted.iter().any(|g| g == asked) => {
            return Err(OAuthError::InvalidTarget(
                "resource is not one the identity assertion grants".into(),
            ));
        }
        (Some(asked), _) => Some(asked),
        (None, [only]) => Some(only.as_str()),
        (None, []) => None,
        (None, _) => {
            return Err(OAuthError::InvalidTarget(
                "the identity assertion grants several resources: name one".into(),
            ));
        }
    };
    let audience = resource::resolve_audience(&bridge.settings, wanted)?;
    // What the client may have, within what the provider granted when it said.
    let mut allowed = client.allowed_scopes(&bridge.settings.scopes_supported);
    if let Some(granted) = &grant.scope {
        let granted = scope::parse(granted).map_err(|_| {
            OAuthError::invalid_grant("the identity assertion's scope is malformed")
        })?;
        allowed.retain(|s| granted.contains(s));
    }
    // Without a requested scope, all of the grant the client may have (RFC 6749 §3.3).
    let scope = scope::resolve(request.scope.as_deref(), &allowed)?;
    // Single use, across instances.
    let key = single_use_key("id-jag", &grant.issuer, &grant.jti);
    if !bridge
        .storage
        .use_once(&key, remembered_until(grant.expires_at), now)
        .await?
    {
        tracing::warn!(client_id = %client.id, "identity assertion replayed");
        return Err(OAuthError::invalid_grant(
            "the identity assertion was used before",
        ));
    }
    let access_token_id = random_string(16);
    let refresh = (grant.refresh_tokens
        && client.allows_grant(GrantType::RefreshToken)
        // Re-validation needs the provider's refresh token, which this grant has not.
        && !bridge.revalidates_any())
    .then(generate_token::<crate::secret::RefreshToken>);
    let family_id = random_string(16);
    let issued = Grant {
        grant_type: GrantType::JwtBearer,
        client_id: &client.id,
        identity: &grant.identity,
        scope: &scope,
        audience: &audience,
        family_id: Some(&family_id),
        issued_at: now,
        not_after: None,
        actor: None,
    };
    let (access_token, record) = issue_access_token(bridge, &issued, access_token_id)?;
    // Recorded with or without a refresh token, as a code's grant is: an administrator who
    // revokes the user's or the client's grants revokes this access token too.
    let mut family = RefreshFamily {
        id: family_id.clone(),
        client_id: client.id.clone(),
        identity: grant.identity.clone(),
        scope: scope.clone(),
        audience: audience.clone(),
        absolute_expires_at: now.plus(bridge.settings.refresh_token_max_lifetime),
        current: refresh.as_ref().map(|(_, hash)| *hash),
        current_expires_at: record.expires_at,
        previous: None,
        revoked: false,
        access_tokens: vec![IssuedAccessToken {
            jti: record.jti.clone(),
            expires_at: record.expires_at,
        }],
        upstream_refresh: None,
        upstream_access: None,
        upstream_session: None,
        created_at: now,
        last_used_at: None,
    };
    if refresh.is_some() {
        family.current_expires_at = family.sliding_expiry(now, bridge.settings.refresh_token_ttl);
    }
    bridge.storage.create_family(family).await?;
    let refresh_token = refresh.map(|(token, _)| token);
    tracing::info!(
        client_id = %client.id,
        subject = %grant.identity.subject,
        issuer = %grant.issuer,
        "tokens issued for an identity assertion"
    );
    Ok(TokenResponse::of_grant(
        &issued,
        (access_token, record),
        refresh_token,
        None,
    ))
}
