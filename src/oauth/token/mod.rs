//! The token endpoint (RFC 6749 §3.2, §5): client authentication, grant dispatch, and the token
//! response. One file per grant.

mod authorization_code;
mod client_credentials;
mod jwt_bearer;
mod provider_token;
mod refresh_token;
mod request;
mod revalidation;
mod token_exchange;

use serde::Serialize;

use super::disclosure::{self, IdentityClaim};
use super::{Bridge, GrantType, OAuthError, Params, for_log, scope};
use crate::audit;
use crate::clients::Client;
pub use crate::clients::ClientCredentials;
use crate::clock::UnixTime;
use crate::identity::Identity;
use crate::secret::RefreshToken;
use crate::tokens::jwt::{AccessTokenClaims, IdTokenClaims, sign_access_token, sign_id_token};
use crate::tokens::refresh::IssuedAccessToken;
use request::TokenRequest;

/// RFC 6749 §5.1.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TokenResponse {
    pub(crate) access_token: String,
    pub(crate) token_type: &'static str,
    pub(crate) expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<RefreshToken>,
    /// Left out when empty: no scope was granted, or (for the provider's token) none is known.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) scope: String,
    /// OIDC Core §3.1.3.3: present when the grant includes `openid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) id_token: Option<String>,
    /// RFC 8693 §2.2.1: what a token exchange issued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) issued_token_type: Option<&'static str>,
}

impl TokenResponse {
    /// The response for `grant`, whose access token `issue_access_token` signed: the last step
    /// of every grant, so the audit trail says `token.issued` only of tokens that leave.
    fn of_grant(
        grant: &Grant<'_>,
        (access_token, record): (String, IssuedAccessToken),
        refresh_token: Option<RefreshToken>,
        id_token: Option<String>,
    ) -> TokenResponse {
        audit::record(&audit::Event::TokenIssued {
            grant_type: grant.grant_type.as_str(),
            client_id: grant.client_id,
            subject: &grant.identity.subject,
            jti: &record.jti,
            scope: grant.scope,
            audience: grant.audience,
            expires_at: record.expires_at.seconds(),
            family_id: grant.family_id,
            actor: grant.actor.map(|actor| actor.sub.as_str()),
        });
        TokenResponse {
            access_token,
            token_type: crate::tokens::BEARER,
            expires_in: u64::try_from(record.expires_at.seconds() - grant.issued_at.seconds())
                .unwrap_or(0),
            refresh_token,
            scope: scope::join(grant.scope),
            id_token,
            issued_token_type: grant
                .actor
                .map(|_| crate::oauth::token_exchange::ACCESS_TOKEN_TYPE),
        }
    }

    /// The identity provider's access token handed on by a token exchange, as it was issued.
    fn of_provider(token: crate::upstream::ProviderAccessToken, now: UnixTime) -> TokenResponse {
        TokenResponse {
            access_token: token.token.expose().to_owned(),
            token_type: crate::tokens::BEARER,
            expires_in: u64::try_from(token.expires_at.seconds() - now.seconds()).unwrap_or(0),
            refresh_token: None,
            scope: token.scope.unwrap_or_default(),
            id_token: None,
            issued_token_type: Some(crate::oauth::token_exchange::ACCESS_TOKEN_TYPE),
        }
    }
}

#[tracing::instrument(skip_all, fields(
    client_id = for_log(&credentials.client_id),
    grant_type = params.get("grant_type").and_then(GrantType::parse).map(GrantType::as_str),
))]
pub async fn exchange(
    bridge: &Bridge,
    credentials: &ClientCredentials,
    params: &Params,
    now: UnixTime,
) -> Result<TokenResponse, OAuthError> {
    let client = bridge.clients.authenticate_client(credentials, now).await?;
    let grant = request::grant_type(params)?;
    if !client.allows_grant(grant) {
        return Err(OAuthError::UnauthorizedClient(
            format!("this client may not use {}", grant.as_str()).into(),
        ));
    }
    match TokenRequest::read(grant, params)? {
        TokenRequest::AuthorizationCode(request) => {
            authorization_code::exchange(bridge, &client, &request, now).await
        }
        TokenRequest::RefreshToken(request) => {
            refresh_token::exchange(bridge, &client, &request, now).await
        }
        TokenRequest::ClientCredentials(request) => {
            client_credentials::exchange(bridge, &client, &request, now).await
        }
        TokenRequest::JwtBearer(request) => {
            jwt_bearer::exchange(bridge, &client, &request, now).await
        }
        TokenRequest::TokenExchange(request) => {
            token_exchange::exchange(bridge, &client, &request, now).await
        }
    }
}

/// What an access token is issued for.
struct Grant<'a> {
    grant_type: GrantType,
    client_id: &'a str,
    identity: &'a Identity,
    scope: &'a [String],
    audience: &'a str,
    /// The refresh-token family that records the access token, when there is one.
    family_id: Option<&'a str>,
    /// When it is issued; its access token lives `access_token_ttl` from then, or less.
    issued_at: UnixTime,
    /// The access token expires by then at the latest (that of the token it was exchanged for).
    not_after: Option<UnixTime>,
    /// Who acts for the subject, for a token exchange (RFC 8693 §4.1).
    actor: Option<&'a crate::tokens::jwt::Actor>,
}

/// Signs an access token (RFC 9068) and returns it with the record that lets it be revoked.
fn issue_access_token(
    bridge: &Bridge,
    grant: &Grant<'_>,
    jti: String,
) -> Result<(String, IssuedAccessToken), OAuthError> {
    let now = grant.issued_at;
    let full = now.plus(bridge.settings.access_token_ttl);
    let expires_at = grant.not_after.map_or(full, |cap| cap.min(full));
    let released = disclosure::released(grant.scope, &bridge.settings.access_token_claims);
    let carries = |claim: IdentityClaim| released.contains(&claim);
    let claims = AccessTokenClaims {
        iss: bridge.settings.issuer.clone(),
        sub: grant.identity.subject.clone(),
        aud: grant.audience.to_owned(),
        client_id: grant.client_id.to_owned(),
        scope: scope::join(grant.scope),
        exp: expires_at.seconds(),
        iat: now.seconds(),
        nbf: now.seconds(),
        jti,
        email: grant
            .identity
            .email
            .clone()
            .filter(|_| carries(IdentityClaim::Email)),
        name: grant
            .identity
            .name
            .clone()
            .filter(|_| carries(IdentityClaim::Name)),
        groups: if carries(IdentityClaim::Groups) {
            grant.identity.groups.clone()
        } else {
            Vec::new()
        },
        sid: grant.family_id.map(str::to_owned),
        act: grant.actor.cloned(),
    };
    let token = sign_access_token(&bridge.keys.current(), &claims).map_err(OAuthError::internal)?;
    Ok((
        token,
        IssuedAccessToken {
            jti: claims.jti,
            expires_at,
        },
    ))
}

/// An ID token for a grant that includes `openid`, signed as the client registered (RS256 by
/// default); identity claims follow the `email` and `profile` scopes (OIDC Core §5.4).
fn issue_id_token(
    bridge: &Bridge,
    client: &Client,
    record: &crate::storage::AuthorizationCodeRecord,
    now: UnixTime,
) -> Result<Option<String>, OAuthError> {
    let has = |scope: &str| record.scope.iter().any(|s| s == scope);
    if !has("openid") {
        return Ok(None);
    }
    let identity = &record.identity;
    let claims = IdTokenClaims {
        iss: bridge.settings.issuer.clone(),
        sub: identity.subject.clone(),
        aud: record.client_id.clone(),
        exp: now.plus(bridge.settings.access_token_ttl).seconds(),
        iat: now.seconds(),
        auth_time: record.auth_time.seconds(),
        nonce: record.client_nonce.clone(),
        email: identity.email.clone().filter(|_| has("email")),
        email_verified: identity.email_verified.filter(|_| has("email")),
        name: identity.name.clone().filter(|_| has("profile")),
    };
    let algorithm = client.id_token_algorithm();
    // Registration and start-up refuse an algorithm the keys cannot sign in; none here means the
    // keys changed under a client, which must not get an ID token it cannot verify.
    sign_id_token(&bridge.keys.current(), algorithm.jwt(), &claims)
        .map_err(OAuthError::internal)?
        .map(Some)
        .ok_or_else(|| {
            OAuthError::internal(super::Cause::because(
                "no key signs ID tokens in the client's id_token_signed_response_alg",
            ))
        })
}

/// RFC 8707 §2.2: a `resource` at the token endpoint must name the audience the grant is bound to.
fn check_resource(resource: Option<&str>, audience: &str) -> Result<(), OAuthError> {
    match resource {
        Some(resource) if resource != audience => Err(wrong_resource()),
        _ => Ok(()),
    }
}

fn wrong_resource() -> OAuthError {
    OAuthError::InvalidTarget("resource differs from the one this grant was issued for".into())
}
