//! `cargo run --release --example fuzz_http -- [INPUTS] [--seed S] [--only INDEX]`: random and
//! mutated requests against every route of fully configured bridges, in process (`oneshot`):
//! one signing users in at a real (test) OpenID Connect provider with Dynamic Client
//! Registration, metadata documents from a local TLS server, consent, introspection and the
//! proxy in front of a small MCP server; one with local users and the login form; and, when
//! `FUZZ_DATABASE_URL` (or `TEST_DATABASE_URL`) names a PostgreSQL server, the first again on
//! PostgreSQL. Every answer must come within five seconds and be below 500, or a deliberate 503.
//! Input `i` of seed `s` is the same request every time: `--only i` replays one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test tool: a broken set-up may stop it

#[allow(dead_code)]
#[path = "../tests/api/document_server.rs"]
mod document_server;
#[allow(dead_code)]
#[path = "../tests/api/oidc_provider.rs"]
mod oidc_provider;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderName, HeaderValue, Method, Request};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use futures_util::StreamExt;
use http_body_util::BodyExt;
use mcp_oauth_bridge::app;
use mcp_oauth_bridge::clock::SystemClock;
use mcp_oauth_bridge::config::Config;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tower::ServiceExt;

/// A bcrypt hash (cost 4) of `fuzz-secret-0123456789`.
const SECRET_HASH: &str = "$2b$04$zSPsb4ku4Rk/1yqvikaUTuZEvji.VPcDb5fbK9htM7HZiku4a9pJG";
const SECRET: &str = "fuzz-secret-0123456789";
const INTROSPECTION_TOKEN: &str = "fuzz-introspection-token-0123456789abcdef";
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

struct Target {
    name: &'static str,
    router: axum::Router,
    issuer: String,
}

/// What the generator draws from: the real names and values of the running bridges.
struct Dictionary {
    client_ids: Vec<String>,
    redirect_uris: Vec<String>,
    resources: Vec<String>,
    tokens: Vec<String>,
    registered: Mutex<Vec<String>>,
}

#[derive(Default)]
struct Tally {
    statuses: BTreeMap<u16, u64>,
    findings: Vec<String>,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let mut inputs: u64 = 100_000;
    let mut seed: u64 = 1;
    let mut only: Option<u64> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seed" => seed = args.next().unwrap_or_default().parse()?,
            "--only" => only = Some(args.next().unwrap_or_default().parse()?),
            number => inputs = number.replace('_', "").parse()?,
        }
    }

    let provider = oidc_provider::TestProvider::start().await;
    let documents = document_server::DocumentServer::start().await;
    let mcp = start_mcp_server().await?;
    let mut targets = vec![
        upstream_target("upstream/memory", &provider, &documents, &mcp, None).await?,
        local_target().await?,
    ];
    let database = match std::env::var("FUZZ_DATABASE_URL") {
        Ok(url) => Some((url, None)),
        Err(_) => match std::env::var("TEST_DATABASE_URL") {
            Ok(admin) => Some(fresh_database(&admin).await?),
            Err(_) => None,
        },
    };
    if let Some((url, _)) = &database {
        targets.push(
            upstream_target("upstream/postgres", &provider, &documents, &mcp, Some(url)).await?,
        );
    }
    let dictionary = Arc::new(dictionary(&targets, &documents).await?);
    for path in ["/clients/fuzz.json", "/clients/other.json"] {
        let client_id = documents.url(path);
        documents.serve_document(
            path,
            json!({"client_id": client_id, "client_name": "Fuzz document",
                   "redirect_uris": ["http://127.0.0.1/callback"],
                   "grant_types": ["authorization_code", "refresh_token"],
                   "token_endpoint_auth_method": "none"}),
            "max-age=600",
        );
    }
    let targets = Arc::new(targets);
    println!(
        "fuzzing {} with {inputs} inputs, seed {seed}",
        targets
            .iter()
            .map(|t| t.name)
            .collect::<Vec<_>>()
            .join(", ")
    );

    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let range: Box<dyn Iterator<Item = u64> + Send> = match only {
        Some(index) => Box::new(std::iter::once(index)),
        None => Box::new(0..inputs),
    };
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    futures_util::stream::iter(range)
        .map(|index| {
            let targets = Arc::clone(&targets);
            let dictionary = Arc::clone(&dictionary);
            let tally = Arc::clone(&tally);
            let done = Arc::clone(&done);
            async move {
                let mut rng =
                    StdRng::seed_from_u64(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                let target = &targets[rng.gen_range(0..targets.len())];
                let exchanges = if rng.gen_bool(0.1) {
                    flow(&mut rng, target, &dictionary).await
                } else {
                    let (request, shown) = generate(&mut rng, &dictionary);
                    let verdict = send(target, request, &dictionary).await;
                    vec![(shown, verdict.map(|answer| answer.status))]
                };
                let mut tally = tally.lock().unwrap();
                for (shown, verdict) in exchanges {
                    match verdict {
                        Ok(status) => {
                            *tally.statuses.entry(status).or_default() += 1;
                            if status >= 500 && status != 503 {
                                tally.findings.push(format!(
                                    "#{index} {}: {status} for {shown}",
                                    target.name
                                ));
                            }
                        }
                        Err(problem) => tally
                            .findings
                            .push(format!("#{index} {}: {problem} for {shown}", target.name)),
                    }
                }
                let count = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if count % 1_000_000 == 0 {
                    eprintln!(
                        "… {count} inputs, {:.0}/s",
                        count as f64 / started.elapsed().as_secs_f64()
                    );
                }
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
    let elapsed = started.elapsed();
    let inputs_done = done.load(std::sync::atomic::Ordering::Relaxed);
    let findings = report(&tally.lock().unwrap(), inputs_done, elapsed);
    if let Some((_, Some((admin, name)))) = database {
        drop_database(&admin, &name).await?;
    }
    if findings == 0 {
        Ok(())
    } else {
        anyhow::bail!("{findings} findings")
    }
}

/// Prints the figures and the first findings; how many findings there were.
fn report(tally: &Tally, inputs: u64, elapsed: Duration) -> usize {
    let requests: u64 = tally.statuses.values().sum::<u64>() + tally.findings.len() as u64;
    println!(
        "inputs: {inputs} ({requests} requests), seconds: {:.1}, inputs/s: {:.0}",
        elapsed.as_secs_f64(),
        inputs as f64 / elapsed.as_secs_f64()
    );
    println!("statuses: {:?}", tally.statuses);
    println!("findings: {}", tally.findings.len());
    for finding in tally.findings.iter().take(20) {
        println!("  {finding}");
    }
    tally.findings.len()
}

/// A database of the fuzzer's own on the server `admin_url` names: its URL, and what to drop.
async fn fresh_database(admin_url: &str) -> anyhow::Result<(String, Option<(String, String)>)> {
    let name = format!("mob_fuzz_{:016x}", rand::random::<u64>());
    let (admin, connection) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    let mut url = url::Url::parse(admin_url)?;
    url.set_path(&format!("/{name}"));
    Ok((url.to_string(), Some((admin_url.to_owned(), name))))
}

async fn drop_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let (admin, connection) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    Ok(())
}

/// A tiny MCP server: answers every request with a small JSON-RPC result.
async fn start_mcp_server() -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let server = axum::Router::new().fallback(|| async {
        axum::Json(json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": []}}))
    });
    tokio::spawn(async move { axum::serve(listener, server).await });
    Ok(url)
}

fn build_config(yaml: &str) -> anyhow::Result<Config> {
    Ok(Config::from_yaml(yaml, &|_| None)?)
}

async fn upstream_target(
    name: &'static str,
    provider: &oidc_provider::TestProvider,
    documents: &document_server::DocumentServer,
    mcp: &str,
    database: Option<&str>,
) -> anyhow::Result<Target> {
    let issuer = "https://bridge.fuzz.example";
    let storage = match database {
        Some(url) => format!("backend: postgres\n  postgres: {{ url: \"{url}\" }}"),
        None => "backend: memory".to_owned(),
    };
    let _ = documents;
    let yaml = format!(
        r#"
server:
  public_url: "{issuer}"
oauth:
  secret_hash_cost: 4
  introspection_tokens: ["{INTROSPECTION_TOKEN}"]
  resources: ["https://mcp.fuzz.example/mcp"]
  authorize_rate_limit: {{ requests: 1000, window: 1m }}
  clients:
    - {{ id: fuzz-cli, redirect_uris: ["http://127.0.0.1/callback"] }}
    - {{ id: fuzz-web, secret: "{SECRET_HASH}", redirect_uris: ["https://app.fuzz.example/cb"], skip_consent: true }}
    - {{ id: fuzz-service, secret: "{SECRET_HASH}", grant_types: [client_credentials] }}
  dcr:
    enabled: true
    max_clients: 200
    allowed_redirect_profiles: [loopback, claude, cursor]
    allowed_redirect_patterns: ['https://app\.fuzz\.example/.+']
    rate_limit: {{ requests: 1000, window: 1m }}
  cimd:
    enabled: true
    allowed_hosts: [localhost]
    extra_root_certificates: ["{ca}"]
    timeout: 2s
    fetch_rate_limit: {{ requests: 1000, window: 1m }}
  upstream:
    issuer: "{upstream}"
    client_id: {client_id}
    client_secret: "{client_secret}"
    timeout: 2s
    claims: {{ groups: realm_access.roles }}
storage:
  {storage}
proxy:
  upstream_url: "{mcp}"
  timeout: 2s
  identity_jwt: {{ header: X-Identity }}
"#,
        ca = document_server::CA_FILE,
        upstream = provider.issuer,
        client_id = oidc_provider::CLIENT_ID,
        client_secret = oidc_provider::CLIENT_SECRET,
    );
    let service = app::build(&build_config(&yaml)?, Arc::new(SystemClock)).await?;
    Ok(Target {
        name,
        router: service.router,
        issuer: issuer.to_owned(),
    })
}

async fn local_target() -> anyhow::Result<Target> {
    let issuer = "https://local.fuzz.example";
    let yaml = format!(
        r#"
server:
  public_url: "{issuer}"
oauth:
  secret_hash_cost: 4
  authorize_rate_limit: {{ requests: 1000, window: 1m }}
  clients:
    - {{ id: fuzz-cli, redirect_uris: ["http://127.0.0.1/callback"] }}
  local_users:
    - {{ username: ada, password_hash: "{SECRET_HASH}", email: ada@fuzz.example }}
  login_throttle: {{ slowdown: 0s }}
"#
    );
    let service = app::build(&build_config(&yaml)?, Arc::new(SystemClock)).await?;
    Ok(Target {
        name: "local",
        router: service.router,
        issuer: issuer.to_owned(),
    })
}

/// Real tokens of the first target (a service token for the proxied resource, one for the
/// configured resource) and the names the generator draws from.
async fn dictionary(
    targets: &[Target],
    documents: &document_server::DocumentServer,
) -> anyhow::Result<Dictionary> {
    let mut tokens = Vec::new();
    for resource in [
        format!("{}/mcp", targets[0].issuer),
        "https://mcp.fuzz.example/mcp".to_owned(),
    ] {
        let request = Request::post("/oauth/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .header(
                "authorization",
                format!(
                    "Basic {}",
                    STANDARD.encode(format!("fuzz-service:{SECRET}"))
                ),
            )
            .body(Body::from(format!(
                "grant_type=client_credentials&resource={}",
                url::form_urlencoded::byte_serialize(resource.as_bytes()).collect::<String>()
            )))?;
        let response = targets[0].router.clone().oneshot(request).await?;
        let body = response.into_body().collect().await?.to_bytes();
        let tokens_answer: Value = serde_json::from_slice(&body)?;
        if let Some(token) = tokens_answer["access_token"].as_str() {
            tokens.push(token.to_owned());
        } else {
            anyhow::bail!("no service token: {tokens_answer}");
        }
    }
    tokens.extend([
        "eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0.eyJzdWIiOiJ4In0.".to_owned(),
        "not-a-token".to_owned(),
    ]);
    Ok(Dictionary {
        client_ids: vec![
            "fuzz-cli".into(),
            "fuzz-web".into(),
            "fuzz-service".into(),
            "unknown-client".into(),
            documents.url("/clients/fuzz.json"),
            documents.url("/clients/other.json"),
            documents.url("/clients/missing.json"),
            "https://10.0.0.1/client.json".into(),
            "https://[::1]/client.json".into(),
            "https://localhost:1/client.json".into(),
        ],
        redirect_uris: vec![
            "http://127.0.0.1/callback".into(),
            "http://127.0.0.1:53682/callback".into(),
            "https://app.fuzz.example/cb".into(),
            "https://claude.ai/api/mcp/auth_callback".into(),
            "cursor://anysphere.cursor-mcp/oauth/callback".into(),
            "https://evil.example/cb".into(),
            "javascript:alert(1)".into(),
            "http://127.0.0.1/callback#frag".into(),
        ],
        resources: vec![
            format!("{}/mcp", targets[0].issuer),
            "https://mcp.fuzz.example/mcp".into(),
            "urn:x".into(),
            "not a uri".into(),
        ],
        tokens,
        registered: Mutex::new(Vec::new()),
    })
}

/// The routes, each with its method and the parameters a well-formed request carries.
const ROUTES: &[(&str, &str, &[&str])] = &[
    (
        "GET",
        "/oauth/authorize",
        &[
            "client_id",
            "redirect_uri",
            "response_type",
            "code_challenge",
            "code_challenge_method",
            "state",
            "scope",
            "resource",
            "nonce",
        ],
    ),
    ("GET", "/oauth/callback", &["state", "code"]),
    ("GET", "/oauth/consent", &["request"]),
    ("POST", "/oauth/consent", &["request", "decision"]),
    ("GET", "/oauth/login", &["state"]),
    (
        "POST",
        "/oauth/login",
        &["state", "csrf", "username", "password"],
    ),
    (
        "POST",
        "/oauth/token",
        &[
            "grant_type",
            "client_id",
            "code",
            "redirect_uri",
            "code_verifier",
            "refresh_token",
            "resource",
            "scope",
        ],
    ),
    (
        "POST",
        "/oauth/revoke",
        &["token", "token_type_hint", "client_id"],
    ),
    (
        "POST",
        "/oauth/introspect",
        &["token", "client_id", "client_secret"],
    ),
    ("POST", "/oauth/register", &[]),
    ("GET", "/oauth/userinfo", &[]),
    ("POST", "/mcp", &[]),
    ("GET", "/mcp/tools", &[]),
    ("GET", "/.well-known/oauth-authorization-server", &[]),
];

const PATHS: &[&str] = &[
    "/oauth/authorize",
    "/oauth/callback",
    "/oauth/consent",
    "/oauth/login",
    "/oauth/register",
    "/oauth/token",
    "/oauth/revoke",
    "/oauth/introspect",
    "/oauth/userinfo",
    "/oauth/jwks",
    "/.well-known/oauth-authorization-server",
    "/.well-known/openid-configuration",
    "/.well-known/oauth-protected-resource",
    "/.well-known/oauth-protected-resource/mcp",
    "/healthz",
    "/readyz",
    "/mcp",
    "/mcp/tools",
    "/metrics",
    "/",
];

const PARAMETERS: &[&str] = &[
    "client_id",
    "redirect_uri",
    "response_type",
    "code_challenge",
    "code_challenge_method",
    "state",
    "scope",
    "resource",
    "nonce",
    "response_mode",
    "prompt",
    "request",
    "decision",
    "code",
    "grant_type",
    "code_verifier",
    "refresh_token",
    "client_secret",
    "token",
    "token_type_hint",
    "username",
    "password",
    "csrf",
    "cancel",
    "error",
    "access_token",
    "audience",
];

/// A value that is often right, sometimes nearly right, and sometimes anything at all.
fn value(rng: &mut StdRng, name: &str, dictionary: &Dictionary) -> String {
    let base = plausible(rng, name, dictionary);
    mutate(rng, base)
}

/// A value of the kind `name` takes: one of the real ones, or one almost like them.
fn plausible(rng: &mut StdRng, name: &str, dictionary: &Dictionary) -> String {
    // The first option is the usual right one: drawn more than half the time.
    fn pick<T: AsRef<str>>(rng: &mut StdRng, options: &[T]) -> String {
        let chosen = if rng.gen_bool(0.6) {
            options.first()
        } else {
            options.choose(rng)
        };
        chosen.map(|o| o.as_ref().to_owned()).unwrap_or_default()
    }
    match name {
        "client_id" => {
            let registered = dictionary.registered.lock().unwrap().clone();
            if !registered.is_empty() && rng.gen_bool(0.3) {
                registered.choose(rng).cloned().unwrap_or_default()
            } else {
                pick(rng, &dictionary.client_ids)
            }
        }
        "redirect_uri" => pick(rng, &dictionary.redirect_uris),
        "resource" | "audience" => pick(rng, &dictionary.resources),
        "response_type" => pick(rng, &["code", "token", "code id_token", ""]),
        "code_challenge_method" => pick(rng, &["S256", "plain", "s256", ""]),
        "code_challenge" | "code_verifier" => URL_SAFE_NO_PAD.encode(rng.r#gen::<[u8; 32]>()),
        "scope" => pick(
            rng,
            &[
                "openid email",
                "openid profile email offline_access",
                "mcp:tools",
                "admin",
                "openid\u{0}x",
            ],
        ),
        "grant_type" => pick(
            rng,
            &[
                "authorization_code",
                "refresh_token",
                "client_credentials",
                "password",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ],
        ),
        "token" | "access_token" | "refresh_token" => pick(rng, &dictionary.tokens),
        "decision" => pick(rng, &["allow", "deny", "maybe"]),
        "client_secret" | "password" => SECRET.to_owned(),
        "username" => "ada".to_owned(),
        _ => URL_SAFE_NO_PAD.encode(rng.r#gen::<[u8; 16]>()),
    }
}

/// Leaves most values alone; otherwise one of the usual ways of breaking a string.
fn mutate(rng: &mut StdRng, value: String) -> String {
    match rng.gen_range(0..20) {
        0 => String::new(),
        1 => value.repeat(rng.gen_range(2..200)),
        2 => format!("{value}\r\nX-Injected: 1"),
        3 => format!("{value}\u{202E}\u{200B}"),
        4 => value.chars().rev().collect(),
        5 => {
            let cut = rng.gen_range(0..=value.len());
            value.get(..cut).unwrap_or_default().to_owned()
        }
        6 => format!("{value}%00%ff%"),
        7 => "x".repeat(rng.gen_range(1..20_000)),
        8 => (0..rng.gen_range(1..40))
            .map(|_| rng.r#gen::<char>())
            .collect(),
        _ => value,
    }
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// One request for `target`, and a short account of it for a finding.
fn generate(rng: &mut StdRng, dictionary: &Dictionary) -> (Request<Body>, String) {
    // Half the time a well-formed request of a real route, its values drawn (and mutated) as
    // usual; otherwise any path, method and parameters.
    let template = rng.gen_bool(0.5).then(|| ROUTES.choose(rng)).flatten();
    let method = match template {
        Some((method, _, _)) => Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET),
        None => match rng.gen_range(0..20) {
            0..=8 => Method::GET,
            9..=16 => Method::POST,
            17 => Method::DELETE,
            18 => Method::OPTIONS,
            _ => Method::from_bytes(b"PURGE").unwrap_or(Method::PUT),
        },
    };
    let mut path = match template {
        Some((_, path, _)) => (*path).to_owned(),
        None => (*PATHS.choose(rng).unwrap_or(&"/")).to_owned(),
    };
    match rng.gen_range(0..(if template.is_some() { 40 } else { 12 })) {
        0 => path.push_str(&format!(
            "/{}",
            ["..", "%2e%2e", "..;", "%252e", "a%2fb", "%00", "x"]
                .choose(rng)
                .unwrap_or(&"x")
        )),
        1 => path = path.replace('/', "//"),
        2 => path = path.to_uppercase(),
        3 => path.push('/'),
        _ => {}
    }
    // Parameters: the route's own, or a handful of the names the endpoints read; sometimes
    // repeated.
    let mut pairs: Vec<(String, String)> = Vec::new();
    if let Some((_, _, names)) = template {
        for name in *names {
            if rng.gen_bool(0.95) {
                pairs.push(((*name).to_owned(), plausible(rng, name, dictionary)));
            }
        }
        // At most one value broken: the rest of the request stays good enough to get far.
        if !pairs.is_empty() && rng.gen_bool(0.6) {
            let at = rng.gen_range(0..pairs.len());
            let broken = mutate(rng, pairs[at].1.clone());
            pairs[at].1 = broken;
        }
    }
    for _ in 0..rng.gen_range(0..(if template.is_some() { 2 } else { 10 })) {
        let name = (*PARAMETERS.choose(rng).unwrap_or(&"x")).to_owned();
        let value = value(rng, &name, dictionary);
        pairs.push((name, value));
    }
    if rng.gen_bool(0.05) && !pairs.is_empty() {
        let again = pairs[0].clone();
        pairs.push(again);
    }
    let encoded: String = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let in_query = method == Method::GET || rng.gen_bool(0.2);
    let uri = if in_query && !encoded.is_empty() {
        format!("{path}?{encoded}")
    } else {
        path.clone()
    };
    let mut builder = Request::builder().method(method.clone()).uri(
        axum::http::Uri::try_from(uri.as_str())
            .unwrap_or_else(|_| axum::http::Uri::from_static("/")),
    );
    // Headers: the ones the bridge reads, right and wrong, and some it should not care about.
    let header_choices: Vec<(&str, String)> = vec![
        (
            "authorization",
            format!("Bearer {}", value(rng, "token", dictionary)),
        ),
        (
            "authorization",
            format!(
                "Basic {}",
                STANDARD.encode(format!(
                    "{}:{}",
                    value(rng, "client_id", dictionary),
                    value(rng, "client_secret", dictionary)
                ))
            ),
        ),
        ("authorization", mutate(rng, "Basic !!!".into())),
        (
            "cookie",
            format!(
                "mob_login_{}={}; __Host-mob_remember_x={}",
                rng.r#gen::<u16>(),
                mutate(rng, "v".into()),
                mutate(rng, "a.b".into())
            ),
        ),
        (
            "x-forwarded-for",
            mutate(rng, "198.51.100.7, 10.0.0.1".into()),
        ),
        ("forwarded", mutate(rng, "for=\"[2001:db8::1]:80\"".into())),
        ("x_forwarded_user", "admin".into()),
        ("x-request-id", mutate(rng, "abc".into())),
        ("mcp-session-id", mutate(rng, "s1".into())),
        ("accept-language", mutate(rng, "de-DE,de;q=0.9".into())),
        ("origin", "https://evil.example".into()),
        ("content-length", mutate(rng, "10000000000".into())),
    ];
    let mut shown_headers = Vec::new();
    for _ in 0..rng.gen_range(0..4) {
        if let Some((name, value)) = header_choices.choose(rng)
            && let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            )
        {
            shown_headers.push(format!("{name}: {}", value.to_str().unwrap_or("?")));
            builder = builder.header(name, value);
        }
    }
    let (content_type, body) = match rng.gen_range(0..10) {
        0..=4 if !in_query => ("application/x-www-form-urlencoded", encoded.clone()),
        5 => ("application/json", registration_body(rng, dictionary)),
        6 => (
            "application/json",
            mutate(rng, "{\"redirect_uris\":".into()),
        ),
        7 => (
            "text/plain",
            (0..rng.gen_range(0..2_000))
                .map(|_| rng.r#gen::<char>())
                .collect(),
        ),
        _ => ("application/x-www-form-urlencoded", String::new()),
    };
    if !body.is_empty() || method == Method::POST {
        builder = builder.header("content-type", content_type);
    }
    let shown = format!(
        "{method} {} [{}] body {} bytes: {}",
        uri.chars().take(300).collect::<String>(),
        shown_headers.join("; "),
        body.len(),
        body.chars().take(200).collect::<String>()
    );
    let request = builder
        .body(Body::from(body))
        .unwrap_or_else(|_| Request::new(Body::empty()));
    (request, shown)
}

/// RFC 7591 metadata, mostly valid and public (a confidential one costs a bcrypt).
fn registration_body(rng: &mut StdRng, dictionary: &Dictionary) -> String {
    let uris: Vec<String> = (0..rng.gen_range(0..3))
        .map(|_| value(rng, "redirect_uri", dictionary))
        .collect();
    let method = [
        "none",
        "none",
        "none",
        "client_secret_basic",
        "private_key_jwt",
        "x",
    ]
    .choose(rng)
    .copied()
    .unwrap_or("none");
    let mut body = json!({
        "redirect_uris": uris,
        "token_endpoint_auth_method": method,
        "grant_types": ["authorization_code", "refresh_token"],
        "client_name": mutate(rng, "Fuzz client".into()),
    });
    if rng.gen_bool(0.2) {
        body["application_type"] = json!(
            ["web", "native", "desktop"]
                .choose(rng)
                .copied()
                .unwrap_or("web")
        );
    }
    if rng.gen_bool(0.1) {
        body["scope"] = json!(value(rng, "scope", dictionary));
    }
    body.to_string()
}

/// An answer, its body read whole.
struct Answer {
    status: u16,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
}

/// The answer (its body read whole), or why there was none.
async fn send(
    target: &Target,
    mut request: Request<Body>,
    dictionary: &Dictionary,
) -> Result<Answer, String> {
    let peer = SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(
            10,
            9,
            rand::random::<u8>(),
            rand::random::<u8>(),
        )),
        40_000,
    );
    request.extensions_mut().insert(ConnectInfo(peer));
    let router = target.router.clone();
    let registration = request.uri().path() == "/oauth/register";
    let exchange = tokio::spawn(async move {
        let response = router.oneshot(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = tokio::time::timeout(ANSWER_TIMEOUT, response.into_body().collect())
            .await
            .map_err(|_| "the body did not end in time".to_owned())?
            .map_err(|e| format!("the body failed: {e}"))?
            .to_bytes();
        Ok::<_, String>((status, headers, body))
    });
    let (status, headers, body) = match tokio::time::timeout(ANSWER_TIMEOUT, exchange).await {
        Err(_) => return Err("no answer within 5 s".into()),
        Ok(Err(join)) if join.is_panic() => return Err("PANIC".into()),
        Ok(Err(join)) => return Err(format!("task failed: {join}")),
        Ok(Ok(result)) => result?,
    };
    if registration
        && status == 201
        && let Ok(Value::Object(registered)) = serde_json::from_slice::<Value>(&body)
        && let Some(Value::String(client_id)) = registered.get("client_id")
    {
        let mut known = dictionary.registered.lock().unwrap();
        if known.len() < 100 {
            known.push(client_id.clone());
        }
    }
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// A whole sign-in, one request after the other as a browser and a client make them, cookies
/// kept, with one step's request broken at random (or none): authorize, consent page, decision,
/// the provider's login (for real, over HTTP) or the login form, callback, code exchange. Each
/// request is one exchange of the result.
async fn flow(
    rng: &mut StdRng,
    target: &Target,
    dictionary: &Dictionary,
) -> Vec<(String, Result<u16, String>)> {
    use sha2::{Digest, Sha256};
    let mut exchanges = Vec::new();
    let broken = rng.gen_range(0..12);
    let mut cookies: BTreeMap<String, String> = BTreeMap::new();
    let verifier = URL_SAFE_NO_PAD.encode(rng.r#gen::<[u8; 32]>());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let redirect = "http://127.0.0.1:4000/callback";
    let mut query = vec![
        ("client_id", "fuzz-cli".to_owned()),
        ("redirect_uri", redirect.to_owned()),
        ("response_type", "code".to_owned()),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256".to_owned()),
        ("state", "flow-state".to_owned()),
        ("scope", "openid email offline_access".to_owned()),
    ];
    if target.name != "local" {
        query.push(("resource", format!("{}/mcp", target.issuer)));
    }
    let mut location = format!("/oauth/authorize?{}", form(&query));
    let mut post: Option<String> = None;
    let mut code = None;
    // Follows the sign-in through the bridge's pages until the client gets its code.
    for step in 0..8 {
        let mut uri = location.clone();
        let mut body = post.take();
        if step == broken {
            match &mut body {
                Some(form) if rng.gen_bool(0.5) => *form = mutate(rng, form.clone()),
                _ => uri = mutate(rng, uri),
            }
            if rng.gen_bool(0.3) {
                cookies.clear();
            }
        }
        let method = if body.is_some() {
            Method::POST
        } else {
            Method::GET
        };
        let Ok(parsed) = axum::http::Uri::try_from(uri.as_str()) else {
            break;
        };
        let mut request = Request::builder().method(method.clone()).uri(parsed);
        let cookie_header: Vec<String> = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if !cookie_header.is_empty() {
            request = request.header("cookie", cookie_header.join("; "));
        }
        if body.is_some() {
            request = request.header("content-type", "application/x-www-form-urlencoded");
        }
        let shown = format!("flow step {step}: {method} {uri}");
        let Ok(request) = request.body(Body::from(body.unwrap_or_default())) else {
            break;
        };
        let answer = match send(target, request, dictionary).await {
            Ok(answer) => answer,
            Err(problem) => {
                exchanges.push((shown, Err(problem)));
                break;
            }
        };
        exchanges.push((shown, Ok(answer.status)));
        for set in answer.headers.get_all("set-cookie") {
            if let Some((name, value)) = set
                .to_str()
                .ok()
                .and_then(|c| c.split(';').next())
                .and_then(|pair| pair.split_once('='))
            {
                cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        let next = answer
            .headers
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map(str::to_owned);
        match (answer.status, next) {
            (302 | 303, Some(next)) if next.starts_with(redirect) => {
                code = query_value(&next, "code");
                break;
            }
            (302 | 303, Some(next)) if next.starts_with(&target.issuer) => {
                location = next[target.issuer.len()..].to_owned();
            }
            // The provider's login page, for real: it answers with our callback.
            (302 | 303, Some(next)) if next.starts_with("http://127.0.0.1") => {
                match provider_login(&next).await {
                    Some(callback) if callback.starts_with(&target.issuer) => {
                        location = callback[target.issuer.len()..].to_owned();
                    }
                    _ => break,
                }
            }
            (200, _) if location.starts_with("/oauth/consent") => {
                let token = query_value(&location, "request").unwrap_or_default();
                post = Some(form(&[
                    ("request", token),
                    ("decision", "allow".to_owned()),
                ]));
                location = "/oauth/consent".to_owned();
            }
            (200, _) if location.starts_with("/oauth/login") => {
                let state = query_value(&location, "state").unwrap_or_default();
                let page = String::from_utf8_lossy(&answer.body);
                let csrf = hidden_field(&page, "csrf").unwrap_or_default();
                let password = if rng.gen_bool(0.8) { SECRET } else { "wrong" };
                post = Some(form(&[
                    ("state", state),
                    ("csrf", csrf),
                    ("username", "ada".to_owned()),
                    ("password", password.to_owned()),
                ]));
                location = "/oauth/login".to_owned();
            }
            _ => break,
        }
    }
    let Some(code) = code else {
        return exchanges;
    };
    let mut redeem = form(&[
        ("grant_type", "authorization_code".to_owned()),
        ("client_id", "fuzz-cli".to_owned()),
        ("code", code),
        ("redirect_uri", redirect.to_owned()),
        ("code_verifier", verifier),
    ]);
    if broken >= 8 {
        redeem = mutate(rng, redeem);
    }
    let request = Request::post("/oauth/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(redeem.clone()));
    if let Ok(request) = request {
        let answer = send(target, request, dictionary).await;
        exchanges.push((
            format!("flow: POST /oauth/token {redeem}"),
            answer.map(|a| a.status),
        ));
    }
    exchanges
}

/// The test provider's answer to its login URL: where it sends the browser back.
async fn provider_login(url: &str) -> Option<String> {
    // One client for the whole run: each new one loads the system's trust anchors.
    static CLIENT: std::sync::OnceLock<Option<reqwest::Client>> = std::sync::OnceLock::new();
    let client = CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .ok()
        })
        .as_ref()?;
    let answer = client.get(url).send().await.ok()?;
    answer
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .map(str::to_owned)
}

fn hidden_field(page: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page.find(&marker)? + marker.len();
    page[start..].split('"').next().map(str::to_owned)
}

fn query_value(location: &str, name: &str) -> Option<String> {
    url::Url::parse("https://x")
        .ok()?
        .join(location)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn form(pairs: &[(&str, String)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())))
        .finish()
}
