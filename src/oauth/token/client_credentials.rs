//! `grant_type=client_credentials` (RFC 6749 §4.4): a confidential client acting for itself.
//! No user is involved, so `sub` is the client, no refresh token or ID token is issued, and
//! the scopes that describe a user are not granted.

use super::request::ClientCredentialsGrant;
use super::{Grant, TokenResponse, issue_access_token};
use crate::clients::Client;
use crate::clock::UnixTime;
use crate::identity::Identity;
use crate::oauth::GrantType;
use crate::oauth::{Bridge, OAuthError, resource, scope};
use crate::tokens::opaque::random_string;

/// Scopes that only mean something for a signed-in user.
const USER_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

pub(super) async fn exchange(
    bridge: &Bridge,
    client: &Client,
    request: &ClientCredentialsGrant<'_>,
    now: UnixTime,
) -> Result<TokenResponse, OAuthError> {
    if client.is_public() {
        // Configuration refuses this; a client from elsewhere must not get here either.
        return Err(OAuthError::UnauthorizedClient(
            "client_credentials is for confidential clients".into(),
        ));
    }
    let allowed: Vec<String> = client
        .allowed_scopes(&bridge.settings.scopes_supported)
        .into_iter()
        .filter(|s| !USER_SCOPES.contains(&s.as_str()))
        .collect();
    if let Some(requested) = request.scope {
        if let Some(user_scope) = scope::parse(requested)?
            .iter()
            .find(|s| USER_SCOPES.contains(&s.as_str()))
        {
            return Err(OAuthError::InvalidScope(
                format!("{user_scope} needs a signed-in user; client_credentials has none").into(),
            ));
        }
    }
    let granted = scope::resolve(request.scope, &allowed)?;
    let audience = resource::resolve_audience(&bridge.settings, request.resource)?;
    let identity = Identity {
        subject: client.id.clone(),
        email: None,
        email_verified: None,
        name: None,
        groups: Vec::new(),
    };
    let grant = Grant {
        grant_type: GrantType::ClientCredentials,
        client_id: &client.id,
        identity: &identity,
        scope: &granted,
        audience: &audience,
        family_id: None,
        issued_at: now,
        not_after: None,
        actor: None,
    };
    let access_token = issue_access_token(bridge, &grant, random_string(16))?;
    tracing::info!("tokens issued for client credentials");
    Ok(TokenResponse::of_grant(&grant, access_token, None, None))
}
