//! GET /oauth/authorize

use axum::extract::{RawQuery, State};
use axum::response::Response;

use super::pages::{error_page, redirect};
use super::params::parse_query;
use super::{AppState, cookies};
use crate::oauth::authorize::{AuthorizeError, start_authorization};

pub async fn authorize_get(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    // Repeated parameters are refused before the client is known, so this is a page.
    let params = match parse_query(query.as_deref()) {
        Ok(params) => params,
        Err(error) => return error_page(&error),
    };
    match start_authorization(&state.bridge, &params, state.clock.now()).await {
        Ok(started) => {
            let mut response = redirect(&started.url);
            let name = cookies::binding_name(&state, &started.binding_cookie.name);
            cookies::set(&mut response, &state, &name, &started.binding_cookie.value);
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
