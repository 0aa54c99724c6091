//! The released binary at `RUST_LOG=trace`, through every kind of request and the ways they fail:
//! no password, code, token, client secret, cookie value, key or database password may appear in
//! what it writes.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use crate::helpers::{Pkce, location, query_of};
use crate::mcp_upstream::McpUpstream;
use crate::oidc_provider::{self, TestProvider};

const BINARY: &str = env!("CARGO_BIN_EXE_mcp-oauth-bridge");

/// The bridge as a child process, its standard error collected as it is written.
pub(crate) struct Bridge {
    child: tokio::process::Child,
    log: Arc<Mutex<Vec<u8>>>,
    origin: String,
    config_path: std::path::PathBuf,
}

pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}-{:032x}", rand::random::<u128>())
}

pub(crate) async fn free_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

impl Bridge {
    /// Starts the binary on `port` with `config` (YAML, `{origin}` substituted), logging in
    /// `format` (text or json).
    async fn start(port: u16, config: &str, format: &str) -> Bridge {
        // Everything, and the database driver's statements asked for by name too.
        let everything = "trace,tokio_postgres=trace,tokio_postgres::query=trace";
        Bridge::start_logging(port, config, format, everything).await
    }

    /// As `start`, logging what `rust_log` lets through.
    pub(crate) async fn start_logging(
        port: u16,
        config: &str,
        format: &str,
        rust_log: &str,
    ) -> Bridge {
        let origin = format!("http://127.0.0.1:{port}");
        let config_path = std::env::temp_dir().join(format!("{}.yaml", unique("mob-log-scan")));
        std::fs::write(&config_path, config.replace("{origin}", &origin)).unwrap();
        let mut child = tokio::process::Command::new(BINARY)
            .args([
                "--config",
                config_path.to_str().unwrap(),
                "--log-format",
                format,
            ])
            .arg("serve")
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        tokio::spawn(async move {
            let mut buffer = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buffer).await {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buffer[..n]);
            }
        });
        let bridge = Bridge {
            child,
            log,
            origin,
            config_path,
        };
        for _ in 0..200 {
            if let Ok(response) = reqwest::get(format!("{}/healthz", bridge.origin)).await
                && response.status() == StatusCode::OK
            {
                return bridge;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the bridge did not start: {}", bridge.log_text());
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }

    fn log_text(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }

    pub(crate) async fn stop(mut self) -> String {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = std::fs::remove_file(&self.config_path);
        self.log_text()
    }
}

/// A database of its own with a role whose password is unique, when PostgreSQL is at hand.
struct ScanDatabase {
    admin_url: String,
    role: String,
    url: String,
    password: String,
}

impl ScanDatabase {
    async fn drop(self) {
        let (admin, connection) = tokio_postgres::connect(&self.admin_url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let role = self.role;
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {role} WITH (FORCE)"))
            .await
            .unwrap();
        admin
            .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
            .await
            .unwrap();
    }
}

async fn database_with_password() -> Option<ScanDatabase> {
    let admin_url = mcp_oauth_bridge::testing::postgres_url().unwrap()?;
    let (admin, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let role = format!("mob_scan_{:08x}", rand::random::<u32>());
    let password = unique("db-password");
    admin
        .batch_execute(&format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'"))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {role} OWNER {role}"))
        .await
        .unwrap();
    let mut url = url::Url::parse(&admin_url).unwrap();
    url.set_username(&role).unwrap();
    url.set_password(Some(&password)).unwrap();
    url.set_path(&format!("/{role}"));
    Some(ScanDatabase {
        admin_url,
        url: url.to_string(),
        role,
        password,
    })
}

pub(crate) fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .unwrap()
}

/// Every `Set-Cookie` value of a response (the value only).
pub(crate) fn cookie_values(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|c| {
            c.split(';')
                .next()?
                .split_once('=')
                .map(|(_, v)| v.to_owned())
        })
        .filter(|v| !v.is_empty())
        .collect()
}

fn assert_nothing_secret_in(log: &str, secrets: &[String]) {
    // Whatever any crate logs at any level is in: the request lines are at DEBUG.
    assert!(
        log.contains("DEBUG") && log.contains("finished processing request"),
        "the log does not have every level, so it proves nothing:\n{log}"
    );
    for secret in secrets {
        assert!(secret.len() >= 8, "too short to search for: {secret:?}");
        if let Some(at) = log.find(secret.as_str()) {
            let start = log[..at].rfind('\n').map_or(0, |n| n + 1);
            let end = log[at..].find('\n').map_or(log.len(), |n| at + n);
            panic!(
                "a secret ({}…) is in the log:\n{}",
                &secret[..8],
                &log[start..end]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_secret_reaches_the_log_of_a_sign_in_and_every_way_it_fails() {
    let provider = TestProvider::start().await;
    let upstream = McpUpstream::start().await;
    let database = database_with_password().await;
    let mut secrets: Vec<String> = Vec::new();
    let yaml_secret = unique("yaml-client-secret");
    let exchanger_secret = unique("exchanger-secret");
    let introspection_token = unique("introspection-token");
    let encryption_key = unique("storage-encryption-key");
    secrets.extend([
        yaml_secret.clone(),
        exchanger_secret.clone(),
        introspection_token.clone(),
        encryption_key.clone(),
        STANDARD.encode(format!("service:{yaml_secret}")),
        STANDARD.encode(format!("exchanger:{exchanger_secret}")),
    ]);
    let storage = match &database {
        Some(ScanDatabase { url, password, .. }) => {
            secrets.push(password.clone());
            format!(
                "backend: postgres\n  postgres: {{ url: \"{url}\" }}\n  encryption_key: \"{encryption_key}\""
            )
        }
        None => format!("backend: memory\n  encryption_key: \"{encryption_key}\""),
    };
    let port = free_port().await;
    let config = format!(
        r#"
server:
  address: "127.0.0.1:{port}"
  public_url: "{{origin}}"
oauth:
  introspection_tokens: ["{introspection_token}"]
  clients:
    - id: service
      secret: "{yaml_secret}"
      grant_types: [client_credentials]
    - id: exchanger
      secret: "{exchanger_secret}"
      grant_types: ["urn:ietf:params:oauth:grant-type:token-exchange"]
  token_exchange:
    rules: [{{ client: exchanger, audiences: [upstream] }}]
  dcr:
    enabled: true
    allowed_redirect_profiles: [loopback]
  upstream:
    issuer: "{issuer}"
    client_id: {client_id}
    client_secret: "{client_secret}"
    revalidate_on_refresh: true
    keep_tokens: true
storage:
  {storage}
proxy:
  upstream_url: "{mcp}"
  identity_jwt: {{ header: X-Identity }}
"#,
        issuer = provider.issuer,
        client_id = oidc_provider::CLIENT_ID,
        client_secret = oidc_provider::CLIENT_SECRET,
        mcp = upstream.url,
    );
    let bridge = Bridge::start(port, &config, "json").await;
    let api = reqwest::Client::new();
    let browser = browser();

    // Registration of a confidential client; its secret comes back once.
    let registered: Value = api
        .post(bridge.url("/oauth/register"))
        .json(
            &json!({"client_name": "Scanner", "redirect_uris": ["http://127.0.0.1:9/cb"],
                      "grant_types": ["authorization_code", "refresh_token"]}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let client_id = registered["client_id"].as_str().unwrap().to_owned();
    let client_secret = registered["client_secret"].as_str().unwrap().to_owned();
    secrets.push(client_secret.clone());
    secrets.push(STANDARD.encode(format!("{client_id}:{client_secret}")));

    // The sign-in, cookie by cookie.
    let pkce = Pkce::new();
    secrets.push(pkce.verifier.clone());
    let resource = bridge.url("/mcp");
    let authorize = browser
        .get(bridge.url("/oauth/authorize"))
        .query(&[
            ("client_id", client_id.as_str()),
            ("redirect_uri", "http://127.0.0.1:9/cb"),
            ("response_type", "code"),
            ("code_challenge", &pkce.challenge),
            ("code_challenge_method", "S256"),
            ("state", "client-state"),
            ("nonce", "client-nonce"),
            ("scope", "openid email offline_access"),
            ("resource", &resource),
        ])
        .send()
        .await
        .unwrap();
    secrets.extend(cookie_values(&authorize));
    let consent_url = location(&authorize);
    let consent_token = query_of(&consent_url)["request"].clone();
    secrets.push(consent_token.clone());
    let html = browser
        .get(&consent_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("Scanner"));
    let allowed = browser
        .post(bridge.url("/oauth/consent"))
        .form(&[("request", consent_token.as_str()), ("decision", "allow")])
        .send()
        .await
        .unwrap();
    secrets.extend(cookie_values(&allowed));
    let to_upstream = location(&allowed);
    secrets.push(query_of(&to_upstream)["state"].clone());
    let to_callback = location(&browser.get(&to_upstream).send().await.unwrap());
    let callback = browser.get(&to_callback).send().await.unwrap();
    secrets.extend(cookie_values(&callback));
    let code = query_of(&location(&callback))["code"].clone();
    secrets.push(code.clone());

    // Tokens, then every use of them.
    let tokens: Value = api
        .post(bridge.url("/oauth/token"))
        .basic_auth(&client_id, Some(&client_secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", "http://127.0.0.1:9/cb"),
            ("code_verifier", pkce.verifier.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let id_token = tokens["id_token"].as_str().unwrap().to_owned();
    for jwt in [&access, &id_token] {
        secrets.push(jwt.rsplit('.').next().unwrap().to_owned());
    }
    secrets.extend([access.clone(), refresh.clone(), id_token.clone()]);
    let refreshed: Value = api
        .post(bridge.url("/oauth/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
            ("client_id", client_id.as_str()),
            ("client_secret", client_secret.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let next_access = refreshed["access_token"].as_str().unwrap().to_owned();
    let next_refresh = refreshed["refresh_token"].as_str().unwrap().to_owned();
    secrets.extend([next_access.clone(), next_refresh.clone()]);
    secrets.push(next_access.rsplit('.').next().unwrap().to_owned());
    let proxied = api
        .post(bridge.url("/mcp?access_token=x"))
        .bearer_auth(&next_access)
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), StatusCode::OK);
    let identity = upstream.last_headers()["x-identity"]
        .to_str()
        .unwrap()
        .to_owned();
    secrets.push(identity);
    // The provider's token, kept sealed and handed on by an exchange (the provider lists it).
    let handed_on = api
        .post(bridge.url("/oauth/token"))
        .basic_auth("exchanger", Some(&exchanger_secret))
        .form(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", next_access.as_str()),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            ),
            ("audience", "upstream"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(handed_on.status(), StatusCode::OK);
    let introspected: Value = api
        .post(bridge.url("/oauth/introspect"))
        .bearer_auth(&introspection_token)
        .form(&[("token", next_access.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(introspected["active"], true);
    let userinfo = api
        .get(bridge.url("/oauth/userinfo"))
        .bearer_auth(&next_access)
        .send()
        .await
        .unwrap();
    assert_eq!(userinfo.status(), StatusCode::OK);
    let service: Value = api
        .post(bridge.url("/oauth/token"))
        .basic_auth("service", Some(&yaml_secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    secrets.push(service["access_token"].as_str().unwrap().to_owned());

    // Every way of getting it wrong, with the real values in the wrong places.
    let wrong_secret = unique("wrong-client-secret");
    secrets.push(wrong_secret.clone());
    for form in [
        vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
        ],
        vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
        ],
    ] {
        let response = api
            .post(bridge.url("/oauth/token"))
            .basic_auth(&client_id, Some(&wrong_secret))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let response = api
            .post(bridge.url("/oauth/token"))
            .basic_auth(&client_id, Some(&client_secret))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{form:?}");
    }
    let forged_code = unique("made-up-code");
    let forged_state = unique("made-up-state");
    secrets.extend([forged_code.clone(), forged_state.clone()]);
    let response = browser
        .get(bridge.url("/oauth/callback"))
        .query(&[
            ("state", forged_state.as_str()),
            ("code", forged_code.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    for bad in [access.as_str(), next_access.as_str(), "a.b.c"] {
        let _ = api
            .get(bridge.url("/mcp"))
            .bearer_auth(bad)
            .send()
            .await
            .unwrap();
        let _ = api
            .get(bridge.url("/oauth/userinfo"))
            .bearer_auth(bad)
            .send()
            .await
            .unwrap();
    }
    let response = api
        .post(bridge.url("/oauth/revoke"))
        .basic_auth(&client_id, Some(&client_secret))
        .form(&[("token", next_refresh.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = api
        .get(bridge.url("/mcp"))
        .bearer_auth(&next_access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = api
        .post(bridge.url("/oauth/introspect"))
        .bearer_auth(unique("wrong-introspection-token"))
        .form(&[("token", access.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let log = bridge.stop().await;
    secrets.extend(provider.secrets());
    assert_nothing_secret_in(&log, &secrets);
    assert!(log.contains("authorization started"), "the flow was logged");
    if let Some(database) = database {
        database.drop().await;
    }
}

/// A bridge on `port` whose one user, `ada` (subject `user-ada`), signs in with the password of
/// `hash` for the client `cli`.
pub(crate) fn local_login_config(port: u16, hash: &str) -> String {
    format!(
        r#"
server:
  address: "127.0.0.1:{port}"
  public_url: "{{origin}}"
oauth:
  clients:
    - {{ id: cli, redirect_uris: ["http://127.0.0.1/cb"], skip_consent: true }}
  local_users:
    - {{ username: ada, subject: user-ada, password_hash: "{hash}" }}
  login_throttle: {{ slowdown: 0s }}
"#
    )
}

/// The local login form of an authorization by `cli` (redirect `http://127.0.0.1:9/cb`), as
/// this browser sees it.
pub(crate) struct LoginForm {
    pub(crate) state: String,
    pub(crate) csrf: String,
    pub(crate) cookies: Vec<String>,
}

impl LoginForm {
    pub(crate) async fn open(bridge: &Bridge, browser: &reqwest::Client, pkce: &Pkce) -> Self {
        let authorize = browser
            .get(bridge.url("/oauth/authorize"))
            .query(&[
                ("client_id", "cli"),
                ("redirect_uri", "http://127.0.0.1:9/cb"),
                ("response_type", "code"),
                ("code_challenge", &pkce.challenge),
                ("code_challenge_method", "S256"),
            ])
            .send()
            .await
            .unwrap();
        let cookies = cookie_values(&authorize);
        let form_url = location(&authorize);
        let state = query_of(&form_url)["state"].clone();
        let html = browser
            .get(&form_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let marker = "name=\"csrf\" value=\"";
        let start = html.find(marker).unwrap() + marker.len();
        let csrf = html[start..].split('"').next().unwrap().to_owned();
        LoginForm {
            state,
            csrf,
            cookies,
        }
    }
}

#[tokio::test]
async fn nothing_secret_reaches_the_log_of_a_local_login() {
    let password = unique("local-user-password");
    let wrong_password = unique("wrong-password");
    let hash = bcrypt::hash(&password, 4).unwrap();
    let port = free_port().await;
    let config = local_login_config(port, &hash);
    let bridge = Bridge::start(port, &config, "text").await;
    let browser = browser();
    let pkce = Pkce::new();
    let mut secrets = vec![
        password.clone(),
        wrong_password.clone(),
        hash.clone(),
        pkce.verifier.clone(),
    ];
    let form = LoginForm::open(&bridge, &browser, &pkce).await;
    secrets.extend(form.cookies.iter().cloned());
    let (state, csrf) = (form.state, form.csrf);
    secrets.extend([state.clone(), csrf.clone()]);
    for attempt in [wrong_password.as_str(), password.as_str()] {
        let response = browser
            .post(bridge.url("/oauth/login"))
            .form(&[
                ("state", state.as_str()),
                ("csrf", csrf.as_str()),
                ("username", "ada"),
                ("password", attempt),
            ])
            .send()
            .await
            .unwrap();
        if attempt == password {
            let code = query_of(&location(&response))["code"].clone();
            secrets.push(code);
        }
    }
    let log = bridge.stop().await;
    assert_nothing_secret_in(&log, &secrets);
    assert!(
        log.contains("local user signed in"),
        "the sign-in was logged"
    );
}
