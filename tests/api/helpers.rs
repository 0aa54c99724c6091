//! `spawn_app()`: the real server on 127.0.0.1:0 against the test provider, and a helper per step.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mcp_oauth_bridge::app;
use mcp_oauth_bridge::clock::{SharedClock, SystemClock};
use mcp_oauth_bridge::config::Config;
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};
use url::Url;

use crate::oidc_provider::{self, TestProvider};

pub const PUBLIC_CLIENT: &str = "mcp-cli";
pub const PUBLIC_REDIRECT: &str = "http://127.0.0.1:33418/callback";
pub const WEB_CLIENT: &str = "web-app";
pub const WEB_SECRET: &str = "web-app-secret-0123456789";
pub const WEB_REDIRECT: &str = "https://app.example.com/oauth/callback";
pub const RESOURCE: &str = "https://mcp.example.com/mcp";

pub struct TestApp {
    /// The issuer: `http://127.0.0.1:<port>[/base]`.
    pub issuer: String,
    /// Where this instance listens, with the base path: `url()` builds on it. The issuer's
    /// origin, unless this is a second instance behind another's name.
    pub local: String,
    /// Scheme, host and port only.
    pub origin: String,
    pub provider: TestProvider,
    /// The user's browser: redirects off, cookies kept (in `jar`).
    pub browser: reqwest::Client,
    pub jar: Arc<reqwest::cookie::Jar>,
    /// A client application making back-channel calls.
    pub api: reqwest::Client,
    /// The server task: done once it has shut down.
    pub server: tokio::task::JoinHandle<()>,
}

pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    pub fn new() -> Self {
        let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        Pkce {
            verifier,
            challenge,
        }
    }
}

#[derive(Default)]
pub struct Options {
    pub base_path: &'static str,
    pub extra_upstream: &'static str,
    /// YAML lines under `oauth:` (indented two spaces), e.g. a `dcr:` block.
    pub extra_oauth: String,
    /// More entries of `oauth.clients` (indented four spaces).
    pub extra_clients: String,
    /// A top-level `proxy:` section.
    pub proxy: String,
    pub provider: Option<TestProvider>,
    pub upstream_issuer: Option<String>,
    /// YAML under `oauth:` that replaces the `upstream:` block (`local_users:`, `login_throttle:`).
    pub local_users: Option<String>,
    /// The bridge's clock; the system clock when `None`.
    pub clock: Option<SharedClock>,
    /// The `storage:` section's YAML (indented two spaces); memory when empty.
    pub storage: String,
    /// Another instance's issuer, to run this one as a second instance behind the same name.
    pub public_url: Option<String>,
    /// More lines under `server:` (indented two spaces), e.g. `trusted_proxies`.
    pub server: String,
    /// Shuts the server down when it fires; it runs until the test ends otherwise.
    pub shutdown: Option<tokio::sync::oneshot::Receiver<()>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(options: Options) -> TestApp {
    let provider = match options.provider {
        Some(provider) => provider,
        None => TestProvider::start().await,
    };
    let upstream_issuer = options
        .upstream_issuer
        .unwrap_or_else(|| provider.issuer.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let local = format!("{origin}{}", options.base_path);
    let issuer = options.public_url.clone().unwrap_or_else(|| local.clone());
    let yaml = format!(
        r#"
server:
  address: "127.0.0.1:0"
  public_url: "{issuer}"
{server}
oauth:
  clients:
    - id: {PUBLIC_CLIENT}
      name: "MCP command line"
      redirect_uris: ["http://127.0.0.1/callback"]
    - id: {WEB_CLIENT}
      name: "Web app"
      skip_consent: true
      secret: "{WEB_SECRET}"
      redirect_uris: ["{WEB_REDIRECT}"]
{extra_clients}
{extra_oauth}
{sign_in}
storage:
{storage}
{proxy}
"#,
        server = options.server,
        extra_oauth = options.extra_oauth,
        extra_clients = options.extra_clients,
        proxy = options.proxy,
        storage = if options.storage.is_empty() {
            "  backend: memory".to_owned()
        } else {
            options.storage.clone()
        },
        sign_in = options.local_users.unwrap_or_else(|| format!(
            r#"  upstream:
    issuer: "{upstream_issuer}"
    client_id: {client_id}
    client_secret: "{client_secret}"
    timeout: 2s
    claims:
      groups: realm_access.roles
{extra}"#,
            client_id = oidc_provider::CLIENT_ID,
            client_secret = oidc_provider::CLIENT_SECRET,
            extra = options.extra_upstream,
        )),
    );
    let config = Config::from_yaml(&yaml, &|_| None).unwrap();
    let clock = options.clock.unwrap_or_else(|| Arc::new(SystemClock));
    let service = app::build(&config, clock).await.unwrap();
    let shutdown = options.shutdown;
    let server = tokio::spawn(async move {
        let stop = async move {
            match shutdown {
                Some(signal) => {
                    let _ = signal.await;
                }
                None => std::future::pending().await,
            }
        };
        app::serve(listener, service, stop).await.unwrap();
    });
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_provider(Arc::clone(&jar))
        .build()
        .unwrap();
    let api = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    TestApp {
        issuer,
        local,
        origin,
        provider,
        browser,
        jar,
        api,
        server,
    }
}

pub fn query_of(url: &str) -> HashMap<String, String> {
    Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

pub fn location(response: &reqwest::Response) -> String {
    let status = response.status();
    assert!(
        status == StatusCode::FOUND || status == StatusCode::SEE_OTHER,
        "expected a redirect from {}, got {status}",
        response.url()
    );
    response.headers()["location"].to_str().unwrap().to_owned()
}

impl TestApp {
    /// The cookies the browser would send to `url`, each as `name=value`.
    pub fn browser_cookies(&self, url: &str) -> Vec<String> {
        use reqwest::cookie::CookieStore;
        self.jar
            .cookies(&url.parse().unwrap())
            .map(|header| {
                header
                    .to_str()
                    .unwrap()
                    .split("; ")
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.local.trim_end_matches('/'))
    }

    /// GET a JSON document that must answer 200.
    pub async fn get_json(&self, url: &str) -> Value {
        let response = self.api.get(url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{url}");
        response.json().await.unwrap()
    }

    pub fn authorize_params(&self, pkce: &Pkce) -> Vec<(&'static str, String)> {
        vec![
            ("client_id", PUBLIC_CLIENT.to_owned()),
            ("redirect_uri", PUBLIC_REDIRECT.to_owned()),
            ("response_type", "code".to_owned()),
            ("code_challenge", pkce.challenge.clone()),
            ("code_challenge_method", "S256".to_owned()),
            ("state", "client-state-1".to_owned()),
            ("scope", "openid email".to_owned()),
            ("resource", RESOURCE.to_owned()),
        ]
    }

    pub async fn get_authorize(&self, params: &[(&str, String)]) -> reqwest::Response {
        self.browser
            .get(self.url("/oauth/authorize"))
            .query(params)
            .send()
            .await
            .unwrap()
    }

    /// The consent page the browser was sent to: its HTML and the request token in its form.
    pub async fn consent_page(&self, page_url: &str) -> (String, String) {
        let response = self.browser.get(page_url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "consent page");
        let html = response.text().await.unwrap();
        let marker = "name=\"request\" value=\"";
        let start = html.find(marker).expect("consent form") + marker.len();
        let token = html[start..].split('"').next().unwrap().to_owned();
        (html, token)
    }

    pub async fn post_consent(&self, token: &str, decision: &str) -> reqwest::Response {
        self.browser
            .post(self.url("/oauth/consent"))
            .form(&[("request", token), ("decision", decision)])
            .send()
            .await
            .unwrap()
    }

    /// Authorize, approving the consent page when one is shown: the upstream login URL.
    pub async fn authorize_to_upstream(&self, params: &[(&str, String)]) -> String {
        let next = location(&self.get_authorize(params).await);
        if !next.starts_with(&self.url("/oauth/consent")) {
            return next;
        }
        let (_, token) = self.consent_page(&next).await;
        location(&self.post_consent(&token, "allow").await)
    }

    /// Authorize → (consent) → upstream login → callback; where the bridge finally sends the browser.
    pub async fn sign_in(&self, params: &[(&str, String)]) -> reqwest::Response {
        let to_upstream = self.authorize_to_upstream(params).await;
        assert!(
            to_upstream.starts_with(&self.provider.issuer),
            "{to_upstream}"
        );
        let upstream = self.browser.get(&to_upstream).send().await.unwrap();
        let to_callback = location(&upstream);
        assert!(
            to_callback.starts_with(&self.url("/oauth/callback")),
            "{to_callback}"
        );
        self.browser.get(&to_callback).send().await.unwrap()
    }

    /// The whole front channel for the public client; returns our authorization code.
    pub async fn authorization_code(&self, pkce: &Pkce) -> String {
        let back = location(&self.sign_in(&self.authorize_params(pkce)).await);
        let query = query_of(&back);
        assert!(
            back.starts_with("http://127.0.0.1:33418/callback?"),
            "{back}"
        );
        assert_eq!(query["state"], "client-state-1");
        assert_eq!(query["iss"], self.issuer);
        query["code"].clone()
    }

    pub async fn post_token(&self, form: &[(&str, &str)]) -> reqwest::Response {
        self.api
            .post(self.url("/oauth/token"))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    pub async fn redeem_code(&self, code: &str, pkce: &Pkce) -> reqwest::Response {
        self.post_token(&[
            ("grant_type", "authorization_code"),
            ("client_id", PUBLIC_CLIENT),
            ("code", code),
            ("redirect_uri", PUBLIC_REDIRECT),
            ("code_verifier", &pkce.verifier),
        ])
        .await
    }

    pub async fn refresh(&self, refresh_token: &str) -> reqwest::Response {
        self.post_token(&[
            ("grant_type", "refresh_token"),
            ("client_id", PUBLIC_CLIENT),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    /// Signs in and redeems the code: the token response body.
    pub async fn tokens(&self) -> Value {
        let pkce = Pkce::new();
        let code = self.authorization_code(&pkce).await;
        let response = self.redeem_code(&code, &pkce).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }
}

pub async fn oauth_error(response: reqwest::Response, status: StatusCode, error: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
    assert!(body["error_description"].is_string());
    body
}

/// The claims of a JWT, unverified: for tests that check what a token says.
pub fn jwt_payload(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// The `kid` a JWT was signed with.
pub fn kid_of(jwt: &str) -> String {
    jsonwebtoken::decode_header(jwt).unwrap().kid.unwrap()
}
