//! POST /oauth/introspect (RFC 7662): a resource server's bearer token, or a confidential
//! client's credentials as at the token endpoint.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::client_address::ClientAddress;
use super::params::read_form;
use super::token::{client_credentials, no_store};
use crate::oauth::introspect::{IntrospectorCredentials, authenticate, introspect};
use crate::oauth::{OAuthError, Params};

pub(crate) async fn introspect_post(
    State(state): State<AppState>,
    address: ClientAddress,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let now = state.clock.now();
    let mut used_bearer = false;
    let result = async {
        let params = read_form(&headers, body).await?;
        let credentials = caller_credentials(&headers, &params)?;
        if let IntrospectorCredentials::Client(client) = &credentials {
            state.admit_document_fetch(Some(&client.client_id), address)?;
        }
        used_bearer = matches!(credentials, IntrospectorCredentials::Bearer(_));
        let caller = authenticate(&state.bridge, credentials, now).await?;
        introspect(&state.bridge, &caller, &params, now).await
    }
    .await;
    match result {
        Ok(answer) => no_store(Json(answer).into_response()),
        Err(error @ OAuthError::InvalidClient(_)) if used_bearer => {
            // RFC 6750 §3: a refused bearer token is challenged as one, not as Basic.
            let mut response = error.into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
            response
        }
        Err(error) => error.into_response(),
    }
}

fn caller_credentials(
    headers: &HeaderMap,
    params: &Params,
) -> Result<IntrospectorCredentials, OAuthError> {
    if let Some(token) = super::bearer_token(headers)? {
        return Ok(IntrospectorCredentials::Bearer(token.to_owned()));
    }
    if headers.contains_key(header::AUTHORIZATION)
        || params.get("client_id").is_some()
        || params.get("client_assertion").is_some()
    {
        return client_credentials(headers, params).map(IntrospectorCredentials::Client);
    }
    Ok(IntrospectorCredentials::None)
}
