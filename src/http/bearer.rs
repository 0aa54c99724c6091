//! Answers to requests whose bearer token is missing or not good enough (RFC 6750 §3), with the
//! protected-resource metadata URL when there is one (RFC 9728 §5.1, the MCP discovery hook).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::token::no_store;
use crate::oauth::OAuthError;
use crate::oauth::bearer::BearerError;
use crate::tokens::BEARER;

/// A request without a token gets no error code, only where to learn how to get one and, as
/// MCP clients expect, the scopes to ask for (`scope_hint`).
pub(crate) fn challenge(
    error: &BearerError,
    resource_metadata: Option<&str>,
    scope_hint: Option<&str>,
) -> Response {
    let mut params: Vec<String> = Vec::new();
    let status = match error {
        BearerError::Missing => StatusCode::UNAUTHORIZED,
        BearerError::InvalidToken(reason) => {
            params.push("error=\"invalid_token\"".to_owned());
            params.push(format!("error_description=\"{reason}\""));
            StatusCode::UNAUTHORIZED
        }
        BearerError::InvalidRequest(reason) => {
            params.push("error=\"invalid_request\"".to_owned());
            params.push(format!("error_description=\"{reason}\""));
            StatusCode::BAD_REQUEST
        }
        BearerError::InsufficientScope(scope) => {
            params.push("error=\"insufficient_scope\"".to_owned());
            params.push(format!(
                "error_description=\"the access token lacks a needed scope\", scope=\"{scope}\""
            ));
            StatusCode::FORBIDDEN
        }
        BearerError::Unavailable(cause) => {
            return OAuthError::TemporarilyUnavailable(cause.clone()).into_response();
        }
    };
    if let (Some(scope), BearerError::Missing | BearerError::InvalidToken(_)) = (scope_hint, error)
    {
        params.push(format!("scope=\"{scope}\""));
    }
    if let Some(url) = resource_metadata {
        params.push(format!("resource_metadata=\"{url}\""));
    }
    let value = if params.is_empty() {
        BEARER.to_owned()
    } else {
        format!("{BEARER} {}", params.join(", "))
    };
    let mut response = status.into_response();
    if let Ok(value) = HeaderValue::from_str(&value) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    no_store(response)
}
