//! `spawn_app()`: the real server on 127.0.0.1:0 against the test provider, and a helper per step.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mcp_oauth_bridge::app;
use mcp_oauth_bridge::clock::{SharedClock, SystemClock};
// What tests need to write a configuration as values.
pub use mcp_oauth_bridge::config::{
    CimdConfig, ClientAddressHeader, ClientConfig, Config, ConfigDuration, DcrConfig,
    IdentityClaim, IdentityJwtConfig, LocalUserConfig, PostgresConfig, ProxyConfig,
    RateLimitConfig, SigningAlgorithm, SigningConfig, StorageBackend, ThrottleSettings,
    ToolScopeRule, UpstreamConfig,
};
pub use mcp_oauth_bridge::secret::SecretString;
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

#[derive(Clone)]
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

/// Changes a test makes to the base configuration, as typed values; the result is validated
/// as a file would be.
pub type Configure = Box<dyn FnOnce(&mut Config) + Send>;

/// `configure: configure(|config| config.oauth.max_pending_authorizations = 5)`.
pub fn configure(change: impl FnOnce(&mut Config) + Send + 'static) -> Option<Configure> {
    Some(Box::new(change))
}

#[derive(Default)]
pub struct Options {
    pub base_path: &'static str,
    /// Applied to the base configuration (two clients, the test provider, memory storage).
    pub configure: Option<Configure>,
    pub provider: Option<TestProvider>,
    pub upstream_issuer: Option<String>,
    /// The bridge's clock; the system clock when `None`.
    pub clock: Option<SharedClock>,
    /// Another instance's issuer, to run this one as a second instance behind the same name.
    pub public_url: Option<String>,
    /// Shuts the server down when it fires; it runs until the test ends otherwise.
    pub shutdown: Option<tokio::sync::oneshot::Receiver<()>>,
}

/// A client of `oauth.clients` with nothing but its id set.
pub fn client(id: &str) -> ClientConfig {
    ClientConfig {
        id: id.to_owned(),
        secret: None,
        redirect_uris: Vec::new(),
        name: None,
        scopes: None,
        grant_types: None,
        skip_consent: false,
        id_token_signed_response_alg: None,
        jwks: None,
        jwks_uri: None,
    }
}

/// `server.trusted_proxies`.
pub fn trust_proxies(config: &mut Config, networks: &[&str]) {
    config.server.trusted_proxies = networks
        .iter()
        .map(|network| network.parse().unwrap())
        .collect();
}

pub fn strings<const N: usize>(values: [&str; N]) -> Vec<String> {
    values.map(str::to_owned).to_vec()
}

pub fn seconds(seconds: u64) -> ConfigDuration {
    ConfigDuration(std::time::Duration::from_secs(seconds))
}

/// The base configuration's upstream provider, to change in place.
pub fn upstream(config: &mut Config) -> &mut UpstreamConfig {
    config
        .oauth
        .upstream
        .as_mut()
        .expect("the base configuration signs in at the test provider")
}

/// Storage in the PostgreSQL database at `url`.
pub fn postgres<'a>(config: &'a mut Config, url: &str) -> &'a mut PostgresConfig {
    config.storage.backend = StorageBackend::Postgres;
    config.storage.postgres.insert(PostgresConfig {
        url: SecretString::new(url),
        pool_size: 16,
        connect_timeout: std::time::Duration::from_secs(5),
    })
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
    // The base is a file as an operator writes one; each test changes it as typed values.
    let yaml = format!(
        r#"
server:
  address: "127.0.0.1:0"
  public_url: "{issuer}"
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
  upstream:
    issuer: "{upstream_issuer}"
    client_id: {client_id}
    client_secret: "{client_secret}"
    timeout: 2s
    claims:
      groups: realm_access.roles
storage:
  backend: memory
"#,
        client_id = oidc_provider::CLIENT_ID,
        client_secret = oidc_provider::CLIENT_SECRET,
    );
    let mut config = Config::from_yaml(&yaml, &|_| None).unwrap();
    if let Some(change) = options.configure {
        change(&mut config);
        if let Err(problems) = config.validate() {
            panic!("the test's configuration is invalid: {problems}");
        }
    }
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

    /// What the bridge says of `token` to the confidential web client (RFC 7662).
    pub async fn introspect_as_web_client(&self, token: &str) -> Value {
        self.api
            .post(self.url("/oauth/introspect"))
            .basic_auth(WEB_CLIENT, Some(WEB_SECRET))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
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

/// Verifies a JWT of ours the way a relying party would: key from the published JWKS.
pub async fn verify_with_jwks(
    app: &TestApp,
    token: &str,
    algorithm: jsonwebtoken::Algorithm,
    audience: &str,
) -> Value {
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_value(app.get_json(&app.url("/oauth/jwks")).await).unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, algorithm);
    let jwk = jwks
        .find(header.kid.as_deref().unwrap())
        .expect("token kid is published");
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[&app.issuer]);
    jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &validation,
    )
    .unwrap()
    .claims
}
