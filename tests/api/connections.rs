//! Connection hygiene (server.header_timeout, body_timeout, idle_timeout, max_connections) over
//! raw TCP: what slow, idle and greedy clients get, and what streams keep.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;
use crate::mcp_upstream::McpUpstream;

/// One second for headers and for a body, two for an idle connection.
fn tight(config: &mut Config) {
    config.server.header_timeout = seconds(1);
    config.server.body_timeout = seconds(1);
    config.server.idle_timeout = seconds(2);
}

async fn app_with(server: impl FnOnce(&mut Config) + Send + 'static) -> TestApp {
    spawn_app_with(Options {
        configure: configure(server),
        ..Options::default()
    })
    .await
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.origin.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server closes the connection; what it sent, and when it closed.
async fn until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let result = tokio::time::timeout(limit, stream.read_to_end(&mut received)).await;
    assert!(result.is_ok(), "still open after {limit:?}");
    (
        String::from_utf8_lossy(&received).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn a_client_that_sends_its_headers_slowly_or_not_at_all_is_disconnected() {
    let app = app_with(tight).await;
    let mut half = connect(&app).await;
    half.write_all(b"GET /healthz HT").await.unwrap();
    let mut silent = connect(&app).await;
    let (answer, after) = until_closed(&mut half, Duration::from_secs(5)).await;
    assert!(after < Duration::from_millis(2500), "{after:?}");
    assert!(!answer.contains("200 OK"), "{answer}");
    let (_, after) = until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(after < Duration::from_millis(2500), "{after:?}");
    // Dripping a byte at a time does not reset the clock.
    let mut drip = connect(&app).await;
    let started = Instant::now();
    for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\n" {
        if drip.write_all(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = until_closed(&mut drip, Duration::from_secs(5)).await;
    assert!(started.elapsed() < Duration::from_millis(3500));
}

#[tokio::test]
async fn a_kept_alive_connection_lives_for_the_idle_timeout_not_the_header_timeout() {
    let app = app_with(tight).await;
    let mut stream = connect(&app).await;
    for _ in 0..2 {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buffer = [0u8; 1024];
        let n = stream.read(&mut buffer).await.unwrap();
        assert!(String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 200"));
        // Longer than the header timeout between requests: still open.
        tokio::time::sleep(Duration::from_millis(1300)).await;
    }
    let (_, after) = until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(after < Duration::from_millis(1500), "{after:?}");
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_408_and_one_announced_too_large_is_413_at_once() {
    let app = app_with(tight).await;
    let mut slow = connect(&app).await;
    slow.write_all(
        b"POST /oauth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_type=",
    )
    .await
    .unwrap();
    let (answer, after) = until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"invalid_request\""), "{answer}");
    assert!(after < Duration::from_millis(2500), "{after:?}");

    for path in [
        "/oauth/token",
        "/oauth/revoke",
        "/oauth/introspect",
        "/oauth/consent",
    ] {
        let mut huge = connect(&app).await;
        let started = Instant::now();
        huge.write_all(
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 10000000000\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut buffer = [0u8; 4096];
        let n = huge.read(&mut buffer).await.unwrap();
        let answer = String::from_utf8_lossy(&buffer[..n]);
        assert!(answer.starts_with("HTTP/1.1 413"), "{path}: {answer}");
        assert!(started.elapsed() < Duration::from_millis(500), "{path}");
    }
}

#[tokio::test]
async fn a_full_server_closes_new_connections_and_serves_again_once_one_closes() {
    let app = app_with(|config| config.server.max_connections = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = connect(&app).await;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buffer = [0u8; 1024];
        assert!(stream.read(&mut buffer).await.unwrap() > 0);
        held.push(stream);
    }
    let mut refused = connect(&app).await;
    let (answer, after) = until_closed(&mut refused, Duration::from_secs(2)).await;
    assert!(answer.is_empty(), "{answer}");
    assert!(after < Duration::from_millis(500), "{after:?}");
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let response = app.api.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

async fn proxied_app(
    server: impl FnOnce(&mut Config) + Send + 'static,
) -> (TestApp, McpUpstream, String) {
    proxied_app_until(server, None).await
}

/// A bridge proxying to a test MCP server, shut down when `shutdown` fires; with a token for it.
async fn proxied_app_until(
    server: impl FnOnce(&mut Config) + Send + 'static,
    shutdown: Option<tokio::sync::oneshot::Receiver<()>>,
) -> (TestApp, McpUpstream, String) {
    let upstream = McpUpstream::start().await;
    let upstream_url = upstream.url.clone();
    let app = spawn_app_with(Options {
        configure: configure(move |config| {
            let mut proxy = ProxyConfig::forwarding_to(upstream_url);
            proxy.timeout = Duration::from_secs(5);
            config.proxy = Some(proxy);
            server(config);
        }),
        shutdown,
        ..Options::default()
    })
    .await;
    let token = token_for_the_proxy(&app).await;
    (app, upstream, token)
}

async fn token_for_the_proxy(app: &TestApp) -> String {
    let pkce = Pkce::new();
    let mut params = app.authorize_params(&pkce);
    params.retain(|(k, _)| *k != "resource");
    params.push(("resource", app.url("/mcp")));
    let back = location(&app.sign_in(&params).await);
    let code = query_of(&back)["code"].clone();
    let tokens: serde_json::Value = app.redeem_code(&code, &pkce).await.json().await.unwrap();
    tokens["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_stream_that_keeps_moving_outlives_every_timeout() {
    let (app, _upstream, token) = proxied_app(tight).await;
    let mut response = app
        .api
        .get(app.url("/mcp/endless"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let started = Instant::now();
    let mut events = 0;
    while started.elapsed() < Duration::from_secs(4) {
        let chunk = tokio::time::timeout(Duration::from_secs(1), response.chunk())
            .await
            .expect("the stream kept flowing")
            .unwrap();
        assert!(chunk.is_some(), "the stream ended");
        events += 1;
    }
    assert!(events > 50, "{events}");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_and_the_upstream_request_cancelled() {
    let (app, upstream, token) = proxied_app(tight).await;
    let mut stream = connect(&app).await;
    stream
        .write_all(
            format!(
                "GET /mcp/firehose HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // Never read: the buffers fill, the bridge's writes block, the idle timeout runs.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !upstream.state.stream_cancelled.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "the upstream stream still runs for a client that reads nothing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(stream);
}

#[tokio::test]
async fn shutdown_lets_the_request_in_flight_finish_and_refuses_new_ones() {
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let (app, upstream, token) = proxied_app_until(|_| {}, Some(stopped)).await;
    let in_flight = tokio::spawn({
        let request = app.api.get(app.url("/mcp/pause")).bearer_auth(&token);
        async move { request.send().await.unwrap().text().await.unwrap() }
    });
    while upstream.requests() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(()).unwrap();
    assert_eq!(in_flight.await.unwrap(), "done");
    tokio::time::timeout(Duration::from_secs(5), app.server)
        .await
        .expect("serve returned once the request in flight was done")
        .unwrap();
    assert!(
        TcpStream::connect(app.origin.trim_start_matches("http://"))
            .await
            .is_err(),
        "no new connection is accepted after shutdown"
    );
}

#[tokio::test]
async fn a_proxied_upload_that_stops_arriving_is_408() {
    let (app, _upstream, token) = proxied_app(tight).await;
    let mut stream = connect(&app).await;
    stream
        .write_all(
            format!(
                "POST /mcp/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 1000\r\n\r\nfirst bytes"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let (answer, after) = until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(after < Duration::from_millis(2500), "{after:?}");
}

#[tokio::test]
async fn a_kept_alive_connection_cannot_trickle_its_next_request_forever() {
    let app = app_with(tight).await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = [0u8; 1024];
    assert!(stream.read(&mut buffer).await.unwrap() > 0);
    let started = Instant::now();
    let trickle = b"GET /healthz HTTP/1.1\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    for byte in trickle {
        if stream.write_all(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < Duration::from_millis(3500),
        "open for {:?} while the headers trickled in",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_refused_request_whose_body_comes_late_leaves_the_connection_usable() {
    let (app, _upstream, _token) = proxied_app(|_| {}).await;
    let mut stream = connect(&app).await;
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize"}"#;
    // The headers first, the body a moment later: the refusal (no token) is ready before it.
    stream
        .write_all(
            format!(
                "POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = stream.read(&mut answer).await.unwrap();
    let first = String::from_utf8_lossy(&answer[..n]).to_ascii_lowercase();
    assert!(first.starts_with("http/1.1 401"), "{first}");
    assert!(!first.contains("connection: close"), "{first}");
    // The client reuses the connection, as pools do: it is answered.
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut answer))
        .await
        .expect("an answer on the reused connection")
        .unwrap();
    let second = String::from_utf8_lossy(&answer[..n]);
    assert!(second.starts_with("HTTP/1.1 200"), "{second:?}");
}

#[tokio::test]
async fn shutdown_waits_for_a_stream_only_as_long_as_the_shutdown_timeout() {
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let (app, _upstream, token) = proxied_app_until(
        |config| config.server.shutdown_timeout = seconds(1),
        Some(stopped),
    )
    .await;
    let mut endless = app
        .api
        .get(app.url("/mcp/endless"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(endless.chunk().await.unwrap().is_some());
    let started = Instant::now();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), app.server)
        .await
        .expect("serve returned once the shutdown timeout was over")
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    // The stream was cut when the bridge gave up waiting.
    let ended = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(Some(_)) = endless.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived the shutdown");
}

#[tokio::test]
async fn one_address_cannot_take_every_connection_unless_it_is_a_trusted_proxy() {
    async fn held(app: &TestApp, count: usize) -> Vec<TcpStream> {
        let mut streams = Vec::new();
        for _ in 0..count {
            let mut stream = connect(app).await;
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut buffer = [0u8; 1024];
            assert!(stream.read(&mut buffer).await.unwrap() > 0);
            streams.push(stream);
        }
        streams
    }
    let app = app_with(|config| config.server.max_connections_per_address = 2).await;
    let _two = held(&app, 2).await;
    let mut third = connect(&app).await;
    let (answer, after) = until_closed(&mut third, Duration::from_secs(2)).await;
    assert!(
        answer.is_empty() && after < Duration::from_millis(500),
        "{answer}"
    );

    let behind_a_proxy = app_with(|config| {
        config.server.max_connections_per_address = 2;
        trust_proxies(config, &["127.0.0.1/32"]);
    })
    .await;
    let held_open = held(&behind_a_proxy, 5).await;
    assert_eq!(held_open.len(), 5);
}
