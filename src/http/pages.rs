//! HTML pages shown to the user's browser, and the redirect responses of the authorization flow.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use url::Url;

use super::error::status_of;
use crate::oauth::OAuthError;

fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            other => other.to_string(),
        })
        .collect()
}

fn harden(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // URLs of this flow carry codes and state: never leak them to the next page.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// The page for errors that must not be redirected (client or redirect URI not proven).
pub fn error_page(error: &OAuthError) -> Response {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign-in failed</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}}\
         code{{background:#f3f3f3;padding:.1rem .3rem}}</style></head><body><h1>Sign-in failed</h1>\
         <p>{}</p><p>Error: <code>{}</code></p><p>Return to the application and try again.</p></body></html>",
        escape(error.description()),
        escape(error.code()),
    );
    let status = match status_of(error) {
        StatusCode::UNAUTHORIZED => StatusCode::BAD_REQUEST,
        other => other,
    };
    let mut response = (status, Html(body)).into_response();
    harden(&mut response);
    response
}

pub fn redirect(location: &Url) -> Response {
    let mut response = StatusCode::FOUND.into_response();
    match HeaderValue::from_str(location.as_str()) {
        Ok(value) => {
            response.headers_mut().insert(header::LOCATION, value);
        }
        Err(_) => return error_page(&OAuthError::ServerError),
    }
    harden(&mut response);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_are_escaped() {
        assert_eq!(escape("<script>\"&'"), "&lt;script&gt;&quot;&amp;&#39;");
    }

    #[test]
    fn error_page_is_hardened_and_never_a_401() {
        let page = error_page(&OAuthError::invalid_client("x"));
        assert_eq!(page.status(), StatusCode::BAD_REQUEST);
        assert_eq!(page.headers()[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(page.headers()[header::REFERRER_POLICY], "no-referrer");
    }
}
