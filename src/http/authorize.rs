//! GET /oauth/authorize

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use url::Url;

use super::client_address::ClientAddress;
use super::pages::{error_page, redirect};
use super::params::parse_query;
use super::{AppState, cookies};
use crate::oauth::authorize::{
    AuthorizationStep, AuthorizeError, UpstreamRedirect, binding_cookie_name, start_authorization,
};
use crate::oauth::{OAuthError, PENDING_AUTHORIZATION_TTL, endpoints};
use crate::rate_limit::bucket_of;

pub(crate) const CONSENT_PURPOSE: &str = "consent";
pub(crate) const REMEMBER_PURPOSE: &str = "remember";

/// The cookie remembering who approved this client in this browser.
pub(crate) fn remember_cookie_name(state: &AppState, client_id: &str) -> String {
    cookies::host_only_name(state, &format!("mob_remember_{}", cookies::tag(client_id)))
}

/// The cookie binding a sign-in (upstream login or local form) to the browser that started it.
pub(crate) fn sign_in_cookie_name(state: &AppState, sign_in: &str) -> String {
    cookies::host_only_name(state, &binding_cookie_name(sign_in))
}

/// The cookie binding a consent page to the browser it was shown in.
pub(crate) fn consent_cookie_name(state: &AppState, token: &str) -> String {
    cookies::host_only_name(state, &format!("mob_consent_{}", cookies::tag(token)))
}

pub(crate) async fn authorize_get(
    State(state): State<AppState>,
    address: ClientAddress,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let now = state.clock.now();
    if let Err(retry_after) = state.authorizations.check(address.ip.map(bucket_of), now) {
        tracing::info!(address = ?address.ip, "authorization rate limited");
        state.bridge.metrics.rate_limited("authorize");
        return error_page(&OAuthError::TooManyRequests {
            description: "too many sign-ins were started from your address; wait a moment and start again from the application".into(),
            retry_after,
        });
    }
    // Repeated parameters are refused before the client is known, so this is a page.
    let params = match parse_query(query.as_deref()) {
        Ok(params) => params,
        Err(error) => return error_page(&error),
    };
    if let Err(error) = state.admit_document_fetch(params.get("client_id"), address) {
        return error_page(&error);
    }
    let remembered = params.get("client_id").and_then(|client_id| {
        let cookie = cookies::read(&headers, &remember_cookie_name(&state, client_id))?;
        state
            .cookie_signer
            .verify(cookie, REMEMBER_PURPOSE, client_id, now)
    });
    match start_authorization(&state.bridge, &params, remembered.as_deref(), now).await {
        Ok(AuthorizationStep::Upstream(started)) => to_upstream(&state, &started),
        Ok(AuthorizationStep::Consent { token, client_id }) => {
            let mut page = match Url::parse(&state.bridge.settings.endpoint(endpoints::CONSENT)) {
                Ok(page) => page,
                Err(error) => return error_page(&OAuthError::internal(error)),
            };
            page.query_pairs_mut().append_pair("request", &token);
            let mut response = redirect(&page);
            let signed = state.cookie_signer.sign(
                CONSENT_PURPOSE,
                &client_id,
                &cookies::tag(&token),
                now.plus(PENDING_AUTHORIZATION_TTL),
            );
            let name = consent_cookie_name(&state, &token);
            cookies::set(
                &mut response,
                &state,
                &name,
                &signed,
                PENDING_AUTHORIZATION_TTL,
            );
            response
        }
        Err(error) => authorize_error(&state, error),
    }
}

/// The redirect to the upstream login, with the cookie that binds it to this browser.
pub(crate) fn to_upstream(state: &AppState, started: &UpstreamRedirect) -> Response {
    let mut response = redirect(&started.url);
    let name = cookies::host_only_name(state, &started.binding_cookie.name);
    cookies::set(
        &mut response,
        state,
        &name,
        &started.binding_cookie.value,
        PENDING_AUTHORIZATION_TTL,
    );
    response
}

pub(crate) fn authorize_error(state: &AppState, error: AuthorizeError) -> Response {
    match error {
        AuthorizeError::Page(error) => error_page(&error),
        AuthorizeError::Redirect(to_client) => match to_client.url(&state.bridge.settings.issuer) {
            Ok(url) => {
                let mut response = redirect(&url);
                super::failures::attach(&to_client.error, &mut response);
                if let Some(client_id) = &to_client.forget_remembered_consent_of {
                    let name = remember_cookie_name(state, client_id);
                    cookies::clear(&mut response, state, &name);
                }
                response
            }
            Err(error) => error_page(&error),
        },
    }
}
