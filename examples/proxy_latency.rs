//! `cargo run --release --example proxy_latency`: what the proxy adds to a request. A small HTTP
//! server answers `POST /mcp` with 200 bytes of JSON; the same requests (one at a time, over a
//! kept-alive connection, after a warm-up) go to it directly and through the bridge's proxy,
//! with a valid token. Prints the median and the 99th percentile of each and their difference.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use mcp_oauth_bridge::app;
use mcp_oauth_bridge::clock::SystemClock;
use mcp_oauth_bridge::config::Config;
use serde_json::Value;

const WARM_UP: usize = 200;
const REQUESTS: usize = 2_000;
const BODY: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let upstream_url = format!("http://{}", upstream.local_addr()?);
    let answer = format!(
        r#"{{"jsonrpc":"2.0","id":1,"result":{{"tools":[],"pad":"{}"}}}}"#,
        "x".repeat(150)
    );
    let server = Router::new().route("/mcp", post(move || async move { answer }));
    tokio::spawn(async move { axum::serve(upstream, server).await });

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let bridge_url = format!("http://{}", listener.local_addr()?);
    // A service client (secret hashed at cost 4) gets a token for the proxied resource.
    let yaml = format!(
        r#"
server: {{ public_url: "{bridge_url}" }}
oauth:
  clients:
    - id: bench
      secret: "$2b$04$U3GXWr0zljxBButxQWdqJeDSjYi8dLdUZYVnlE.Qxo3GD1k0nDCUG"
      grant_types: [client_credentials]
  local_users:
    - {{ username: nobody, password_hash: "$2b$04$U3GXWr0zljxBButxQWdqJeDSjYi8dLdUZYVnlE.Qxo3GD1k0nDCUG" }}
proxy: {{ upstream_url: "{upstream_url}" }}
"#
    );
    let config = Config::from_yaml(&yaml, &|_| None)?;
    let service = app::build(&config, Arc::new(SystemClock)).await?;
    tokio::spawn(app::serve(listener, service, std::future::pending()));

    let http = reqwest::Client::builder().no_proxy().build()?;
    let tokens: Value = http
        .post(format!("{bridge_url}/oauth/token"))
        .basic_auth("bench", Some("service-secret-0123456789"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("resource", &format!("{bridge_url}/mcp")),
        ])
        .send()
        .await?
        .json()
        .await?;
    let token = tokens["access_token"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no access token: {tokens}"))?
        .to_owned();

    let direct = measure(&http, &format!("{upstream_url}/mcp"), None).await?;
    let proxied = measure(&http, &format!("{bridge_url}/mcp"), Some(&token)).await?;
    println!("{REQUESTS} sequential POST /mcp (200-byte answer), after {WARM_UP} to warm up:");
    report("direct", &direct);
    report("through the proxy", &proxied);
    println!(
        "{:<20} median +{:?}, p99 +{:?}",
        "added by the proxy",
        percentile(&proxied, 50).saturating_sub(percentile(&direct, 50)),
        percentile(&proxied, 99).saturating_sub(percentile(&direct, 99)),
    );
    Ok(())
}

async fn measure(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(REQUESTS);
    for i in 0..WARM_UP + REQUESTS {
        let mut request = http
            .post(url)
            .header("content-type", "application/json")
            .body(BODY);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let started = Instant::now();
        let response = request.send().await?;
        let status = response.status();
        response.bytes().await?;
        let elapsed = started.elapsed();
        anyhow::ensure!(status.is_success(), "{url} answered {status}");
        if i >= WARM_UP {
            times.push(elapsed);
        }
    }
    times.sort();
    Ok(times)
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let index = (sorted.len() * p / 100).min(sorted.len().saturating_sub(1));
    sorted.get(index).copied().unwrap_or_default()
}

fn report(name: &str, sorted: &[Duration]) {
    println!(
        "{name:<20} median {:>10.1?}  p99 {:>10.1?}",
        percentile(sorted, 50),
        percentile(sorted, 99)
    );
}
