//! `/admin/…`: the administration API (README, "Administration"), mounted only when
//! `admin.tokens` is set. Every request needs one of those tokens as a bearer token; answers are
//! JSON and never cached. No CORS: a browser page elsewhere cannot call it.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde_json::json;

use super::AppState;
use super::bearer::challenge;
use super::client_address::ClientAddress;
use super::params::parse_query;
use super::token::no_store;
use crate::audit;
use crate::oauth::OAuthError;
use crate::oauth::admin::{self, Admin, AdminTokens};
use crate::oauth::bearer::BearerError;
use crate::oauth::endpoints::ADMIN;
use crate::rate_limit::{RateLimiter, bucket_of};

/// Refused requests per client address and minute that are answered and written to the audit
/// trail; beyond, `429` and only a count in the metrics, so that nobody can flood the trail.
const REFUSALS_PER_MINUTE: u32 = 20;

/// Who may use the API, and how often a caller may be refused.
pub(crate) struct AdminAccess {
    tokens: AdminTokens,
    refusals: RateLimiter,
}

impl AdminAccess {
    pub(crate) fn new(tokens: AdminTokens) -> Arc<AdminAccess> {
        Arc::new(AdminAccess {
            tokens,
            refusals: RateLimiter::new(REFUSALS_PER_MINUTE, std::time::Duration::from_secs(60)),
        })
    }
}

/// Every route behind `require_admin`: a handler runs only for an administrator, whatever the
/// route, so a route added later cannot forget the check.
pub(crate) fn routes(state: &AppState) -> axum::Router<AppState> {
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
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_admin,
        ))
}

/// Lets the request through with its `Admin` when it carries an administrator's token.
async fn require_admin(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(access) = state.admin.as_deref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let refusal = match super::bearer_token(request.headers()) {
        Ok(Some(token)) => match access.tokens.admin(token) {
            Some(admin) => {
                request.extensions_mut().insert(admin);
                return next.run(request).await;
            }
            None => (
                "invalid",
                BearerError::InvalidToken("not an administrator's token"),
            ),
        },
        Ok(None) => ("missing", BearerError::Missing),
        Err(_) => (
            "invalid",
            BearerError::InvalidRequest("malformed Authorization header"),
        ),
    };
    let address = ClientAddress::of(request.extensions());
    if let Err(retry_after) = access
        .refusals
        .check(address.ip.map(bucket_of), state.clock.now())
    {
        state.bridge.metrics.rate_limited("admin");
        let mut response = no_store(StatusCode::TOO_MANY_REQUESTS.into_response());
        if let Ok(value) = HeaderValue::from_str(&retry_after.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    let (reason, error) = refusal;
    audit::record(&audit::Event::AdminRefused {
        reason,
        method: request.method().as_str(),
        path: request.uri().path(),
    });
    challenge(&error, None, None)
}

fn answer(body: serde_json::Value) -> Response {
    no_store(Json(body).into_response())
}

async fn clients_get(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
) -> Response {
    match admin::list_clients(&state.bridge, &admin).await {
        Ok(clients) => answer(json!({ "clients": clients })),
        Err(error) => error.into_response(),
    }
}

async fn client_delete(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    Path(client_id): Path<String>,
) -> Response {
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
    Extension(admin): Extension<Admin>,
    RawQuery(query): RawQuery,
) -> Response {
    grants(&state, &admin, query.as_deref(), GrantsAction::List).await
}

async fn grants_delete(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    RawQuery(query): RawQuery,
) -> Response {
    grants(&state, &admin, query.as_deref(), GrantsAction::Revoke).await
}

enum GrantsAction {
    List,
    Revoke,
}

/// `/admin/grants`: the grants of the one owner the query names, listed or revoked.
async fn grants(
    state: &AppState,
    admin: &Admin,
    query: Option<&str>,
    action: GrantsAction,
) -> Response {
    let result = async {
        let params = parse_query(query)?;
        let owner = admin::grant_owner(params.get("subject"), params.get("client_id"))?;
        let (bridge, now) = (&state.bridge, state.clock.now());
        Ok::<_, OAuthError>(match action {
            GrantsAction::List => {
                json!({ "grants": admin::list_grants(bridge, admin, owner, now).await? })
            }
            GrantsAction::Revoke => {
                json!({ "revoked": admin::revoke_grants(bridge, admin, owner, now).await? })
            }
        })
    }
    .await;
    match result {
        Ok(body) => answer(body),
        Err(error) => error.into_response(),
    }
}
