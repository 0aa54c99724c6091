//! The whole flow: authorize → upstream login → callback → token → refresh → reuse detection.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;
use crate::oidc_provider::{Behaviour, TestProvider};

/// An access token (RFC 9068: `typ` at+jwt) for the MCP resource.
async fn verify_access_token(app: &TestApp, token: &str) -> Value {
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    verify_with_jwks(app, token, jsonwebtoken::Algorithm::ES256, RESOURCE).await
}

#[tokio::test]
async fn whole_flow_issues_tokens_that_verify_against_our_jwks_then_refresh_rotates_and_reuse_revokes()
 {
    let app = spawn_app().await;
    let tokens = app.tokens().await;
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 3600);
    assert_eq!(tokens["scope"], "openid email");

    let claims = verify_access_token(&app, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["sub"], "upstream-user-42");
    assert_eq!(claims["aud"], RESOURCE);
    assert_eq!(claims["client_id"], PUBLIC_CLIENT);
    assert_eq!(claims["email"], "ada@corp.example");
    // Granted `openid email` only: the name would need `profile` (the consent page said so).
    assert!(claims.get("name").is_none(), "{claims}");
    assert_eq!(
        claims["groups"],
        serde_json::json!(["mcp-users", "analysts"])
    );
    assert_eq!(claims["scope"], "openid email");
    for claim in ["exp", "iat", "nbf", "jti"] {
        assert!(claims.get(claim).is_some(), "{claim} missing");
    }

    let id_token = tokens["id_token"].as_str().expect("openid was granted");
    // OIDC's default for a client that named no algorithm (Core §15.1).
    let id_claims = verify_with_jwks(
        &app,
        id_token,
        jsonwebtoken::Algorithm::RS256,
        PUBLIC_CLIENT,
    )
    .await;
    assert_eq!(id_claims["sub"], "upstream-user-42");
    assert_eq!(id_claims["email"], "ada@corp.example");

    let first_refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let response = app.refresh(&first_refresh).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let refreshed: Value = response.json().await.unwrap();
    let second_refresh = refreshed["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second_refresh, first_refresh);
    let claims = verify_access_token(&app, refreshed["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["sub"], "upstream-user-42");
    assert_eq!(claims["aud"], RESOURCE);

    let third: Value = app.refresh(&second_refresh).await.json().await.unwrap();
    let third_refresh = third["refresh_token"].as_str().unwrap().to_owned();
    // The first token's successor has been used: presenting the first again is theft.
    oauth_error(
        app.refresh(&first_refresh).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    oauth_error(
        app.refresh(&third_refresh).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
}

#[tokio::test]
async fn a_client_that_lost_the_refresh_response_can_retry_once() {
    let app = spawn_app().await;
    let original = app.tokens().await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.refresh(&original).await.status(), StatusCode::OK); // response "lost"
    let retried: Value = app.refresh(&original).await.json().await.unwrap();
    let next = retried["refresh_token"].as_str().unwrap();
    assert_eq!(app.refresh(next).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn replayed_code_fails_and_revokes_the_tokens_it_produced() {
    let app = spawn_app().await;
    let pkce = Pkce::new();
    let code = app.authorization_code(&pkce).await;
    let first: Value = app.redeem_code(&code, &pkce).await.json().await.unwrap();
    oauth_error(
        app.redeem_code(&code, &pkce).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    let refresh = first["refresh_token"].as_str().unwrap();
    oauth_error(
        app.refresh(refresh).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
}

#[tokio::test]
async fn a_provider_signing_its_id_tokens_with_ed25519_signs_the_user_in() {
    let app = spawn_app_with(Options {
        provider: Some(TestProvider::start_eddsa().await),
        ..Options::default()
    })
    .await;
    let tokens = app.tokens().await;
    let claims = verify_access_token(&app, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["sub"], "upstream-user-42");
    assert_eq!(claims["email"], "ada@corp.example");
}

#[tokio::test]
async fn upstream_denial_reaches_the_client_as_access_denied() {
    let app = spawn_app().await;
    app.provider.set_behaviour(Behaviour::DenyLogin);
    let back = location(&app.sign_in(&app.authorize_params(&Pkce::new())).await);
    let query = query_of(&back);
    assert!(back.starts_with(PUBLIC_REDIRECT));
    assert_eq!(query["error"], "access_denied");
    assert_eq!(query["state"], "client-state-1");
    assert_eq!(query["iss"], app.issuer);
    assert!(!query.contains_key("code"));
}

#[tokio::test]
async fn bad_id_tokens_end_in_access_denied_without_a_code() {
    let app = spawn_app().await;
    for behaviour in [
        Behaviour::ForeignSignature,
        Behaviour::ExpiredIdToken,
        Behaviour::WrongAudience,
        Behaviour::WrongNonce,
    ] {
        app.provider.set_behaviour(behaviour);
        let back = location(&app.sign_in(&app.authorize_params(&Pkce::new())).await);
        let query = query_of(&back);
        assert_eq!(query["error"], "access_denied", "{behaviour:?}");
        assert!(!query.contains_key("code"), "{behaviour:?}");
    }
}

/// Python SDK 1.x resource servers publish `http://host/` as our issuer; SDK 2.x clients compare
/// it as a string with our metadata and the `iss` of the authorization response.
#[tokio::test]
async fn an_issuer_written_with_a_trailing_slash_is_kept_exactly_everywhere() {
    let app = spawn_app_with(Options {
        base_path: "/",
        ..Options::default()
    })
    .await;
    assert_eq!(app.issuer, format!("{}/", app.origin));
    let metadata = app
        .get_json(&format!(
            "{}/.well-known/oauth-authorization-server",
            app.origin
        ))
        .await;
    assert_eq!(metadata["issuer"], app.issuer);
    assert_eq!(
        metadata["token_endpoint"],
        format!("{}/oauth/token", app.origin)
    );
    // `sign_in` checks the `iss` of the authorization response; the JWT check its `iss` claim.
    let tokens = app.tokens().await;
    let claims = verify_access_token(&app, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["iss"], app.issuer);
}

#[tokio::test]
async fn claims_the_provider_releases_only_at_userinfo_reach_the_access_token() {
    let app = spawn_app_with(Options {
        configure: configure(|config| {
            config.oauth.access_token_claims = vec![
                IdentityClaim::Email,
                IdentityClaim::Name,
                IdentityClaim::Groups,
            ];
        }),
        ..Options::default()
    })
    .await;
    app.provider.set_behaviour(Behaviour::ClaimsOnlyInUserInfo);
    let tokens = app.tokens().await;
    let claims = verify_access_token(&app, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["sub"], "upstream-user-42");
    assert_eq!(claims["email"], "ada@corp.example");
    assert_eq!(claims["name"], "Ada Lovelace");
    assert_eq!(
        claims["groups"],
        serde_json::json!(["mcp-users", "analysts"])
    );
    assert_eq!(*app.provider.state.userinfo_requests.lock().unwrap(), 1);
}

#[tokio::test]
async fn userinfo_is_not_asked_when_the_id_token_has_every_mapped_claim() {
    let app = spawn_app().await;
    app.tokens().await;
    assert_eq!(*app.provider.state.userinfo_requests.lock().unwrap(), 0);
}

#[tokio::test]
async fn a_failing_userinfo_endpoint_leaves_the_id_tokens_claims() {
    let app = spawn_app().await;
    app.provider.set_behaviour(Behaviour::UserInfoFails);
    let tokens = app.tokens().await;
    let claims = verify_access_token(&app, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["email"], "ada@corp.example");
    assert!(claims.get("name").is_none() && claims.get("groups").is_none());
    assert_eq!(*app.provider.state.userinfo_requests.lock().unwrap(), 1);
}

#[tokio::test]
async fn userinfo_about_another_subject_fails_the_login() {
    let app = spawn_app().await;
    app.provider
        .set_behaviour(Behaviour::UserInfoForAnotherSubject);
    let back = location(&app.sign_in(&app.authorize_params(&Pkce::new())).await);
    let query = query_of(&back);
    assert_eq!(query["error"], "access_denied");
    assert!(!query.contains_key("code"));
}

#[tokio::test]
async fn a_provider_key_rotated_after_discovery_is_picked_up() {
    let app = spawn_app().await;
    app.provider.set_behaviour(Behaviour::RotatedKey);
    let tokens = app.tokens().await;
    assert!(tokens["access_token"].is_string());
}

#[tokio::test]
async fn group_policy_refuses_users_outside_the_allowed_groups() {
    let app = spawn_app_with(Options {
        configure: configure(|config| upstream(config).allowed_groups = strings(["admins"])),
        ..Options::default()
    })
    .await;
    let query = query_of(&location(
        &app.sign_in(&app.authorize_params(&Pkce::new())).await,
    ));
    assert_eq!(query["error"], "access_denied");
}

#[tokio::test]
async fn callback_in_another_browser_or_replayed_is_an_error_page() {
    let app = spawn_app().await;
    let to_upstream = app
        .authorize_to_upstream(&app.authorize_params(&Pkce::new()))
        .await;
    let to_callback = location(&app.browser.get(&to_upstream).send().await.unwrap());
    let stranger = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = stranger.get(&to_callback).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.headers().get("location").is_none());
    assert!(response.text().await.unwrap().contains("another browser"));

    // The stranger could not cancel the sign-in: the browser that started it completes it…
    let back = location(&app.browser.get(&to_callback).send().await.unwrap());
    assert!(query_of(&back).contains_key("code"), "{back}");
    // …once: the state is single use.
    let response = app.browser.get(&to_callback).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn whole_flow_works_under_an_issuer_with_a_path() {
    let app = spawn_app_with(Options {
        base_path: "/bridge",
        ..Options::default()
    })
    .await;
    let tokens = app.tokens().await;
    let claims = verify_access_token(&app, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["iss"], app.issuer);
}

#[tokio::test]
async fn bridge_starts_before_its_provider_and_recovers_by_itself() {
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = reserved.local_addr().unwrap();
    drop(reserved);
    let issuer = format!("http://{address}{}", crate::oidc_provider::REALM_PATH);
    let placeholder = TestProvider::start().await;
    let app = spawn_app_with(Options {
        upstream_issuer: Some(issuer.clone()),
        provider: Some(placeholder),
        ..Options::default()
    })
    .await;

    assert_eq!(
        app.api
            .get(app.url("/.well-known/oauth-authorization-server"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let query = query_of(
        &app.authorize_to_upstream(&app.authorize_params(&Pkce::new()))
            .await,
    );
    assert_eq!(query["error"], "temporarily_unavailable");
    assert_eq!(query["state"], "client-state-1");

    let _provider = TestProvider::serve_on(tokio::net::TcpListener::bind(address).await.unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if app
            .authorize_to_upstream(&app.authorize_params(&Pkce::new()))
            .await
            .starts_with(&issuer)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the bridge never discovered the provider"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}
