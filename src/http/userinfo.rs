//! GET or POST /oauth/userinfo (OIDC Core §5.3) with the access token in the Authorization
//! header; failures answered as RFC 6750 §3 says.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::bearer::challenge;
use super::token::no_store;
use crate::oauth::bearer::BearerError;
use crate::oauth::userinfo::userinfo;

pub(crate) async fn userinfo_handler(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Response {
    let result = match super::bearer_token(&headers) {
        Ok(token) => userinfo(&state.bridge, token, state.clock.now()).await,
        Err(_) => Err(BearerError::InvalidRequest(
            "the Authorization header is malformed",
        )),
    };
    match result {
        Ok(claims) => no_store(Json(claims).into_response()),
        Err(error) => challenge(&error, None, None),
    }
}
