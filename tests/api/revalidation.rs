//! `upstream.revalidate_on_refresh`: our refresh grant first refreshes at the provider, and a
//! provider that refuses (user disabled, session ended) ends our grant too.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

async fn revalidating_app() -> TestApp {
    spawn_app_with(Options {
        configure: configure(|config| upstream(config).revalidate_on_refresh = true),
        ..Options::default()
    })
    .await
}

async fn refreshed(app: &TestApp, refresh_token: &str) -> Value {
    let response = app.refresh(refresh_token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(
        !text.contains("upstream-rt-") && !text.contains("upstream-access-token"),
        "the provider's tokens never leave the bridge: {text}"
    );
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn each_refresh_asks_the_provider_and_an_ended_session_ends_the_grant() {
    let app = revalidating_app().await;
    let tokens = app.tokens().await;
    assert!(!tokens.to_string().contains("upstream-rt-"));

    let second = refreshed(&app, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(app.provider.refresh_requests(), 1);
    // The provider rotated its token; the bridge kept the new one and uses it next time.
    let third = refreshed(&app, second["refresh_token"].as_str().unwrap()).await;
    assert_eq!(app.provider.refresh_requests(), 2);

    app.provider.end_sessions();
    let latest = third["refresh_token"].as_str().unwrap();
    let body = oauth_error(
        app.refresh(latest).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert_eq!(
        body["error_description"],
        "the identity provider ended this session"
    );
    assert_eq!(app.provider.refresh_requests(), 3);
    // The family is revoked: its refresh token is dead without asking the provider again, and
    // its latest access token is refused.
    oauth_error(
        app.refresh(latest).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert_eq!(app.provider.refresh_requests(), 3);
    let userinfo = app
        .api
        .get(app.url("/oauth/userinfo"))
        .bearer_auth(third["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(userinfo.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_reused_refresh_token_is_refused_without_asking_the_provider() {
    let app = revalidating_app().await;
    let tokens = app.tokens().await;
    let first = tokens["refresh_token"].as_str().unwrap();
    let second = refreshed(&app, first).await;
    let _ = refreshed(&app, second["refresh_token"].as_str().unwrap()).await;
    assert_eq!(app.provider.refresh_requests(), 2);
    oauth_error(
        app.refresh(first).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert_eq!(app.provider.refresh_requests(), 2);
}

#[tokio::test]
async fn without_revalidation_refresh_works_from_the_stored_claims() {
    let app = spawn_app().await;
    let tokens = app.tokens().await;
    app.provider.end_sessions();
    let next = refreshed(&app, tokens["refresh_token"].as_str().unwrap()).await;
    assert!(next["access_token"].is_string());
    assert_eq!(app.provider.refresh_requests(), 0);
}

#[tokio::test]
async fn a_user_the_provider_no_longer_puts_in_an_allowed_group_loses_access_at_refresh() {
    let app = spawn_app_with(Options {
        configure: configure(|config| {
            let upstream = upstream(config);
            upstream.revalidate_on_refresh = true;
            upstream.allowed_groups = strings(["mcp-users"]);
        }),
        ..Options::default()
    })
    .await;
    let tokens = app.tokens().await;
    let next = refreshed(&app, tokens["refresh_token"].as_str().unwrap()).await;
    app.provider.state.user.lock().unwrap()["realm_access"]["roles"] =
        serde_json::json!(["analysts"]);
    let body = oauth_error(
        app.refresh(next["refresh_token"].as_str().unwrap()).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert_eq!(
        body["error_description"],
        "you are no longer allowed to use this service"
    );
}

#[tokio::test]
async fn a_provider_outage_defers_the_refresh_and_revokes_nothing() {
    let app = revalidating_app().await;
    let tokens = app.tokens().await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    app.provider.set_refresh_outage(true);
    oauth_error(
        app.refresh(refresh).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
    )
    .await;
    assert_eq!(app.provider.refresh_requests(), 1);
    app.provider.set_refresh_outage(false);
    let next = refreshed(&app, refresh).await;
    assert!(next["refresh_token"].is_string());
}

#[tokio::test]
async fn a_request_the_grant_does_not_cover_is_refused_before_the_provider_is_asked() {
    let app = revalidating_app().await;
    let tokens = app.tokens().await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let response = app
        .post_token(&[
            ("grant_type", "refresh_token"),
            ("client_id", PUBLIC_CLIENT),
            ("refresh_token", refresh),
            ("scope", "openid profile"),
        ])
        .await;
    oauth_error(response, StatusCode::BAD_REQUEST, "invalid_scope").await;
    assert_eq!(app.provider.refresh_requests(), 0);
    // The provider's token was not spent: the grant goes on.
    refreshed(&app, refresh).await;
    assert_eq!(app.provider.refresh_requests(), 1);
}
