//! GET /oauth/callback

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::authorize::{
    REMEMBER_PURPOSE, authorize_error, remember_cookie_name, sign_in_cookie_name,
};
use super::pages::{error_page, redirect};
use super::params::parse_query;
use super::{AppState, cookies};
use crate::clock::UnixTime;
use crate::oauth::callback::complete_authorization;
use crate::oauth::sign_in::SignedIn;
use crate::oauth::{OAuthError, REMEMBERED_CONSENT_TTL};

/// The single `oauth.upstream`'s return.
pub(crate) async fn callback_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    callback(&state, None, &headers, query.as_deref()).await
}

/// The return of one of `oauth.upstreams`, named by the path.
pub(crate) async fn provider_callback_get(
    State(state): State<AppState>,
    provider: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    // A segment that is no UTF-8 names no provider: the user sees our page, not axum's text.
    let Ok(Path(provider)) = provider else {
        return error_page(&OAuthError::invalid_request(
            "this is no identity provider's callback",
        ));
    };
    callback(&state, Some(&provider), &headers, query.as_deref()).await
}

async fn callback(
    state: &AppState,
    provider: Option<&str>,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Response {
    let params = match parse_query(query) {
        Ok(params) => params,
        Err(error) => return error_page(&error),
    };
    let cookie_name = params
        .get("state")
        .map(|upstream_state| sign_in_cookie_name(state, upstream_state));
    let binding = cookie_name
        .as_deref()
        .and_then(|name| cookies::read(headers, name));
    let now = state.clock.now();
    let completed = complete_authorization(&state.bridge, provider, &params, binding, now).await;
    let mut response = match completed {
        Ok(signed_in) => signed_in_response(state, &signed_in, now),
        Err(error) => authorize_error(state, error),
    };
    // A browser that did not start this sign-in has no cookie to clear, and must not clear one.
    if let Some(name) = cookie_name.filter(|_| binding.is_some()) {
        cookies::clear(&mut response, state, &name);
    }
    response
}

/// The redirect back to the client, remembering in this browser who approved it when the
/// approval was given during this sign-in.
pub(crate) fn signed_in_response(
    state: &AppState,
    signed_in: &SignedIn,
    now: UnixTime,
) -> Response {
    let mut response = redirect(&signed_in.url);
    if let Some(subject) = &signed_in.remember_consent_of {
        let value = state.cookie_signer.sign(
            REMEMBER_PURPOSE,
            &signed_in.client_id,
            subject,
            now.plus(REMEMBERED_CONSENT_TTL),
        );
        let name = remember_cookie_name(state, &signed_in.client_id);
        cookies::set(&mut response, state, &name, &value, REMEMBERED_CONSENT_TTL);
    }
    response
}
