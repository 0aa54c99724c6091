//! Finishing a sign-in, however the user proved who they are (at the upstream provider, returning
//! to the callback, or at the local login form): the pending authorization taken once and only by
//! the browser that started it, a consent given during the sign-in recorded, our authorization
//! code minted and the browser sent back to the client.

use url::Url;

use super::authorize::{AuthorizeError, ClientRedirect, authorization_response};
use super::{AUTHORIZATION_CODE_TTL, Bridge, OAuthError, REMEMBERED_CONSENT_TTL};
use crate::audit;
use crate::clock::UnixTime;
use crate::identity::Identity;
use crate::oauth::protected_resource::OFFLINE_ACCESS;
use crate::sealing::{SealError, Sealer};
use crate::secret::{AuthorizationCode, SecretString};
use crate::storage::{
    AuthorizationCodeRecord, AuthorizationRequest, Consent, ConsentGrant, PendingAuthorization,
    PendingTake,
};
use crate::tokens::opaque::random_string;
use crate::tokens::{TokenHash, generate_token};
use crate::upstream::{ProviderAccessToken, kept};

/// A completed sign-in: where the browser goes, and whom to remember as having approved the
/// client when the approval was given during this sign-in.
#[derive(Debug)]
pub(crate) struct SignedIn {
    pub(crate) url: Url,
    pub(crate) client_id: String,
    pub(crate) remember_consent_of: Option<String>,
}

/// Who signed in, when, and the provider's refresh token if it sent one.
pub(crate) struct SignedInUser {
    /// The provider's name or `local`, for the audit trail.
    pub(crate) provider: &'static str,
    pub(crate) identity: Identity,
    pub(crate) auth_time: UnixTime,
    /// With a provider whose grants are re-validated at each refresh, or whose tokens are kept:
    /// what it sent.
    pub(crate) provider_tokens: Option<ProviderTokens>,
    /// Where a back-channel logout will find the grant (none for local users).
    pub(crate) upstream_session: Option<crate::identity::UpstreamSession>,
}

/// The provider's tokens a grant keeps (sealed), and why.
pub(crate) struct ProviderTokens {
    pub(crate) refresh: Option<SecretString>,
    /// Only with `keep_tokens`; none when the provider's was not a bearer token.
    pub(crate) access: Option<ProviderAccessToken>,
    /// `revalidate_on_refresh`: without the provider's refresh token, the grant gets none of ours.
    pub(crate) revalidated: bool,
    /// `keep_tokens`.
    pub(crate) kept: bool,
}

/// Consumes the pending authorization a sign-in returns with, if this browser started it.
pub(crate) async fn take_pending_sign_in(
    bridge: &Bridge,
    state: &str,
    binding: Option<&str>,
    now: UnixTime,
) -> Result<PendingAuthorization, AuthorizeError> {
    let binding = binding.map(TokenHash::of);
    let taken = bridge
        .storage
        .take_pending(&TokenHash::of(state), binding.as_ref(), now)
        .await
        .map_err(|e| AuthorizeError::Page(e.into()))?;
    pending_or_page(taken).map(|pending| *pending)
}

/// The pending authorization a sign-in page names, if this browser started it, left in place:
/// a form may be shown, and submitted wrongly, more than once.
pub(crate) async fn peek_pending_sign_in(
    bridge: &Bridge,
    state: &str,
    binding: Option<&str>,
    now: UnixTime,
) -> Result<Box<PendingAuthorization>, AuthorizeError> {
    let binding = binding.map(TokenHash::of);
    let peeked = bridge
        .storage
        .peek_pending(&TokenHash::of(state), binding.as_ref(), now)
        .await
        .map_err(|e| AuthorizeError::Page(e.into()))?;
    pending_or_page(peeked)
}

/// The pending authorization, or the page for a sign-in that is gone or belongs elsewhere.
pub(crate) fn pending_or_page(
    taken: PendingTake,
) -> Result<Box<PendingAuthorization>, AuthorizeError> {
    match taken {
        PendingTake::Taken(pending) => Ok(pending),
        PendingTake::OtherBrowser => {
            tracing::warn!("a sign-in reached a browser that did not start it");
            Err(AuthorizeError::Page(OAuthError::invalid_request(
                "this sign-in was started in another browser; start again",
            )))
        }
        PendingTake::Missing => {
            tracing::info!("a sign-in with an unknown, expired or already used state");
            Err(AuthorizeError::Page(OAuthError::invalid_request(
                "this sign-in has expired or was already completed; start again",
            )))
        }
    }
}

/// The user is known and allowed: record a consent given during this sign-in, mint our code and
/// send the browser back to the client.
pub(crate) async fn finish_sign_in(
    bridge: &Bridge,
    pending: &PendingAuthorization,
    user: SignedInUser,
    now: UnixTime,
) -> Result<SignedIn, AuthorizeError> {
    let client_id = pending.request.client_id.as_str();
    let redirect = |error: OAuthError| ClientRedirect::error(&pending.request, error);
    let identity = user.identity;
    let remember_consent_of = match &pending.consent {
        Consent::NotNeeded => None,
        Consent::GivenNow | Consent::GivenOnTopOf { .. } => {
            let grant = ConsentGrant {
                subject: identity.subject.clone(),
                client_id: pending.request.client_id.clone(),
                redirect_uri: pending.request.redirect_uri.clone(),
                scope: pending.request.scope.clone(),
                audience: pending.request.audience.clone(),
                expires_at: now.plus(REMEMBERED_CONSENT_TTL),
            };
            bridge
                .storage
                .put_consent_grant(grant, now)
                .await
                .map_err(|e| redirect(e.into()))?;
            audit::record(&audit::Event::ConsentGranted {
                subject: &identity.subject,
                client_id,
                redirect_uri: &pending.request.redirect_uri,
                scope: &pending.request.scope,
                audience: &pending.request.audience,
            });
            Some(identity.subject.clone())
        }
        Consent::Remembered { subject } if *subject == identity.subject => None,
        // The browser remembered someone else's approval: this user must have given their own.
        Consent::Remembered { .. } => {
            let approved = bridge
                .storage
                .has_consent(&identity.subject, &pending.request, now)
                .await
                .map_err(|e| redirect(e.into()))?;
            if !approved {
                tracing::info!(
                    client_id,
                    "signed-in user differs from the remembered consent"
                );
                return Err(AuthorizeError::Redirect(ClientRedirect {
                    redirect_uri: pending.request.redirect_uri.clone(),
                    state: pending.request.client_state.clone(),
                    error: OAuthError::AccessDenied(
                        "you have not approved this application yet; start again to review it"
                            .into(),
                    ),
                    // Remembered, the other user's approval would refuse this one every time.
                    forget_remembered_consent_of: Some(client_id.to_owned()),
                }));
            }
            None
        }
    };

    // A page the user approved bounds what the code carries to what it listed; a remembered
    // approval (no page) carries what the user approved before.
    let scope = match &pending.consent {
        Consent::NotNeeded | Consent::GivenNow => pending.request.scope.clone(),
        Consent::GivenOnTopOf { earlier } => granted_scope(
            bridge,
            &pending.request,
            &identity.subject,
            Some(earlier),
            now,
        )
        .await
        .map_err(redirect)?,
        Consent::Remembered { .. } => {
            granted_scope(bridge, &pending.request, &identity.subject, None, now)
                .await
                .map_err(redirect)?
        }
    };
    let (code, code_hash): (AuthorizationCode, _) = generate_token();
    let record_subject = identity.subject.clone();
    let mut record = code_record(pending, identity, user.auth_time, now);
    record.scope = scope;
    record.upstream_session = user.upstream_session;
    if let (Some(sealer), Some(tokens)) = (&bridge.sealer, &user.provider_tokens) {
        keep_provider_tokens(sealer, &mut record, tokens, client_id)
            .map_err(|error| redirect(OAuthError::internal(error)))?;
    }
    let granted = record.scope.clone();
    bridge
        .storage
        .put_code(code_hash, record)
        .await
        .map_err(|e| redirect(e.into()))?;
    tracing::info!(client_id, "user signed in; authorization code issued");
    let mut response = vec![("code", code.expose())];
    if let Some(state) = &pending.request.client_state {
        response.push(("state", state));
    }
    let url = authorization_response(
        &pending.request.redirect_uri,
        &response,
        &bridge.settings.issuer,
    )
    .map_err(AuthorizeError::Page)?;
    audit::record(&audit::Event::SignInSucceeded {
        provider: user.provider,
        subject: &record_subject,
        client_id,
        scope: &granted,
        audience: &pending.request.audience,
    });
    Ok(SignedIn {
        url,
        client_id: pending.request.client_id.clone(),
        remember_consent_of,
    })
}

/// The scopes a code grants: those requested and, from the user's approvals of this client for
/// this redirect URI and resource, those granted before (within `shown`, what the consent page
/// listed, when there was one), still allowed to the client. A step-up (MCP's
/// `insufficient_scope`) then adds to what the client could do instead of replacing it, whether
/// or not the client asked again for what it had. `openid` and `offline_access` are not carried
/// on: they change what kind of answer the client gets, which only its request may choose.
async fn granted_scope(
    bridge: &Bridge,
    request: &AuthorizationRequest,
    subject: &str,
    shown: Option<&[String]>,
    now: UnixTime,
) -> Result<Vec<String>, OAuthError> {
    let approved: Vec<String> = bridge
        .storage
        .consented_scopes(subject, request, now)
        .await?
        .unwrap_or_default()
        .into_iter()
        .filter(|scope| scope != "openid" && scope != OFFLINE_ACCESS)
        .filter(|scope| shown.is_none_or(|shown| shown.contains(scope)))
        .collect();
    let mut scope = request.scope.clone();
    if approved.iter().all(|s| scope.contains(s)) {
        return Ok(scope);
    }
    // A client that cannot be looked up now gets what it asked for; its code exchange decides.
    let Ok(Some(client)) = bridge.clients.find(&request.client_id, now).await else {
        return Ok(scope);
    };
    let allowed = client.allowed_scopes(&bridge.settings.scopes_supported);
    for approved in approved {
        if allowed.contains(&approved) && !scope.contains(&approved) {
            scope.push(approved);
        }
    }
    Ok(scope)
}

/// How a sign-in ended, for the metrics: `success`, `denied` (the user, the provider or the
/// access policy said no) or `failed`.
pub(crate) fn outcome_of(result: &Result<SignedIn, AuthorizeError>) -> &'static str {
    match result {
        Ok(_) => "success",
        Err(AuthorizeError::Redirect(redirect))
            if matches!(redirect.error, OAuthError::AccessDenied(_)) =>
        {
            "denied"
        }
        Err(_) => "failed",
    }
}

/// A sign-in that ended without a code, in the audit trail: `reason` is its outcome in the
/// metrics, `subject` the user when the sign-in had got as far as knowing them.
pub(crate) fn record_failed_sign_in(
    provider: &str,
    reason: &str,
    client_id: Option<&str>,
    subject: Option<&str>,
    error: &AuthorizeError,
) {
    let error = match error {
        AuthorizeError::Redirect(redirect) => Some(redirect.error.code()),
        AuthorizeError::Page(_) => None,
    };
    audit::record(&audit::Event::SignInFailed {
        provider,
        reason,
        subject,
        client_id,
        error,
    });
}

/// Seals what the grant keeps of the provider's tokens into its code's record, from which the
/// grant's family takes them.
fn keep_provider_tokens(
    sealer: &Sealer,
    record: &mut AuthorizationCodeRecord,
    tokens: &ProviderTokens,
    client_id: &str,
) -> Result<(), SealError> {
    match &tokens.refresh {
        Some(token) => {
            record.upstream_refresh =
                Some(sealer.seal_secret(&kept::refresh_name(&record.family_id), token)?);
        }
        None if tokens.revalidated => tracing::warn!(
            client_id,
            "the provider sent no refresh token, so this session cannot be re-validated: no refresh token will be issued (does upstream.scopes need offline_access?)"
        ),
        None => tracing::warn!(
            client_id,
            "the provider sent no refresh token: its access token is handed out until it expires, not after (does upstream.scopes need offline_access?)"
        ),
    }
    if !tokens.kept {
        return Ok(());
    }
    match &tokens.access {
        Some(token) => {
            record.upstream_access = Some(kept::seal_access(sealer, &record.family_id, token)?);
        }
        None => tracing::warn!(
            client_id,
            "the provider's access token is no bearer token, so it is not kept"
        ),
    }
    Ok(())
}

fn code_record(
    pending: &PendingAuthorization,
    identity: Identity,
    auth_time: UnixTime,
    now: UnixTime,
) -> AuthorizationCodeRecord {
    AuthorizationCodeRecord {
        client_id: pending.request.client_id.clone(),
        redirect_uri: pending.request.redirect_uri.clone(),
        redirect_uri_given: pending.request.redirect_uri_given,
        code_challenge: pending.request.code_challenge.clone(),
        scope: pending.request.scope.clone(),
        audience: pending.request.audience.clone(),
        identity,
        auth_time,
        client_nonce: pending.request.client_nonce.clone(),
        family_id: random_string(16),
        expires_at: now.plus(AUTHORIZATION_CODE_TTL),
        upstream_refresh: None,
        upstream_access: None,
        upstream_session: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::test_support::{CONSENTING_CLIENT, Harness};

    fn request(scope: &[&str]) -> AuthorizationRequest {
        AuthorizationRequest {
            client_id: CONSENTING_CLIENT.into(),
            redirect_uri: "http://127.0.0.1/callback".into(),
            redirect_uri_given: true,
            client_state: None,
            client_nonce: None,
            code_challenge: "challenge".into(),
            scope: scope.iter().map(|s| s.to_string()).collect(),
            audience: crate::oauth::test_support::ISSUER.into(),
            login_hint: None,
        }
    }

    #[tokio::test]
    async fn a_code_carries_what_was_approved_before_that_the_client_may_still_use() {
        let harness = Harness::new();
        let now = harness.now();
        let bridge = &harness.bridge;
        let granted = |scope: &'static [&'static str],
                       subject: &'static str,
                       shown: Option<&'static [&'static str]>| {
            let shown: Option<Vec<String>> =
                shown.map(|s| s.iter().map(|s| s.to_string()).collect());
            async move {
                granted_scope(bridge, &request(scope), subject, shown.as_deref(), now)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(
            granted(&["email"], "user-1", None).await,
            ["email"],
            "nothing approved yet"
        );
        let approved = |scope: &[&str], redirect_uri: &str| ConsentGrant {
            subject: "user-1".into(),
            client_id: CONSENTING_CLIENT.into(),
            redirect_uri: redirect_uri.into(),
            scope: scope.iter().map(|s| s.to_string()).collect(),
            audience: crate::oauth::test_support::ISSUER.into(),
            expires_at: now.plus(REMEMBERED_CONSENT_TTL),
        };
        // `retired` is no longer supported; approvals for another redirect URI are another app's.
        bridge
            .storage
            .put_consent_grant(
                approved(
                    &["openid", "email", "retired", "offline_access", "profile"],
                    "http://127.0.0.1/callback",
                ),
                now,
            )
            .await
            .unwrap();
        bridge
            .storage
            .put_consent_grant(
                approved(&["profile", "groups"], "https://elsewhere.example/cb"),
                now,
            )
            .await
            .unwrap();
        // openid and offline_access are the request's to choose; retired is no longer supported.
        assert_eq!(
            granted(&["email"], "user-1", None).await,
            ["email", "profile"]
        );
        // After a consent page, only what it listed as approved before is carried on.
        assert_eq!(
            granted(&["email"], "user-1", Some(&["openid"])).await,
            ["email"]
        );
        assert_eq!(
            granted(&["email"], "user-1", Some(&["profile", "groups"])).await,
            ["email", "profile"]
        );
        assert_eq!(
            granted(&["email"], "user-2", None).await,
            ["email"],
            "another user's approvals count for nobody else"
        );
        let mut other_resource = request(&["email"]);
        other_resource.audience = "https://other.example.com/mcp".into();
        assert_eq!(
            granted_scope(bridge, &other_resource, "user-1", None, now)
                .await
                .unwrap(),
            ["email"],
            "approvals for another resource stay there"
        );
    }
}
