//! The single mapping from `OAuthError` to an HTTP response (RFC 6749 §5.2, RFC 6750 §3).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::oauth::OAuthError;

pub(crate) fn status_of(error: &OAuthError) -> StatusCode {
    match error {
        OAuthError::InvalidClient(_) => StatusCode::UNAUTHORIZED,
        OAuthError::ServerError(_) => StatusCode::INTERNAL_SERVER_ERROR,
        OAuthError::TemporarilyUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        OAuthError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
        OAuthError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        OAuthError::RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// JSON error body with the right status, `WWW-Authenticate` for client authentication
/// failures, and no caching.
pub(crate) fn oauth_error_response(error: &OAuthError) -> Response {
    let body = json!({ "error": error.code(), "error_description": error.description() });
    let mut response = (status_of(error), Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    match error {
        // MCP clients re-register exactly on this answer, so it must be a 401 with the challenge.
        OAuthError::InvalidClient(_) => {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"mcp-oauth-bridge\""),
            );
        }
        OAuthError::TemporarilyUnavailable(_) => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        OAuthError::TooManyRequests { retry_after, .. } => {
            if let Ok(value) = HeaderValue::from_str(&retry_after.to_string()) {
                headers.insert(header::RETRY_AFTER, value);
            }
        }
        // The rest of the body may still be on its way: this connection is not reused.
        OAuthError::RequestTimeout | OAuthError::RequestTooLarge => {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        _ => {}
    }
    super::failures::attach(error, &mut response);
    response
}

/// A refusal for load reasons (rate limit, capacity): `temporarily_unavailable` in the RFC 6749
/// shape, with the given status, a specific description and `Retry-After` when known.
pub(crate) fn limit_response(
    status: StatusCode,
    description: &str,
    retry_after: Option<u64>,
) -> Response {
    let body = json!({ "error": "temporarily_unavailable", "error_description": description });
    let mut response = (status, Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(seconds) = retry_after
        && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
    {
        headers.insert(header::RETRY_AFTER, value);
    }
    response
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        oauth_error_response(&self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::Cause;
    use http_body_util::BodyExt;

    async fn body_json(response: Response) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn invalid_client_is_401_with_a_basic_challenge() {
        let response = oauth_error_response(&OAuthError::invalid_client("unknown client"));
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Basic realm=\"mcp-oauth-bridge\""
        );
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(
            body_json(response).await,
            json!({"error": "invalid_client", "error_description": "unknown client"})
        );
    }

    #[tokio::test]
    async fn statuses_follow_the_error_code() {
        assert_eq!(
            status_of(&OAuthError::invalid_grant("x")),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status_of(&OAuthError::invalid_request("x")),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status_of(&OAuthError::ServerError(Cause::default())),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let unavailable =
            oauth_error_response(&OAuthError::TemporarilyUnavailable(Cause::default()));
        assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(unavailable.headers()[header::RETRY_AFTER], "5");
        let limited = oauth_error_response(&OAuthError::TooManyRequests {
            description: "slow down".into(),
            retry_after: 42,
        });
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limited.headers()[header::RETRY_AFTER], "42");
        assert_eq!(
            body_json(limited).await,
            json!({"error": "temporarily_unavailable", "error_description": "slow down"})
        );
        for (error, status) in [
            (OAuthError::RequestTimeout, StatusCode::REQUEST_TIMEOUT),
            (OAuthError::RequestTooLarge, StatusCode::PAYLOAD_TOO_LARGE),
        ] {
            let response = oauth_error_response(&error);
            assert_eq!(response.status(), status);
            assert_eq!(response.headers()[header::CONNECTION], "close");
            assert_eq!(body_json(response).await["error"], "invalid_request");
        }
    }

    #[tokio::test]
    async fn server_error_body_carries_no_internal_detail() {
        let body = body_json(oauth_error_response(&OAuthError::ServerError(
            Cause::default(),
        )))
        .await;
        assert_eq!(body["error"], "server_error");
        assert_eq!(
            body["error_description"],
            "the server could not complete the request"
        );
    }
}
