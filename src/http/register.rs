//! POST /oauth/register (RFC 7591), and GET and DELETE of a registration (RFC 7592).

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::bearer::challenge;
use super::client_address::ClientAddress;
use super::error::{limit_response, oauth_error_response};
use super::failures::Failure;
use super::params::{MAX_FORM_BYTES, read_body};
use crate::oauth::bearer::BearerError;
use crate::oauth::manage_registration::{client_information, delete_registration, managed_client};
use crate::oauth::register::{RegistrationError, register};
use crate::oauth::registration::RegistrationRequest;
use crate::oauth::{Cause, OAuthError};
use crate::rate_limit::bucket_of;

pub(crate) async fn register_post(State(state): State<AppState>, request: Request) -> Response {
    let Some(registration) = state.registration.as_ref() else {
        return super::well_known::not_found().await;
    };
    let now = state.clock.now();
    let address = ClientAddress::of(request.extensions()).ip.map(bucket_of);
    if let Err(retry_after) = registration.limiter.check(address, now) {
        tracing::info!(?address, "client registration rate limited");
        state.bridge.metrics.rate_limited("register");
        return limit_response(
            StatusCode::TOO_MANY_REQUESTS,
            "too many registrations from this address; try again later",
            Some(retry_after),
        );
    }
    let body = match read_json(request).await {
        Ok(body) => body,
        Err(error) => {
            state.bridge.metrics.registration("dcr", error.code());
            return oauth_error_response(&error);
        }
    };
    let metrics = &state.bridge.metrics;
    match register(&state.bridge, &registration.policy, body, now).await {
        Ok(registered) => {
            metrics.registration("dcr", "created");
            no_store((StatusCode::CREATED, Json(registered)).into_response())
        }
        Err(RegistrationError::Rejected(error)) => {
            metrics.registration("dcr", error.code());
            oauth_error_response(&error)
        }
        Err(RegistrationError::Full { max_clients }) => {
            metrics.registration("dcr", "full");
            let mut response = limit_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("this server has reached its limit of {max_clients} registered clients"),
                None,
            );
            Failure {
                code: "temporarily_unavailable",
                cause: Cause::because(
                    "client registration refused: oauth.dcr.max_clients is reached",
                ),
            }
            .attach_to(&mut response);
            response
        }
    }
}

async fn read_json(request: Request) -> Result<RegistrationRequest, OAuthError> {
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(OAuthError::invalid_request(
            "the body must be application/json",
        ));
    }
    let (parts, body) = request.into_parts();
    let bytes = read_body(&parts.headers, Body::new(body), MAX_FORM_BYTES).await?;
    let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        OAuthError::InvalidClientMetadata(
            format!(
                "{}: {}",
                path,
                crate::oauth::text::for_log(&e.inner().to_string())
            )
            .into(),
        )
    })
}

/// GET /oauth/register/{client_id} (RFC 7592 §2.1): the registration, for its own token.
pub(crate) async fn registration_get(
    State(state): State<AppState>,
    client_id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let token = match management_token(&state, &headers).await {
        Ok(token) => token,
        Err(answer) => return answer,
    };
    let client_id = named_client(client_id);
    match managed_client(&state.bridge, &client_id, token).await {
        Ok(client) => {
            let information = client_information(&state.bridge, client, token.unwrap_or_default());
            no_store((StatusCode::OK, Json(information)).into_response())
        }
        Err(error) => challenge(&error, None, None),
    }
}

/// DELETE /oauth/register/{client_id} (RFC 7592 §2.3): the registration and every grant of the
/// client are gone; `204`.
pub(crate) async fn registration_delete(
    State(state): State<AppState>,
    client_id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let token = match management_token(&state, &headers).await {
        Ok(token) => token,
        Err(answer) => return answer,
    };
    let client_id = named_client(client_id);
    let now = state.clock.now();
    match delete_registration(&state.bridge, &client_id, token, now).await {
        Ok(()) => no_store(StatusCode::NO_CONTENT.into_response()),
        Err(error) => challenge(&error, None, None),
    }
}

/// The registration access token of a management request (none when no bearer token came), or
/// the answer that ends the request: `404` while registration is off, `400` for an unreadable
/// `Authorization` header.
async fn management_token<'a>(
    state: &AppState,
    headers: &'a HeaderMap,
) -> Result<Option<&'a str>, Response> {
    if state.registration.is_none() {
        return Err(super::well_known::not_found().await);
    }
    super::bearer_token(headers).map_err(|_| {
        challenge(
            &BearerError::InvalidRequest("the Authorization header is malformed"),
            None,
            None,
        )
    })
}

/// The client id in a registration's URL. One that does not decode to UTF-8 names no client and
/// is answered as an unknown one (`401`), not with a rejection that would tell them apart.
fn named_client(path: Result<Path<String>, PathRejection>) -> String {
    path.map(|Path(client_id)| client_id).unwrap_or_default()
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
