//! `grant_type=refresh_token` (RFC 6749 §6) with rotation and reuse detection (RFC 9700 §4.14.2).

use super::request::RefreshGrant;
use super::revalidation::revalidate;
use super::{Grant, TokenResponse, issue_access_token, wrong_resource};
use crate::audit;
use crate::clients::Client;
use crate::clock::UnixTime;
use crate::oauth::GrantType;
use crate::oauth::{Bridge, OAuthError, SignIn, scope};
use crate::secret::RefreshToken;
use crate::tokens::opaque::random_string;
use crate::tokens::refresh::{
    IssuedAccessToken, Presentation, RefreshFamily, RefreshRequest, Replacement,
};
use crate::tokens::{TokenHash, generate_token};

pub(super) async fn exchange(
    bridge: &Bridge,
    client: &Client,
    grant: &RefreshGrant<'_>,
    now: UnixTime,
) -> Result<TokenResponse, OAuthError> {
    let presented = TokenHash::of(grant.refresh_token.expose());
    let requested_scope = grant.scope.map(scope::parse).transpose()?;
    let request = RefreshRequest {
        client_id: &client.id,
        scope: requested_scope.as_deref(),
        resource: grant.resource,
    };

    // Kept tokens alone (`keep_tokens`) cost a refresh nothing: no lookup before the rotation.
    let identity = match &bridge.sealer {
        Some(sealer) if bridge.revalidates_any() => {
            revalidate(bridge, sealer, client, &presented, &request, now).await?
        }
        _ => None,
    };
    // The access token's id and expiry are fixed before rotation so the family records it atomically.
    let (new_refresh, new_hash): (RefreshToken, _) = generate_token();
    let jti = random_string(16);
    let replacement = Replacement {
        hash: new_hash,
        access_token: IssuedAccessToken {
            jti: jti.clone(),
            expires_at: now.plus(bridge.settings.access_token_ttl),
        },
        ttl: bridge.settings.refresh_token_ttl,
        retry_window: bridge.settings.refresh_token_retry_window,
        identity,
    };
    let Some((outcome, family)) = bridge
        .storage
        .rotate_refresh(&presented, &request, replacement, now)
        .await?
    else {
        return Err(OAuthError::invalid_grant("refresh token is invalid"));
    };
    match outcome {
        Presentation::Rotated => {}
        Presentation::RetriedLostResponse => {
            tracing::info!(family = %family.id, "refresh retried with the previous token; unused successor replaced");
        }
        Presentation::Reused => {
            tracing::warn!(family = %family.id, subject = %family.identity.subject, "refresh token reuse detected; family revoked");
            bridge.metrics.refresh_reuse_detected();
            audit::record(&audit::Event::RefreshReuseDetected {
                client_id: &family.client_id,
                subject: &family.identity.subject,
                family_id: &family.id,
            });
            audit::record(&audit::Event::GrantRevoked {
                reason: audit::RevocationReason::RefreshReuse,
                family_id: &family.id,
                client_id: &family.client_id,
                subject: Some(&family.identity.subject),
                provider: None,
            });
            return Err(OAuthError::invalid_grant(
                "refresh token was already used; the grant has been revoked",
            ));
        }
        Presentation::Expired => {
            return Err(OAuthError::invalid_grant("refresh token has expired"));
        }
        Presentation::Revoked => {
            return Err(OAuthError::invalid_grant("refresh token has been revoked"));
        }
        Presentation::WrongClient => {
            tracing::warn!(family = %family.id, "refresh token presented by another client");
            return Err(OAuthError::invalid_grant(
                "refresh token was issued to another client",
            ));
        }
        Presentation::ScopeExceeded => {
            return Err(OAuthError::InvalidScope(
                "scope exceeds what was originally granted".into(),
            ));
        }
        Presentation::WrongResource => return Err(wrong_resource()),
    }
    if let Some(provider) = removed_provider(bridge, &family) {
        return Err(end_orphaned(bridge, &family, provider, now).await);
    }
    let scope = requested_scope.unwrap_or_else(|| family.scope.clone());
    let grant = Grant {
        grant_type: GrantType::RefreshToken,
        client_id: &client.id,
        identity: &family.identity,
        scope: &scope,
        audience: &family.audience,
        family_id: Some(&family.id),
        issued_at: now,
        not_after: None,
        actor: None,
    };
    let access_token = issue_access_token(bridge, &grant, jti)?;
    Ok(TokenResponse::of_grant(
        &grant,
        access_token,
        Some(new_refresh),
        None,
    ))
}

/// The provider a grant's user signed in at, when it is no longer configured (removed, or
/// renamed): no one can vouch for the user any more, and no back-channel logout can reach them.
fn removed_provider<'a>(bridge: &Bridge, family: &'a RefreshFamily) -> Option<&'a str> {
    let SignIn::Upstream(providers) = &bridge.sign_in else {
        return None;
    };
    let session = family.upstream_session.as_ref()?;
    providers
        .named(&session.provider)
        .is_none()
        .then_some(session.provider.as_str())
}

/// Ends a grant whose provider is gone; the rotation just stored is never handed out.
async fn end_orphaned(
    bridge: &Bridge,
    family: &RefreshFamily,
    provider: &str,
    now: UnixTime,
) -> OAuthError {
    tracing::info!(family = %family.id, provider, "grant of a provider no longer configured ended");
    match bridge.storage.revoke_family(&family.id, now).await {
        Ok(revoked) => {
            if revoked {
                audit::record(&audit::Event::GrantRevoked {
                    reason: audit::RevocationReason::ProviderRemoved,
                    family_id: &family.id,
                    client_id: &family.client_id,
                    subject: Some(&family.identity.subject),
                    provider: Some(provider),
                });
            }
            OAuthError::invalid_grant(
                "the identity provider of this sign-in is no longer configured",
            )
        }
        Err(error) => error.into(),
    }
}

#[cfg(test)]
mod tests {
    use crate::oauth::OAuthError;
    use crate::oauth::test_support::*;

    #[tokio::test]
    async fn refresh_rotates_and_the_new_access_token_is_recorded() {
        let harness = Harness::new();
        let first = harness.tokens_for_public_client().await;
        let refresh = first.refresh_token.unwrap();
        let second = harness.refresh(&refresh).await.unwrap();
        let next = second.refresh_token.clone().unwrap();
        assert_ne!(next, refresh);
        let claims = harness.verify_access_token(&second.access_token);
        assert_eq!(claims.sub, "user-1");
        assert_eq!(claims.aud, "https://mcp.example.com/mcp");
        assert_eq!(second.scope, "openid email");
        assert!(harness.refresh(&next).await.is_ok());
    }

    #[tokio::test]
    async fn retry_with_the_previous_token_works_until_the_successor_is_used() {
        let harness = Harness::new();
        let original = harness
            .tokens_for_public_client()
            .await
            .refresh_token
            .unwrap();
        let lost = harness
            .refresh(&original)
            .await
            .unwrap()
            .refresh_token
            .unwrap();
        // The response carrying `lost` never reached the client: it retries with the original.
        let retried = harness
            .refresh(&original)
            .await
            .unwrap()
            .refresh_token
            .unwrap();
        assert_eq!(
            harness.refresh(&lost).await.unwrap_err().code(),
            "invalid_grant",
            "replaced successor is dead"
        );
        // That presentation was reuse: the whole family, including the retried token, is revoked.
        assert_eq!(
            harness.refresh(&retried).await.unwrap_err(),
            OAuthError::invalid_grant("refresh token has been revoked")
        );
    }

    #[tokio::test]
    async fn reuse_after_the_successor_was_used_revokes_the_family() {
        let harness = Harness::new();
        let first = harness.tokens_for_public_client().await;
        let original = first.refresh_token.unwrap();
        let second = harness.refresh(&original).await.unwrap();
        let next = second.refresh_token.unwrap();
        let third = harness.refresh(&next).await.unwrap();
        let err = harness.refresh(&original).await.unwrap_err();
        assert_eq!(
            err,
            OAuthError::invalid_grant("refresh token was already used; the grant has been revoked")
        );
        assert_eq!(
            harness
                .refresh(&third.refresh_token.unwrap())
                .await
                .unwrap_err(),
            OAuthError::invalid_grant("refresh token has been revoked")
        );
        for access in [first.access_token, second.access_token, third.access_token] {
            let jti = harness.verify_access_token(&access).jti;
            assert!(
                harness
                    .bridge
                    .storage
                    .is_access_token_revoked(&jti, harness.now())
                    .await
                    .unwrap()
            );
        }
    }

    #[tokio::test]
    async fn refresh_token_of_another_client_is_invalid_grant() {
        let harness = Harness::new();
        let refresh = harness
            .tokens_for_public_client()
            .await
            .refresh_token
            .unwrap();
        let err = harness
            .refresh_as(&confidential_credentials(), &refresh, &[])
            .await
            .unwrap_err();
        assert_eq!(
            err,
            OAuthError::invalid_grant("refresh token was issued to another client")
        );
        assert!(
            harness.refresh(&refresh).await.is_ok(),
            "the rightful client is unaffected"
        );
    }

    #[tokio::test]
    async fn expired_refresh_token_is_invalid_grant() {
        let harness = Harness::new();
        let refresh = harness
            .tokens_for_public_client()
            .await
            .refresh_token
            .unwrap();
        harness
            .clock
            .advance(std::time::Duration::from_secs(30 * 86400));
        assert_eq!(
            harness.refresh(&refresh).await.unwrap_err(),
            OAuthError::invalid_grant("refresh token has expired")
        );
    }

    #[tokio::test]
    async fn scope_can_narrow_but_not_widen_and_a_refused_request_changes_nothing() {
        let harness = Harness::new();
        let refresh = harness
            .tokens_for_public_client()
            .await
            .refresh_token
            .unwrap();
        let err = harness
            .refresh_as(
                &public_credentials(),
                &refresh,
                &[("scope", "openid profile")],
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), "invalid_scope");
        let narrowed = harness
            .refresh_as(&public_credentials(), &refresh, &[("scope", "email")])
            .await
            .unwrap();
        assert_eq!(narrowed.scope, "email");
        // The family keeps its original scope: a later refresh without `scope` gets all of it.
        let next = harness
            .refresh(&narrowed.refresh_token.unwrap())
            .await
            .unwrap();
        assert_eq!(next.scope, "openid email");
    }

    #[tokio::test]
    async fn another_resource_is_invalid_target_and_changes_nothing() {
        let harness = Harness::new();
        let refresh = harness
            .tokens_for_public_client()
            .await
            .refresh_token
            .unwrap();
        let err = harness
            .refresh_as(
                &public_credentials(),
                &refresh,
                &[("resource", "https://other.example.com")],
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), "invalid_target");
        let same = harness
            .refresh_as(
                &public_credentials(),
                &refresh,
                &[("resource", "https://mcp.example.com/mcp")],
            )
            .await
            .unwrap();
        assert!(same.refresh_token.is_some());
    }

    #[tokio::test]
    async fn retry_after_the_retry_window_revokes_the_family() {
        let harness = Harness::new();
        let original = harness
            .tokens_for_public_client()
            .await
            .refresh_token
            .unwrap();
        let successor = harness
            .refresh(&original)
            .await
            .unwrap()
            .refresh_token
            .unwrap();
        harness
            .clock
            .advance(harness.bridge.settings.refresh_token_retry_window);
        assert_eq!(
            harness.refresh(&original).await.unwrap_err(),
            OAuthError::invalid_grant("refresh token was already used; the grant has been revoked")
        );
        assert_eq!(
            harness.refresh(&successor).await.unwrap_err(),
            OAuthError::invalid_grant("refresh token has been revoked")
        );
    }

    #[tokio::test]
    async fn unknown_refresh_token_is_invalid_grant() {
        let harness = Harness::new();
        assert_eq!(
            harness.refresh("nonsense").await.unwrap_err(),
            OAuthError::invalid_grant("refresh token is invalid")
        );
    }
}
