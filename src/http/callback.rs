//! GET /oauth/callback

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::pages::{error_page, redirect};
use super::params::parse_query;
use super::{AppState, cookies};
use crate::oauth::authorize::{AuthorizeError, binding_cookie_name};
use crate::oauth::callback::complete_authorization;

pub async fn callback_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params = match parse_query(query.as_deref()) {
        Ok(params) => params,
        Err(error) => return error_page(&error),
    };
    let cookie_name = params
        .get("state")
        .map(|upstream_state| cookies::binding_name(&state, &binding_cookie_name(upstream_state)));
    let binding = cookie_name
        .as_deref()
        .and_then(|name| cookies::read(&headers, name));
    let outcome = complete_authorization(&state.bridge, &params, binding, state.clock.now()).await;
    let mut response = match outcome {
        Ok(url) => redirect(&url),
        Err(AuthorizeError::Page(error)) => error_page(&error),
        Err(AuthorizeError::Redirect(to_client)) => {
            match to_client.url(&state.bridge.settings.issuer) {
                Ok(url) => redirect(&url),
                Err(error) => error_page(&error),
            }
        }
    };
    // A browser that did not start this sign-in has no cookie to clear, and must not clear one.
    if let Some(name) = cookie_name.filter(|_| binding.is_some()) {
        cookies::clear(&mut response, &state, &name);
    }
    response
}
