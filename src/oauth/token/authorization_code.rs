//! `grant_type=authorization_code` (RFC 6749 §4.1.3, RFC 7636 §4.5): a single-use code bound to
//! client, redirect URI, PKCE challenge, resource and scope. A replayed code revokes what the
//! first redemption issued (RFC 6749 §4.1.2, RFC 9700 §4.5).

use super::request::CodeGrant;
use super::{Grant, TokenResponse, check_resource, issue_access_token, issue_id_token};
use crate::audit;
use crate::clients::Client;
use crate::clock::UnixTime;
use crate::oauth::{Bridge, Cause, GrantType, OAuthError, pkce};
use crate::secret::CodeVerifier;
use crate::storage::{AuthorizationCodeRecord, CodeRedemption};
use crate::tokens::TokenHash;
use crate::tokens::generate_token;
use crate::tokens::opaque::random_string;
use crate::tokens::refresh::{IssuedAccessToken, RefreshFamily};

/// How long a code exchange waits for the ID tokens' RSA key, generated just after start-up
/// (a quarter of a second as measured; more on a loaded machine).
const ID_TOKEN_KEY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

pub(super) async fn exchange(
    bridge: &Bridge,
    client: &Client,
    request: &CodeGrant<'_>,
    now: UnixTime,
) -> Result<TokenResponse, OAuthError> {
    // Before the code is spent, so that a client told to retry still holds a code that works:
    // the key of this client's ID tokens (needed if the grant has `openid`, unknown until the
    // code is redeemed). Only the generated RSA key can still be on its way.
    let algorithm = client.id_token_algorithm().jwt();
    if bridge.keys.current().id_token_key(algorithm).is_none() {
        let coming = algorithm == jsonwebtoken::Algorithm::RS256
            && bridge.keys.id_token_key_ready(ID_TOKEN_KEY_WAIT).await;
        if !coming {
            return Err(OAuthError::TemporarilyUnavailable(Cause::because(
                "no key signs ID tokens in the client's id_token_signed_response_alg yet",
            )));
        }
    }
    let refresh = client
        .allows_grant(GrantType::RefreshToken)
        .then(generate_token);
    let access_token_id = random_string(16);
    // A session that is re-validated on refresh needs the provider's refresh token to be.
    let can_refresh = |record: &AuthorizationCodeRecord| {
        !bridge.revalidates(record.upstream_session.as_ref()) || record.upstream_refresh.is_some()
    };
    let mut checked = None;
    // Runs inside the storage's atomic redemption, so it only checks and builds; the signing
    // happens once the grant is stored.
    let mut issue = |record: &AuthorizationCodeRecord| {
        let outcome = check_request(request, record);
        let family = outcome.is_ok().then(|| {
            new_family(
                bridge,
                client,
                record,
                refresh
                    .as_ref()
                    .filter(|_| can_refresh(record))
                    .map(|(_, hash)| *hash),
                &access_token_id,
                now,
            )
        });
        checked = Some(outcome);
        family
    };
    let redemption = bridge
        .storage
        .redeem_code(
            &TokenHash::of(request.code.expose()),
            &client.id,
            now,
            &mut issue,
        )
        .await?;
    let record = match redemption {
        CodeRedemption::Redeemed(record) => record,
        CodeRedemption::Replayed {
            family_id,
            client_id,
        } => {
            tracing::warn!(client_id = %client_id, presented_by = %client.id, "authorization code replayed; revoking its tokens");
            if bridge.storage.revoke_family(&family_id, now).await? {
                audit::record(&audit::Event::GrantRevoked {
                    reason: audit::RevocationReason::CodeReplay,
                    family_id: &family_id,
                    client_id: &client_id,
                    subject: None,
                    provider: None,
                });
            }
            return Err(OAuthError::invalid_grant(
                "authorization code was already used",
            ));
        }
        CodeRedemption::Expired => {
            return Err(OAuthError::invalid_grant("authorization code has expired"));
        }
        CodeRedemption::Unknown => {
            return Err(OAuthError::invalid_grant("authorization code is invalid"));
        }
        CodeRedemption::OtherClient => {
            tracing::warn!(presented_by = %client.id, "authorization code presented by another client; left untouched");
            return Err(OAuthError::invalid_grant(
                "authorization code was issued to another client",
            ));
        }
    };
    checked.ok_or_else(|| {
        OAuthError::internal(Cause::because(
            "storage redeemed a code without checking the request",
        ))
    })??;

    let grant = Grant {
        grant_type: GrantType::AuthorizationCode,
        client_id: &client.id,
        identity: &record.identity,
        scope: &record.scope,
        audience: &record.audience,
        family_id: Some(&record.family_id),
        issued_at: now,
        not_after: None,
        actor: None,
    };
    // A signing failure now leaves a stored grant nobody holds a token of: harmless, and the
    // code was spent either way.
    let access_token = issue_access_token(bridge, &grant, access_token_id)?;
    let id_token = issue_id_token(bridge, client, &record, now)?;
    let refresh_token = refresh
        .filter(|_| can_refresh(&record))
        .map(|(token, _)| token);
    tracing::info!(subject = %record.identity.subject, "tokens issued for an authorization code");
    Ok(TokenResponse::of_grant(
        &grant,
        access_token,
        refresh_token,
        id_token,
    ))
}

/// Everything the token request must prove about the code it presents.
fn check_request(
    request: &CodeGrant<'_>,
    record: &AuthorizationCodeRecord,
) -> Result<(), OAuthError> {
    match request.redirect_uri {
        Some(given) if given == record.redirect_uri => {}
        None if !record.redirect_uri_given => {}
        Some(_) => {
            return Err(OAuthError::invalid_grant(
                "redirect_uri does not match the authorization request",
            ));
        }
        None => return Err(OAuthError::invalid_request("redirect_uri is required")),
    }
    pkce::verify(
        request.code_verifier.as_ref().map(CodeVerifier::expose),
        &record.code_challenge,
    )?;
    check_resource(request.resource, &record.audience)
}

fn new_family(
    bridge: &Bridge,
    client: &Client,
    record: &AuthorizationCodeRecord,
    refresh: Option<TokenHash>,
    access_token_id: &str,
    now: UnixTime,
) -> RefreshFamily {
    let issued = IssuedAccessToken {
        jti: access_token_id.to_owned(),
        expires_at: now.plus(bridge.settings.access_token_ttl),
    };
    let mut family = RefreshFamily {
        id: record.family_id.clone(),
        client_id: client.id.clone(),
        identity: record.identity.clone(),
        scope: record.scope.clone(),
        audience: record.audience.clone(),
        absolute_expires_at: now.plus(bridge.settings.refresh_token_max_lifetime),
        current: refresh,
        // Without a refresh token the grant is still recorded, so that a replay of this code
        // can revoke the access token; it then lives only as long as that token.
        current_expires_at: issued.expires_at,
        previous: None,
        revoked: false,
        access_tokens: vec![issued],
        upstream_refresh: record.upstream_refresh.clone(),
        upstream_access: record.upstream_access.clone().map(Box::new),
        upstream_session: record.upstream_session.clone(),
        created_at: now,
        last_used_at: None,
    };
    if refresh.is_some() {
        family.current_expires_at = family.sliding_expiry(now, bridge.settings.refresh_token_ttl);
    }
    family
}

#[cfg(test)]
mod tests {
    use crate::oauth::test_support::*;
    use crate::oauth::token::exchange;
    use crate::oauth::{OAuthError, Params};

    #[tokio::test]
    async fn code_exchange_issues_bound_tokens() {
        let harness = Harness::new();
        let code = harness.code_for_public_client().await;
        let tokens = harness.redeem(&code).await.unwrap();
        assert_eq!(tokens.token_type, "Bearer");
        assert_eq!(tokens.expires_in, 3600);
        assert_eq!(tokens.scope, "openid email");
        assert_eq!(tokens.refresh_token.as_ref().unwrap().expose().len(), 43);
        let claims = harness.verify_access_token(&tokens.access_token);
        assert_eq!(claims.aud, "https://mcp.example.com/mcp");
        assert_eq!(claims.client_id, PUBLIC_CLIENT);
        assert_eq!(claims.sub, "user-1");
        assert_eq!(claims.email.as_deref(), Some("user@corp.com"));
        assert_eq!(claims.exp, harness.now().seconds() + 3600);
    }

    #[tokio::test]
    async fn openid_scope_brings_an_id_token_for_the_client_with_its_nonce() {
        let harness = Harness::new();
        let code = harness.code_for_public_client().await;
        let tokens = harness.redeem(&code).await.unwrap();
        let id_token = tokens.id_token.expect("openid was granted");
        let keys = harness.bridge.keys.current();
        // RS256, OIDC's default for a client that registered no algorithm, by the ID-token key.
        let key = keys.id_token_key(jsonwebtoken::Algorithm::RS256).unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&id_token)
                .unwrap()
                .kid
                .as_deref(),
            Some(key.kid.as_str())
        );
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&[PUBLIC_CLIENT]);
        validation.set_issuer(&[ISSUER]);
        validation.validate_exp = false;
        let claims =
            jsonwebtoken::decode::<serde_json::Value>(&id_token, key.decoding_key(), &validation)
                .unwrap()
                .claims;
        assert_eq!(claims["sub"], "user-1");
        assert_eq!(claims["nonce"], "client-nonce");
        assert_eq!(claims["email"], "user@corp.com");
        assert_eq!(claims["auth_time"], harness.now().seconds());
        assert!(claims.get("name").is_none(), "name needs the profile scope");
    }

    #[tokio::test]
    async fn a_code_exchange_just_after_start_up_waits_for_the_generated_id_token_key() {
        use crate::tokens::KeySet;
        use crate::tokens::keys::{KeyRing, SigningKey};
        let mut harness = Harness::new();
        let ring = std::sync::Arc::new(KeyRing::new(KeySet::new(
            SigningKey::generate_es256().unwrap(),
        )));
        harness.bridge.keys = std::sync::Arc::clone(&ring);
        let code = harness.code_for_public_client().await;
        let installing = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            ring.install_id_token_key(crate::oauth::test_support::id_token_key());
        });
        let tokens = harness.redeem(&code).await.unwrap();
        installing.await.unwrap();
        let id_token = tokens.id_token.expect("openid was granted");
        let header = jsonwebtoken::decode_header(&id_token).unwrap();
        assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    }

    #[tokio::test]
    async fn without_openid_scope_there_is_no_id_token_and_refresh_never_brings_one() {
        let harness = Harness::new();
        let login = harness.authorize_with(PUBLIC_CLIENT, "email").await;
        let url = harness.callback(&login, &[("code", "c")]).await.unwrap();
        let code = url
            .query_pairs()
            .find(|(k, _)| k == "code")
            .unwrap()
            .1
            .into_owned();
        let tokens = harness.redeem(&code).await.unwrap();
        assert!(tokens.id_token.is_none());
        let with_openid = harness.tokens_for_public_client().await;
        assert!(with_openid.id_token.is_some());
        let refreshed = harness
            .refresh(&with_openid.refresh_token.unwrap())
            .await
            .unwrap();
        assert!(
            refreshed.id_token.is_none(),
            "refresh responses carry no ID token"
        );
    }

    #[tokio::test]
    async fn wrong_verifier_is_invalid_grant_and_burns_the_code() {
        let harness = Harness::new();
        let code = harness.code_for_public_client().await;
        let wrong = "x".repeat(43);
        let err = harness
            .redeem_with(&code, &[("code_verifier", &wrong)])
            .await
            .unwrap_err();
        assert_eq!(
            err,
            OAuthError::invalid_grant("code_verifier does not match the code_challenge")
        );
        assert_eq!(
            harness.redeem(&code).await.unwrap_err(),
            OAuthError::invalid_grant("authorization code was already used")
        );
    }

    #[tokio::test]
    async fn missing_verifier_is_invalid_request() {
        let harness = Harness::new();
        let code = harness.code_for_public_client().await;
        let params = Params::from([
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", PUBLIC_REDIRECT),
        ]);
        let err = exchange(
            &harness.bridge,
            &public_credentials(),
            &params,
            harness.now(),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err,
            OAuthError::invalid_request("code_verifier is required")
        );
    }

    #[tokio::test]
    async fn redirect_uri_must_repeat_the_authorization_request() {
        let harness = Harness::new();
        let code = harness.code_for_public_client().await;
        let err = harness
            .redeem_with(&code, &[("redirect_uri", "http://127.0.0.1:9999/callback")])
            .await
            .unwrap_err();
        assert_eq!(
            err,
            OAuthError::invalid_grant("redirect_uri does not match the authorization request")
        );
        let code = harness.code_for_public_client().await;
        let params = Params::from([
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("code_verifier", VERIFIER),
        ]);
        let err = exchange(
            &harness.bridge,
            &public_credentials(),
            &params,
            harness.now(),
        )
        .await
        .unwrap_err();
        assert_eq!(err, OAuthError::invalid_request("redirect_uri is required"));
    }

    #[tokio::test]
    async fn replayed_code_fails_and_revokes_what_the_first_redemption_issued() {
        let harness = Harness::new();
        let code = harness.code_for_public_client().await;
        let first = harness.redeem(&code).await.unwrap();
        let err = harness.redeem(&code).await.unwrap_err();
        assert_eq!(
            err,
            OAuthError::invalid_grant("authorization code was already used")
        );
        let refresh = first.refresh_token.unwrap();
        assert_eq!(
            harness.refresh(&refresh).await.unwrap_err().code(),
            "invalid_grant"
        );
        let jti = harness.verify_access_token(&first.access_token).jti;
        assert!(
            harness
                .bridge
                .storage
                .is_access_token_revoked(&jti, harness.now())
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn replayed_code_revokes_the_access_token_of_a_client_without_refresh_tokens() {
        let harness = Harness::new();
        let code = harness.code_for(NO_REFRESH_CLIENT).await;
        let first = harness
            .redeem_as(NO_REFRESH_CLIENT, &code, &[])
            .await
            .unwrap();
        assert!(first.refresh_token.is_none());
        let err = harness
            .redeem_as(NO_REFRESH_CLIENT, &code, &[])
            .await
            .unwrap_err();
        assert_eq!(
            err,
            OAuthError::invalid_grant("authorization code was already used")
        );
        let jti = harness.verify_access_token(&first.access_token).jti;
        assert!(
            harness
                .bridge
                .storage
                .is_access_token_revoked(&jti, harness.now())
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn expired_code_is_invalid_grant() {
        let harness = Harness::new();
        let code = harness.code_for_public_client().await;
        harness.clock.advance(crate::oauth::AUTHORIZATION_CODE_TTL);
        assert_eq!(
            harness.redeem(&code).await.unwrap_err(),
            OAuthError::invalid_grant("authorization code has expired")
        );
    }

    #[tokio::test]
    async fn unknown_code_is_invalid_grant() {
        let harness = Harness::new();
        assert_eq!(
            harness.redeem("made-up").await.unwrap_err(),
            OAuthError::invalid_grant("authorization code is invalid")
        );
    }

    #[tokio::test]
    async fn code_of_another_client_is_invalid_grant() {
        let harness = Harness::new();
        let code = harness.code_for_public_client().await;
        let params = Params::from([
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", PUBLIC_REDIRECT),
            ("code_verifier", VERIFIER),
        ]);
        let err = exchange(
            &harness.bridge,
            &confidential_credentials(),
            &params,
            harness.now(),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err,
            OAuthError::invalid_grant("authorization code was issued to another client")
        );
        // Left exactly as it was: the rightful client redeems it, and another presentation of
        // the spent code still revokes nothing of the rightful grant.
        let tokens = harness.redeem(&code).await.unwrap();
        let again = exchange(
            &harness.bridge,
            &confidential_credentials(),
            &params,
            harness.now(),
        )
        .await
        .unwrap_err();
        assert_eq!(again.code(), "invalid_grant");
        assert!(
            harness
                .refresh(&tokens.refresh_token.unwrap())
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn different_resource_at_the_token_endpoint_is_invalid_target() {
        let harness = Harness::new();
        let code = harness.code_for_public_client().await;
        let err = harness
            .redeem_with(&code, &[("resource", "https://other.example.com/mcp")])
            .await
            .unwrap_err();
        assert_eq!(err.code(), "invalid_target");
    }

    #[tokio::test]
    async fn unknown_client_is_invalid_client() {
        let harness = Harness::new();
        let credentials = crate::oauth::token::ClientCredentials {
            client_id: "deleted".into(),
            secret: None,
            assertion: None,
        };
        let params = Params::from([("grant_type", "authorization_code"), ("code", "x")]);
        let err = exchange(&harness.bridge, &credentials, &params, harness.now())
            .await
            .unwrap_err();
        assert_eq!(err.code(), "invalid_client");
    }

    #[tokio::test]
    async fn unsupported_or_missing_grant_type() {
        let harness = Harness::new();
        let params = Params::from([("grant_type", "password")]);
        let err = exchange(
            &harness.bridge,
            &public_credentials(),
            &params,
            harness.now(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), "unsupported_grant_type");
        let err = exchange(
            &harness.bridge,
            &public_credentials(),
            &Params::default(),
            harness.now(),
        )
        .await
        .unwrap_err();
        assert_eq!(err, OAuthError::invalid_request("grant_type is required"));
    }
}
