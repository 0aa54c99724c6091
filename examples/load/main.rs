//! `cargo run --release --example load -- [--seconds N] [--connections C] [--only TEXT|TEXT]
//! [--families N]`: the bridge under concurrent load over real HTTP on loopback, and one table of
//! what it sustained. `--families N` adds the rows at scale (`scale.rs`).
//!
//! In this process: the test OpenID Connect provider of `tests/api` (answers at once, EdDSA ID
//! tokens), the small MCP server of `tests/api` behind the bridge's proxy, and the bridge itself
//! (memory storage; with `BENCH_DATABASE_URL`, or `TEST_DATABASE_URL` to make a fresh database on,
//! a second bridge on PostgreSQL). Each of C connections is its own HTTP/1.1 keep-alive
//! connection; each row runs N seconds. Rows that carry no state from one request to the next are
//! driven by wrk in its own process (`wrk.rs`), the others by a Rust client here. Every response
//! is checked (status and body); anything else counts as an error, not as speed. Each connection
//! keeps its own refresh-token chain, as a client does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a measuring tool

#[allow(dead_code)]
#[path = "../../tests/api/mcp_upstream.rs"]
mod mcp_upstream;
#[allow(dead_code)]
#[path = "../../tests/api/oidc_provider.rs"]
mod oidc_provider;
mod reference;
mod scale;
mod wrk;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mcp_oauth_bridge::app;
use mcp_oauth_bridge::clock::SystemClock;
use mcp_oauth_bridge::config::Config;
use mcp_oauth_bridge::storage::Storage;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The bridge's own allocator (src/main.rs), since the bridge runs in this process.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CLIENT_ID: &str = "bench";
const REDIRECT_URI: &str = "http://127.0.0.1:9/callback";
const INTROSPECTION_TOKEN: &str = "bench-introspection-token-0123456789abcdef";
const MCP_BODY: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut seconds: u64 = 10;
    let mut connections: usize = 32;
    let mut only = String::new();
    let mut families: usize = 0;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => seconds = args.next().unwrap_or_default().parse()?,
            "--connections" => connections = args.next().unwrap_or_default().parse()?,
            "--only" => only = args.next().unwrap_or_default(),
            "--families" => families = args.next().unwrap_or_default().parse()?,
            other => anyhow::bail!(
                "unknown argument {other:?} (--seconds N, --connections C, --only TEXT|TEXT, --families N)"
            ),
        }
    }
    // As `serve` logs (text at `info`, every request in its span), so that what logging costs
    // is in the figures; written nowhere, since the table is this process's output.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::sink)
        .init();
    // The rows whose name contains one of `--only`'s `|`-separated texts; all without it.
    let wanted = |name: &str| only.split('|').any(|text| name.contains(text));
    let run = Duration::from_secs(seconds);
    let provider = oidc_provider::TestProvider::start_eddsa().await;
    let mcp = mcp_upstream::McpUpstream::start().await;
    let (memory, memory_storage) = start_bridge(&provider, &mcp.url, None).await?;
    println!(
        "{} connections, {} s per row, {} cores",
        connections,
        seconds,
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    println!(
        "{:<40} {:>10} {:>10} {:>10} {:>8}",
        "row", "req/s", "p50", "p99", "errors"
    );
    let mut failed = false;
    let mut report = |row: Row| {
        failed |= row.errors > 0 || row.done == 0;
        row.print();
    };

    if wanted("refresh grant, memory") {
        report(refresh_row("refresh grant, memory", &memory, connections, run).await?);
    }
    if wanted("refresh grant, oidc-provider") {
        if let Some(reference) = reference::ReferenceProvider::start().await? {
            let name = "refresh grant, oidc-provider (reference)";
            report(reference.refresh_row(name, connections, run).await?);
        }
    }
    if wanted("code exchange, memory") {
        report(code_exchange_row("code exchange, memory", &memory, connections, run).await?);
    }
    if wanted("full sign-in, memory") {
        report(sign_in_row("full sign-in, memory", &memory, connections, run).await?);
    }
    let metadata = format!("{}/.well-known/oauth-authorization-server", memory);
    if wanted("GET AS metadata") {
        report(
            get_row(
                "GET AS metadata",
                &metadata,
                r#""issuer""#,
                connections,
                run,
            )
            .await?,
        );
    }
    if wanted("GET JWKS") {
        let jwks = format!("{memory}/oauth/jwks");
        report(get_row("GET JWKS", &jwks, r#""keys""#, connections, run).await?);
    }
    if wanted("introspection") {
        report(introspection_row("introspection", &memory, connections, run).await?);
    }
    let direct = format!("{}/mcp", mcp.url);
    if wanted("POST /mcp direct, 1 connection") {
        report(mcp_row("POST /mcp direct, 1 connection", &direct, None, 1, run).await?);
    }
    let tokens = tokens(&client(), &memory).await?;
    let access = tokens["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let proxied = format!("{memory}/mcp");
    if wanted("POST /mcp through the proxy, 1 connection") {
        let name = "POST /mcp through the proxy, 1 connection";
        report(mcp_row(name, &proxied, Some(&access), 1, run).await?);
    }
    if wanted("POST /mcp direct") {
        report(mcp_row("POST /mcp direct", &direct, None, connections, run).await?);
    }
    if wanted("POST /mcp through the proxy") {
        let name = "POST /mcp through the proxy";
        report(mcp_row(name, &proxied, Some(&access), connections, run).await?);
    }

    if families > 0 && wanted("refresh, memory,") {
        let scale = scale::Scale::new("memory", &memory, memory_storage, families);
        scale.rows(connections, run, &mut report).await?;
    }

    if let Some((url, made)) = database_url().await? {
        let (postgres, postgres_storage) = start_bridge(&provider, &mcp.url, Some(&url)).await?;
        if wanted("refresh grant, PostgreSQL") {
            report(refresh_row("refresh grant, PostgreSQL", &postgres, connections, run).await?);
        }
        if wanted("code exchange, PostgreSQL") {
            report(
                code_exchange_row("code exchange, PostgreSQL", &postgres, connections, run).await?,
            );
        }
        if families > 0 && wanted("refresh, PostgreSQL,") {
            let scale = scale::Scale::new("PostgreSQL", &postgres, postgres_storage, families);
            scale.rows(connections, run, &mut report).await?;
        }
        if let Some((admin_url, name)) = made {
            // Made for this run: gone with it, though the bridge still holds connections to it.
            let (admin, connection) =
                tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            admin
                .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
                .await?;
        }
    } else {
        println!("(no BENCH_DATABASE_URL or TEST_DATABASE_URL: PostgreSQL rows skipped)");
    }
    if failed {
        anyhow::bail!("a row had errors or did nothing: the figures above do not count");
    }
    Ok(())
}

/// A database for the PostgreSQL bridge: `BENCH_DATABASE_URL` as it is, or a fresh one made on
/// the server of `TEST_DATABASE_URL` (then also the admin URL and the name, to drop it after).
async fn database_url() -> anyhow::Result<Option<(String, Option<(String, String)>)>> {
    if let Ok(url) = std::env::var("BENCH_DATABASE_URL") {
        return Ok(Some((url, None)));
    }
    let Ok(admin_url) = std::env::var("TEST_DATABASE_URL") else {
        return Ok(None);
    };
    let name = format!("mob_load_{:016x}", rand::random::<u64>());
    let (admin, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    let mut url = url::Url::parse(&admin_url)?;
    url.set_path(&format!("/{name}"));
    Ok(Some((url.to_string(), Some((admin_url, name)))))
}

/// A bridge on 127.0.0.1 in front of `provider`, proxying to `mcp`; its issuer and its storage.
async fn start_bridge(
    provider: &oidc_provider::TestProvider,
    mcp: &str,
    database: Option<&str>,
) -> anyhow::Result<(String, Arc<dyn Storage>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let issuer = format!("http://{}", listener.local_addr()?);
    let storage = match database {
        Some(url) => format!("backend: postgres\n  postgres: {{ url: \"{url}\" }}"),
        None => "backend: memory".to_owned(),
    };
    let yaml = format!(
        r#"
server:
  public_url: "{issuer}"
  max_connections_per_address: 100000
oauth:
  introspection_tokens: ["{INTROSPECTION_TOKEN}"]
  authorize_rate_limit: {{ requests: 100000000, window: 1m }}
  max_pending_authorizations: 1000000
  clients:
    # ES256 ID tokens: the code exchange row measures the bridge, not RSA (see the README).
    - {{ id: {CLIENT_ID}, redirect_uris: ["http://127.0.0.1/callback"], skip_consent: true, id_token_signed_response_alg: ES256 }}
  upstream:
    issuer: "{upstream}"
    client_id: {client_id}
    client_secret: "{client_secret}"
    timeout: 5s
storage:
  {storage}
  # Only the rows at scale sweep, when they mean to.
  sweep_interval: 1h
proxy:
  upstream_url: "{mcp}"
  timeout: 5s
"#,
        upstream = provider.issuer,
        client_id = oidc_provider::CLIENT_ID,
        client_secret = oidc_provider::CLIENT_SECRET,
    );
    let config = Config::from_yaml(&yaml, &|_| None)?;
    let service = app::build(&config, Arc::new(SystemClock)).await?;
    let storage = Arc::clone(&service.bridge.storage);
    tokio::spawn(async move {
        let _ = app::serve(listener, service, std::future::pending()).await;
    });
    Ok((issuer, storage))
}

/// One keep-alive connection's worth of HTTP client. No cookie jar: reqwest's keeps every
/// sign-in's cookie it is told to forget and matches each request against all of them, which
/// became a fifth of the sign-in row's time; `authorization_code` carries the one cookie a
/// sign-in needs itself.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(1)
        .build()
        .expect("an HTTP client")
}

/// A client with a cookie jar, for a provider's login form (the reference row).
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .pool_max_idle_per_host(1)
        .build()
        .expect("an HTTP client")
}

fn clients(connections: usize) -> Vec<reqwest::Client> {
    (0..connections).map(|_| client()).collect()
}

struct Row {
    name: &'static str,
    done: u64,
    errors: u64,
    elapsed: Duration,
    /// Microseconds of each successful request.
    latencies: Vec<u32>,
    /// p50 and p99 in microseconds, when the load generator gave them instead of `latencies`.
    percentiles: Option<(u32, u32)>,
}

impl Row {
    fn print(&self) {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let at = |q: f64| {
            let given = self
                .percentiles
                .map(|(p50, p99)| if q < 0.9 { p50 } else { p99 });
            given
                .or_else(|| {
                    sorted
                        .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
                        .copied()
                })
                .map_or_else(|| "-".to_owned(), micros)
        };
        println!(
            "{:<40} {:>10.0} {:>10} {:>10} {:>8}",
            self.name,
            self.done as f64 / self.elapsed.as_secs_f64(),
            at(0.5),
            at(0.99),
            self.errors
        );
    }
}

fn micros(us: u32) -> String {
    if us >= 1000 {
        format!("{:.2} ms", f64::from(us) / 1000.0)
    } else {
        format!("{us} µs")
    }
}

/// When a row stops: after a while, or when something else says so (a sweep that ended).
#[derive(Clone)]
enum Until {
    Elapsed(Duration),
    Set(Arc<AtomicBool>),
}

impl From<Duration> for Until {
    fn from(run: Duration) -> Self {
        Until::Elapsed(run)
    }
}

/// Runs `step` on every connection's state until `until` says stop (or a state says it has
/// nothing left to do); `step` returns the state for the next request and whether this one
/// succeeded.
async fn measure<S, F, Fut>(name: &'static str, states: Vec<S>, until: Until, step: F) -> Row
where
    S: Send + 'static,
    F: Fn(S) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Option<(S, bool)>> + Send,
{
    let started = Instant::now();
    let stop = match until {
        Until::Set(flag) => flag,
        Until::Elapsed(run) => {
            let flag = Arc::new(AtomicBool::new(false));
            let set = Arc::clone(&flag);
            tokio::spawn(async move {
                tokio::time::sleep(run).await;
                set.store(true, Ordering::Relaxed);
            });
            flag
        }
    };
    let tasks: Vec<_> = states
        .into_iter()
        .map(|state| {
            let step = step.clone();
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let (mut done, mut errors, mut latencies) = (0u64, 0u64, Vec::new());
                let mut state = state;
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let Some((next, ok)) = step(state).await else {
                        break;
                    };
                    state = next;
                    if ok {
                        done += 1;
                        latencies
                            .push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
                    } else {
                        errors += 1;
                    }
                }
                (done, errors, latencies)
            })
        })
        .collect();
    let mut row = Row {
        name,
        done: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        percentiles: None,
    };
    for task in tasks {
        let (done, errors, latencies) = task.await.unwrap_or_default();
        row.done += done;
        row.errors += errors;
        row.latencies.extend(latencies);
    }
    row.elapsed = started.elapsed().max(Duration::from_millis(1));
    row
}

/// Codes one connection minted, with the verifier each needs.
type CodePool = Arc<tokio::sync::Mutex<Vec<(String, Pkce)>>>;

struct Pkce {
    verifier: String,
    challenge: String,
}

fn pkce() -> Pkce {
    let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    Pkce {
        verifier,
        challenge,
    }
}

fn location(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("location")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// Authorize → the provider's login → our callback: our authorization code, or `None`.
async fn authorization_code(
    browser: &reqwest::Client,
    issuer: &str,
    pkce: &Pkce,
) -> Option<String> {
    let authorize = browser
        .get(format!("{issuer}/oauth/authorize"))
        .query(&[
            ("client_id", CLIENT_ID),
            ("redirect_uri", REDIRECT_URI),
            ("response_type", "code"),
            ("code_challenge", pkce.challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("state", "bench"),
            ("scope", "openid email"),
            ("resource", &format!("{issuer}/mcp")),
        ])
        .send()
        .await
        .ok()?;
    let to_provider = location(&authorize)?;
    // The cookie that binds the sign-in to this browser, back to the bridge's callback.
    let binding: Vec<&str> = authorize
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok()?.split(';').next())
        .collect();
    let login = browser.get(&to_provider).send().await.ok()?;
    let to_callback = location(&login)?;
    let callback = browser
        .get(&to_callback)
        .header("cookie", binding.join("; "))
        .send()
        .await
        .ok()?;
    let back = url::Url::parse(&location(&callback)?).ok()?;
    back.query_pairs()
        .find(|(name, _)| name == "code")
        .map(|(_, code)| code.into_owned())
}

async fn redeem(api: &reqwest::Client, issuer: &str, code: &str, pkce: &Pkce) -> Option<Value> {
    let response = api
        .post(format!("{issuer}/oauth/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT_ID),
            ("code", code),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", &pkce.verifier),
        ])
        .send()
        .await
        .ok()?;
    tokens_in(response).await
}

/// The body of a `200` token response that carries an access token.
async fn tokens_in(response: reqwest::Response) -> Option<Value> {
    if response.status() != reqwest::StatusCode::OK {
        return None;
    }
    let body: Value = response.json().await.ok()?;
    body["access_token"].is_string().then_some(body)
}

async fn tokens(client: &reqwest::Client, issuer: &str) -> anyhow::Result<Value> {
    let pkce = pkce();
    let code = authorization_code(client, issuer, &pkce)
        .await
        .ok_or_else(|| anyhow::anyhow!("the sign-in did not end with a code"))?;
    redeem(client, issuer, &code, &pkce)
        .await
        .ok_or_else(|| anyhow::anyhow!("the code was not exchanged"))
}

async fn refresh_row(
    name: &'static str,
    issuer: &str,
    connections: usize,
    run: Duration,
) -> anyhow::Result<Row> {
    let chains = refresh_chains(issuer, connections).await?;
    Ok(refresh_measure(name, issuer, chains, run.into()).await)
}

/// A connection and a refresh token of its own for each of `connections`.
async fn refresh_chains(
    issuer: &str,
    connections: usize,
) -> anyhow::Result<Vec<(reqwest::Client, String)>> {
    let mut chains = Vec::new();
    for _ in 0..connections {
        let client = client();
        let refresh = tokens(&client, issuer).await?["refresh_token"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no refresh token"))?
            .to_owned();
        chains.push((client, refresh));
    }
    Ok(chains)
}

async fn refresh_measure(
    name: &'static str,
    issuer: &str,
    chains: Vec<(reqwest::Client, String)>,
    until: Until,
) -> Row {
    let url = format!("{issuer}/oauth/token");
    measure(
        name,
        chains,
        until,
        move |(client, refresh): (reqwest::Client, String)| {
            let url = url.clone();
            async move {
                if refresh.is_empty() {
                    return None;
                }
                let response = client
                    .post(&url)
                    .form(&[
                        ("grant_type", "refresh_token"),
                        ("client_id", CLIENT_ID),
                        ("refresh_token", refresh.as_str()),
                    ])
                    .send()
                    .await
                    .ok();
                let body = match response {
                    Some(response) => tokens_in(response).await,
                    None => None,
                };
                match body
                    .as_ref()
                    .and_then(|body| body["refresh_token"].as_str())
                {
                    Some(next) => Some(((client, next.to_owned()), true)),
                    // The chain is spent: this connection stops rather than count the same failure.
                    None => Some(((client, String::new()), false)),
                }
            }
        },
    )
    .await
}

/// Codes are minted first (as many as `run` allows), then exchanged as fast as they go.
async fn code_exchange_row(
    name: &'static str,
    issuer: &str,
    connections: usize,
    run: Duration,
) -> anyhow::Result<Row> {
    // Each connection mints into its own pool, which one connection then drains.
    let pools: Vec<CodePool> = (0..connections).map(|_| Arc::default()).collect();
    let _ = measure(
        "minting",
        pools
            .iter()
            .map(|pool| (client(), Arc::clone(pool)))
            .collect(),
        run.into(),
        {
            let issuer = issuer.to_owned();
            move |(browser, pool): (reqwest::Client, CodePool)| {
                let issuer = issuer.clone();
                async move {
                    let pkce = pkce();
                    let ok = match authorization_code(&browser, &issuer, &pkce).await {
                        Some(code) => {
                            pool.lock().await.push((code, pkce));
                            true
                        }
                        None => false,
                    };
                    Some(((browser, pool), ok))
                }
            }
        },
    )
    .await;
    let mut states = Vec::new();
    for pool in pools {
        let codes = std::mem::take(&mut *pool.lock().await);
        states.push((client(), codes));
    }
    let issuer = issuer.to_owned();
    Ok(measure(
        name,
        states,
        run.into(),
        move |(api, mut codes): (reqwest::Client, Vec<(String, Pkce)>)| {
            let issuer = issuer.clone();
            async move {
                let (code, pkce) = codes.pop()?;
                let ok = redeem(&api, &issuer, &code, &pkce).await.is_some();
                Some(((api, codes), ok))
            }
        },
    )
    .await)
}

async fn sign_in_row(
    name: &'static str,
    issuer: &str,
    connections: usize,
    run: Duration,
) -> anyhow::Result<Row> {
    let issuer = issuer.to_owned();
    Ok(measure(
        name,
        clients(connections),
        run.into(),
        move |browser: reqwest::Client| {
            let issuer = issuer.clone();
            async move {
                let ok = tokens(&browser, &issuer).await.is_ok();
                Some((browser, ok))
            }
        },
    )
    .await)
}

async fn get_row(
    name: &'static str,
    url: &str,
    body_holds: &'static str,
    connections: usize,
    run: Duration,
) -> anyhow::Result<Row> {
    let request = wrk::WrkRequest {
        url,
        method: "GET",
        headers: vec![],
        body: None,
        body_holds,
    };
    wrk::row(name, &request, connections, run).await
}

async fn introspection_row(
    name: &'static str,
    issuer: &str,
    connections: usize,
    run: Duration,
) -> anyhow::Result<Row> {
    let token = tokens(&client(), issuer).await?["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let url = format!("{issuer}/oauth/introspect");
    let request = wrk::WrkRequest {
        url: &url,
        method: "POST",
        headers: vec![
            ("Authorization", format!("Bearer {INTROSPECTION_TOKEN}")),
            (
                "Content-Type",
                "application/x-www-form-urlencoded".to_owned(),
            ),
        ],
        body: Some(format!("token={token}")),
        body_holds: r#""active":true"#,
    };
    wrk::row(name, &request, connections, run).await
}

async fn mcp_row(
    name: &'static str,
    url: &str,
    token: Option<&str>,
    connections: usize,
    run: Duration,
) -> anyhow::Result<Row> {
    let mut headers = vec![
        ("Content-Type", "application/json".to_owned()),
        ("Accept", "application/json, text/event-stream".to_owned()),
    ];
    if let Some(token) = token {
        headers.push(("Authorization", format!("Bearer {token}")));
    }
    let request = wrk::WrkRequest {
        url,
        method: "POST",
        headers,
        body: Some(MCP_BODY.to_owned()),
        // The echo of the small MCP server: the request reached it.
        body_holds: r#""method":"POST""#,
    };
    wrk::row(name, &request, connections, run).await
}
