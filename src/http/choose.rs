//! GET and POST /oauth/choose: which identity provider the user signs in at.

use axum::body::Body;
use axum::extract::{RawQuery, Request, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::authorize::{authorize_error, sign_in_cookie_name, to_upstream};
use super::login::{binding, csrf_token, posted_sign_in_form, sign_in_of_query};
use super::pages::{chooser_page, error_page};
use super::{AppState, cookies};
use crate::oauth::authorize::AuthorizeError;
use crate::oauth::choose::{choices, choose};
use crate::oauth::endpoints;

const CSRF_PURPOSE: &str = "provider-chooser";

pub(crate) async fn choose_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let sign_in = match sign_in_of_query(query.as_deref()) {
        Ok(sign_in) => sign_in,
        Err(error) => return error_page(&error),
    };
    let cookie = binding(&state, &headers, &sign_in);
    match choices(&state.bridge, &sign_in, cookie, state.clock.now()).await {
        Ok(choices) => {
            let action = format!("{}{}", state.base_path, endpoints::CHOOSE);
            let csrf = csrf_token(&state, CSRF_PURPOSE, &sign_in, cookie);
            chooser_page(&action, &sign_in, &csrf, &choices)
        }
        Err(error) => authorize_error(&state, error),
    }
}

pub(crate) async fn choose_post(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let posted = posted_sign_in_form(&state, &parts.headers, Body::new(body), CSRF_PURPOSE).await;
    let (params, sign_in) = match posted {
        Ok(posted) => posted,
        Err(error) => return error_page(&error),
    };
    let cookie = binding(&state, &parts.headers, &sign_in);
    let provider = params.get("provider").unwrap_or_default();
    let now = state.clock.now();
    let mut response = match choose(&state.bridge, &sign_in, cookie, provider, now).await {
        Ok(started) => to_upstream(&state, &started),
        Err(error @ AuthorizeError::Redirect(_)) => authorize_error(&state, error),
        // Refused before the sign-in was consumed (a name not offered, another browser), or it
        // is gone anyway: its cookie stays, so the user can still choose from the page.
        Err(error) => return authorize_error(&state, error),
    };
    // The sign-in went on under a new state and cookie; this one is spent.
    let name = sign_in_cookie_name(&state, &sign_in);
    cookies::clear(&mut response, &state, &name);
    response
}
