//! RFC 8693 token exchange: an MCP server configured as a client trades the access token a
//! user's client sent it for one of ours to another resource, and only as its rule allows; the
//! exchanged token goes when the user's grant does.

use reqwest::StatusCode;
use serde_json::{Value, json};

use std::sync::Arc;
use std::time::Duration;

use mcp_oauth_bridge::clock::{Clock, FixedClock, SystemClock};
use mcp_oauth_bridge::config::ProxyConfig;

use crate::helpers::*;
use crate::mcp_upstream::McpUpstream;
use crate::proxy::Proxied;

const API: &str = "https://api.example.com";
pub const SERVER: &str = "reports-mcp";
const SERVER_SECRET: &str = "reports-mcp-secret-0123456789";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

/// The MCP server, as a confidential client allowed the grant.
pub fn add_exchanging_server(config: &mut mcp_oauth_bridge::config::Config) {
    let mut server = client(SERVER);
    server.secret = Some(mcp_oauth_bridge::secret::SecretString::new(SERVER_SECRET));
    server.grant_types = Some(strings([TOKEN_EXCHANGE]));
    config.oauth.clients.push(server);
}

async fn exchanging_app() -> TestApp {
    spawn_app_with(Options {
        configure: configure(|config| {
            add_exchanging_server(config);
            config.oauth.resources = strings([RESOURCE, API]);
            config.oauth.token_exchange = serde_json::from_value(json!({
                "rules": [{"client": SERVER, "audiences": [API], "scopes": ["openid", "email"],
                           "subject_audiences": [RESOURCE]}]
            }))
            .unwrap();
        }),
        ..Options::default()
    })
    .await
}

pub async fn exchange(app: &TestApp, form: &[(&str, &str)]) -> reqwest::Response {
    app.api
        .post(app.url("/oauth/token"))
        .basic_auth(SERVER, Some(SERVER_SECRET))
        .form(form)
        .send()
        .await
        .unwrap()
}

/// The user's client revokes its refresh token, and so the whole grant.
async fn revoke_users_grant(app: &TestApp, user: &Value) {
    let revoked = app
        .api
        .post(app.url("/oauth/revoke"))
        .form(&[
            ("token", user["refresh_token"].as_str().unwrap()),
            ("client_id", PUBLIC_CLIENT),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
}

/// RFC 8693 §2.2.2: the subject token's grant is gone, so the subject token is not valid.
async fn refused_as_revoked(response: reqwest::Response) {
    let body = oauth_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{body}"
    );
}

pub fn form<'a>(subject: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut form = vec![
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", subject),
        ("subject_token_type", ACCESS_TOKEN),
        ("audience", API),
    ];
    for (name, value) in extra {
        form.retain(|(existing, _)| existing != name);
        form.push((name, value));
    }
    form
}

#[tokio::test]
async fn a_server_exchanges_its_callers_token_for_one_to_another_resource_that_goes_with_the_grant()
{
    let app = exchanging_app().await;
    let metadata = app
        .get_json(&app.url("/.well-known/oauth-authorization-server"))
        .await;
    assert!(
        metadata["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(TOKEN_EXCHANGE))
    );
    let user = app.tokens().await;
    let subject_token = user["access_token"].as_str().unwrap();
    let subject = jwt_payload(subject_token);
    let response = exchange(&app, &form(subject_token, &[])).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["issued_token_type"], ACCESS_TOKEN);
    assert_eq!(body["token_type"], "Bearer");
    assert!(body.get("refresh_token").is_none());
    assert_eq!(body["scope"], "openid email");
    let exchanged = body["access_token"].as_str().unwrap();
    let claims = jwt_payload(exchanged);
    assert_eq!(claims["aud"], API);
    assert_eq!(claims["sub"], subject["sub"]);
    assert_eq!(claims["client_id"], SERVER);
    assert_eq!(claims["act"], json!({"sub": SERVER}));
    assert_eq!(claims["sid"], subject["sid"]);
    assert!(claims["exp"].as_i64().unwrap() <= subject["exp"].as_i64().unwrap());
    assert!(body["expires_in"].as_i64().unwrap() <= 3600);
    let introspected = app.introspect_as_web_client(exchanged).await;
    assert_eq!(introspected["active"], true);
    assert_eq!(introspected["act"]["sub"], SERVER);

    // The user's client revokes its grant: the exchanged token goes with it, and no more.
    revoke_users_grant(&app, &user).await;
    assert_eq!(
        app.introspect_as_web_client(exchanged).await["active"],
        false
    );
    refused_as_revoked(exchange(&app, &form(subject_token, &[])).await).await;
}

#[tokio::test]
async fn an_exchange_outside_the_rule_is_refused_with_rfc_8693_errors() {
    let app = exchanging_app().await;
    let user = app.tokens().await;
    let subject = user["access_token"].as_str().unwrap();
    let long_audience = "a".repeat(8192);
    for (extra, error) in [
        (
            vec![(
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:id_token",
            )],
            "invalid_request",
        ),
        (
            vec![(
                "requested_token_type",
                "urn:ietf:params:oauth:token-type:refresh_token",
            )],
            "invalid_request",
        ),
        (
            vec![("audience", "https://elsewhere.example.com")],
            "invalid_target",
        ),
        (vec![("audience", RESOURCE)], "invalid_target"),
        (vec![("resource", RESOURCE)], "invalid_target"),
        // Neither a resource of the rule nor a configured provider's name.
        (vec![("audience", "no-such-provider")], "invalid_target"),
        (vec![("audience", long_audience.as_str())], "invalid_target"),
        (vec![("scope", "openid profile")], "invalid_scope"),
        (vec![("subject_token", "not-a-token")], "invalid_request"),
        (
            vec![("actor_token", subject), ("actor_token_type", ACCESS_TOKEN)],
            "invalid_request",
        ),
    ] {
        let response = exchange(&app, &form(subject, &extra)).await;
        let body = oauth_error(response, StatusCode::BAD_REQUEST, error).await;
        assert!(body["error_description"].is_string(), "{extra:?}: {body}");
        assert!(!body.to_string().contains(&long_audience), "not echoed");
    }
    // A token exchanged once was issued for the API, not for this server: not exchangeable here.
    let exchanged: Value = exchange(&app, &form(subject, &[]))
        .await
        .json()
        .await
        .unwrap();
    let again = exchange(
        &app,
        &form(exchanged["access_token"].as_str().unwrap(), &[]),
    )
    .await;
    oauth_error(again, StatusCode::BAD_REQUEST, "invalid_request").await;
    // Another client, without the grant or a rule.
    let other = app
        .api
        .post(app.url("/oauth/token"))
        .basic_auth(WEB_CLIENT, Some(WEB_SECRET))
        .form(&form(subject, &[]))
        .send()
        .await
        .unwrap();
    oauth_error(other, StatusCode::BAD_REQUEST, "unauthorized_client").await;
    // The client's own secret is needed.
    let forged = app
        .api
        .post(app.url("/oauth/token"))
        .basic_auth(SERVER, Some("wrong-secret-0123456789"))
        .form(&form(subject, &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
}

/// The MCP server behind the proxy gets its caller's token (`proxy.forward_access_token`) and
/// exchanges it; the exchanged token lives `max_ttl` at most, and never past the caller's.
#[tokio::test]
async fn the_server_behind_the_proxy_exchanges_the_token_it_was_sent_for_a_short_lived_one() {
    let clock = Arc::new(FixedClock::at(SystemClock.now().seconds()));
    let upstream = McpUpstream::start().await;
    let mut proxy = ProxyConfig::forwarding_to(upstream.url.clone());
    proxy.forward_access_token = true;
    let app = spawn_app_with(Options {
        configure: configure(move |config| {
            config.proxy = Some(proxy);
            add_exchanging_server(config);
            config.oauth.resources = strings([API]);
            // No subject_audiences: the proxied server's resource.
            config.oauth.token_exchange = serde_json::from_value(json!({
                "rules": [{"client": SERVER, "audiences": [API], "scopes": ["openid", "email"]}]
            }))
            .unwrap();
        }),
        clock: Some(Arc::clone(&clock) as _),
        ..Options::default()
    })
    .await;
    let resource = app.url("/mcp");
    let proxied = Proxied {
        app,
        upstream,
        resource,
    };
    let user = proxied.tokens_for(&proxied.resource, "openid email").await;
    let token = user["access_token"].as_str().unwrap();
    let called = proxied
        .app
        .api
        .post(proxied.app.url("/mcp"))
        .bearer_auth(token)
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(called.status(), StatusCode::OK);
    let sent = proxied.upstream.last_headers();
    assert_eq!(sent["authorization"], format!("Bearer {token}"));

    let app = &proxied.app;
    let fresh: Value = exchange(app, &form(token, &[])).await.json().await.unwrap();
    assert_eq!(fresh["expires_in"], 300, "max_ttl: {fresh}");
    let subject_exp = jwt_payload(token)["exp"].as_i64().unwrap();
    clock.advance(Duration::from_secs(3_500));
    let late: Value = exchange(app, &form(token, &[])).await.json().await.unwrap();
    assert_eq!(
        late["expires_in"], 100,
        "the caller's token has 100 s left: {late}"
    );
    assert_eq!(
        jwt_payload(late["access_token"].as_str().unwrap())["exp"],
        subject_exp
    );
}

/// The provider's token refused (`invalid_target`), saying `why` (when not empty).
pub async fn refused_upstream(app: &TestApp, subject: &str, why: &str) {
    let response = exchange(app, &form(subject, &[("audience", "upstream")])).await;
    let body = oauth_error(response, StatusCode::BAD_REQUEST, "invalid_target").await;
    if !why.is_empty() {
        assert_eq!(body["error_description"], why);
    }
}

/// A server whose rule names `upstream`, in front of a provider whose tokens are kept.
/// It runs on a clock of its own, returned with it, set to now.
async fn keeping_app() -> (Arc<FixedClock>, TestApp) {
    keeping_app_with(|_| {}).await
}

/// As `keeping_app`, the provider's section changed by `change`.
async fn keeping_app_with(
    change: impl FnOnce(&mut mcp_oauth_bridge::config::UpstreamConfig) + Send + 'static,
) -> (Arc<FixedClock>, TestApp) {
    let clock = Arc::new(FixedClock::at(SystemClock.now().seconds()));
    let app = spawn_app_with(Options {
        configure: configure(move |config| {
            upstream(config).keep_tokens = true;
            change(upstream(config));
            add_exchanging_server(config);
            config.oauth.resources = strings([RESOURCE, API]);
            config.oauth.token_exchange = serde_json::from_value(json!({
                "rules": [{"client": SERVER, "audiences": [API, "upstream"], "scopes": ["openid", "email"],
                           "subject_audiences": [RESOURCE]}]
            }))
            .unwrap();
        }),
        clock: Some(Arc::clone(&clock) as _),
        ..Options::default()
    })
    .await;
    (clock, app)
}

/// The provider's UserInfo, called with `token` as any API of the provider would be.
pub async fn providers_userinfo(app: &TestApp, token: &str) -> reqwest::Response {
    app.api
        .get(format!(
            "{}/protocol/openid-connect/userinfo",
            app.provider.issuer
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn providers_token(app: &TestApp, subject: &str) -> Value {
    let response = exchange(app, &form(subject, &[("audience", "upstream")])).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_server_gets_the_providers_token_for_its_user_renewed_at_the_provider_once_it_expires() {
    let (clock, app) = keeping_app().await;
    let user = app.tokens().await;
    assert!(
        !user.to_string().contains("upstream-access-token"),
        "the user's client never sees the provider's token"
    );
    let subject = user["access_token"].as_str().unwrap();

    let first = providers_token(&app, subject).await;
    assert_eq!(first["issued_token_type"], ACCESS_TOKEN);
    assert_eq!(first["token_type"], "Bearer");
    assert_eq!(first["expires_in"], 300, "as the provider said: {first}");
    assert!(first.get("refresh_token").is_none());
    assert!(first.get("scope").is_none(), "the provider named none");
    let provider_token = first["access_token"].as_str().unwrap();
    assert!(provider_token.starts_with("upstream-access-token-"));
    let userinfo = providers_userinfo(&app, provider_token).await;
    assert_eq!(userinfo.status(), StatusCode::OK);
    let userinfo: Value = userinfo.json().await.unwrap();
    assert_eq!(userinfo["sub"], "upstream-user-42");

    // Still fresh: the same token, and the provider is not asked.
    clock.advance(Duration::from_secs(100));
    let again = providers_token(&app, subject).await;
    assert_eq!(again["access_token"], provider_token);
    assert_eq!(again["expires_in"], 200);
    assert_eq!(app.provider.refresh_requests(), 0);

    // Less than 30 s left: renewed at the provider with the refresh token kept at sign-in.
    clock.advance(Duration::from_secs(180));
    let renewed = providers_token(&app, subject).await;
    let renewed_token = renewed["access_token"].as_str().unwrap();
    assert_ne!(renewed_token, provider_token);
    assert_eq!(renewed["expires_in"], 300);
    assert_eq!(app.provider.refresh_requests(), 1);
    assert_eq!(
        providers_userinfo(&app, renewed_token).await.status(),
        StatusCode::OK
    );
    // The renewal was kept (with the provider's rotated refresh token) for the next exchange.
    assert_eq!(
        providers_token(&app, subject).await["access_token"],
        renewed_token
    );
    assert_eq!(app.provider.refresh_requests(), 1);
    // Our refresh grant goes on as before, and keeps what was kept.
    let refreshed = app.refresh(user["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let refreshed: Value = refreshed.json().await.unwrap();
    assert!(!refreshed.to_string().contains("upstream-"));
    let newer_subject = refreshed["access_token"].as_str().unwrap();
    assert_eq!(
        providers_token(&app, newer_subject).await["access_token"],
        renewed_token
    );

    // The provider ends the session: once the token expires, it is not renewed.
    app.provider.end_sessions();
    clock.advance(Duration::from_secs(290));
    refused_upstream(
        &app,
        newer_subject,
        "the identity provider ended the user's session; the user must sign in again",
    )
    .await;
}

#[tokio::test]
async fn the_providers_token_follows_the_grant_and_the_rule() {
    let (_, app) = keeping_app().await;
    let user = app.tokens().await;
    let subject = user["access_token"].as_str().unwrap();
    // Our scopes do not narrow the provider's token.
    let body = oauth_error(
        exchange(
            &app,
            &form(subject, &[("audience", "upstream"), ("scope", "openid")]),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_scope",
    )
    .await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("without scope")
    );
    // `resource` must be a URI (RFC 8707): `upstream` is an audience only.
    let mut by_resource = form(subject, &[("resource", "upstream")]);
    by_resource.retain(|(name, _)| *name != "audience");
    let body = oauth_error(
        exchange(&app, &by_resource).await,
        StatusCode::BAD_REQUEST,
        "invalid_target",
    )
    .await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("audience=upstream"),
        "{body}"
    );
    // A client without a rule, and a token sent to another resource, get nothing.
    let other = app
        .api
        .post(app.url("/oauth/token"))
        .basic_auth(WEB_CLIENT, Some(WEB_SECRET))
        .form(&form(subject, &[("audience", "upstream")]))
        .send()
        .await
        .unwrap();
    oauth_error(other, StatusCode::BAD_REQUEST, "unauthorized_client").await;
    let ours: Value = exchange(&app, &form(subject, &[]))
        .await
        .json()
        .await
        .unwrap();
    oauth_error(
        exchange(
            &app,
            &form(
                ours["access_token"].as_str().unwrap(),
                &[("audience", "upstream")],
            ),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;

    // The user's grant revoked: no provider token for it any more.
    assert_eq!(providers_token(&app, subject).await["token_type"], "Bearer");
    revoke_users_grant(&app, &user).await;
    refused_as_revoked(exchange(&app, &form(subject, &[("audience", "upstream")])).await).await;
}

fn revalidating(upstream: &mut mcp_oauth_bridge::config::UpstreamConfig) {
    upstream.revalidate_on_refresh = true;
}

/// From a sign-in to when the test provider's access token (300 s) has under the 30 s left that
/// an exchange wants of it: the next exchange renews it.
const UNTIL_RENEWAL: Duration = Duration::from_secs(300 - 30 + 10);

/// Renewals of one grant take turns: the provider sees its refresh token once, however many
/// exchanges and refreshes arrive together; and a renewal it answers with a token that is not a
/// bearer token still keeps the refresh token it rotated.
#[tokio::test]
async fn concurrent_renewals_spend_the_providers_refresh_token_once() {
    let (clock, app) = keeping_app_with(revalidating).await;
    let user = app.tokens().await;
    let subject = user["access_token"].as_str().unwrap();
    clock.advance(UNTIL_RENEWAL);
    let upstream_form = form(subject, &[("audience", "upstream")]);
    let (a, b, c, refreshed) = tokio::join!(
        exchange(&app, &upstream_form),
        exchange(&app, &upstream_form),
        exchange(&app, &upstream_form),
        app.refresh(user["refresh_token"].as_str().unwrap()),
    );
    assert_eq!(
        refreshed.status(),
        StatusCode::OK,
        "re-validated and rotated"
    );
    let mut handed_on = Vec::new();
    for response in [a, b, c] {
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        handed_on.push(body["access_token"].as_str().unwrap().to_owned());
    }
    assert!(
        handed_on.windows(2).all(|pair| pair[0] == pair[1]),
        "{handed_on:?}"
    );
    assert_eq!(app.provider.refresh_requests(), 1);
}

/// A renewal the provider answers with a token bound to a key (DPoP) hands nothing on, yet keeps
/// the refresh token the provider rotated: the next renewal works.
#[tokio::test]
async fn a_renewal_that_brings_no_bearer_token_keeps_the_rotated_refresh_token() {
    let (clock, app) = keeping_app_with(revalidating).await;
    let user = app.tokens().await;
    let subject = user["access_token"].as_str().unwrap();
    app.provider.set_token_type("DPoP");
    clock.advance(UNTIL_RENEWAL);
    refused_upstream(
        &app,
        subject,
        "the identity provider renewed its token, but not as a bearer token",
    )
    .await;
    app.provider.set_token_type("Bearer");
    let renewed = exchange(&app, &form(subject, &[("audience", "upstream")])).await;
    assert_eq!(renewed.status(), StatusCode::OK);
    assert_eq!(app.provider.refresh_requests(), 2);
    // And our refresh grant, re-validated with the same kept token, goes on.
    let refreshed = app.refresh(user["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    assert_eq!(app.provider.refresh_requests(), 3);
}

/// With `revalidate_on_refresh`, a provider that refuses to renew ends the grant at the exchange
/// as it would at the next refresh.
#[tokio::test]
async fn with_revalidation_a_refused_renewal_ends_the_grant() {
    let (clock, app) = keeping_app_with(revalidating).await;
    let user = app.tokens().await;
    let subject = user["access_token"].as_str().unwrap();
    app.provider.end_sessions();
    clock.advance(UNTIL_RENEWAL);
    refused_upstream(&app, subject, "").await;
    assert_eq!(app.provider.refresh_requests(), 1);
    oauth_error(
        app.refresh(user["refresh_token"].as_str().unwrap()).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert_eq!(
        app.provider.refresh_requests(),
        1,
        "the grant had ended: the provider is not asked again"
    );
}

/// At a renewal the provider speaks for the user again: a user it no longer puts in an allowed
/// group gets no token of it (without re-validation, the grant itself stays until it ends).
#[tokio::test]
async fn a_renewal_for_a_user_no_longer_allowed_hands_nothing_on() {
    let (clock, app) = keeping_app_with(|upstream| {
        upstream.allowed_groups = strings(["mcp-users"]);
    })
    .await;
    let user = app.tokens().await;
    let subject = user["access_token"].as_str().unwrap();
    assert_eq!(providers_token(&app, subject).await["token_type"], "Bearer");
    app.provider.state.user.lock().unwrap()["realm_access"]["roles"] = json!(["analysts"]);
    clock.advance(UNTIL_RENEWAL);
    refused_upstream(
        &app,
        subject,
        "the user is no longer allowed to use this service",
    )
    .await;
    assert_eq!(app.provider.refresh_requests(), 1);
    // Asking again must not hand on the token that refused renewal brought.
    refused_upstream(
        &app,
        subject,
        "the user is no longer allowed to use this service",
    )
    .await;
    assert_eq!(app.provider.refresh_requests(), 2);
}
