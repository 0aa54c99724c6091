//! GET /oauth/authorize

use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;

use super::AppState;
use super::pages::{error_page, redirect};
use super::params::parse_query;
use crate::oauth::authorize::{AuthorizeError, start_authorization};
use crate::oauth::{PENDING_AUTHORIZATION_TTL, endpoints};

pub async fn authorize_get(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    // Repeated parameters are refused before the client is known, so this is a page.
    let params = match parse_query(query.as_deref()) {
        Ok(params) => params,
        Err(error) => return error_page(&error),
    };
    match start_authorization(&state.bridge, &params, state.clock.now()).await {
        Ok(started) => {
            let mut response = redirect(&started.url);
            let cookie = format!(
                "{}={}; Path={}{}; Max-Age={}; HttpOnly; SameSite=Lax{}",
                started.binding_cookie.name,
                started.binding_cookie.value,
                state.base_path,
                endpoints::CALLBACK,
                PENDING_AUTHORIZATION_TTL.as_secs(),
                if state.secure_cookies { "; Secure" } else { "" },
            );
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
            response
        }
        Err(AuthorizeError::Page(error)) => error_page(&error),
        Err(AuthorizeError::Redirect(to_client)) => {
            match to_client.url(&state.bridge.settings.issuer) {
                Ok(url) => redirect(&url),
                Err(error) => error_page(&error),
            }
        }
    }
}
