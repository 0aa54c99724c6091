//! Client addresses behind a load balancer: `server.trusted_proxies` decides whose
//! `X-Forwarded-For` is believed, for the rate limits and for what the proxy tells the MCP server.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

async fn dcr_app(server: impl FnOnce(&mut Config) + Send + 'static) -> TestApp {
    spawn_app_with(Options {
        configure: configure(|config| {
            config.oauth.dcr = DcrConfig {
                enabled: true,
                allowed_redirect_profiles: strings(["loopback"]),
                rate_limit: RateLimitConfig {
                    requests: 2,
                    window: seconds(60),
                },
                ..DcrConfig::default()
            };
            server(config);
        }),
        ..Options::default()
    })
    .await
}

async fn register_from(app: &TestApp, forwarded_for: &str) -> StatusCode {
    app.api
        .post(app.url("/oauth/register"))
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({"redirect_uris": ["http://127.0.0.1:9000/cb"], "token_endpoint_auth_method": "none"}))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_address_has_its_own_limit() {
    let app = dcr_app(|config| trust_proxies(config, &["127.0.0.0/8", "10.0.0.0/8"])).await;
    // The client forged the first entry; the proxies appended the rest.
    let first = "6.6.6.6, 198.51.100.1, 10.0.0.7";
    assert_eq!(register_from(&app, first).await, StatusCode::CREATED);
    assert_eq!(register_from(&app, first).await, StatusCode::CREATED);
    assert_eq!(
        register_from(&app, first).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Changing the forged part changes nothing: the rightmost untrusted hop is the client.
    assert_eq!(
        register_from(&app, "7.7.7.7, 198.51.100.1").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        register_from(&app, "6.6.6.6, 198.51.100.2").await,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn without_trusted_proxies_forwarding_headers_are_ignored() {
    let app = dcr_app(|_| {}).await;
    assert_eq!(
        register_from(&app, "198.51.100.1").await,
        StatusCode::CREATED
    );
    assert_eq!(
        register_from(&app, "198.51.100.2").await,
        StatusCode::CREATED
    );
    assert_eq!(
        register_from(&app, "198.51.100.3").await,
        StatusCode::TOO_MANY_REQUESTS,
        "every request came from 127.0.0.1, whatever the header said"
    );
}

#[tokio::test]
async fn a_request_id_is_always_ours() {
    for trusted in [&[][..], &["127.0.0.1/32"][..]] {
        let app = spawn_app_with(Options {
            configure: configure(move |config| trust_proxies(config, trusted)),
            ..Options::default()
        })
        .await;
        let response = app
            .api
            .get(app.url("/healthz"))
            .header("x-request-id", "chosen-by-client")
            .send()
            .await
            .unwrap();
        let id = response.headers()["x-request-id"].to_str().unwrap();
        assert_ne!(id, "chosen-by-client", "{trusted:?}");
        assert_eq!(id.len(), 36, "a UUID: {id}");
    }
}

#[tokio::test]
async fn the_forwarded_header_is_read_when_configured() {
    let app = dcr_app(|config| {
        trust_proxies(config, &["127.0.0.1/32"]);
        config.server.client_address_header = ClientAddressHeader::Forwarded;
    })
    .await;
    let register = |forwarded: &'static str| {
        app.api
            .post(app.url("/oauth/register"))
            .header("forwarded", forwarded)
            .header("x-forwarded-for", "198.51.100.9")
            .json(&json!({"redirect_uris": ["http://127.0.0.1:9000/cb"], "token_endpoint_auth_method": "none"}))
            .send()
    };
    for _ in 0..2 {
        assert_eq!(
            register("for=203.0.113.5;proto=https")
                .await
                .unwrap()
                .status(),
            StatusCode::CREATED
        );
    }
    assert_eq!(
        register("for=203.0.113.5").await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let other: Value = register("for=\"[2001:db8::1]:443\"")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(other["client_id"].is_string(), "{other}");
}
