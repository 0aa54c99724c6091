//! GET /oauth/callback

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;

use super::AppState;
use super::pages::{error_page, redirect};
use super::params::parse_query;
use crate::oauth::authorize::{AuthorizeError, binding_cookie_name};
use crate::oauth::callback::complete_authorization;
use crate::oauth::endpoints;

pub async fn callback_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params = match parse_query(query.as_deref()) {
        Ok(params) => params,
        Err(error) => return error_page(&error),
    };
    let cookie_name = params.get("state").map(binding_cookie_name);
    let binding = cookie_name
        .as_deref()
        .and_then(|name| cookie_value(&headers, name));
    let mut response =
        match complete_authorization(&state.bridge, &params, binding, state.clock.now()).await {
            Ok(url) => redirect(&url),
            Err(AuthorizeError::Page(error)) => error_page(&error),
            Err(AuthorizeError::Redirect(to_client)) => {
                match to_client.url(&state.bridge.settings.issuer) {
                    Ok(url) => redirect(&url),
                    Err(error) => error_page(&error),
                }
            }
        };
    if let Some(name) = cookie_name {
        let expired = format!(
            "{name}=; Path={}{}; Max-Age=0; HttpOnly; SameSite=Lax",
            state.base_path,
            endpoints::CALLBACK
        );
        if let Ok(value) = HeaderValue::from_str(&expired) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}
