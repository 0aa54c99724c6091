//! HTML pages shown to the user's browser, and the redirect responses of the authorization flow.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use url::Url;

use super::error::status_of;
use crate::oauth::OAuthError;
use crate::oauth::consent::ConsentPage;

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
pub(crate) fn error_page(error: &OAuthError) -> Response {
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
    super::failures::attach(error, &mut response);
    let retry_after = match error {
        OAuthError::TooManyRequests { retry_after, .. } => Some(*retry_after),
        OAuthError::TemporarilyUnavailable(_) => Some(5),
        _ => None,
    };
    if let Some(seconds) = retry_after
        && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;\
color:#1b1b1b;line-height:1.5}h1{font-size:1.4rem}ul{padding-left:1.2rem}code{background:#f3f3f3;padding:.1rem .3rem}\
.warning{border-left:4px solid #b35900;background:#fff4e5;padding:.6rem .8rem}\
.destination{font-size:1.15rem}.host{font-size:1.35rem;word-break:break-all}\
.actions{display:flex;gap:.8rem;margin-top:1.5rem}button{font-size:1rem;padding:.55rem 1.4rem;border-radius:.3rem;\
border:1px solid #555;background:#fff;cursor:pointer}button.allow{background:#1f5fbf;border-color:#1f5fbf;color:#fff}\
button:focus-visible{outline:3px solid #7aa7ff;outline-offset:2px}";

/// The consent page: who asks, where the result goes, what it learns, which scopes; Allow or Deny.
pub(crate) fn consent_page(page: &ConsentPage, action: &str, token: &str) -> Response {
    let name = escape(page.client_name.as_deref().unwrap_or(&page.client_id));
    let learns: String = std::iter::once("your user ID at this service")
        .chain(page.claims.iter().map(|claim| claim.describe()))
        .map(|what| format!("<li>{}</li>", escape(what)))
        .collect();
    let scopes: String = page
        .scope
        .iter()
        .map(|scope| format!("<li><code>{}</code></li>", escape(scope)))
        .collect();
    let scopes = match (scopes.is_empty(), page.already_approved.is_empty()) {
        (true, true) => "<p>No particular permissions are requested.</p>".to_owned(),
        (true, false) => "<p>It asks for nothing beyond what you allowed before.</p>".to_owned(),
        (false, true) => format!("<p>It asks for:</p><ul class=\"asks\">{scopes}</ul>"),
        (false, false) => format!(
            "<p>Beyond what you allowed before, it now asks for:</p><ul class=\"asks\">{scopes}</ul>"
        ),
    };
    let before: String = page
        .already_approved
        .iter()
        .map(|scope| format!("<li><code>{}</code></li>", escape(scope)))
        .collect();
    let scopes = if before.is_empty() {
        scopes
    } else {
        format!(
            "{scopes}<p>You allowed before, and it keeps:</p><ul class=\"approved\">{before}</ul>"
        )
    };
    let warning = page
        .warning
        .as_deref()
        .map(|w| format!("<p class=\"warning\" role=\"alert\">{}</p>", escape(w)))
        .unwrap_or_default();
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Allow {name}?</title><style>{STYLE}</style></head><body><main>\
         <h1>Allow <strong>{name}</strong> to access your account?</h1>\
         <p class=\"destination\">Sends you back to <strong class=\"host\">{host}</strong></p>\
         <p>Client ID: <code>{client_id}</code></p>\
         <p>It wants to use <strong>{resource}</strong> on your behalf.</p>\
         <p>After you sign in, the result is sent to <strong>{destination}</strong>.</p>{warning}\
         <p>Its access tokens will tell it:</p><ul class=\"claims\">{learns}</ul>{scopes}\
         <p>Allow only if you started this from an application you know.</p>\
         <form method=\"post\" action=\"{action}\">\
         <input type=\"hidden\" name=\"request\" value=\"{token}\">\
         <div class=\"actions\"><button class=\"allow\" type=\"submit\" name=\"decision\" value=\"allow\">Allow</button>\
         <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></div></form></main></body></html>",
        client_id = escape(&page.client_id),
        destination = escape(&page.destination),
        host = escape(&page.destination_host),
        resource = escape(&page.resource),
        action = escape(action),
        token = escape(token),
    );
    let mut response = Html(body).into_response();
    harden(&mut response);
    response
}

/// The local login form: same look and protections as the consent page.
pub(crate) fn login_page(
    action: &str,
    sign_in: &str,
    csrf: &str,
    message: Option<&str>,
    status: StatusCode,
) -> Response {
    let message = message
        .map(|m| {
            format!(
                "<p class=\"warning\" role=\"alert\" id=\"login-error\">{}</p>",
                escape(m)
            )
        })
        .unwrap_or_default();
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Sign in</title><style>{STYLE}{LOGIN_STYLE}</style></head><body><main>\
         <h1>Sign in</h1>{message}\
         <form method=\"post\" action=\"{action}\" id=\"login\">\
         <input type=\"hidden\" name=\"state\" value=\"{sign_in}\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label for=\"username\">Username</label>\
         <input id=\"username\" name=\"username\" autocomplete=\"username\" autocapitalize=\"none\" required autofocus>\
         <label for=\"password\">Password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
         <div class=\"actions\"><button class=\"allow\" type=\"submit\">Sign in</button>\
         <button type=\"submit\" name=\"cancel\" value=\"1\" formnovalidate>Cancel</button></div>\
         </form></main></body></html>",
        action = escape(action),
        sign_in = escape(sign_in),
        csrf = escape(csrf),
    );
    let mut response = (status, Html(body)).into_response();
    harden(&mut response);
    response
}

/// The provider chooser: one button per identity provider, in configuration order; same look
/// and protections as the login form.
pub(crate) fn chooser_page(
    action: &str,
    sign_in: &str,
    csrf: &str,
    choices: &[crate::oauth::choose::Choice],
) -> Response {
    let buttons: String = choices
        .iter()
        .map(|choice| {
            format!(
                "<li><button type=\"submit\" name=\"provider\" value=\"{name}\">{label}</button></li>",
                name = escape(choice.name),
                label = escape(&choice.display_name),
            )
        })
        .collect();
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Choose how to sign in</title><style>{STYLE}{CHOOSER_STYLE}</style></head><body><main>\
         <h1 id=\"choose-heading\">Where do you have your account?</h1>\
         <form method=\"post\" action=\"{action}\" id=\"choose\" aria-labelledby=\"choose-heading\">\
         <input type=\"hidden\" name=\"state\" value=\"{sign_in}\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <ul class=\"providers\">{buttons}</ul></form></main></body></html>",
        action = escape(action),
        sign_in = escape(sign_in),
        csrf = escape(csrf),
    );
    let mut response = Html(body).into_response();
    harden(&mut response);
    response
}

const CHOOSER_STYLE: &str = "ul.providers{list-style:none;padding:0;display:grid;gap:.8rem}\
ul.providers button{width:100%;text-align:left}";

const LOGIN_STYLE: &str = "label{display:block;margin-top:1rem;font-weight:600}\
input[name=username],input[type=password]{display:block;width:100%;box-sizing:border-box;font-size:1rem;\
padding:.5rem;margin-top:.3rem;border:1px solid #888;border-radius:.3rem}";

pub(crate) fn redirect(location: &Url) -> Response {
    let mut response = StatusCode::FOUND.into_response();
    match HeaderValue::from_str(location.as_str()) {
        Ok(value) => {
            response.headers_mut().insert(header::LOCATION, value);
        }
        Err(error) => return error_page(&OAuthError::internal(error)),
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
