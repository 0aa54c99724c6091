//! OpenID Connect Back-Channel Logout 1.0: the provider's logout token ends every grant of the
//! user's session there (by `sid`, or by `sub` alone), at once and on every instance; a token
//! that is not exactly a logout token from the provider for the bridge changes nothing.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::oidc_provider::{self, Behaviour, PROVIDER_KEY, ROTATED_KEY};

const LOGOUT_PATH: &str = "/oauth/backchannel-logout";

async fn post_logout(app: &TestApp, token: &str) -> reqwest::Response {
    app.api
        .post(app.url(LOGOUT_PATH))
        .form(&[("logout_token", token)])
        .send()
        .await
        .unwrap()
}

/// Signs in as the provider's user in session `sid`: the token response.
async fn tokens_in_session(app: &TestApp, sid: &str) -> Value {
    app.provider.state.user.lock().unwrap()["sid"] = json!(sid);
    app.tokens().await
}

async fn active(app: &TestApp, access_token: &Value) -> bool {
    app.introspect_as_web_client(access_token.as_str().unwrap())
        .await["active"]
        == true
}

async fn refreshes(app: &TestApp, tokens: &Value) -> bool {
    app.refresh(tokens["refresh_token"].as_str().unwrap())
        .await
        .status()
        == StatusCode::OK
}

#[tokio::test]
async fn a_logout_token_ends_the_grants_of_its_session_and_no_other_then_is_spent() {
    let app = spawn_app().await;
    let first = tokens_in_session(&app, "session-a").await;
    let second = tokens_in_session(&app, "session-b").await;
    let token = app
        .provider
        .sign_logout_token(&app.provider.logout_claims(Some("session-a")));
    let response = post_logout(&app, &token).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert!(
        !active(&app, &first["access_token"]).await,
        "session a's access token"
    );
    assert!(!refreshes(&app, &first).await, "session a's refresh token");
    assert!(
        active(&app, &second["access_token"]).await,
        "session b is another"
    );
    // Rotated once more: the grant, not one token, belongs to session b.
    let refreshed: Value = app
        .refresh(second["refresh_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();

    let replay = post_logout(&app, &token).await;
    let body = oauth_error(replay, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("used before")
    );

    // Without sid, the provider ends every session of the user.
    let everything = app
        .provider
        .sign_logout_token(&app.provider.logout_claims(None));
    assert_eq!(
        post_logout(&app, &everything).await.status(),
        StatusCode::OK
    );
    assert!(!active(&app, &refreshed["access_token"]).await);
    assert!(!refreshes(&app, &refreshed).await);

    // The user signs in again; that token, replayed, must not end the new session.
    let later = tokens_in_session(&app, "session-c").await;
    let replay = post_logout(&app, &everything).await;
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
    assert!(
        active(&app, &later["access_token"]).await,
        "a replay changes nothing"
    );
}

#[tokio::test]
async fn anything_but_the_providers_logout_token_for_the_bridge_is_refused_and_ends_nothing() {
    let app = spawn_app().await;
    let tokens = tokens_in_session(&app, "session-a").await;
    let provider = &app.provider;
    let claims = || provider.logout_claims(Some("session-a"));
    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = claims();
        change(&mut claims);
        provider.sign_logout_token(&claims)
    };
    let hostile: Vec<(&str, String)> = vec![
        (
            "a key the provider does not publish",
            provider.sign_with_foreign_key(&claims()),
        ),
        (
            "another issuer",
            with(&|c| c["iss"] = json!("http://127.0.0.1:9/realms/evil")),
        ),
        (
            "another audience",
            with(&|c| c["aud"] = json!("someone-else")),
        ),
        (
            "no events",
            with(&|c| {
                c.as_object_mut().unwrap().remove("events");
            }),
        ),
        // An ID token passed off as a logout token: it has a nonce, and no logout event.
        ("a nonce", with(&|c| c["nonce"] = json!("n-1"))),
        (
            "neither sub nor sid",
            with(&|c| {
                let claims = c.as_object_mut().unwrap();
                claims.remove("sub");
                claims.remove("sid");
            }),
        ),
        (
            "expired",
            with(&|c| {
                c["iat"] = json!(c["iat"].as_i64().unwrap() - 3600);
                c["exp"] = json!(c["iat"].as_i64().unwrap() + 60);
            }),
        ),
        (
            "no jti",
            with(&|c| {
                c.as_object_mut().unwrap().remove("jti");
            }),
        ),
        (
            "an access token's type",
            provider.sign_with(&claims(), PROVIDER_KEY, "at+jwt"),
        ),
        ("unsigned", {
            let header = base64_url(&json!({"alg": "none", "typ": "logout+jwt"}));
            format!("{header}.{}.", base64_url(&claims()))
        }),
        ("signed with the bridge's client secret", {
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
            header.typ = Some("logout+jwt".into());
            jsonwebtoken::encode(
                &header,
                &claims(),
                &jsonwebtoken::EncodingKey::from_secret(oidc_provider::CLIENT_SECRET.as_bytes()),
            )
            .unwrap()
        }),
        ("not a JWT", "logout".to_owned()),
        ("too long", "a".repeat(9000)),
    ];
    for (what, token) in &hostile {
        let response = post_logout(&app, token).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{what}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request", "{what}");
    }
    // The request itself: one token, as a form.
    let good = provider.sign_logout_token(&claims());
    for response in [
        app.api.post(app.url(LOGOUT_PATH)).send().await.unwrap(),
        app.api
            .post(app.url(LOGOUT_PATH))
            .form(&[
                ("logout_token", good.as_str()),
                ("logout_token", good.as_str()),
            ])
            .send()
            .await
            .unwrap(),
        app.api
            .post(app.url(LOGOUT_PATH))
            .json(&json!({"logout_token": good}))
            .send()
            .await
            .unwrap(),
    ] {
        assert!(response.status().is_client_error(), "{}", response.status());
    }
    assert!(
        active(&app, &tokens["access_token"]).await,
        "nothing was revoked"
    );
    assert!(refreshes(&app, &tokens).await);
    // And the good token, refused nowhere above, still works once.
    assert_eq!(post_logout(&app, &good).await.status(), StatusCode::OK);
    assert!(!active(&app, &tokens["access_token"]).await);
}

#[tokio::test]
async fn a_session_is_named_by_its_sid_and_its_user_together_or_by_its_sid_alone() {
    let app = spawn_app().await;
    let tokens = tokens_in_session(&app, "session-a").await;
    let provider = &app.provider;
    let mut someone_else = provider.logout_claims(Some("session-a"));
    someone_else["sub"] = json!("another-user");
    assert_eq!(
        post_logout(&app, &provider.sign_logout_token(&someone_else))
            .await
            .status(),
        StatusCode::OK,
        "a valid token that ends nothing of ours"
    );
    assert!(
        active(&app, &tokens["access_token"]).await,
        "the sid alone is not enough"
    );
    let mut sid_only = provider.logout_claims(Some("session-a"));
    sid_only.as_object_mut().unwrap().remove("sub");
    assert_eq!(
        post_logout(&app, &provider.sign_logout_token(&sid_only))
            .await
            .status(),
        StatusCode::OK
    );
    assert!(!active(&app, &tokens["access_token"]).await);
}

#[tokio::test]
async fn a_key_the_provider_rotated_in_is_fetched_once_for_a_logout_token() {
    let app = spawn_app().await;
    let tokens = tokens_in_session(&app, "session-a").await;
    *app.provider.state.behaviour.lock().unwrap() = Behaviour::RotatedKey;
    let provider = &app.provider;
    let rotated = |sid: &str| {
        provider.sign_as(
            &provider.logout_claims(Some(sid)),
            ROTATED_KEY,
            "rotated-key",
            "logout+jwt",
        )
    };
    assert_eq!(
        post_logout(&app, &rotated("session-a")).await.status(),
        StatusCode::OK
    );
    assert!(!active(&app, &tokens["access_token"]).await);
    // A key nobody publishes, right after: not fetched again within the minute, and said so.
    let unknown = provider.sign_as(
        &provider.logout_claims(Some("session-b")),
        PROVIDER_KEY,
        "never-published",
        "logout+jwt",
    );
    let response = post_logout(&app, &unknown).await;
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
}

fn base64_url(value: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_at_one_instance_ends_the_session_on_every_other() {
    let Some(database) = crate::postgres::test_database().await else {
        return;
    };
    let url = database.url.clone();
    let a = spawn_app_with(Options {
        configure: configure(move |config| {
            postgres(config, &url);
        }),
        ..Options::default()
    })
    .await;
    let url = database.url.clone();
    let b = spawn_app_with(Options {
        configure: configure(move |config| {
            postgres(config, &url);
        }),
        public_url: Some(a.issuer.clone()),
        upstream_issuer: Some(a.provider.issuer.clone()),
        ..Options::default()
    })
    .await;
    let tokens = tokens_in_session(&a, "session-a").await;
    let token = a
        .provider
        .sign_logout_token(&a.provider.logout_claims(Some("session-a")));
    assert_eq!(post_logout(&b, &token).await.status(), StatusCode::OK);
    assert!(!active(&a, &tokens["access_token"]).await);
    assert!(!refreshes(&a, &tokens).await);
    // Spent on every instance.
    assert_eq!(
        post_logout(&a, &token).await.status(),
        StatusCode::BAD_REQUEST
    );
    database.drop_database().await;
}
