//! Discovery documents, JWKS, health.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::failures::Failure;
use crate::oauth::{Cause, SignIn, metadata};

fn cacheable(body: serde_json::Value, max_age: &'static str) -> Response {
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(max_age));
    response
}

pub(crate) async fn authorization_server_get(State(state): State<AppState>) -> Response {
    cacheable(
        metadata::authorization_server_metadata(&state.bridge.settings),
        "public, max-age=3600",
    )
}

pub(crate) async fn openid_configuration_get(State(state): State<AppState>) -> Response {
    cacheable(
        metadata::openid_configuration(
            &state.bridge.settings,
            &state.bridge.keys.current().id_token_algorithms(),
        ),
        "public, max-age=3600",
    )
}

pub(crate) fn protected_resource_get(
    state: &AppState,
    resource: &crate::oauth::protected_resource::ProtectedResource,
) -> Response {
    cacheable(
        crate::oauth::protected_resource::metadata(&state.bridge.settings, resource),
        "public, max-age=3600",
    )
}

/// How long a JWKS request made just after start-up waits for the ID tokens' RSA key.
const ID_TOKEN_KEY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

pub(crate) async fn jwks_get(State(state): State<AppState>) -> Response {
    let ring = &state.bridge.keys;
    // A set without the ID token key, cached by a client, would fail the ID tokens it is about
    // to receive: wait for the key, and should it still be missing, let nobody keep the set.
    let complete = ring.signs_id_tokens() || ring.id_token_key_ready(ID_TOKEN_KEY_WAIT).await;
    // Short: a rotated key must reach resource servers well before its first token does.
    let cache = if complete {
        "public, max-age=300"
    } else {
        "no-store"
    };
    match serde_json::to_value(ring.current().jwks()) {
        Ok(body) => cacheable(body, cache),
        Err(error) => crate::oauth::OAuthError::internal(error).into_response(),
    }
}

pub(crate) async fn healthz_get() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// Ready when the storage answers and, with upstream providers, the discovery of one at least
/// has succeeded: one provider's outage must not take the instance (and every other provider's
/// users, and every refresh) out of the load balancer.
pub(crate) async fn readyz_get(State(state): State<AppState>) -> Response {
    let storage = state.bridge.storage.ping().await;
    let upstream = match &state.bridge.sign_in {
        SignIn::Upstream(providers) => Some(providers.any_ready()),
        SignIn::Local(_) => None,
    };
    let ready = storage.is_ok() && upstream != Some(false);
    let discovered = |ready: bool| {
        if ready {
            "discovered"
        } else {
            "not discovered"
        }
    };
    let mut body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "storage": if storage.is_ok() { "ok" } else { "unavailable" },
        "upstream": match upstream {
            Some(ready) => discovered(ready),
            None => "none (local users)",
        },
    });
    if let SignIn::Upstream(providers) = &state.bridge.sign_in
        && providers.all().len() > 1
    {
        body["providers"] = providers
            .all()
            .iter()
            .map(|provider| {
                (
                    provider.name.to_owned(),
                    json!(discovered(provider.upstream.is_ready())),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut response = (status, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if !ready {
        let cause = match storage {
            Err(error) => Cause::from(error),
            Ok(()) => Cause::because("the upstream provider is not discovered yet"),
        };
        Failure {
            code: "not_ready",
            cause,
        }
        .attach_to(&mut response);
    }
    response
}

pub(crate) async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "not_found", "error_description": "no such endpoint"})),
    )
        .into_response()
}
