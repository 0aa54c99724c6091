//! Token introspection (RFC 7662) for resource servers. Callers authenticate as a confidential
//! client or with one of `oauth.introspection_tokens`. Anything expired, revoked, malformed,
//! signed by a key we do not know, or not the caller's to see is `{"active": false}` and
//! nothing more (§2.2).

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::bearer::check_access_token;
use super::token::ClientCredentials;
use super::{Bridge, OAuthError, Params, scope};
use crate::clients::Client;
use crate::clock::UnixTime;
use crate::tokens::refresh::RefreshFamily;
use crate::tokens::{AccessTokenClaims, TokenHash};

/// Who asks.
pub(crate) enum Introspector {
    /// A confidential client. One the operator configured may see any access token (it may be
    /// the resource server); one that registered itself (DCR) only its own tokens, or anyone
    /// could register and read other users' identities. Refresh tokens: only its own.
    Client(Arc<Client>),
    /// A holder of a configured introspection token: any token.
    ResourceServer,
}

/// How the caller identified itself over HTTP.
pub(crate) enum IntrospectorCredentials {
    Bearer(String),
    Client(ClientCredentials),
    None,
}

pub(crate) async fn authenticate(
    bridge: &Bridge,
    credentials: IntrospectorCredentials,
    now: UnixTime,
) -> Result<Introspector, OAuthError> {
    match credentials {
        IntrospectorCredentials::Bearer(token) => {
            // Compared as SHA-256 digests: timing can only tell how much of a digest matched.
            let presented = TokenHash::of(&token);
            if bridge.settings.introspection_tokens.contains(&presented) {
                Ok(Introspector::ResourceServer)
            } else {
                tracing::warn!("introspection with an unknown bearer token");
                Err(OAuthError::invalid_client(
                    "the introspection token is not valid",
                ))
            }
        }
        IntrospectorCredentials::Client(credentials) => {
            let client = bridge
                .clients
                .authenticate_client(&credentials, now)
                .await?;
            if client.is_public() {
                return Err(OAuthError::invalid_client(
                    "introspection requires a confidential client",
                ));
            }
            Ok(Introspector::Client(client))
        }
        IntrospectorCredentials::None => Err(OAuthError::invalid_client(
            "authenticate as a confidential client or with an introspection token",
        )),
    }
}

pub(crate) async fn introspect(
    bridge: &Bridge,
    caller: &Introspector,
    params: &Params,
    now: UnixTime,
) -> Result<Value, OAuthError> {
    let token = params.require("token")?;
    let refresh_first = params.get("token_type_hint") == Some("refresh_token");
    let answer = if refresh_first {
        match refresh_token(bridge, caller, token, now).await? {
            Some(answer) => Some(answer),
            None => access_token(bridge, caller, token, now).await?,
        }
    } else {
        match access_token(bridge, caller, token, now).await? {
            Some(answer) => Some(answer),
            None => refresh_token(bridge, caller, token, now).await?,
        }
    };
    Ok(answer.unwrap_or_else(|| json!({"active": false})))
}

async fn access_token(
    bridge: &Bridge,
    caller: &Introspector,
    token: &str,
    now: UnixTime,
) -> Result<Option<Value>, OAuthError> {
    let Ok(claims) = check_access_token(bridge, token, now).await? else {
        return Ok(None);
    };
    let visible = match caller {
        Introspector::ResourceServer => true,
        Introspector::Client(client) => !client.registered || client.id == claims.client_id,
    };
    Ok(Some(if visible {
        access_token_answer(claims)
    } else {
        json!({"active": false})
    }))
}

fn access_token_answer(claims: AccessTokenClaims) -> Value {
    let mut answer = Map::new();
    answer.insert("active".into(), json!(true));
    answer.insert("token_type".into(), json!(crate::tokens::BEARER));
    answer.insert("token_use".into(), json!("access_token"));
    answer.insert("scope".into(), json!(claims.scope));
    answer.insert("client_id".into(), json!(claims.client_id));
    answer.insert("sub".into(), json!(claims.sub));
    answer.insert("aud".into(), json!(claims.aud));
    answer.insert("iss".into(), json!(claims.iss));
    answer.insert("exp".into(), json!(claims.exp));
    answer.insert("iat".into(), json!(claims.iat));
    answer.insert("nbf".into(), json!(claims.nbf));
    answer.insert("jti".into(), json!(claims.jti));
    if let Some(email) = claims.email {
        answer.insert("username".into(), json!(email));
        answer.insert("email".into(), json!(email));
    }
    if let Some(name) = claims.name {
        answer.insert("name".into(), json!(name));
    }
    if !claims.groups.is_empty() {
        answer.insert("groups".into(), json!(claims.groups));
    }
    // RFC 8693 §4.1: who acts for the subject, for an exchanged token.
    if let Some(act) = claims.act {
        answer.insert("act".into(), json!(act));
    }
    Value::Object(answer)
}

async fn refresh_token(
    bridge: &Bridge,
    caller: &Introspector,
    token: &str,
    now: UnixTime,
) -> Result<Option<Value>, OAuthError> {
    let presented = TokenHash::of(token);
    let Some(family) = bridge.storage.refresh_family_of(&presented).await? else {
        return Ok(None);
    };
    let visible = match caller {
        Introspector::ResourceServer => true,
        Introspector::Client(client) => client.id == family.client_id,
    };
    let live = family.current == Some(presented)
        && !family.revoked
        && now < family.current_expires_at
        && now < family.absolute_expires_at;
    if !(visible && live) {
        // Known but not active: answered as inactive, not looked up as an access token.
        return Ok(Some(json!({"active": false})));
    }
    Ok(Some(refresh_token_answer(bridge, &family)))
}

fn refresh_token_answer(bridge: &Bridge, family: &RefreshFamily) -> Value {
    let expires_at = family.current_expires_at.min(family.absolute_expires_at);
    let mut answer = json!({
        "active": true,
        "token_use": "refresh_token",
        "scope": scope::join(&family.scope),
        "client_id": family.client_id,
        "sub": family.identity.subject,
        "aud": family.audience,
        "iss": bridge.settings.issuer,
        "exp": expires_at.seconds(),
    });
    // As much of the user as the grant's access tokens carry, and no more.
    let released = super::disclosure::released(&family.scope, &bridge.settings.access_token_claims);
    if let (Some(email), Value::Object(fields)) = (&family.identity.email, &mut answer)
        && released.contains(&super::disclosure::IdentityClaim::Email)
    {
        fields.insert("username".into(), json!(email));
    }
    answer
}
