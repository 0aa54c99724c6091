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

#[tokio::test]
async fn a_code_presented_by_another_client_or_without_credentials_changes_nothing() {
    let app = spawn_app().await;
    let pkce = Pkce::new();
    let code = web_client_code(&app, &pkce).await;
    let redeem = |form: Vec<(&'static str, String)>| {
        app.api.post(app.url("/oauth/token")).form(&form).send()
    };
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", WEB_REDIRECT),
        ("code_verifier", pkce.verifier.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .collect::<Vec<_>>();
    // Someone who saw the code in a log: another client, the right client id without its
    // secret, and with a wrong one.
    let mut as_public = form.clone();
    as_public.push(("client_id", PUBLIC_CLIENT.to_owned()));
    oauth_error(
        redeem(as_public.clone()).await.unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    let mut no_secret = form.clone();
    no_secret.push(("client_id", WEB_CLIENT.to_owned()));
    oauth_error(
        redeem(no_secret).await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    )
    .await;
    let mut wrong_secret = form.clone();
    wrong_secret.push(("client_id", WEB_CLIENT.to_owned()));
    wrong_secret.push(("client_secret", "not-the-secret".to_owned()));
    oauth_error(
        redeem(wrong_secret).await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    )
    .await;

    // The rightful client still redeems it.
    form.push(("client_id", WEB_CLIENT.to_owned()));
    form.push(("client_secret", WEB_SECRET.to_owned()));
    let response = redeem(form.clone()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let tokens: Value = response.json().await.unwrap();

    // Presenting the spent code again from another client is refused and revokes nothing.
    oauth_error(
        redeem(as_public).await.unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    let refreshed = app
        .post_token(&[
            ("grant_type", "refresh_token"),
            ("client_id", WEB_CLIENT),
            ("client_secret", WEB_SECRET),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
        ])
        .await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    // A replay by the rightful client is still the replay RFC 6749 §4.1.2 means: it revokes.
    oauth_error(
        redeem(form).await.unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
}

#[tokio::test]
async fn a_lost_refresh_response_may_be_retried_a_few_times_not_without_end() {
    let app = spawn_app().await;
    let original = app.tokens().await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.refresh(&original).await.status(), StatusCode::OK);
    let mut access_tokens = std::collections::HashSet::new();
    for retry in 1..=3 {
        let response = app.refresh(&original).await;
        assert_eq!(response.status(), StatusCode::OK, "retry {retry}");
        let body: Value = response.json().await.unwrap();
        access_tokens.insert(body["access_token"].as_str().unwrap().to_owned());
    }
    assert_eq!(access_tokens.len(), 3);
    // The fourth retry of the same spent token is reuse: the family goes.
    let fourth = app.refresh(&original).await;
    oauth_error(fourth, StatusCode::BAD_REQUEST, "invalid_grant").await;
    for token in access_tokens {
        let response = app
            .api
            .post(app.url("/oauth/introspect"))
            .basic_auth(WEB_CLIENT, Some(WEB_SECRET))
            .form(&[("token", token.as_str())])
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["active"], false, "{body}");
    }
}
