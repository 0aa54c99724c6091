//! HTTP: routes, request parsing, and rendering of what `oauth` decides. No protocol rules here.

mod admin;
pub(crate) use admin::AdminAccess;
mod authorize;
mod backchannel_logout;
mod bearer;
mod callback;
mod choose;
pub(crate) mod client_address;
mod consent;
pub(crate) mod cookies;
pub(crate) mod error;
mod failures;
mod introspect;
mod login;
pub(crate) mod pages;
pub(crate) mod params;
pub(crate) mod proxy;
mod register;
mod revoke;
pub(crate) mod server;
mod token;
mod userinfo;
mod well_known;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, Request, header};
use axum::routing::{any, get, post};
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::cors::{Any, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::clock::SharedClock;
use crate::oauth::{Bridge, endpoints};

/// Cloned for every request (axum hands each handler its own copy): only `Arc`s and small
/// copies here, no vector or string that a clone would allocate anew.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) bridge: Arc<Bridge>,
    pub(crate) clock: SharedClock,
    /// Path of the issuer URL ("" or "/prefix"): every route lives below it.
    pub(crate) base_path: Arc<str>,
    /// Cookies get `Secure` and the `__Host-` prefix when the issuer is https.
    pub(crate) secure_cookies: bool,
    pub(crate) cookie_signer: Arc<cookies::CookieSigner>,
    /// Dynamic Client Registration, when enabled.
    pub(crate) registration: Option<Arc<Registration>>,
    /// The resources whose RFC 9728 metadata the bridge serves: the proxy's and `oauth.resources`.
    pub(crate) protected_resources: Arc<[crate::oauth::protected_resource::ProtectedResource]>,
    /// The MCP server behind the bridge, when `proxy` is configured.
    pub(crate) proxy: Option<Arc<proxy::Proxy>>,
    /// Whose forwarding headers name the client's address.
    pub(crate) trusted_proxies: Arc<client_address::TrustedProxies>,
    /// Metadata documents fetched per client address, when they are on.
    pub(crate) document_fetches: Option<Arc<crate::rate_limit::RateLimiter>>,
    /// Authorizations started per client address.
    pub(crate) authorizations: Arc<crate::rate_limit::RateLimiter>,
    /// `GET /metrics` on this listener (`metrics.enabled` without `metrics.address`).
    pub(crate) serve_metrics: bool,
    /// The administrators' tokens, when the admin API is on.
    pub(crate) admin: Option<Arc<admin::AdminAccess>>,
    /// `/admin/` on this listener (admin tokens without `admin.address`).
    pub(crate) serve_admin: bool,
    /// The pages' look and words.
    pub(crate) ui: Arc<crate::ui::Ui>,
}

impl AppState {
    /// Counts a fetch of `client_id`'s metadata document against the caller's address, when
    /// looking the client up would fetch one: anyone can make the bridge fetch a URL, so each
    /// address gets a few distinct documents a window, not an unbounded stream.
    pub(crate) fn admit_document_fetch(
        &self,
        client_id: Option<&str>,
        address: client_address::ClientAddress,
    ) -> Result<(), crate::oauth::OAuthError> {
        let (Some(limiter), Some(client_id)) = (&self.document_fetches, client_id) else {
            return Ok(());
        };
        let now = self.clock.now();
        if !self.bridge.clients.needs_document_fetch(client_id, now) {
            return Ok(());
        }
        limiter
            .check(address.ip.map(crate::rate_limit::bucket_of), now)
            .map_err(|retry_after| {
                tracing::info!(address = ?address.ip, "client metadata document fetch rate limited");
                self.bridge.metrics.rate_limited("metadata_document_fetch");
                crate::oauth::OAuthError::TooManyRequests {
                    description: "too many client metadata documents fetched for this address; try again later".into(),
                    retry_after,
                }
            })
    }
}

pub(crate) struct Registration {
    pub(crate) policy: crate::oauth::register::RegistrationPolicy,
    pub(crate) limiter: crate::rate_limit::RateLimiter,
}

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub(crate) fn router(state: AppState) -> Router {
    // Browser-based clients (MCP Inspector, web apps) call discovery and the token endpoint
    // cross-origin; no credentials are involved, so any origin may.
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods(Any)
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(Duration::from_secs(3600));
    // Where people see pages: each speaks its browser's language.
    let pages = Router::new()
        .route(endpoints::AUTHORIZE, get(authorize::authorize_get))
        .route(endpoints::CALLBACK, get(callback::callback_get))
        .route(
            &format!("{}/{{provider}}", endpoints::CALLBACK),
            get(callback::provider_callback_get),
        )
        .route(
            endpoints::CHOOSE,
            get(choose::choose_get).post(choose::choose_post),
        )
        .route(
            endpoints::CONSENT,
            get(consent::consent_get).post(consent::consent_post),
        )
        .route(
            endpoints::LOGIN,
            get(login::login_get).post(login::login_post),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            pages::in_the_browsers_language,
        ));
    let protocol = Router::new()
        .merge(pages)
        .route(
            endpoints::UI_LOGO,
            get(|State(state): State<AppState>| async move { pages::logo(&state.ui) }),
        )
        .route(
            endpoints::BACKCHANNEL_LOGOUT,
            post(backchannel_logout::logout_post),
        )
        .route(
            endpoints::TOKEN,
            post(token::token_post).layer(cors.clone()),
        )
        .route(
            endpoints::REVOKE,
            post(revoke::revoke_post).layer(cors.clone()),
        )
        .route(endpoints::INTROSPECT, post(introspect::introspect_post))
        .route(
            endpoints::USERINFO,
            get(userinfo::userinfo_handler)
                .post(userinfo::userinfo_handler)
                .layer(cors.clone()),
        )
        .route(
            endpoints::REGISTER,
            post(register::register_post).layer(cors.clone()),
        )
        .route(
            &format!("{}/{{client_id}}", endpoints::REGISTER),
            get(register::registration_get)
                .delete(register::registration_delete)
                .layer(cors.clone()),
        )
        .route(
            endpoints::JWKS,
            get(well_known::jwks_get).layer(cors.clone()),
        )
        .route(
            endpoints::AS_METADATA,
            get(well_known::authorization_server_get).layer(cors.clone()),
        )
        .route(
            endpoints::OPENID_CONFIGURATION,
            get(well_known::openid_configuration_get).layer(cors.clone()),
        );
    let base = state.base_path.to_string();
    let trusted_proxies = Arc::clone(&state.trusted_proxies);
    let app = if base.is_empty() {
        protocol
    } else {
        // RFC 8414 §3.1: for an issuer with a path, metadata sits at the path-inserted location.
        Router::new()
            .nest(&base, protocol)
            .route(
                &format!("{}{base}", endpoints::AS_METADATA),
                get(well_known::authorization_server_get).layer(cors.clone()),
            )
            .route(
                &format!("{}{base}", endpoints::OPENID_CONFIGURATION),
                get(well_known::openid_configuration_get).layer(cors.clone()),
            )
    };
    let app = protected_resource_routes(app, &state.protected_resources, &cors);
    let app = match &state.proxy {
        Some(proxy) => {
            // Browser-based MCP clients (Inspector) call the server cross-origin and must read
            // the challenge and the session id.
            let proxy_cors = CorsLayer::new()
                .allow_origin(Any)
                .allow_methods(Any)
                .allow_headers(Any)
                .expose_headers([
                    header::WWW_AUTHENTICATE,
                    HeaderName::from_static("mcp-session-id"),
                ])
                .max_age(Duration::from_secs(3600));
            let handler = any(proxy::proxy_handler).layer(proxy_cors);
            app.route(&proxy.mount, handler.clone())
                .route(&format!("{}/{{*rest}}", proxy.mount), handler)
        }
        None => app,
    };
    let app = if state.serve_metrics {
        app.route(endpoints::METRICS, get(metrics_get))
    } else {
        app
    };
    let app = if state.serve_admin {
        app.merge(admin::routes(&state))
    } else {
        app
    };
    let app = app
        .route(endpoints::HEALTH, get(well_known::healthz_get))
        .route(endpoints::READY, get(well_known::readyz_get));
    served(app, state, trusted_proxies)
}

/// The administration API alone, for a listener of its own (`admin.address`), with the same
/// request ids, client addresses and failure logging as the service's.
pub(crate) fn admin_router(state: AppState) -> Router {
    let trusted_proxies = Arc::clone(&state.trusted_proxies);
    served(admin::routes(&state), state, trusted_proxies)
}

fn served(
    app: Router<AppState>,
    state: AppState,
    trusted_proxies: Arc<client_address::TrustedProxies>,
) -> Router {
    let app = app.fallback(well_known::not_found);
    // Plain tower maps, not axum's `from_fn`, which clones and boxes the rest of the stack for
    // every request.
    observed(app.with_state(state)).layer(tower::util::MapRequestLayer::new(
        move |request: axum::extract::Request| {
            client_address::resolve_client(&trusted_proxies, request)
        },
    ))
}

/// Every request gets an id (echoed in `x-request-id`) and a span that carries it; failures
/// are logged once, inside that span, by `failures` (not by the trace layer as well).
fn observed(routes: Router) -> Router {
    routes
        .layer(tower::util::MapResponseLayer::new(failures::log_failures))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<_>| {
                    // The path only: query strings of this service carry codes and state.
                    let request_id = request
                        .headers()
                        .get(&REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    let span = tracing::info_span!(
                        crate::audit::REQUEST_SPAN,
                        method = %request.method(),
                        path = %request.uri().path(),
                        request_id,
                        client_address = tracing::field::Empty,
                    );
                    if let Some(ip) = client_address::ClientAddress::of(request.extensions()).ip {
                        span.record("client_address", tracing::field::display(ip));
                    }
                    span
                })
                // A 5xx is logged by `failures`; only a failure of the body (a stream that
                // broke after its head was sent) is left for this layer to tell.
                .on_failure(
                    |failure: ServerErrorsFailureClass, latency: Duration, _: &tracing::Span| {
                        if let ServerErrorsFailureClass::Error(error) = failure {
                            tracing::error!(%error, ?latency, "response body failed");
                        }
                    },
                ),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
}

/// The token of an `Authorization: Bearer` header (RFC 6750 §2.1); `None` without the header
/// or with another scheme, an error when the header is unreadable.
pub(crate) fn bearer_token(
    headers: &axum::http::HeaderMap,
) -> Result<Option<&str>, crate::oauth::OAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| crate::oauth::OAuthError::invalid_request("malformed Authorization header"))?;
    Ok(text
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(crate::tokens::BEARER))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty()))
}

/// RFC 9728 metadata of each resource at its path-inserted location, and at the bare well-known
/// path when there is only one.
fn protected_resource_routes(
    mut app: Router<AppState>,
    resources: &[crate::oauth::protected_resource::ProtectedResource],
    cors: &CorsLayer,
) -> Router<AppState> {
    use crate::oauth::protected_resource::{METADATA_PATH, ProtectedResource, metadata_path};
    let mut paths: Vec<(String, &ProtectedResource)> = resources
        .iter()
        .filter_map(|resource| Some((metadata_path(&resource.url)?, resource)))
        .collect();
    if let [(path, only)] = paths.as_slice()
        && path != METADATA_PATH
    {
        paths.push((METADATA_PATH.to_owned(), only));
    }
    let mut served = std::collections::HashSet::new();
    for (path, resource) in paths {
        if !served.insert(path.clone()) {
            tracing::warn!(%path, "two resources share a metadata path; the first is served");
            continue;
        }
        let resource = resource.clone();
        app = app.route(
            &path,
            get(move |State(state): State<AppState>| async move {
                well_known::protected_resource_get(&state, &resource)
            })
            .layer(cors.clone()),
        );
    }
    app
}

async fn metrics_get(State(state): State<AppState>) -> axum::response::Response {
    metrics_answer(&state.bridge.metrics)
}

fn metrics_answer(metrics: &crate::metrics::Metrics) -> axum::response::Response {
    use axum::response::IntoResponse;
    match metrics.render() {
        Some(text) => {
            ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
        }
        // An empty 200 would read as a scrape with nothing in it.
        None => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// `GET /metrics` alone, for a listener of its own (`metrics.address`).
pub(crate) fn metrics_router(metrics: Arc<crate::metrics::Metrics>) -> Router {
    Router::new().route(
        endpoints::METRICS,
        get(move || {
            let metrics = Arc::clone(&metrics);
            async move { metrics_answer(&metrics) }
        }),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use tower::ServiceExt;

    use super::{AppState, router};
    use crate::oauth::test_support::*;

    fn https_router() -> axum::Router {
        let harness = Harness::new();
        router(AppState {
            serve_metrics: false,
            admin: None,
            serve_admin: false,
            ui: Default::default(),
            bridge: Arc::new(harness.bridge),
            clock: harness.clock,
            base_path: Arc::from(""),
            secure_cookies: true,
            cookie_signer: Arc::new(super::cookies::CookieSigner::generate()),
            registration: None,
            protected_resources: Arc::from([]),
            proxy: None,
            trusted_proxies: Default::default(),
            document_fetches: None,
            authorizations: Arc::new(crate::rate_limit::RateLimiter::new(
                1000,
                std::time::Duration::from_secs(60),
            )),
        })
    }

    fn authorize_uri() -> String {
        format!(
            "/oauth/authorize?client_id={PUBLIC_CLIENT}&redirect_uri={PUBLIC_REDIRECT}&response_type=code\
             &code_challenge={CHALLENGE}&code_challenge_method=S256&state=s1"
        )
    }

    #[tokio::test]
    async fn over_https_the_binding_cookie_is_host_only_secure_and_http_only_and_the_callback_reads_it()
     {
        let app = https_router();
        let request = Request::get(authorize_uri()).body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::FOUND);
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        let cookie = response.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(cookie.starts_with("__Host-mob_login_"), "{cookie}");
        for attribute in ["; Path=/;", "; HttpOnly", "; SameSite=Lax", "; Secure"] {
            assert!(
                cookie.contains(attribute),
                "{attribute} missing in {cookie}"
            );
        }
        let location = response.headers()[header::LOCATION].to_str().unwrap();
        let state = url::Url::parse(location)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "state")
            .unwrap()
            .1
            .into_owned();
        let pair = cookie.split(';').next().unwrap();
        let callback = Request::get(format!("/oauth/callback?state={state}&code=upstream-code"))
            .header(header::COOKIE, pair)
            .body(Body::empty())
            .unwrap();
        let response = app.oneshot(callback).await.unwrap();
        assert_eq!(response.status(), StatusCode::FOUND);
        assert!(
            response.headers()[header::LOCATION]
                .to_str()
                .unwrap()
                .starts_with(PUBLIC_REDIRECT)
        );
        let cleared = response.headers()[header::SET_COOKIE].to_str().unwrap();
        assert!(cleared.contains("Max-Age=0"), "{cleared}");
    }

    #[tokio::test]
    async fn registration_is_limited_per_source_address() {
        use axum::extract::ConnectInfo;
        use std::net::SocketAddr;

        let harness = Harness::new();
        let policy = crate::oauth::register::RegistrationPolicy {
            redirects: crate::oauth::redirect_policy::RedirectPolicy::compile(
                &[],
                &["loopback".into()],
            )
            .unwrap(),
            max_clients: 100,
            secret_cost: 4,
        };
        let app = router(AppState {
            serve_metrics: false,
            admin: None,
            serve_admin: false,
            ui: Default::default(),
            bridge: Arc::new(harness.bridge),
            clock: harness.clock,
            base_path: Arc::from(""),
            secure_cookies: false,
            cookie_signer: Arc::new(super::cookies::CookieSigner::generate()),
            registration: Some(Arc::new(super::Registration {
                policy,
                limiter: crate::rate_limit::RateLimiter::new(2, std::time::Duration::from_secs(60)),
            })),
            protected_resources: Arc::from([]),
            proxy: None,
            trusted_proxies: Default::default(),
            document_fetches: None,
            authorizations: Arc::new(crate::rate_limit::RateLimiter::new(
                1000,
                std::time::Duration::from_secs(60),
            )),
        });
        let register = |from: &str| {
            let mut request = Request::post("/oauth/register")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    r#"{"redirect_uris":["http://127.0.0.1:9/cb"],"token_endpoint_auth_method":"none"}"#,
                ))
                .unwrap();
            let peer: SocketAddr = from.parse().unwrap();
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request)
        };
        assert_eq!(
            register("10.0.0.1:1000").await.unwrap().status(),
            StatusCode::CREATED
        );
        assert_eq!(
            register("10.0.0.1:1001").await.unwrap().status(),
            StatusCode::CREATED
        );
        assert_eq!(
            register("10.0.0.1:1002").await.unwrap().status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            register("10.0.0.2:1000").await.unwrap().status(),
            StatusCode::CREATED
        );
    }

    #[tokio::test]
    async fn unknown_paths_are_json_404s() {
        let response = https_router()
            .oneshot(Request::get("/nope").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
}
