//! The reference row: panva's oidc-provider (OpenID Certified), as the interoperability suite runs
//! it (`tests/interop/idp.mjs`), answering the refresh grant on the same machine in the same run.
//! It needs Node.js and `tests/interop/node_modules` (`tests/interop/run.sh` installs them);
//! without them the row is skipped and says why.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{Row, browser, client, location, measure, pkce, tokens_in};

const CLIENT_ID: &str = "mcp-oauth-bridge";
const CLIENT_SECRET: &str = "load-benchmark-reference-secret";
const REDIRECT_URI: &str = "http://127.0.0.1:9/callback";
/// A user of `tests/interop/users.json`.
const USERNAME: &str = "alice";
const PASSWORD: &str = "alice-password";

/// oidc-provider in a child process, stopped when this is dropped or when this process ends (it
/// exits when its standard input closes).
pub(crate) struct ReferenceProvider {
    issuer: String,
    _child: Child,
}

impl ReferenceProvider {
    /// `Ok(None)`, having said why, when Node.js or the suite's packages are missing.
    pub(crate) async fn start() -> anyhow::Result<Option<ReferenceProvider>> {
        let interop = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
        if !interop.join("node_modules/oidc-provider").is_dir() {
            println!(
                "(no tests/interop/node_modules: the oidc-provider reference row is skipped; tests/interop/run.sh installs it)"
            );
            return Ok(None);
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut child = match Command::new("node")
            .current_dir(&interop)
            .args(["idp.mjs", "--exit-with-stdin", "--port", &port.to_string()])
            .args([
                "--client-secret",
                CLIENT_SECRET,
                "--redirect-uri",
                REDIRECT_URI,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(child) => child,
            Err(error) => {
                println!("(cannot run node: {error}; the oidc-provider reference row is skipped)");
                return Ok(None);
            }
        };
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(issuer) = line.strip_prefix("ready ") {
                    return anyhow::Ok(issuer.to_owned());
                }
            }
            anyhow::bail!("oidc-provider ended before it was ready")
        })
        .await??;
        // It writes to its standard output later too (oidc-provider's notices), and dies of a
        // closed pipe: read it to the end.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Some(ReferenceProvider {
            issuer: ready,
            _child: child,
        }))
    }

    /// The refresh grant, each connection with a refresh token of its own from a real login.
    pub(crate) async fn refresh_row(
        &self,
        name: &'static str,
        connections: usize,
        run: Duration,
    ) -> anyhow::Result<Row> {
        let mut chains = Vec::new();
        for _ in 0..connections {
            chains.push(self.sign_in().await?);
        }
        let url = format!("{}/token", self.issuer);
        Ok(measure(
            name,
            chains,
            run.into(),
            move |(browser, refresh): (reqwest::Client, String)| {
                let url = url.clone();
                async move {
                    if refresh.is_empty() {
                        return None;
                    }
                    let body = token_request(
                        &browser,
                        &url,
                        // Without `openid`, as the bridge's refresh: no ID token to sign.
                        &[
                            ("grant_type", "refresh_token"),
                            ("refresh_token", refresh.as_str()),
                            ("scope", "email"),
                        ],
                    )
                    .await;
                    // It rotates refresh tokens only when its policy says so; the chain keeps
                    // whichever token is current.
                    match body {
                        Some(body) => {
                            let next = body["refresh_token"].as_str().unwrap_or(&refresh);
                            Some(((browser, next.to_owned()), true))
                        }
                        None => Some(((browser, String::new()), false)),
                    }
                }
            },
        )
        .await)
    }

    /// Authorize, the provider's login form, back with a code, the token endpoint: a connection
    /// of the client's own (node resets the browser's once the login is over) and a refresh token.
    async fn sign_in(&self) -> anyhow::Result<(reqwest::Client, String)> {
        let browser = &browser();
        let pkce = pkce();
        let authorize = browser
            .get(format!("{}/auth", self.issuer))
            .query(&[
                ("client_id", CLIENT_ID),
                ("redirect_uri", REDIRECT_URI),
                ("response_type", "code"),
                ("scope", "openid email"),
                ("code_challenge", pkce.challenge.as_str()),
                ("code_challenge_method", "S256"),
            ])
            .send()
            .await?;
        let login_page = self.absolute(
            &location(&authorize)
                .ok_or_else(|| anyhow::anyhow!("oidc-provider did not send to its login form"))?,
        );
        let login = browser
            .post(format!("{login_page}/login"))
            .form(&[("username", USERNAME), ("password", PASSWORD)])
            .send()
            .await?;
        let mut next = location(&login).ok_or_else(|| anyhow::anyhow!("the login failed"))?;
        // Back to the authorization endpoint, which answers with our redirect URI and the code.
        for _ in 0..4 {
            if next.starts_with(REDIRECT_URI) {
                break;
            }
            let response = browser.get(self.absolute(&next)).send().await?;
            next = location(&response)
                .ok_or_else(|| anyhow::anyhow!("the login did not come back with a code"))?;
        }
        let code = url::Url::parse(&next)?
            .query_pairs()
            .find(|(name, _)| name == "code")
            .map(|(_, code)| code.into_owned())
            .ok_or_else(|| anyhow::anyhow!("no code in {next}"))?;
        let api = client();
        let body = token_request(
            &api,
            &format!("{}/token", self.issuer),
            &[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT_URI),
                ("code_verifier", pkce.verifier.as_str()),
            ],
        )
        .await
        .ok_or_else(|| anyhow::anyhow!("oidc-provider refused the code"))?;
        let refresh = body["refresh_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("oidc-provider issued no refresh token"))?;
        Ok((api, refresh))
    }

    /// Its redirects are absolute paths on its own origin.
    fn absolute(&self, location: &str) -> String {
        if location.starts_with('/') {
            let origin = url::Url::parse(&self.issuer)
                .map(|url| url.origin().ascii_serialization())
                .unwrap_or_default();
            format!("{origin}{location}")
        } else {
            location.to_owned()
        }
    }
}

/// A token request with the client's secret (`client_secret_basic`): the body of a `200` that
/// carries an access token.
async fn token_request(
    browser: &reqwest::Client,
    url: &str,
    form: &[(&str, &str)],
) -> Option<Value> {
    let response = browser
        .post(url)
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(form)
        .send()
        .await
        .ok()?;
    tokens_in(response).await
}
