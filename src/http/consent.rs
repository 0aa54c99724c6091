//! GET and POST /oauth/consent: the consent page and the user's decision.

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::authorize::{CONSENT_PURPOSE, authorize_error, consent_cookie_name, to_upstream};
use super::pages::{consent_page, error_page};
use super::params::{parse_query, read_form};
use super::{AppState, cookies};
use crate::oauth::consent::{self, ConsentPage};
use crate::oauth::{OAuthError, Params};

fn not_this_browser() -> OAuthError {
    OAuthError::invalid_request(
        "this consent page belongs to another browser or has expired; start again from the application",
    )
}

/// The consent request named by the `request` parameter, if this browser holds its cookie.
async fn bound_request(
    state: &AppState,
    headers: &HeaderMap,
    params: &Params,
) -> Result<(String, ConsentPage), OAuthError> {
    let token = params.require("request")?;
    let now = state.clock.now();
    let page = consent::consent_page(&state.bridge, token, now).await?;
    let cookie =
        cookies::read(headers, &consent_cookie_name(state, token)).ok_or_else(not_this_browser)?;
    let bound_to = state
        .cookie_signer
        .verify(cookie, CONSENT_PURPOSE, &page.client_id, now)
        .ok_or_else(not_this_browser)?;
    if bound_to != cookies::tag(token) {
        return Err(not_this_browser());
    }
    Ok((token.to_owned(), page))
}

pub(crate) async fn consent_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let result = async {
        let params = parse_query(query.as_deref())?;
        bound_request(&state, &headers, &params).await
    }
    .await;
    match result {
        Ok((token, page)) => consent_page(
            &page,
            &format!("{}{}", state.base_path, crate::oauth::endpoints::CONSENT),
            &token,
        ),
        Err(error) => error_page(&error),
    }
}

pub(crate) async fn consent_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let decided = async {
        let params = read_form(&headers, body).await?;
        let approve = match params.require("decision")? {
            "allow" => true,
            "deny" => false,
            _ => {
                return Err(OAuthError::invalid_request(
                    "decision must be allow or deny",
                ));
            }
        };
        let (token, _) = bound_request(&state, &headers, &params).await?;
        Ok((token, approve))
    }
    .await;
    let (token, approve) = match decided {
        Ok(decided) => decided,
        Err(error) => return error_page(&error),
    };
    let mut response =
        match consent::decide(&state.bridge, &token, approve, state.clock.now()).await {
            Ok(started) => to_upstream(&state, &started),
            Err(error) => authorize_error(&state, error),
        };
    cookies::clear(&mut response, &state, &consent_cookie_name(&state, &token));
    response
}
