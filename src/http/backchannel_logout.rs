//! POST /oauth/backchannel-logout: the identity provider's logout token (OpenID Connect
//! Back-Channel Logout 1.0 §2.5): `200` once the session's grants are revoked, `400` with an
//! OAuth error for a token that is not valid (§2.8), never cached.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::params::read_form;
use super::token::no_store;
use crate::oauth::backchannel_logout::logout;

pub(crate) async fn logout_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let params = read_form(&headers, body).await?;
        logout(&state.bridge, &params, state.clock.now()).await
    }
    .await;
    match result {
        Ok(_) => no_store(StatusCode::OK.into_response()),
        Err(error) => error.into_response(),
    }
}
