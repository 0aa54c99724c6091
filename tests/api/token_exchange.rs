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
const SERVER: &str = "reports-mcp";
const SERVER_SECRET: &str = "reports-mcp-secret-0123456789";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

async fn exchanging_app() -> TestApp {
    spawn_app_with(Options {
        configure: configure(|config| {
            let mut server = client(SERVER);
            server.secret = Some(mcp_oauth_bridge::secret::SecretString::new(SERVER_SECRET));
            server.grant_types = Some(strings([TOKEN_EXCHANGE]));
            config.oauth.clients.push(server);
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

async fn exchange(app: &TestApp, form: &[(&str, &str)]) -> reqwest::Response {
    app.api
        .post(app.url("/oauth/token"))
        .basic_auth(SERVER, Some(SERVER_SECRET))
        .form(form)
        .send()
        .await
        .unwrap()
}

fn form<'a>(subject: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
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
    assert_eq!(
        app.introspect_as_web_client(exchanged).await["active"],
        false
    );
    let body = oauth_error(
        exchange(&app, &form(subject_token, &[])).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{body}"
    );
}

#[tokio::test]
async fn an_exchange_outside_the_rule_is_refused_with_rfc_8693_errors() {
    let app = exchanging_app().await;
    let user = app.tokens().await;
    let subject = user["access_token"].as_str().unwrap();
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
            let mut server = client(SERVER);
            server.secret = Some(mcp_oauth_bridge::secret::SecretString::new(SERVER_SECRET));
            server.grant_types = Some(strings([TOKEN_EXCHANGE]));
            config.oauth.clients.push(server);
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
