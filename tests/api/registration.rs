//! Dynamic Client Registration (RFC 7591) and the known-client redirect profiles.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// Registration open to Claude, loopback and one web pattern, `requests` per minute and address.
fn dcr(requests: u32) -> Option<Configure> {
    configure(move |config| {
        config.oauth.dcr = DcrConfig {
            enabled: true,
            allowed_redirect_profiles: strings(["claude", "loopback"]),
            allowed_redirect_patterns: strings([r"https://app\.example\.com/oauth/.+"]),
            rate_limit: RateLimitConfig {
                requests,
                window: seconds(60),
            },
            ..DcrConfig::default()
        };
    })
}

async fn dcr_app() -> TestApp {
    spawn_app_with(Options {
        configure: dcr(5),
        ..Options::default()
    })
    .await
}

async fn register(app: &TestApp, body: Value) -> reqwest::Response {
    app.api
        .post(app.url("/oauth/register"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn authorize_params(
    client_id: &str,
    redirect_uri: &str,
    pkce: &Pkce,
) -> Vec<(&'static str, String)> {
    vec![
        ("client_id", client_id.to_owned()),
        ("redirect_uri", redirect_uri.to_owned()),
        ("response_type", "code".to_owned()),
        ("code_challenge", pkce.challenge.clone()),
        ("code_challenge_method", "S256".to_owned()),
        ("state", "dcr-state".to_owned()),
        ("scope", "openid email".to_owned()),
    ]
}

#[tokio::test]
async fn metadata_advertises_the_registration_endpoint_when_enabled() {
    let app = dcr_app().await;
    let doc: Value = app
        .get_json(&app.url("/.well-known/oauth-authorization-server"))
        .await;
    assert_eq!(doc["registration_endpoint"], app.url("/oauth/register"));
    let off = spawn_app().await;
    assert_eq!(
        off.api
            .post(off.url("/oauth/register"))
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_registered_public_client_completes_the_whole_flow_after_consent() {
    let app = dcr_app().await;
    let response = register(
        &app,
        json!({
            "client_name": "Claude Code",
            "redirect_uris": ["http://localhost:33418/callback"],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let registered: Value = response.json().await.unwrap();
    let client_id = registered["client_id"].as_str().unwrap().to_owned();
    assert!(registered.get("client_secret").is_none());
    assert!(registered.get("client_secret_expires_at").is_none());
    assert!(registered["client_id_issued_at"].as_i64().unwrap() > 0);
    assert_eq!(registered["token_endpoint_auth_method"], "none");

    let pkce = Pkce::new();
    let redirect = "http://localhost:40123/callback";
    let first = location(
        &app.get_authorize(&authorize_params(&client_id, redirect, &pkce))
            .await,
    );
    assert!(
        first.starts_with(&app.url("/oauth/consent")),
        "a registered client always asks first: {first}"
    );
    let (html, _) = app.consent_page(&first).await;
    assert!(html.contains("Claude Code"));
    let back = location(
        &app.sign_in(&authorize_params(&client_id, redirect, &pkce))
            .await,
    );
    let query = query_of(&back);
    assert!(back.starts_with(redirect), "{back}");
    let response = app
        .post_token(&[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
            ("code", &query["code"]),
            ("redirect_uri", redirect),
            ("code_verifier", &pkce.verifier),
        ])
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let tokens: Value = response.json().await.unwrap();
    let refreshed = app
        .post_token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &client_id),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
        ])
        .await;
    assert_eq!(refreshed.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_registered_confidential_client_authenticates_with_its_returned_secret() {
    let app = dcr_app().await;
    let redirect = "https://app.example.com/oauth/callback";
    let registered: Value = register(
        &app,
        json!({"redirect_uris": [redirect], "client_name": "Web"}),
    )
    .await
    .json()
    .await
    .unwrap();
    let client_id = registered["client_id"].as_str().unwrap().to_owned();
    let secret = registered["client_secret"]
        .as_str()
        .expect("a confidential client gets a secret")
        .to_owned();
    assert_eq!(registered["client_secret_expires_at"], 0);
    assert_eq!(
        registered["token_endpoint_auth_method"],
        "client_secret_basic"
    );

    let pkce = Pkce::new();
    let back = location(
        &app.sign_in(&authorize_params(&client_id, redirect, &pkce))
            .await,
    );
    let code = query_of(&back)["code"].clone();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect),
        ("code_verifier", pkce.verifier.as_str()),
    ];
    let wrong = app
        .api
        .post(app.url("/oauth/token"))
        .basic_auth(&client_id, Some("wrong"))
        .form(&form)
        .send()
        .await
        .unwrap();
    oauth_error(wrong, StatusCode::UNAUTHORIZED, "invalid_client").await;
    let right = app
        .api
        .post(app.url("/oauth/token"))
        .basic_auth(&client_id, Some(&secret))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), StatusCode::OK);
}

#[tokio::test]
async fn redirect_uris_outside_the_policy_are_refused_at_registration_and_at_authorize() {
    let app = dcr_app().await;
    for uri in [
        "https://evil.example.com/callback",
        "https://claude.ai/api/mcp/auth_callback/x",
        "http://example.com/cb",
    ] {
        let response = register(
            &app,
            json!({"redirect_uris": [uri], "token_endpoint_auth_method": "none"}),
        )
        .await;
        oauth_error(response, StatusCode::BAD_REQUEST, "invalid_redirect_uri").await;
    }
    let registered: Value = register(
        &app,
        json!({"redirect_uris": ["https://claude.ai/api/mcp/auth_callback"], "token_endpoint_auth_method": "none"}),
    )
    .await
    .json()
    .await
    .unwrap();
    let client_id = registered["client_id"].as_str().unwrap();
    // The patterns decide only what may register: authorize still wants the registered URI exactly.
    let response = app
        .get_authorize(&authorize_params(
            client_id,
            "https://claude.com/api/mcp/auth_callback",
            &Pkce::new(),
        ))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.headers().get("location").is_none());
}

#[tokio::test]
async fn inconsistent_or_malformed_metadata_is_invalid_client_metadata() {
    let app = spawn_app_with(Options {
        configure: configure(|config| {
            config.oauth.dcr.enabled = true;
            config.oauth.dcr.allowed_redirect_profiles = strings(["loopback"]);
            config.oauth.dcr.rate_limit.requests = 50;
        }),
        ..Options::default()
    })
    .await;
    let uri = "http://127.0.0.1:9000/cb";
    for body in [
        json!({"redirect_uris": [uri], "grant_types": ["client_credentials"]}),
        json!({"redirect_uris": [uri], "response_types": ["token"]}),
        json!({"redirect_uris": [uri], "token_endpoint_auth_method": "private_key_jwt"}),
        json!({"redirect_uris": uri}),
        json!({"redirect_uris": [uri], "scope": "admin"}),
    ] {
        oauth_error(
            register(&app, body).await,
            StatusCode::BAD_REQUEST,
            "invalid_client_metadata",
        )
        .await;
    }
    let not_json = app
        .api
        .post(app.url("/oauth/register"))
        .body("{")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    oauth_error(not_json, StatusCode::BAD_REQUEST, "invalid_client_metadata").await;
    let form = app
        .api
        .post(app.url("/oauth/register"))
        .form(&[("redirect_uris", uri)])
        .send()
        .await
        .unwrap();
    oauth_error(form, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[tokio::test]
async fn registration_is_rate_limited_per_address() {
    let app = dcr_app().await;
    let body = json!({"redirect_uris": ["http://127.0.0.1:9000/cb"], "token_endpoint_auth_method": "none"});
    for _ in 0..5 {
        assert_eq!(
            register(&app, body.clone()).await.status(),
            StatusCode::CREATED
        );
    }
    let limited = register(&app, body).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        limited.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("too many registrations")
    );
}

#[tokio::test]
async fn registration_stops_at_the_configured_number_of_clients() {
    let app = spawn_app_with(Options {
        configure: configure(|config| {
            config.oauth.dcr.enabled = true;
            config.oauth.dcr.allowed_redirect_profiles = strings(["loopback"]);
            config.oauth.dcr.max_clients = 2;
        }),
        ..Options::default()
    })
    .await;
    let body = json!({"redirect_uris": ["http://127.0.0.1:9000/cb"], "token_endpoint_auth_method": "none"});
    assert_eq!(
        register(&app, body.clone()).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        register(&app, body.clone()).await.status(),
        StatusCode::CREATED
    );
    let full = register(&app, body).await;
    assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = full.json().await.unwrap();
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("limit of 2 registered clients"),
        "{body}"
    );
}

#[tokio::test]
async fn names_that_hide_characters_and_redirect_uris_with_control_characters_are_refused() {
    let app = spawn_app_with(Options {
        configure: dcr(50),
        ..Options::default()
    })
    .await;
    for name in [
        "Claude\u{202E}edualc",
        "Cur\u{200B}sor",
        "\u{2067}VS Code\u{2069}",
        "Inspector\u{FEFF}",
    ] {
        let response = register(
            &app,
            json!({"client_name": name, "redirect_uris": ["http://127.0.0.1:9000/cb"],
                   "token_endpoint_auth_method": "none"}),
        )
        .await;
        oauth_error(response, StatusCode::BAD_REQUEST, "invalid_client_metadata").await;
    }
    for uri in [
        "http://127.0.0.1:9000/cb\n",
        "http://127.0.0.1:9000/c\tb",
        "http://127.0.0.1:9000/cb\r\nSet-Cookie: x=1",
        "http://127.0.0.1:9000/cb\u{0}",
    ] {
        let response = register(
            &app,
            json!({"redirect_uris": [uri], "token_endpoint_auth_method": "none"}),
        )
        .await;
        oauth_error(response, StatusCode::BAD_REQUEST, "invalid_redirect_uri").await;
    }
}

/// Registers a public client and signs a user in with it: the registration and the tokens.
async fn registered_and_signed_in(app: &TestApp) -> (Value, Value) {
    let registered: Value = register(
        app,
        json!({
            "client_name": "Managed",
            "redirect_uris": ["http://localhost:33418/callback"],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
        }),
    )
    .await
    .json()
    .await
    .unwrap();
    let client_id = registered["client_id"].as_str().unwrap();
    let pkce = Pkce::new();
    let redirect = "http://localhost:40123/callback";
    let back = location(
        &app.sign_in(&authorize_params(client_id, redirect, &pkce))
            .await,
    );
    let tokens: Value = app
        .post_token(&[
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("code", &query_of(&back)["code"]),
            ("redirect_uri", redirect),
            ("code_verifier", &pkce.verifier),
        ])
        .await
        .json()
        .await
        .unwrap();
    assert!(tokens["access_token"].is_string(), "{tokens}");
    (registered, tokens)
}

async fn manage(
    app: &TestApp,
    method: reqwest::Method,
    uri: &str,
    token: Option<&str>,
) -> reqwest::Response {
    let request = app.api.request(method, uri);
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
    .send()
    .await
    .unwrap()
}

fn www_authenticate(response: &reqwest::Response) -> String {
    response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_registration_is_read_with_its_own_token_only() {
    let app = dcr_app().await;
    let (registered, _) = registered_and_signed_in(&app).await;
    let client_id = registered["client_id"].as_str().unwrap();
    let uri = registered["registration_client_uri"].as_str().unwrap();
    let token = registered["registration_access_token"].as_str().unwrap();
    assert_eq!(uri, app.url(&format!("/oauth/register/{client_id}")));
    assert!(token.len() >= 43, "a 256-bit token: {token}");

    let read = manage(&app, reqwest::Method::GET, uri, Some(token)).await;
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(read.headers()["cache-control"], "no-store");
    let information: Value = read.json().await.unwrap();
    for field in [
        "client_id",
        "client_id_issued_at",
        "client_name",
        "redirect_uris",
        "token_endpoint_auth_method",
        "grant_types",
        "response_types",
        "registration_client_uri",
        "registration_access_token",
    ] {
        assert_eq!(information[field], registered[field], "{field}");
    }

    let missing = manage(&app, reqwest::Method::GET, uri, None).await;
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(www_authenticate(&missing), "Bearer");
    // A wrong token, another client's token, and a client that does not exist are told apart
    // by nobody: each is the same 401.
    let (other, _) = registered_and_signed_in(&app).await;
    let other_token = other["registration_access_token"].as_str().unwrap();
    let unknown = app.url("/oauth/register/dcr_does-not-exist");
    let configured = app.url(&format!("/oauth/register/{PUBLIC_CLIENT}"));
    for (uri, token) in [
        (uri, "not-the-token"),
        (uri, other_token),
        (unknown.as_str(), token),
        (configured.as_str(), token),
    ] {
        let refused = manage(&app, reqwest::Method::GET, uri, Some(token)).await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{uri}");
        assert!(
            www_authenticate(&refused).contains(r#"error="invalid_token""#),
            "{uri}"
        );
        let body = refused.text().await.unwrap();
        assert!(!body.contains("redirect_uris"), "{body}");
    }
}

#[tokio::test]
async fn deleting_a_registration_revokes_every_grant_of_the_client() {
    let app = dcr_app().await;
    let (registered, tokens) = registered_and_signed_in(&app).await;
    let (other, other_tokens) = registered_and_signed_in(&app).await;
    let client_id = registered["client_id"].as_str().unwrap();
    let uri = registered["registration_client_uri"].as_str().unwrap();
    let token = registered["registration_access_token"].as_str().unwrap();
    let userinfo = |access: &Value| {
        let access = access["access_token"].as_str().unwrap().to_owned();
        let app = &app;
        async move {
            app.api
                .get(app.url("/oauth/userinfo"))
                .bearer_auth(access)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(userinfo(&tokens).await, StatusCode::OK);

    let wrong = manage(&app, reqwest::Method::DELETE, uri, Some("not-the-token")).await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let by_other = manage(
        &app,
        reqwest::Method::DELETE,
        uri,
        other["registration_access_token"].as_str(),
    )
    .await;
    assert_eq!(by_other.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        manage(&app, reqwest::Method::GET, uri, Some(token))
            .await
            .status(),
        StatusCode::OK,
        "still registered"
    );

    let deleted = manage(&app, reqwest::Method::DELETE, uri, Some(token)).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(deleted.text().await.unwrap(), "");
    assert_eq!(
        manage(&app, reqwest::Method::GET, uri, Some(token))
            .await
            .status(),
        StatusCode::UNAUTHORIZED,
        "gone, and its token with it"
    );
    assert_eq!(
        manage(&app, reqwest::Method::DELETE, uri, Some(token))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    // Its access token is revoked, not merely orphaned (the storage contract checks that the
    // refresh family is revoked too; here the refresh also fails for want of the client).
    assert_eq!(userinfo(&tokens).await, StatusCode::UNAUTHORIZED);
    let refresh = app
        .post_token(&[
            ("grant_type", "refresh_token"),
            ("client_id", client_id),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
        ])
        .await;
    assert!(refresh.status().is_client_error(), "{}", refresh.status());
    // The other client keeps its grant.
    assert_eq!(userinfo(&other_tokens).await, StatusCode::OK);
}

#[tokio::test]
async fn a_registered_scope_does_not_stop_a_step_up_beyond_it() {
    // MCP clients register with the scope of their first challenge and later ask for more
    // (403 insufficient_scope); the user's consent, not the client's own word, is the limit.
    let app = dcr_app().await;
    let registered: Value = register(
        &app,
        json!({"redirect_uris": ["http://127.0.0.1:4000/cb"], "token_endpoint_auth_method": "none",
               "scope": "openid"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(registered["scope"], "openid");
    let client_id = registered["client_id"].as_str().unwrap();
    let pkce = Pkce::new();
    let mut params = authorize_params(client_id, "http://127.0.0.1:4000/cb", &pkce);
    params.retain(|(k, _)| *k != "scope");
    params.push(("scope", "openid email profile".to_owned()));
    let next = location(&app.get_authorize(&params).await);
    assert!(next.starts_with(&app.url("/oauth/consent")), "{next}");
    let (html, _) = app.consent_page(&next).await;
    assert!(html.contains("<code>profile</code>"), "{html}");
    // Asking for nothing gets what the client registered, not every scope there is.
    params.retain(|(k, _)| *k != "scope");
    let next = location(&app.get_authorize(&params).await);
    let (html, _) = app.consent_page(&next).await;
    assert!(
        html.contains("<ul class=\"asks\"><li><span class=\"what\">Know who you are</span> <small class=\"fine\"><code>openid</code></small></li></ul>"),
        "{html}"
    );
    // What the bridge does not support stays refused.
    params.retain(|(k, _)| *k != "scope");
    params.push(("scope", "openid admin".to_owned()));
    let back = location(&app.get_authorize(&params).await);
    assert_eq!(query_of(&back)["error"], "invalid_scope", "{back}");
}
