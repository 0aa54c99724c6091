//! POST /oauth/revoke (RFC 7009): the client authenticates as at the token endpoint.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::client_address::ClientAddress;
use super::params::read_form;
use super::token::{client_credentials, no_store};
use crate::oauth::revoke::revoke;

pub(crate) async fn revoke_post(
    State(state): State<AppState>,
    address: ClientAddress,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let now = state.clock.now();
    let result = async {
        let params = read_form(&headers, body).await?;
        let credentials = client_credentials(&headers, &params)?;
        state.admit_document_fetch(Some(&credentials.client_id), address)?;
        let client = state
            .bridge
            .clients
            .authenticate_client(&credentials, now)
            .await?;
        revoke(&state.bridge, &client, &params, now).await
    }
    .await;
    match result {
        // §2.2: 200 with no content of note, also for tokens that were unknown or invalid.
        Ok(()) => no_store(StatusCode::OK.into_response()),
        Err(error) => error.into_response(),
    }
}
