//! `/admin/…`: the administration API (README, "Administration"), mounted only when
//! `admin.tokens` is set. Every request needs one of those tokens as a bearer token; answers are
//! JSON and never cached. No CORS: a browser page elsewhere cannot call it.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde_json::json;

use super::AppState;
use super::bearer::challenge;
use super::params::parse_query;
use super::token::no_store;
use crate::audit;
use crate::oauth::OAuthError;
use crate::oauth::admin::{self, Admin};
use crate::oauth::bearer::BearerError;
use crate::oauth::endpoints::ADMIN;

pub(crate) fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route(&format!("{ADMIN}/clients"), get(clients_get))
        .route(
            &format!("{ADMIN}/clients/{{client_id}}"),
            delete(client_delete),
        )
        .route(
            &format!("{ADMIN}/grants"),
            get(grants_get).delete(grants_delete),
        )
}

/// The administrator whose token the request carries; a refusal is in the audit trail.
fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Admin, BearerError> {
    let refuse = |reason: &'static str, error: BearerError| {
        audit::record(&audit::Event::AdminRefused { reason });
        error
    };
    let token = match super::bearer_token(headers) {
        Ok(Some(token)) => token,
        Ok(None) => return Err(refuse("missing", BearerError::Missing)),
        Err(_) => {
            return Err(refuse(
                "invalid",
                BearerError::InvalidRequest("malformed Authorization header"),
            ));
        }
    };
    let admin = state
        .admin
        .as_deref()
        .and_then(|tokens| tokens.admin(token));
    admin.ok_or_else(|| {
        tracing::warn!("admin API request with a token that is not an admin token");
        refuse(
            "invalid",
            BearerError::InvalidToken("not an administrator's token"),
        )
    })
}

fn answer(body: serde_json::Value) -> Response {
    no_store(Json(body).into_response())
}

async fn clients_get(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let admin = match authenticate(&state, &headers) {
        Ok(admin) => admin,
        Err(refusal) => return challenge(&refusal, None, None),
    };
    match admin::list_clients(&state.bridge, &admin).await {
        Ok(clients) => answer(json!({ "clients": clients })),
        Err(error) => error.into_response(),
    }
}

async fn client_delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(client_id): Path<String>,
) -> Response {
    let admin = match authenticate(&state, &headers) {
        Ok(admin) => admin,
        Err(refusal) => return challenge(&refusal, None, None),
    };
    match admin::delete_client(&state.bridge, &admin, &client_id, state.clock.now()).await {
        Ok(true) => no_store(StatusCode::NO_CONTENT.into_response()),
        Ok(false) => no_store(
            (
                StatusCode::NOT_FOUND,
                Json(json!({
                    "error": "not_found",
                    "error_description": "no registered client has this id (configured clients are removed from the configuration)",
                })),
            )
                .into_response(),
        ),
        Err(error) => error.into_response(),
    }
}

async fn grants_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    grants(&state, &headers, query.as_deref(), GrantsAction::List).await
}

async fn grants_delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    grants(&state, &headers, query.as_deref(), GrantsAction::Revoke).await
}

enum GrantsAction {
    List,
    Revoke,
}

/// `/admin/grants`: the grants of the one owner the query names, listed or revoked.
async fn grants(
    state: &AppState,
    headers: &HeaderMap,
    query: Option<&str>,
    action: GrantsAction,
) -> Response {
    let admin = match authenticate(state, headers) {
        Ok(admin) => admin,
        Err(refusal) => return challenge(&refusal, None, None),
    };
    let result = async {
        let params = parse_query(query)?;
        let owner = admin::grant_owner(params.get("subject"), params.get("client_id"))?;
        let (bridge, now) = (&state.bridge, state.clock.now());
        Ok::<_, OAuthError>(match action {
            GrantsAction::List => {
                json!({ "grants": admin::list_grants(bridge, &admin, owner, now).await? })
            }
            GrantsAction::Revoke => {
                json!({ "revoked": admin::revoke_grants(bridge, &admin, owner, now).await? })
            }
        })
    }
    .await;
    match result {
        Ok(body) => answer(body),
        Err(error) => error.into_response(),
    }
}
