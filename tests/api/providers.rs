//! Several identity providers (`oauth.upstreams`): two real OIDC providers over loopback, each
//! with its own callback; `login_hint`'s domain picks one, else the user chooses; the same `sub`
//! at each is two users; a provider's logout, re-validation and metrics are its own.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::oidc_provider::TestProvider;

/// `corp` (the app's own provider, for `corp.example`) and `partner` (returned), both under
/// `oauth.upstreams`; `change` adjusts them after.
async fn two_providers_with(
    change: impl FnOnce(&mut Vec<mcp_oauth_bridge::config::UpstreamConfig>) + Send + 'static,
) -> (TestApp, TestProvider) {
    two_providers_configured(change, |_| {}).await
}

/// As `two_providers_with`, the rest of the configuration then changed by `rest`.
pub async fn two_providers_configured(
    change: impl FnOnce(&mut Vec<mcp_oauth_bridge::config::UpstreamConfig>) + Send + 'static,
    rest: impl FnOnce(&mut mcp_oauth_bridge::config::Config) + Send + 'static,
) -> (TestApp, TestProvider) {
    let partner = TestProvider::start().await;
    let partner_issuer = partner.issuer.clone();
    let app = spawn_app_with(Options {
        configure: configure(move |config| {
            config.metrics.enabled = true;
            let mut corp = config.oauth.upstream.take().unwrap();
            corp.name = Some("corp".into());
            corp.display_name = Some("Corp staff".into());
            corp.email_domains = strings(["corp.example"]);
            let mut other = config_of(&corp);
            other.name = Some("partner".into());
            other.display_name = Some("Partner Inc.".into());
            other.email_domains = strings(["partner.example"]);
            other.issuer = partner_issuer;
            let mut providers = vec![corp, other];
            change(&mut providers);
            config.oauth.upstreams = providers;
            rest(config);
        }),
        ..Options::default()
    })
    .await;
    (app, partner)
}

async fn two_providers() -> (TestApp, TestProvider) {
    two_providers_with(|_| {}).await
}

/// A copy of a provider's section (the type is not `Clone`: it holds a secret).
fn config_of(
    upstream: &mcp_oauth_bridge::config::UpstreamConfig,
) -> mcp_oauth_bridge::config::UpstreamConfig {
    let yaml = format!(
        "issuer: \"{}\"\nclient_id: {}\nclient_secret: \"{}\"\ntimeout: 2s\nclaims:\n  groups: realm_access.roles\n",
        upstream.issuer,
        upstream.client_id,
        crate::oidc_provider::CLIENT_SECRET,
    );
    serde_yaml::from_str(&yaml).unwrap()
}

/// Follows the browser from `start` (a provider's login URL) through the provider to our
/// callback, which must be `callback`; where the bridge then sends the browser.
async fn through_provider(app: &TestApp, start: &str, callback: &str) -> reqwest::Response {
    let at_provider = app.browser.get(start).send().await.unwrap();
    let back = location(&at_provider);
    assert!(back.starts_with(&app.url(callback)), "{back}");
    app.browser.get(&back).send().await.unwrap()
}

/// Our code in the client's redirect, redeemed: the token response.
async fn redeemed(app: &TestApp, to_client: &reqwest::Response, pkce: &Pkce) -> Value {
    let back = location(to_client);
    assert!(back.starts_with(PUBLIC_REDIRECT), "{back}");
    let response = app
        .redeem_code(query_of(&back).get("code").expect(&back), pkce)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// The chooser page at `url`: its HTML, the state and the anti-forgery token of its form.
async fn chooser(app: &TestApp, url: &str) -> (String, String, String) {
    let response = app.browser.get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(response.headers()["cache-control"], "no-store");
    let html = response.text().await.unwrap();
    let field = |name: &str| crate::local_login::hidden(&html, name);
    let (state, csrf) = (field("state"), field("csrf"));
    (html, state, csrf)
}

async fn choose(app: &TestApp, state: &str, csrf: &str, provider: &str) -> reqwest::Response {
    app.browser
        .post(app.url("/oauth/choose"))
        .form(&[("state", state), ("csrf", csrf), ("provider", provider)])
        .send()
        .await
        .unwrap()
}

fn hinted(app: &TestApp, pkce: &Pkce, login_hint: &str) -> Vec<(&'static str, String)> {
    let mut params = app.authorize_params(pkce);
    params.push(("login_hint", login_hint.to_owned()));
    params
}

/// Signs in at `corp` (by `login_hint`): the token response.
async fn corp_tokens(app: &TestApp) -> Value {
    tokens_as_another_user(app, |app, pkce| async move {
        let start = app
            .authorize_to_upstream(&hinted(app, &pkce, "ada@corp.example"))
            .await;
        assert!(start.starts_with(&app.provider.issuer), "{start}");
        through_provider(app, &start, "/oauth/callback/corp").await
    })
    .await
}

/// Signs in at `partner`, chosen on the chooser page: the token response.
async fn partner_tokens(app: &TestApp, partner: &TestProvider) -> Value {
    let issuer = partner.issuer.as_str();
    tokens_as_another_user(app, move |app, pkce| async move {
        let page = app
            .authorize_to_upstream(&app.authorize_params(&pkce))
            .await;
        assert!(page.starts_with(&app.url("/oauth/choose?state=")), "{page}");
        let (_, state, csrf) = chooser(app, &page).await;
        let start = location(&choose(app, &state, &csrf, "partner").await);
        assert!(start.starts_with(issuer), "{start}");
        through_provider(app, &start, "/oauth/callback/partner").await
    })
    .await
}

/// Runs the sign-in `flow` (its PKCE given) and redeems the code. When the browser remembers
/// another user's approval of the client, the first attempt is refused and forgets it; the
/// second shows the consent page, approved.
async fn tokens_as_another_user<'a, F, Fut>(app: &'a TestApp, flow: F) -> Value
where
    F: Fn(&'a TestApp, Pkce) -> Fut,
    Fut: std::future::Future<Output = reqwest::Response>,
{
    let pkce = Pkce::new();
    let to_client = flow(app, pkce.clone()).await;
    if query_of(&location(&to_client))
        .get("error")
        .map(String::as_str)
        != Some("access_denied")
    {
        return redeemed(app, &to_client, &pkce).await;
    }
    let pkce = Pkce::new();
    let to_client = flow(app, pkce.clone()).await;
    redeemed(app, &to_client, &pkce).await
}

fn subject(tokens: &Value) -> String {
    jwt_payload(tokens["access_token"].as_str().unwrap())["sub"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_hint_routes_by_domain_else_the_user_chooses_and_each_provider_has_its_own_users() {
    let (app, partner) = two_providers().await;
    // The hint goes to corp, and corp is told it.
    let pkce = Pkce::new();
    let start = app
        .authorize_to_upstream(&hinted(&app, &pkce, "Ada@CORP.example"))
        .await;
    assert!(start.starts_with(&app.provider.issuer), "{start}");
    assert_eq!(query_of(&start)["login_hint"], "Ada@CORP.example");
    assert_eq!(
        query_of(&start)["redirect_uri"],
        app.url("/oauth/callback/corp")
    );
    let corp = redeemed(
        &app,
        &through_provider(&app, &start, "/oauth/callback/corp").await,
        &pkce,
    )
    .await;

    // No hint (or one of a domain nobody serves): the chooser lists both, in order.
    let pkce = Pkce::new();
    let page = app
        .authorize_to_upstream(&hinted(&app, &pkce, "ada@elsewhere.example"))
        .await;
    let (html, state, csrf) = chooser(&app, &page).await;
    let corp_at = html.find("Corp staff").expect("corp listed");
    let partner_at = html.find("Partner Inc.").expect("partner listed");
    assert!(corp_at < partner_at);
    assert!(!html.contains(&partner.issuer), "the page names no issuer");

    // A forged form, and a name not offered, change nothing.
    let forged = choose(&app, &state, "forged", "partner").await;
    assert_eq!(forged.status(), StatusCode::BAD_REQUEST);
    let unknown = choose(&app, &state, &csrf, "../corp").await;
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    let start = location(&choose(&app, &state, &csrf, "partner").await);
    assert!(start.starts_with(&partner.issuer), "{start}");
    // The hint named no provider: the one chosen instead is not told the address.
    assert!(!query_of(&start).contains_key("login_hint"), "{start}");
    assert_ne!(
        query_of(&start)["state"],
        state,
        "a new state for the provider"
    );
    // The choice is spent.
    assert_eq!(
        choose(&app, &state, &csrf, "corp").await.status(),
        StatusCode::BAD_REQUEST
    );
    // This browser remembers corp's user approving the client; the partner's user has not:
    // refused once, and the remembered approval forgotten, so starting again asks them.
    let refused = through_provider(&app, &start, "/oauth/callback/partner").await;
    let forgets = refused
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|cookie| {
            let cookie = cookie.to_str().unwrap();
            cookie.starts_with("mob_remember_") && cookie.contains("Max-Age=0")
        });
    assert!(forgets, "{:?}", refused.headers());
    let back = location(&refused);
    assert_eq!(query_of(&back)["error"], "access_denied", "{back}");
    assert!(query_of(&back)["error_description"].contains("not approved"));
    let pkce = Pkce::new();
    let consent = location(&app.get_authorize(&app.authorize_params(&pkce)).await);
    assert!(consent.starts_with(&app.url("/oauth/consent")), "{consent}");
    let (_, token) = app.consent_page(&consent).await;
    let page = location(&app.post_consent(&token, "allow").await);
    let (_, state, csrf) = chooser(&app, &page).await;
    let start = location(&choose(&app, &state, &csrf, "partner").await);
    let partner_grant = redeemed(
        &app,
        &through_provider(&app, &start, "/oauth/callback/partner").await,
        &pkce,
    )
    .await;

    // Both providers call their user `upstream-user-42`: two users here.
    assert_eq!(subject(&corp), "corp|upstream-user-42");
    assert_eq!(subject(&partner_grant), "partner|upstream-user-42");
    let userinfo: Value = app
        .api
        .get(app.url("/oauth/userinfo"))
        .bearer_auth(partner_grant["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(userinfo["sub"], "partner|upstream-user-42");

    let metrics = crate::metrics::scrape(&app).await;
    for line in [
        "mcp_oauth_bridge_sign_ins_total{outcome=\"success\",provider=\"corp\"} 1",
        "mcp_oauth_bridge_sign_ins_total{outcome=\"success\",provider=\"partner\"} 1",
        "mcp_oauth_bridge_upstream_discovered{provider=\"corp\"} 1",
        "mcp_oauth_bridge_upstream_discovered{provider=\"partner\"} 1",
        // Two code exchanges at the partner: the refused sign-in's and the one that went through.
        "mcp_oauth_bridge_upstream_request_duration_seconds_count{endpoint=\"token\",provider=\"partner\"} 2",
        "mcp_oauth_bridge_sign_ins_total{outcome=\"denied\",provider=\"partner\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
}

#[tokio::test]
async fn a_providers_answer_at_another_providers_callback_is_refused() {
    let (app, partner) = two_providers().await;
    let pkce = Pkce::new();
    let page = app
        .authorize_to_upstream(&app.authorize_params(&pkce))
        .await;
    let (_, state, csrf) = chooser(&app, &page).await;
    let start = location(&choose(&app, &state, &csrf, "partner").await);
    let at_partner = app.browser.get(&start).send().await.unwrap();
    let back = location(&at_partner);
    // The partner's code, delivered to corp's callback (a mix-up): the client hears no code.
    let mixed_up = back.replace("/oauth/callback/partner", "/oauth/callback/corp");
    let to_client = location(&app.browser.get(&mixed_up).send().await.unwrap());
    let query = query_of(&to_client);
    assert!(to_client.starts_with(PUBLIC_REDIRECT), "{to_client}");
    assert_eq!(query["error"], "access_denied");
    assert!(!query.contains_key("code"));
    assert_eq!(
        *partner.state.token_requests.lock().unwrap(),
        0,
        "the code was never redeemed"
    );
    // The sign-in was spent by that answer: the right callback cannot use it now.
    let late = app.browser.get(&back).send().await.unwrap();
    assert_eq!(late.status(), StatusCode::BAD_REQUEST);
    // A callback segment that is no UTF-8 gets our error page.
    let garbled = app
        .browser
        .get(app.url("/oauth/callback/%FF%FE?state=x&code=y"))
        .send()
        .await
        .unwrap();
    assert_eq!(garbled.status(), StatusCode::BAD_REQUEST);
    let body = garbled.text().await.unwrap();
    assert!(body.contains("this is no identity provider"), "{body}");
    // The single provider's callback is no way in either.
    let none = back.replace("/oauth/callback/partner", "/oauth/callback");
    assert_eq!(
        app.browser.get(&none).send().await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn a_providers_logout_ends_its_own_sessions_not_the_same_sub_at_another() {
    let (app, partner) = two_providers().await;
    let corp = corp_tokens(&app).await;
    let partner_grant = partner_tokens(&app, &partner).await;
    // Same sub and sid at both providers; the partner ends its session.
    let token = partner.sign_logout_token(&partner.logout_claims(Some("upstream-session-1")));
    let response = app
        .api
        .post(app.url("/oauth/backchannel-logout"))
        .form(&[("logout_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let active = |tokens: &Value| {
        let token = tokens["access_token"].as_str().unwrap().to_owned();
        let app = &app;
        async move { app.introspect_as_web_client(&token).await["active"] == true }
    };
    assert!(!active(&partner_grant).await, "the partner's session ended");
    assert!(active(&corp).await, "corp's user is someone else");
    assert_eq!(
        app.refresh(corp["refresh_token"].as_str().unwrap())
            .await
            .status(),
        StatusCode::OK
    );
    // A token from neither provider is refused, naming why.
    let mut foreign = partner.logout_claims(None);
    foreign["iss"] = json!("http://127.0.0.1:9/realms/nobody");
    let response = app
        .api
        .post(app.url("/oauth/backchannel-logout"))
        .form(&[("logout_token", partner.sign_logout_token(&foreign))])
        .send()
        .await
        .unwrap();
    let body = oauth_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("not from a configured identity provider"),
        "{body}"
    );
}

#[tokio::test]
async fn each_provider_revalidates_its_own_grants_as_configured() {
    let (app, partner) = two_providers_with(|providers| {
        providers[1].revalidate_on_refresh = true;
    })
    .await;
    let corp = corp_tokens(&app).await;
    let partner_grant = partner_tokens(&app, &partner).await;
    let refreshed = app
        .refresh(partner_grant["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    assert_eq!(partner.refresh_requests(), 1);
    let corp_refreshed = app.refresh(corp["refresh_token"].as_str().unwrap()).await;
    assert_eq!(corp_refreshed.status(), StatusCode::OK);
    assert_eq!(app.provider.refresh_requests(), 0, "corp is not asked");
    // The partner ends its user's sessions: the partner's grant goes, corp's stays.
    partner.end_sessions();
    app.provider.end_sessions();
    let partner_latest: Value = refreshed.json().await.unwrap();
    let body = oauth_error(
        app.refresh(partner_latest["refresh_token"].as_str().unwrap())
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert_eq!(
        body["error_description"],
        "the identity provider ended this session"
    );
    let corp_latest: Value = corp_refreshed.json().await.unwrap();
    assert_eq!(
        app.refresh(corp_latest["refresh_token"].as_str().unwrap())
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn one_provider_down_leaves_the_bridge_ready_for_the_other() {
    let (app, _partner) = two_providers_with(|providers| {
        // Nothing listens there: discovery keeps failing.
        providers[1].issuer = "http://127.0.0.1:9/realms/down".into();
    })
    .await;
    let response = app.api.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["providers"]["corp"], "discovered");
    assert_eq!(body["providers"]["partner"], "not discovered");
    // Corp's users sign in as ever; choosing the partner tells the client it is unavailable.
    assert_eq!(subject(&corp_tokens(&app).await), "corp|upstream-user-42");
    let pkce = Pkce::new();
    let page = app
        .authorize_to_upstream(&app.authorize_params(&pkce))
        .await;
    let (_, state, csrf) = chooser(&app, &page).await;
    let to_client = location(&choose(&app, &state, &csrf, "partner").await);
    assert!(to_client.starts_with(PUBLIC_REDIRECT), "{to_client}");
    assert_eq!(query_of(&to_client)["error"], "temporarily_unavailable");
}

/// With `keep_tokens` at corp alone, a token exchange hands on the provider's token of the user's
/// own provider: by `upstream`, or by that provider's name, never another's.
#[tokio::test]
async fn an_exchange_hands_on_the_token_of_the_users_own_provider_only() {
    use crate::token_exchange::{
        add_exchanging_server, exchange, form, providers_userinfo, refused_upstream,
    };
    let partner = TestProvider::start().await;
    let partner_issuer = partner.issuer.clone();
    let app = spawn_app_with(Options {
        configure: configure(move |config| {
            let mut corp = config.oauth.upstream.take().unwrap();
            corp.name = Some("corp".into());
            corp.email_domains = strings(["corp.example"]);
            corp.keep_tokens = true;
            let mut other = config_of(&corp);
            other.name = Some("partner".into());
            other.issuer = partner_issuer;
            config.oauth.upstreams = vec![corp, other];
            add_exchanging_server(config);
            config.oauth.resources = strings([RESOURCE]);
            config.oauth.token_exchange = serde_json::from_value(json!({
                "rules": [{"client": crate::token_exchange::SERVER, "audiences": ["upstream"],
                           "subject_audiences": [RESOURCE]}]
            }))
            .unwrap();
        }),
        ..Options::default()
    })
    .await;
    let corp = corp_tokens(&app).await;
    let corp_token = corp["access_token"].as_str().unwrap();
    for audience in ["upstream", "corp"] {
        let response = exchange(&app, &form(corp_token, &[("audience", audience)])).await;
        assert_eq!(response.status(), StatusCode::OK, "{audience}");
        let body: Value = response.json().await.unwrap();
        let token = body["access_token"].as_str().unwrap();
        assert_eq!(
            providers_userinfo(&app, token).await.status(),
            StatusCode::OK,
            "corp's own token"
        );
    }
    let body = oauth_error(
        exchange(&app, &form(corp_token, &[("audience", "partner")])).await,
        StatusCode::BAD_REQUEST,
        "invalid_target",
    )
    .await;
    assert_eq!(
        body["error_description"],
        "the user signed in at another identity provider than the one named"
    );

    // The partner keeps no tokens: its users' grants have none to hand on.
    let partner_user = partner_tokens(&app, &partner).await;
    refused_upstream(
        &app,
        partner_user["access_token"].as_str().unwrap(),
        "the tokens of the user's identity provider are not kept (upstream.keep_tokens)",
    )
    .await;
}
