//! GET or POST /oauth/userinfo (OIDC Core §5.3) with the access token in the Authorization
//! header; failures answered as RFC 6750 §3 says.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::token::no_store;
use crate::oauth::bearer::BearerError;
use crate::oauth::userinfo::userinfo;

pub async fn userinfo_handler(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let result = match super::bearer_token(&headers) {
        Ok(token) => userinfo(&state.bridge, token, state.clock.now()).await,
        Err(_) => Err(BearerError::InvalidToken(
            "the Authorization header is malformed",
        )),
    };
    match result {
        Ok(claims) => no_store(Json(claims).into_response()),
        Err(error) => bearer_error_response(&error),
    }
}

/// RFC 6750 §3: the challenge says what was wrong; a request without a token gets no error code.
pub fn bearer_error_response(error: &BearerError) -> Response {
    let (status, challenge) = match error {
        BearerError::Missing => (StatusCode::UNAUTHORIZED, "Bearer".to_owned()),
        BearerError::InvalidToken(reason) => (
            StatusCode::UNAUTHORIZED,
            format!("Bearer error=\"invalid_token\", error_description=\"{reason}\""),
        ),
        BearerError::InsufficientScope(scope) => (
            StatusCode::FORBIDDEN,
            format!(
                "Bearer error=\"insufficient_scope\", error_description=\"the token lacks the {scope} scope\", scope=\"{scope}\""
            ),
        ),
        BearerError::Unavailable => {
            return crate::oauth::OAuthError::TemporarilyUnavailable.into_response();
        }
    };
    let mut response = status.into_response();
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    no_store(response)
}
