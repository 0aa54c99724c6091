//! The per-flow cookie that binds a sign-in to the browser that started it.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;

use super::AppState;
use crate::oauth::PENDING_AUTHORIZATION_TTL;

/// Over https the `__Host-` prefix pins the cookie to this exact host (no `Domain`, `Path=/`,
/// `Secure`), so a sibling subdomain cannot plant a binding of its own.
pub fn binding_name(state: &AppState, flow_name: &str) -> String {
    if state.secure_cookies {
        format!("__Host-{flow_name}")
    } else {
        flow_name.to_owned()
    }
}

pub fn set(response: &mut Response, state: &AppState, name: &str, value: &str) {
    let max_age = PENDING_AUTHORIZATION_TTL.as_secs();
    append(
        response,
        state,
        &format!("{name}={value}; Max-Age={max_age}"),
    );
}

pub fn clear(response: &mut Response, state: &AppState, name: &str) {
    append(response, state, &format!("{name}=; Max-Age=0"));
}

fn append(response: &mut Response, state: &AppState, cookie: &str) {
    let secure = if state.secure_cookies { "; Secure" } else { "" };
    // Lax: the cookie must come along on the top-level redirect back from the provider.
    let full = format!("{cookie}; Path=/; HttpOnly; SameSite=Lax{secure}");
    if let Ok(value) = HeaderValue::from_str(&full) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

pub fn read<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}
