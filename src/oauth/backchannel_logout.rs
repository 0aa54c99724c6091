//! OpenID Connect Back-Channel Logout 1.0, the bridge as relying party: the identity provider
//! POSTs a logout token when a user's session there ends (signed out, disabled, session expired
//! or killed by an administrator), and every grant that session started is revoked with its
//! access tokens, on every instance. The token is checked in full by the upstream
//! (`Upstream::verify_logout_token`) and used once.

use super::client_assertion::{remembered_until, single_use_key};
use super::revoke::record_ended;
use super::{Bridge, OAuthError, Params, SignIn};
use crate::audit;
use crate::clock::UnixTime;
use crate::storage::GrantOwner;
use crate::upstream::{LogoutError, logout};

/// Ends the provider session `logout_token` names; how many grants gave access until then.
pub(crate) async fn logout(
    bridge: &Bridge,
    params: &Params,
    now: UnixTime,
) -> Result<usize, OAuthError> {
    let token = params.require("logout_token")?;
    let SignIn::Upstream(providers) = &bridge.sign_in else {
        return Err(OAuthError::invalid_request(
            "this service has no upstream identity provider",
        ));
    };
    let provider = match providers.all() {
        // One provider checks everything itself, and says precisely what is wrong.
        [only] => only,
        _ => logout::addressed(token)
            .and_then(|(issuer, audiences)| {
                let audiences: Vec<&str> = audiences.iter().map(String::as_str).collect();
                providers.addressed_by(&issuer, &audiences)
            })
            .ok_or_else(|| {
                tracing::warn!("back-channel logout token from no configured provider");
                OAuthError::invalid_request(
                    "the logout token is not valid: it is not from a configured identity provider",
                )
            })?,
    };
    let request = match provider.upstream.verify_logout_token(token, now).await {
        Ok(request) => request,
        Err(LogoutError::Refused(refused)) => {
            tracing::warn!(
                provider = provider.name,
                reason = refused.0,
                "back-channel logout token refused"
            );
            return Err(OAuthError::invalid_request(format!(
                "the logout token is not valid: {refused}"
            )));
        }
        Err(LogoutError::Unavailable(error)) => return Err(OAuthError::unavailable(error)),
    };
    // Spent before anything is revoked: a replay (of a token naming only `sub`, which would
    // also end the user's sessions started since) must change nothing. A storage failure midway
    // is a 503 the provider cannot retry: it is logged with what was left to end.
    let key = single_use_key("logout", provider.name, &request.jti);
    if !bridge
        .storage
        .use_once(&key, remembered_until(request.expires_at), now)
        .await?
    {
        tracing::warn!("back-channel logout token replayed");
        return Err(OAuthError::invalid_request(
            "the logout token was used before",
        ));
    }
    let owner = GrantOwner::ProviderSession {
        provider: provider.name,
        subject: request.subject.as_deref(),
        session_id: request.session_id.as_deref(),
    };
    let ended = match bridge.storage.revoke_grants(owner, now).await {
        Ok(ended) => ended,
        Err(error) => {
            tracing::error!(
                provider = provider.name,
                subject = request.subject.as_deref(),
                session_id = request.session_id.as_deref(),
                "a back-channel logout could not revoke every grant of the session; revoke the rest with DELETE /admin/grants?subject=…"
            );
            return Err(error.into());
        }
    };
    let live = record_ended(
        &ended,
        audit::RevocationReason::BackchannelLogout,
        Some(provider.name),
    );
    audit::record(&audit::Event::BackchannelLogout {
        provider: provider.name,
        subject: request.subject.as_deref(),
        session_id: request.session_id.as_deref(),
        count: live,
    });
    tracing::info!(
        provider = provider.name,
        revoked = live,
        "back-channel logout: the provider session's grants revoked"
    );
    Ok(live)
}
