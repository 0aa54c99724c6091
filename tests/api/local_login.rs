//! Local users (`oauth.local_users`): the login form plays the upstream provider's part.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_oauth_bridge::clock::FixedClock;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

pub const DEMO_PASSWORD: &str = "correct horse battery staple";

/// `local_users` with one user whose hash is made here (cost 4: tests stay fast), and a
/// throttle of three failures per user in a ten-minute window, slowing by 50 ms per failure.
pub fn local_users(config: &mut Config) {
    let hash = bcrypt::hash(DEMO_PASSWORD, 4).unwrap();
    config.oauth.upstream = None;
    config.oauth.local_users = vec![LocalUserConfig {
        username: "demo".into(),
        password_hash: SecretString::new(hash),
        subject: None,
        email: Some("demo@example.com".into()),
        name: Some("Demo User".into()),
        groups: strings(["mcp-users"]),
    }];
    config.oauth.login_throttle = ThrottleSettings {
        max_failures_per_user: 3,
        max_failures_per_address: 10,
        window: Duration::from_secs(600),
        slowdown: Duration::from_millis(50),
    };
}

pub async fn spawn_local(clock: Option<Arc<FixedClock>>) -> TestApp {
    spawn_app_with(Options {
        configure: configure(local_users),
        clock: clock.map(|c| c as mcp_oauth_bridge::clock::SharedClock),
        ..Options::default()
    })
    .await
}

/// The login form the authorization sends the browser to: its URL and the two hidden fields.
struct LoginForm {
    state: String,
    csrf: String,
    /// The browser's binding cookie for this sign-in, `name=value`.
    cookie: String,
}

pub(crate) fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("{name} in {html}"))
        + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

async fn open_login_form(app: &TestApp, pkce: &Pkce) -> LoginForm {
    let to_login = app.authorize_to_upstream(&app.authorize_params(pkce)).await;
    assert!(
        to_login.starts_with(&app.url("/oauth/login?state=")),
        "{to_login}"
    );
    let cookie = app
        .browser_cookies(&to_login)
        .into_iter()
        .find(|c| c.starts_with("mob_login_"))
        .expect("the authorization set the binding cookie");
    let page = app.browser.get(&to_login).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(html.contains("type=\"password\""), "{html}");
    LoginForm {
        state: hidden(&html, "state"),
        csrf: hidden(&html, "csrf"),
        cookie,
    }
}

async fn submit(
    app: &TestApp,
    form: &LoginForm,
    username: &str,
    password: &str,
) -> reqwest::Response {
    submit_via(app, form, None, username, password).await
}

/// Submits the form, through a proxy that says the browser is at `address` when one is given.
async fn submit_via(
    app: &TestApp,
    form: &LoginForm,
    address: Option<&str>,
    username: &str,
    password: &str,
) -> reqwest::Response {
    let mut request = app.browser.post(app.url("/oauth/login"));
    if let Some(address) = address {
        request = request.header("x-forwarded-for", address);
    }
    request
        .form(&[
            ("state", form.state.as_str()),
            ("csrf", form.csrf.as_str()),
            ("username", username),
            ("password", password),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_local_user_signs_in_through_consent_and_the_form_and_gets_tokens_that_refresh() {
    let app = spawn_local(None).await;
    let pkce = Pkce::new();
    let first = location(&app.get_authorize(&app.authorize_params(&pkce)).await);
    assert!(
        first.starts_with(&app.url("/oauth/consent")),
        "a client without skip_consent asks first: {first}"
    );
    let form = open_login_form(&app, &pkce).await;
    let back = location(&submit(&app, &form, "Demo", DEMO_PASSWORD).await);
    let query = query_of(&back);
    assert!(back.starts_with(PUBLIC_REDIRECT), "{back}");
    assert_eq!(query["state"], "client-state-1");
    assert_eq!(query["iss"], app.issuer);

    let response = app.redeem_code(&query["code"], &pkce).await;
    assert_eq!(response.status(), StatusCode::OK);
    let tokens: Value = response.json().await.unwrap();
    let claims = jwt_payload(tokens["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], "demo");
    assert_eq!(claims["email"], "demo@example.com");
    // Granted `openid email` only: the name would need `profile`.
    assert!(claims.get("name").is_none(), "{claims}");
    assert_eq!(claims["groups"], serde_json::json!(["mcp-users"]));
    assert_eq!(claims["aud"], RESOURCE);

    let refreshed = app.refresh(tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refreshed.status(), StatusCode::OK);

    // The approval is remembered: the next authorization goes straight to the form.
    let again = location(&app.get_authorize(&app.authorize_params(&Pkce::new())).await);
    assert!(
        again.starts_with(&app.url("/oauth/login?state=")),
        "{again}"
    );
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_answer_and_the_form_stays_usable() {
    let app = spawn_local(None).await;
    let pkce = Pkce::new();
    let form = open_login_form(&app, &pkce).await;
    let mut pages = Vec::new();
    for (username, password) in [("demo", "wrong"), ("nobody", DEMO_PASSWORD)] {
        let response = submit(&app, &form, username, password).await;
        assert_eq!(response.status(), StatusCode::OK);
        let html = response.text().await.unwrap();
        assert!(html.contains("Wrong username or password."), "{html}");
        assert!(
            !html.contains(username),
            "the page does not repeat the username"
        );
        pages.push(html.replace(&hidden(&html, "csrf"), ""));
    }
    assert_eq!(
        pages[0], pages[1],
        "nothing tells a wrong password from an unknown user"
    );
    let back = location(&submit(&app, &form, "demo", DEMO_PASSWORD).await);
    assert!(query_of(&back).contains_key("code"), "{back}");
}

async fn post_login(
    client: &reqwest::Client,
    app: &TestApp,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    client
        .post(app.url("/oauth/login"))
        .form(fields)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_form_without_its_own_anti_forgery_token_or_from_another_browser_is_refused() {
    let app = spawn_local(None).await;
    let form = open_login_form(&app, &Pkce::new()).await;
    let other = open_login_form(&app, &Pkce::new()).await;
    let mut tampered = form.csrf.clone();
    tampered.pop();
    tampered.push(if form.csrf.ends_with('A') { 'B' } else { 'A' });
    for (what, csrf) in [
        ("missing", None),
        ("another sign-in's", Some(other.csrf.as_str())),
        ("tampered", Some(tampered.as_str())),
    ] {
        let mut fields = vec![
            ("state", form.state.as_str()),
            ("username", "demo"),
            ("password", DEMO_PASSWORD),
        ];
        fields.extend(csrf.map(|token| ("csrf", token)));
        let refused = post_login(&app.browser, &app, &fields).await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{what}");
        let html = refused.text().await.unwrap();
        assert!(
            html.contains("did not come from this service"),
            "{what}: {html}"
        );
    }

    // Another browser (no binding cookie) with a copied form gets nowhere either.
    let stranger = post_login(
        &app.api,
        &app,
        &[
            ("state", form.state.as_str()),
            ("csrf", form.csrf.as_str()),
            ("username", "demo"),
            ("password", DEMO_PASSWORD),
        ],
    )
    .await;
    assert_eq!(stranger.status(), StatusCode::BAD_REQUEST);

    // None of them consumed the sign-in: the user can still complete it.
    let back = location(&submit(&app, &form, "demo", DEMO_PASSWORD).await);
    assert!(query_of(&back).contains_key("code"));
}

#[tokio::test]
async fn cancelling_at_the_form_sends_the_client_access_denied() {
    let app = spawn_local(None).await;
    let form = open_login_form(&app, &Pkce::new()).await;
    let cancelled = post_login(
        &app.browser,
        &app,
        &[
            ("state", form.state.as_str()),
            ("csrf", form.csrf.as_str()),
            ("cancel", "1"),
        ],
    )
    .await;
    let cleared = cancelled.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let back = location(&cancelled);
    let query = query_of(&back);
    assert!(back.starts_with(PUBLIC_REDIRECT), "{back}");
    assert_eq!(query["error"], "access_denied");
    assert_eq!(query["state"], "client-state-1");
    assert_eq!(query["iss"], app.issuer);
    assert!(!query.contains_key("code"));
}

#[tokio::test]
async fn a_replayed_login_form_is_refused_after_it_succeeded() {
    let app = spawn_local(None).await;
    let form = open_login_form(&app, &Pkce::new()).await;
    let first = submit(&app, &form, "demo", DEMO_PASSWORD).await;
    assert!(query_of(&location(&first)).contains_key("code"));
    let replay = submit(&app, &form, "demo", DEMO_PASSWORD).await;
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
    // The success cleared the browser's binding cookie, so the replay fails the anti-forgery
    // check; with the cookie put back it would find the sign-in spent.
    let html = replay.text().await.unwrap();
    assert!(html.contains("did not come from this service"), "{html}");
    let replay_with_cookie = app
        .browser
        .post(app.url("/oauth/login"))
        .header("cookie", &form.cookie)
        .form(&[
            ("state", form.state.as_str()),
            ("csrf", form.csrf.as_str()),
            ("username", "demo"),
            ("password", DEMO_PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(replay_with_cookie.status(), StatusCode::BAD_REQUEST);
    let html = replay_with_cookie.text().await.unwrap();
    assert!(html.contains("expired or was already completed"), "{html}");
}

#[tokio::test]
async fn the_throttle_slows_then_refuses_guessing_and_releases_after_its_window() {
    let clock = Arc::new(FixedClock::at(1_800_000_000));
    let app = spawn_local(Some(Arc::clone(&clock))).await;
    let form = open_login_form(&app, &Pkce::new()).await;

    let mut answers = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let response = submit(&app, &form, "demo", "guess").await;
        assert_eq!(response.status(), StatusCode::OK);
        answers.push(started.elapsed());
    }
    // 0, 50 and 100 ms of slowdown before the bcrypt.
    assert!(answers[2] >= Duration::from_millis(100), "{answers:?}");
    assert!(answers[2] > answers[0], "{answers:?}");

    let refused = submit(&app, &form, "demo", DEMO_PASSWORD).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["retry-after"], "600");
    let html = refused.text().await.unwrap();
    assert!(
        html.contains("Too many failed attempts. Try again in 10 minutes."),
        "{html}"
    );

    clock.advance(Duration::from_secs(599));
    let still = submit(&app, &form, "demo", DEMO_PASSWORD).await;
    assert_eq!(still.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(still.headers()["retry-after"], "1");

    clock.advance(Duration::from_secs(1));
    // The window outlived this sign-in (ten minutes too): a new one goes through.
    let expired = submit(&app, &form, "demo", DEMO_PASSWORD).await;
    assert_eq!(expired.status(), StatusCode::BAD_REQUEST);
    let form = open_login_form(&app, &Pkce::new()).await;
    let back = location(&submit(&app, &form, "demo", DEMO_PASSWORD).await);
    assert!(query_of(&back).contains_key("code"), "{back}");
}

#[tokio::test]
async fn the_callback_and_the_form_refuse_what_belongs_to_the_other_way_of_signing_in() {
    let local = spawn_local(None).await;
    let callback = local
        .browser
        .get(local.url("/oauth/callback?state=x&code=y"))
        .send()
        .await
        .unwrap();
    assert_eq!(callback.status(), StatusCode::BAD_REQUEST);
    assert!(
        callback
            .text()
            .await
            .unwrap()
            .contains("no upstream identity provider")
    );

    let upstream = spawn_app().await;
    let form = upstream
        .browser
        .get(upstream.url("/oauth/login?state=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::BAD_REQUEST);
    assert!(
        form.text()
            .await
            .unwrap()
            .contains("sign in at its identity provider")
    );
}

/// README's quick start: `config.local.yaml` runs with no environment, and its demo user signs
/// in with the password the README prints.
#[tokio::test]
async fn the_repositorys_local_configuration_lets_the_readme_demo_user_in() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.local.yaml");
    let config = mcp_oauth_bridge::config::Config::load(&path).unwrap();
    assert!(config.oauth.upstream.is_none());
    assert!(config.oauth.dcr.enabled);
    assert!(
        config
            .oauth
            .dcr
            .allowed_redirect_profiles
            .contains(&"loopback".to_owned())
    );
    let users = config.oauth.local_users.clone();
    let users = tokio::task::spawn_blocking(move || {
        mcp_oauth_bridge::local_users::LocalUsers::from_config(&users)
    })
    .await
    .unwrap()
    .unwrap();
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    assert!(readme.contains("mcp-demo-password"));
    let identity = users
        .authenticate(
            "demo",
            &mcp_oauth_bridge::secret::SecretString::new("mcp-demo-password"),
        )
        .await
        .expect("the README's password is the demo user's");
    assert_eq!(identity.subject, "demo");
}

#[tokio::test]
async fn nobody_can_lock_a_user_out_from_another_address() {
    let app = spawn_app_with(Options {
        configure: configure(|config| {
            local_users(config);
            trust_proxies(config, &["127.0.0.1/32"]);
        }),
        ..Options::default()
    })
    .await;
    let form = open_login_form(&app, &Pkce::new()).await;
    // The attacker guesses from one address, in every case and spacing, until refused.
    for guess in ["demo", "DEMO", " Demo "] {
        let response = submit_via(&app, &form, Some("203.0.113.66"), guess, "guess").await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let refused = submit_via(&app, &form, Some("203.0.113.66"), "demo", DEMO_PASSWORD).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);

    // The user, from an address with no failures, still signs in: slowed, within bounds.
    let started = Instant::now();
    let signed_in = submit_via(&app, &form, Some("198.51.100.20"), "demo", DEMO_PASSWORD).await;
    let back = location(&signed_in);
    assert!(query_of(&back).contains_key("code"), "{back}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the slowdown is bounded: {:?}",
        started.elapsed()
    );
}
