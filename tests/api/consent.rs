//! The consent page: shown before a client without `skip_consent` sends the user upstream.

use reqwest::StatusCode;

use crate::helpers::*;

async fn consent_url(app: &TestApp) -> String {
    let response = app.get_authorize(&app.authorize_params(&Pkce::new())).await;
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let next = location(&response);
    assert!(
        next.starts_with(&app.url("/oauth/consent?request=")),
        "{next}"
    );
    next
}

#[tokio::test]
async fn consent_page_names_the_client_and_its_scopes_and_refuses_framing() {
    let app = spawn_app().await;
    let page_url = consent_url(&app).await;
    let response = app.browser.get(&page_url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-frame-options"], "DENY");
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let html = response.text().await.unwrap();
    for expected in [
        "MCP command line",
        "mcp-cli",
        "<code>openid</code>",
        "<code>email</code>",
        "an application on this computer",
    ] {
        assert!(html.contains(expected), "{expected} missing");
    }
}

#[tokio::test]
async fn a_missing_replayed_or_foreign_consent_token_is_refused() {
    let app = spawn_app().await;
    let response = app.get_authorize(&app.authorize_params(&Pkce::new())).await;
    let set_cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let (_, token) = app.consent_page(&location(&response)).await;

    let missing = app
        .browser
        .post(app.url("/oauth/consent"))
        .form(&[("decision", "allow")])
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);

    let stranger = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let foreign = stranger
        .post(app.url("/oauth/consent"))
        .form(&[("request", token.as_str()), ("decision", "allow")])
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), StatusCode::BAD_REQUEST);
    assert!(foreign.text().await.unwrap().contains("another browser"));

    let first = app.post_consent(&token, "allow").await;
    assert!(location(&first).starts_with(&app.provider.issuer));
    // The answer cleared the browser's consent cookie; replay with the original one by hand, so
    // that only the token's single use can refuse it.
    let replayed = stranger
        .post(app.url("/oauth/consent"))
        .header("cookie", &cookie)
        .form(&[("request", token.as_str()), ("decision", "allow")])
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), StatusCode::BAD_REQUEST);
    assert!(replayed.text().await.unwrap().contains("already answered"));
}

#[tokio::test]
async fn denied_consent_reaches_the_client_as_access_denied_with_state_and_iss() {
    let app = spawn_app().await;
    let (_, token) = app.consent_page(&consent_url(&app).await).await;
    let back = location(&app.post_consent(&token, "deny").await);
    assert!(back.starts_with(PUBLIC_REDIRECT), "{back}");
    let query = query_of(&back);
    assert_eq!(query["error"], "access_denied");
    assert_eq!(query["state"], "client-state-1");
    assert_eq!(query["iss"], app.issuer);
}

#[tokio::test]
async fn a_remembered_consent_skips_the_page_next_time() {
    let app = spawn_app().await;
    app.tokens().await;
    let next = location(&app.get_authorize(&app.authorize_params(&Pkce::new())).await);
    assert!(
        next.starts_with(&app.provider.issuer),
        "expected the upstream login, got {next}"
    );
    // A wider scope was never approved: the page comes back.
    let mut wider = app.authorize_params(&Pkce::new());
    wider.retain(|(k, _)| *k != "scope");
    wider.push(("scope", "openid email profile".to_owned()));
    let next = location(&app.get_authorize(&wider).await);
    assert!(next.starts_with(&app.url("/oauth/consent")), "{next}");
}

#[tokio::test]
async fn a_trusted_client_skips_consent() {
    let app = spawn_app().await;
    let pkce = Pkce::new();
    let params = vec![
        ("client_id", WEB_CLIENT.to_owned()),
        ("redirect_uri", WEB_REDIRECT.to_owned()),
        ("response_type", "code".to_owned()),
        ("code_challenge", pkce.challenge.clone()),
        ("code_challenge_method", "S256".to_owned()),
    ];
    let next = location(&app.get_authorize(&params).await);
    assert!(next.starts_with(&app.provider.issuer), "{next}");
}

/// Signs the public client in with `scope`: the consent page's HTML, the access token's claims
/// and the token response.
async fn consent_and_tokens(
    app: &TestApp,
    scope: &str,
) -> (String, serde_json::Value, serde_json::Value) {
    let pkce = Pkce::new();
    let mut params = app.authorize_params(&pkce);
    params.retain(|(k, _)| *k != "scope");
    params.push(("scope", scope.to_owned()));
    let page = location(&app.get_authorize(&params).await);
    let (html, token) = app.consent_page(&page).await;
    let to_upstream = location(&app.post_consent(&token, "allow").await);
    let to_callback = location(&app.browser.get(&to_upstream).send().await.unwrap());
    let back = location(&app.browser.get(&to_callback).send().await.unwrap());
    let code = query_of(&back)["code"].clone();
    let response = app.redeem_code(&code, &pkce).await;
    assert_eq!(response.status(), StatusCode::OK);
    let tokens: serde_json::Value = response.json().await.unwrap();
    let claims = jwt_payload(tokens["access_token"].as_str().unwrap());
    (html, claims, tokens)
}

async fn consent_and_token_claims(app: &TestApp, scope: &str) -> (String, serde_json::Value) {
    let (html, claims, _) = consent_and_tokens(app, scope).await;
    (html, claims)
}

#[tokio::test]
async fn access_tokens_carry_only_the_identity_the_consent_page_listed() {
    let app = spawn_app().await;
    let (html, claims) = consent_and_token_claims(&app, "offline_access").await;
    assert!(claims.get("email").is_none(), "{claims}");
    assert!(claims.get("name").is_none(), "{claims}");
    assert!(!html.contains("your email address"), "{html}");
    assert!(!html.contains("your name"), "{html}");
    // Groups are released to every token by default (oauth.access_token_claims), and said so.
    assert_eq!(
        claims["groups"],
        serde_json::json!(["mcp-users", "analysts"])
    );
    assert!(html.contains("the groups you belong to"), "{html}");
    assert!(html.contains("your user ID"), "{html}");

    let (html, claims) = consent_and_token_claims(&app, "openid email profile").await;
    assert_eq!(claims["email"], "ada@corp.example");
    assert_eq!(claims["name"], "Ada Lovelace");
    assert!(
        html.contains("your email address") && html.contains("your name"),
        "{html}"
    );

    let strict = spawn_app_with(Options {
        configure: configure(|config| config.oauth.access_token_claims = Vec::new()),
        ..Options::default()
    })
    .await;
    let (html, claims) = consent_and_token_claims(&strict, "offline_access").await;
    assert!(claims.get("groups").is_none(), "{claims}");
    assert!(!html.contains("the groups you belong to"), "{html}");
}

#[tokio::test]
async fn the_consent_page_shows_where_the_user_is_sent_back_to() {
    let app = spawn_app().await;
    let (html, _) = app.consent_page(&consent_url(&app).await).await;
    assert!(
        html.contains("<strong class=\"host\">127.0.0.1:33418</strong>"),
        "{html}"
    );
}

#[tokio::test]
async fn introspecting_a_refresh_token_says_no_more_of_the_user_than_its_access_tokens() {
    const RESOURCE_SERVER: &str = "resource-server-introspection-token-0123456789";
    let app = spawn_app_with(Options {
        configure: configure(|config| {
            config.oauth.introspection_tokens = vec![SecretString::new(RESOURCE_SERVER)];
        }),
        ..Options::default()
    })
    .await;
    let introspect = |token: String| {
        app.api
            .post(app.url("/oauth/introspect"))
            .bearer_auth(RESOURCE_SERVER)
            .form(&[("token", token)])
            .send()
    };
    let (_, _, tokens) = consent_and_tokens(&app, "offline_access").await;
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let answer: serde_json::Value = introspect(refresh).await.unwrap().json().await.unwrap();
    assert_eq!(answer["active"], true);
    assert!(answer.get("username").is_none(), "{answer}");
    let (_, _, tokens) = consent_and_tokens(&app, "openid email offline_access").await;
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let answer: serde_json::Value = introspect(refresh).await.unwrap().json().await.unwrap();
    assert_eq!(answer["username"], "ada@corp.example");
}

#[tokio::test]
async fn a_step_up_asks_only_for_what_is_new_and_the_token_keeps_what_was_granted() {
    let app = spawn_app().await;
    let (html, _, first) = consent_and_tokens(&app, "openid email").await;
    assert!(html.contains("<p>It asks for:</p>"), "{html}");
    assert_eq!(first["scope"], "openid email");
    // The client comes back for one more scope only, as clients that replace their scopes on
    // a step-up do: the page asks for that one, and says what stays.
    let (html, claims, tokens) = consent_and_tokens(&app, "profile").await;
    assert!(
        html.contains(
            "Beyond what you allowed before, it now asks for:</p><ul class=\"asks\"><li><span class=\"what\">See your name</span> <small class=\"fine\"><code>profile</code></small></li></ul>"
        ),
        "{html}"
    );
    let approved = html
        .split("<ul class=\"approved\">")
        .nth(1)
        .and_then(|rest| rest.split("</ul>").next())
        .unwrap_or_else(|| panic!("{html}"));
    assert!(approved.contains("<code>email</code>"), "{html}");
    assert!(
        html.contains("your email address") && html.contains("your name"),
        "the page lists what the tokens will tell: {html}"
    );
    // The token carries the union, except openid, which only the request may ask for.
    assert_eq!(tokens["scope"], "profile email");
    assert_eq!(claims["scope"], "profile email");
    assert_eq!(claims["email"], "ada@corp.example");
    assert_eq!(claims["name"], "Ada Lovelace");
    assert!(tokens.get("id_token").is_none(), "{tokens}");
    // Everything is approved now: the next request for any of it goes straight to sign-in.
    let mut params = app.authorize_params(&Pkce::new());
    params.retain(|(k, _)| *k != "scope");
    params.push(("scope", "email profile".to_owned()));
    let next = location(&app.get_authorize(&params).await);
    assert!(next.starts_with(&app.provider.issuer), "{next}");
}
