//! GET and POST /oauth/login: the local login form (`oauth.local_users`).

use axum::body::Body;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::authorize::{authorize_error, sign_in_cookie_name};
use super::callback::signed_in_response;
use super::client_address::ClientAddress;
use super::pages::{LoginMessage, error_page, login_page};
use super::params::{parse_query, read_form};
use super::{AppState, cookies};
use crate::oauth::authorize::AuthorizeError;
use crate::oauth::login::{LoginOutcome, cancel_login, check_sign_in, submit_login};
use crate::oauth::{OAuthError, PENDING_AUTHORIZATION_TTL, Params, endpoints};
use crate::rate_limit::bucket_of;
use crate::secret::SecretString;
use crate::tokens::TokenHash;

const CSRF_PURPOSE: &str = "login-form";

/// The cookie the authorization endpoint set for this sign-in, if this browser has it.
pub(super) fn binding<'a>(
    state: &AppState,
    headers: &'a HeaderMap,
    sign_in: &str,
) -> Option<&'a str> {
    cookies::read(headers, &sign_in_cookie_name(state, sign_in))
}

/// The sign-in a page's query names (`state`).
pub(super) fn sign_in_of_query(query: Option<&str>) -> Result<String, OAuthError> {
    Ok(parse_query(query)?.require("state")?.to_owned())
}

/// A posted sign-in form (the login form, the chooser): its fields and the sign-in it names,
/// once its anti-forgery token proves it came from our page (`purpose`) in this browser.
pub(super) async fn posted_sign_in_form(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    purpose: &str,
) -> Result<(Params, String), OAuthError> {
    let params = read_form(headers, body).await?;
    let sign_in = params.require("state")?.to_owned();
    let cookie = binding(state, headers, &sign_in);
    if !csrf_valid(state, purpose, &sign_in, cookie, params.get("csrf")) {
        tracing::warn!(
            form = purpose,
            "a sign-in form was posted without a valid anti-forgery token"
        );
        return Err(OAuthError::invalid_request(
            "this page has expired or did not come from this service; start again from the application",
        ));
    }
    Ok((params, sign_in))
}

/// What a sign-in form's anti-forgery token is bound to: the whole sign-in state and this
/// browser's binding cookie, both hashed.
fn csrf_binding(sign_in: &str, cookie: Option<&str>) -> (String, String) {
    let digest = |value: &str| URL_SAFE_NO_PAD.encode(TokenHash::of(value).0);
    (digest(sign_in), cookie.map(digest).unwrap_or_default())
}

/// A sign-in form's anti-forgery token: a MAC over the sign-in and the browser's binding
/// cookie, for one form (`purpose`).
pub(super) fn csrf_token(
    state: &AppState,
    purpose: &str,
    sign_in: &str,
    cookie: Option<&str>,
) -> String {
    let expires = state.clock.now().plus(PENDING_AUTHORIZATION_TTL);
    let (context, value) = csrf_binding(sign_in, cookie);
    state.cookie_signer.sign(purpose, &context, &value, expires)
}

pub(super) fn csrf_valid(
    state: &AppState,
    purpose: &str,
    sign_in: &str,
    cookie: Option<&str>,
    token: Option<&str>,
) -> bool {
    let (context, expected) = csrf_binding(sign_in, cookie);
    token.is_some_and(|token| {
        state
            .cookie_signer
            .verify(token, purpose, &context, state.clock.now())
            .is_some_and(|value| !expected.is_empty() && value == expected)
    })
}

fn form(
    state: &AppState,
    sign_in: &str,
    cookie: Option<&str>,
    message: Option<LoginMessage>,
    status: StatusCode,
) -> Response {
    let action = format!("{}{}", state.base_path, endpoints::LOGIN);
    let csrf = csrf_token(state, CSRF_PURPOSE, sign_in, cookie);
    login_page(&action, sign_in, &csrf, message, status)
}

pub(crate) async fn login_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let sign_in = match sign_in_of_query(query.as_deref()) {
        Ok(sign_in) => sign_in,
        Err(error) => return error_page(&error),
    };
    let cookie = binding(&state, &headers, &sign_in);
    match check_sign_in(&state.bridge, &sign_in, cookie, state.clock.now()).await {
        Ok(_) => form(&state, &sign_in, cookie, None, StatusCode::OK),
        Err(error) => authorize_error(&state, error),
    }
}

pub(crate) async fn login_post(State(state): State<AppState>, request: Request) -> Response {
    let address = ClientAddress::of(request.extensions()).ip.map(bucket_of);
    let (parts, body) = request.into_parts();
    let posted = posted_sign_in_form(&state, &parts.headers, Body::new(body), CSRF_PURPOSE).await;
    let (params, sign_in) = match posted {
        Ok(posted) => posted,
        Err(error) => return error_page(&error),
    };
    let cookie = binding(&state, &parts.headers, &sign_in);
    let now = state.clock.now();
    let clear_binding = |mut response: Response| {
        let name = sign_in_cookie_name(&state, &sign_in);
        cookies::clear(&mut response, &state, &name);
        response
    };
    if params.get("cancel").is_some() {
        let error = cancel_login(&state.bridge, &sign_in, cookie, now).await;
        return clear_binding(authorize_error(&state, error));
    }
    let username = params.get("username").unwrap_or_default();
    let password = SecretString::new(params.get("password").unwrap_or_default());
    match submit_login(
        &state.bridge,
        &sign_in,
        cookie,
        username,
        &password,
        address,
        now,
    )
    .await
    {
        Ok(LoginOutcome::SignedIn(signed_in)) => {
            clear_binding(signed_in_response(&state, &signed_in, now))
        }
        Ok(LoginOutcome::WrongCredentials) => form(
            &state,
            &sign_in,
            cookie,
            Some(LoginMessage::WrongCredentials),
            StatusCode::OK,
        ),
        Ok(LoginOutcome::Throttled { retry_after }) => {
            state.bridge.metrics.rate_limited("login");
            let minutes = retry_after.div_ceil(60);
            let mut response = form(
                &state,
                &sign_in,
                cookie,
                Some(LoginMessage::Throttled { minutes }),
                StatusCode::TOO_MANY_REQUESTS,
            );
            if let Ok(value) = HeaderValue::from_str(&retry_after.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
        // The sign-in is over (sent back to the client with an error): its cookie goes too.
        Err(error @ AuthorizeError::Redirect(_)) => clear_binding(authorize_error(&state, error)),
        Err(error) => authorize_error(&state, error),
    }
}
