//! `grant_type=urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693): an MCP server,
//! configured as a client with a rule, trades the access token a user's client sent it for one of
//! ours to another resource, for the same user, never more than the user granted nor living
//! longer, naming the server as the actor. The new token follows the original grant: revoking
//! the grant (reuse, logout, an administrator) refuses it too.

use super::provider_token;
use super::request::TokenExchangeGrant;
use super::{Grant, TokenResponse, issue_access_token};
use crate::clients::Client;
use crate::clock::UnixTime;
use crate::identity::Identity;
use crate::oauth::bearer::{Inactive, check_access_token};
use crate::oauth::token_exchange::{ACCESS_TOKEN_TYPE, Decision, UPSTREAM_AUDIENCE};
use crate::oauth::{Bridge, GrantType, OAuthError, SignIn, scope};
use crate::tokens::opaque::random_string;

pub(super) async fn exchange(
    bridge: &Bridge,
    client: &Client,
    request: &TokenExchangeGrant<'_>,
    now: UnixTime,
) -> Result<TokenResponse, OAuthError> {
    let Some(rules) = &bridge.token_exchange else {
        return Err(OAuthError::UnsupportedGrantType(
            "no token exchange is configured here".into(),
        ));
    };
    if client.is_public() || !rules.has_rule(&client.id) {
        return Err(OAuthError::UnauthorizedClient(
            "no oauth.token_exchange rule names this client".into(),
        ));
    }
    if request.subject_token_type != ACCESS_TOKEN_TYPE {
        return Err(OAuthError::invalid_request(format!(
            "subject_token_type must be {ACCESS_TOKEN_TYPE}"
        )));
    }
    if request
        .requested_token_type
        .is_some_and(|wanted| wanted != ACCESS_TOKEN_TYPE)
    {
        return Err(OAuthError::invalid_request(format!(
            "requested_token_type can only be {ACCESS_TOKEN_TYPE}"
        )));
    }
    let target = match (request.audience, request.resource) {
        (Some(audience), Some(resource)) if audience != resource => {
            return Err(OAuthError::InvalidTarget(
                "audience and resource name different targets: name one".into(),
            ));
        }
        (audience, resource) => audience.or(resource),
    };
    // RFC 8707: a resource is an absolute URI; the provider's token is named by audience only.
    if request.audience.is_none() && request.resource == Some(UPSTREAM_AUDIENCE) {
        return Err(OAuthError::InvalidTarget(
            "ask for the identity provider's token with audience=upstream; resource names a URI"
                .into(),
        ));
    }
    // With several providers, the provider's name asks for its token, as `upstream` does.
    let named_provider = request.audience.filter(|name| {
        *name != UPSTREAM_AUDIENCE
            && matches!(&bridge.sign_in, SignIn::Upstream(providers) if providers.named(name).is_some())
    });
    let target = named_provider.map_or(target, |_| Some(UPSTREAM_AUDIENCE));
    let requested_scope = request.scope.map(scope::parse).transpose()?;
    let subject = match check_access_token(bridge, request.subject_token.expose(), now).await? {
        Ok(claims) => claims,
        // RFC 8693 §2.2.2: an unusable subject token is `invalid_request`.
        Err(Inactive(reason)) => {
            tracing::info!(client_id = %client.id, reason, "token exchange with an unusable subject token");
            return Err(OAuthError::invalid_request(format!(
                "the subject token is not valid: {reason}"
            )));
        }
    };
    let decided = rules.decide(&client.id, &subject, target, requested_scope.as_deref())?;
    // Only a token of a grant can be followed by revocation; and that grant must still stand.
    let Some(family_id) = subject.sid.as_deref() else {
        return Err(OAuthError::invalid_request(
            "the subject token belongs to no user's grant",
        ));
    };
    let decided = match decided {
        Decision::Ours(exchange) => exchange,
        Decision::ProviderToken => {
            return provider_token::release(bridge, client, &subject, named_provider, now).await;
        }
    };
    if !bridge.storage.grant_is_live(family_id).await? {
        return Err(OAuthError::invalid_request(
            "the subject token's grant has been revoked",
        ));
    }
    // What the subject token said of the user, and nothing more.
    let identity = Identity {
        subject: subject.sub.clone(),
        email: subject.email.clone(),
        email_verified: None,
        name: subject.name.clone(),
        groups: subject.groups.clone(),
    };
    let grant = Grant {
        grant_type: GrantType::TokenExchange,
        client_id: &client.id,
        identity: &identity,
        scope: &decided.scope,
        audience: &decided.audience,
        family_id: Some(family_id),
        issued_at: now,
        not_after: Some(UnixTime(subject.exp).min(now.plus(rules.max_ttl()))),
        actor: Some(&decided.actor),
    };
    let access_token = issue_access_token(bridge, &grant, random_string(16))?;
    tracing::info!(
        client_id = %client.id,
        subject = %identity.subject,
        audience = %decided.audience,
        "access token exchanged"
    );
    Ok(TokenResponse::of_grant(&grant, access_token, None, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::bearer::check_access_token;
    use crate::oauth::test_support::*;
    use crate::oauth::token::ClientCredentials;
    use crate::oauth::token_exchange::{TokenExchange, TokenExchangeConfig};
    use crate::oauth::{Params, grant_type::TOKEN_EXCHANGE};
    use crate::tokens::jwt::sign_access_token;

    const API: &str = "https://api.example.com";

    fn with_a_rule() -> Harness {
        let mut harness = Harness::new();
        let config: TokenExchangeConfig = serde_json::from_value(serde_json::json!({
            "rules": [{"client": EXCHANGING_CLIENT, "audiences": [API], "scopes": ["openid", "email"],
                       "subject_audiences": ["https://mcp.example.com/mcp"]}]
        }))
        .unwrap();
        harness.bridge.token_exchange = TokenExchange::configured(&config, None);
        harness
    }

    async fn exchanged(harness: &Harness, subject: &str) -> Result<TokenResponse, OAuthError> {
        let params = Params::from([
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", subject),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
            ("audience", API),
        ]);
        let credentials = ClientCredentials {
            client_id: EXCHANGING_CLIENT.into(),
            secret: Some(crate::secret::SecretString::new(EXCHANGING_SECRET)),
            assertion: None,
        };
        crate::oauth::token::exchange(&harness.bridge, &credentials, &params, harness.now()).await
    }

    async fn active(harness: &Harness, token: &str) -> bool {
        check_access_token(&harness.bridge, token, harness.now())
            .await
            .unwrap()
            .is_ok()
    }

    #[tokio::test]
    async fn a_token_of_no_users_grant_is_not_exchanged() {
        let harness = with_a_rule();
        let user = harness.tokens_for_public_client().await;
        let mut claims = harness.verify_access_token(&user.access_token);
        claims.sid = None;
        claims.jti = "no-grant".into();
        let orphan = sign_access_token(&harness.bridge.keys.current(), &claims).unwrap();
        let error = exchanged(&harness, &orphan).await.unwrap_err();
        assert_eq!(
            error,
            OAuthError::invalid_request("the subject token belongs to no user's grant")
        );
    }

    #[tokio::test]
    async fn an_exchanged_token_ends_with_its_grant_or_its_actors_rule() {
        let mut harness = with_a_rule();
        let user = harness.tokens_for_public_client().await;
        let token = exchanged(&harness, &user.access_token).await.unwrap();
        assert!(active(&harness, &token.access_token).await);
        // Its grant's refresh token is used twice: the grant ends, and the exchanged token too.
        let first = user.refresh_token.clone().unwrap();
        let second = harness
            .refresh(&first)
            .await
            .unwrap()
            .refresh_token
            .unwrap();
        harness.refresh(&second).await.unwrap();
        assert!(harness.refresh(&first).await.is_err(), "reuse");
        assert!(!active(&harness, &token.access_token).await);

        // A rule removed: what its client exchanged stops at once.
        let user = harness.tokens_for_public_client().await;
        let token = exchanged(&harness, &user.access_token).await.unwrap();
        assert!(active(&harness, &token.access_token).await);
        harness.bridge.token_exchange = None;
        assert!(!active(&harness, &token.access_token).await);
        assert!(
            active(&harness, &user.access_token).await,
            "the user's own stays"
        );
    }
}
