//! Token endpoint: client authentication methods and their failures.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

async fn web_client_code(app: &TestApp, pkce: &Pkce) -> String {
    let params = vec![
        ("client_id", WEB_CLIENT.to_owned()),
        ("redirect_uri", WEB_REDIRECT.to_owned()),
        ("response_type", "code".to_owned()),
        ("code_challenge", pkce.challenge.clone()),
        ("code_challenge_method", "S256".to_owned()),
        ("state", "web-state".to_owned()),
    ];
    let back = location(&app.sign_in(&params).await);
    assert!(back.starts_with(WEB_REDIRECT), "{back}");
    query_of(&back)["code"].clone()
}

#[tokio::test]
async fn confidential_client_authenticates_with_client_secret_basic() {
    let app = spawn_app().await;
    let pkce = Pkce::new();
    let code = web_client_code(&app, &pkce).await;
    let response = app
        .api
        .post(app.url("/oauth/token"))
        .basic_auth(WEB_CLIENT, Some(WEB_SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", WEB_REDIRECT),
            ("code_verifier", &pkce.verifier),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let tokens: Value = response.json().await.unwrap();
    // No `resource` was asked for: the configured default audience (the issuer) applies.
    let claims = jwt_payload(tokens["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], app.issuer);
    assert_eq!(claims["client_id"], WEB_CLIENT);
}

#[tokio::test]
async fn confidential_client_authenticates_with_client_secret_post_and_refreshes_repeatedly() {
    let app = spawn_app().await;
    let pkce = Pkce::new();
    let code = web_client_code(&app, &pkce).await;
    let cold = std::time::Instant::now();
    let response = app
        .post_token(&[
            ("grant_type", "authorization_code"),
            ("client_id", WEB_CLIENT),
            ("client_secret", WEB_SECRET),
            ("code", &code),
            ("redirect_uri", WEB_REDIRECT),
            ("code_verifier", &pkce.verifier),
        ])
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let first_check = cold.elapsed();
    let mut refresh = response.json::<Value>().await.unwrap()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let started = std::time::Instant::now();
    for _ in 0..5 {
        let response = app
            .post_token(&[
                ("grant_type", "refresh_token"),
                ("client_id", WEB_CLIENT),
                ("client_secret", WEB_SECRET),
                ("refresh_token", &refresh),
            ])
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        refresh = response.json::<Value>().await.unwrap()["refresh_token"]
            .as_str()
            .unwrap()
            .to_owned();
    }
    // The first call paid one bcrypt; five more that each paid one would take several times as long.
    let repeated = started.elapsed();
    assert!(
        repeated < first_check,
        "five repeated calls took {repeated:?}, one bcrypt-checked call {first_check:?}"
    );
}

#[tokio::test]
async fn wrong_secret_unknown_client_and_missing_authentication_are_401_invalid_client() {
    let app = spawn_app().await;
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", "whatever"),
    ];
    let cases = [
        app.api
            .post(app.url("/oauth/token"))
            .basic_auth(WEB_CLIENT, Some("wrong"))
            .form(&form),
        app.api
            .post(app.url("/oauth/token"))
            .basic_auth("deleted-client", Some("x"))
            .form(&form),
        app.api.post(app.url("/oauth/token")).form(&[
            ("client_id", "deleted-client"),
            form[0],
            form[1],
        ]),
        app.api
            .post(app.url("/oauth/token"))
            .form(&[("client_id", WEB_CLIENT), form[0], form[1]]),
        app.api.post(app.url("/oauth/token")).form(&form),
        app.api
            .post(app.url("/oauth/token"))
            .basic_auth(PUBLIC_CLIENT, Some("not-expected"))
            .form(&form),
    ];
    for request in cases {
        let response = request.send().await.unwrap();
        assert_eq!(
            response.headers()["www-authenticate"],
            "Basic realm=\"mcp-oauth-bridge\""
        );
        oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;
    }
}

#[tokio::test]
async fn public_client_cannot_use_another_clients_code() {
    let app = spawn_app().await;
    let pkce = Pkce::new();
    let code = web_client_code(&app, &pkce).await;
    let response = app
        .post_token(&[
            ("grant_type", "authorization_code"),
            ("client_id", PUBLIC_CLIENT),
            ("code", &code),
            ("redirect_uri", WEB_REDIRECT),
            ("code_verifier", &pkce.verifier),
        ])
        .await;
    oauth_error(response, StatusCode::BAD_REQUEST, "invalid_grant").await;
}

#[tokio::test]
async fn wrong_pkce_verifier_is_invalid_grant() {
    let app = spawn_app().await;
    let pkce = Pkce::new();
    let code = app.authorization_code(&pkce).await;
    let response = app.redeem_code(&code, &Pkce::new()).await;
    oauth_error(response, StatusCode::BAD_REQUEST, "invalid_grant").await;
}
