//! The bridge in front of an MCP server (RFC 9728, RFC 6750, RFC 8707), against the
//! streaming test server in `mcp_upstream`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mcp_oauth_bridge::clock::{Clock, FixedClock, SystemClock};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;
use crate::mcp_upstream::{EVENTS, McpUpstream};

pub(crate) struct Proxied {
    pub(crate) app: TestApp,
    pub(crate) upstream: McpUpstream,
    pub(crate) resource: String,
}

/// How a test's proxy differs from one forwarding to the test server with a one-second timeout.
pub(crate) type ProxyChange = fn(&mut ProxyConfig);

pub(crate) async fn proxied(change: ProxyChange, clock: Option<Arc<FixedClock>>) -> Proxied {
    let upstream = McpUpstream::start().await;
    proxied_to(&upstream.url.clone(), upstream, change, clock).await
}

async fn proxied_to(
    upstream_url: &str,
    upstream: McpUpstream,
    change: ProxyChange,
    clock: Option<Arc<FixedClock>>,
) -> Proxied {
    let mut proxy = ProxyConfig::forwarding_to(upstream_url);
    proxy.timeout = Duration::from_secs(1);
    change(&mut proxy);
    let app = spawn_app_with(Options {
        configure: configure(move |config| config.proxy = Some(proxy)),
        clock: clock.map(|c| c as _),
        ..Options::default()
    })
    .await;
    let resource = app.url("/mcp");
    Proxied {
        app,
        upstream,
        resource,
    }
}

impl Proxied {
    /// Signs in with `resource` (and `scope`) at authorize time: the token response.
    pub(crate) async fn tokens_for(&self, resource: &str, scope: &str) -> Value {
        let pkce = Pkce::new();
        let params: Vec<(&str, String)> = self
            .app
            .authorize_params(&pkce)
            .into_iter()
            .map(|(name, value)| match name {
                "resource" => (name, resource.to_owned()),
                "scope" => (name, scope.to_owned()),
                _ => (name, value),
            })
            .collect();
        let back = location(&self.app.sign_in(&params).await);
        let code = query_of(&back)
            .get("code")
            .cloned()
            .unwrap_or_else(|| panic!("{back}"));
        let response = self.app.redeem_code(&code, &pkce).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    pub(crate) async fn access_token(&self) -> String {
        let tokens = self.tokens_for(&self.resource, "openid email").await;
        tokens["access_token"].as_str().unwrap().to_owned()
    }

    fn get(&self, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
        let request = self.app.api.get(self.app.url(path));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }
}

/// The status and body of a GET sent byte for byte, path untouched.
async fn raw_get(origin: &str, path: &str, token: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = origin.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

async fn raw_status(origin: &str, path: &str, token: &str) -> u16 {
    raw_get(origin, path, token).await.0
}

/// The parameters of a `WWW-Authenticate: Bearer k="v", …` challenge.
/// The first event of `/mcp/events`, which the server sends alone: the others wait until it has
/// come through the proxy, so a proxy that buffered the stream would never deliver it.
pub(crate) async fn first_event(
    proxied: &Proxied,
    response: &mut reqwest::Response,
) -> axum::body::Bytes {
    let first = tokio::time::timeout(Duration::from_secs(5), response.chunk())
        .await
        .expect("the first event arrives before the last is produced")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with("id: 0\n"));
    proxied.upstream.state.release_events.notify_one();
    first
}

pub(crate) fn challenge_params(response: &reqwest::Response) -> Vec<(String, String)> {
    let header = response.headers()["www-authenticate"].to_str().unwrap();
    let rest = header.strip_prefix("Bearer").unwrap().trim();
    let mut params = Vec::new();
    let mut remaining = rest;
    while let Some((name, after)) = remaining.split_once("=\"") {
        let (value, after) = after.split_once('"').unwrap();
        params.push((
            name.trim().trim_start_matches(',').trim().to_owned(),
            value.to_owned(),
        ));
        remaining = after;
    }
    params
}

pub(crate) fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn a_request_without_a_token_learns_where_to_sign_in() {
    let proxied = proxied(|proxy| proxy.required_scopes = strings(["email"]), None).await;
    let response = proxied.get("/mcp", None).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let params = challenge_params(&response);
    assert_eq!(
        param(&params, "error"),
        None,
        "no error code without a token"
    );
    assert_eq!(param(&params, "scope"), Some("email"));
    let metadata_url = param(&params, "resource_metadata").unwrap().to_owned();
    assert_eq!(
        metadata_url,
        proxied.app.url("/.well-known/oauth-protected-resource/mcp")
    );
    let metadata = proxied.app.get_json(&metadata_url).await;
    assert_eq!(metadata["resource"], proxied.resource);
    assert_eq!(metadata["authorization_servers"][0], proxied.app.issuer);
    assert_eq!(
        metadata["bearer_methods_supported"],
        serde_json::json!(["header"])
    );
    // What the resource requires is what a client should ask for.
    assert_eq!(metadata["scopes_supported"], serde_json::json!(["email"]));
    // With one resource, the bare well-known path names it too.
    let root = proxied
        .app
        .get_json(&proxied.app.url("/.well-known/oauth-protected-resource"))
        .await;
    assert_eq!(root, metadata);
    // And the authorization server it names is this one.
    let issuer = metadata["authorization_servers"][0].as_str().unwrap();
    let server = proxied
        .app
        .get_json(&format!("{issuer}/.well-known/oauth-authorization-server"))
        .await;
    assert_eq!(server["issuer"], issuer);
    assert_eq!(proxied.upstream.requests(), 0);
}

#[tokio::test]
async fn tokens_for_another_resource_expired_or_revoked_never_reach_the_server() {
    // Ahead of the provider's clock, so its ID tokens are never issued in our future.
    let clock = Arc::new(FixedClock::at(SystemClock.now().seconds() + 30));
    let proxied = proxied(|_| {}, Some(Arc::clone(&clock))).await;

    // A resource the bridge does not serve is refused at authorize time (RFC 8707).
    let pkce = Pkce::new();
    let back = location(
        &proxied
            .app
            .get_authorize(&proxied.app.authorize_params(&pkce))
            .await,
    );
    assert_eq!(query_of(&back)["error"], "invalid_target", "{back}");

    // A token for the default audience (the issuer) is not a token for the MCP server.
    let other = proxied
        .tokens_for(&proxied.app.issuer, "openid email")
        .await;
    let response = proxied
        .get("/mcp", other["access_token"].as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let params = challenge_params(&response);
    assert_eq!(param(&params, "error"), Some("invalid_token"));
    assert!(param(&params, "resource_metadata").is_some());
    for bad in ["not-a-token", "a.b.c"] {
        let response = proxied.get("/mcp", Some(bad)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{bad}");
    }

    let token = proxied.access_token().await;
    let response = proxied.get("/mcp", Some(&token)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(proxied.upstream.requests(), 1);

    let revoked = proxied.access_token().await;
    let response = proxied
        .app
        .api
        .post(proxied.app.url("/oauth/revoke"))
        .form(&[("client_id", PUBLIC_CLIENT), ("token", revoked.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = proxied.get("/mcp", Some(&revoked)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        param(&challenge_params(&response), "error_description")
            .unwrap()
            .contains("revoked")
    );

    clock.advance(Duration::from_secs(3600));
    let response = proxied.get("/mcp", Some(&token)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        param(&challenge_params(&response), "error_description")
            .unwrap()
            .contains("expired")
    );
    assert_eq!(
        proxied.upstream.requests(),
        1,
        "refused requests never reach the server"
    );
}

#[tokio::test]
async fn a_missing_scope_is_insufficient_scope_naming_what_is_needed() {
    let proxied = proxied(
        |proxy| proxy.required_scopes = strings(["email", "profile"]),
        None,
    )
    .await;
    let token = proxied.access_token().await;
    let response = proxied.get("/mcp", Some(&token)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let params = challenge_params(&response);
    assert_eq!(param(&params, "error"), Some("insufficient_scope"));
    assert_eq!(param(&params, "scope"), Some("email profile"));
    assert!(param(&params, "resource_metadata").is_some());
    assert_eq!(proxied.upstream.requests(), 0);
}

#[tokio::test]
async fn the_server_gets_the_callers_identity_and_nothing_the_client_forged() {
    let proxied = proxied(
        |proxy| {
            proxy.identity_jwt = Some(IdentityJwtConfig {
                header: "X-Identity-Token".into(),
                ttl: Duration::from_secs(60),
            });
        },
        None,
    )
    .await;
    let token = proxied.access_token().await;
    let response = proxied
        .app
        .api
        .post(proxied.app.url("/mcp?page=2"))
        .bearer_auth(&token)
        .header("X-Forwarded-User", "admin")
        .header("X-Forwarded-Email", "admin@corp.example")
        .header("X-Forwarded-Groups", "admins")
        .header("X-Identity-Token", "forged")
        .header("Mcp-Session-Id", "session-from-client")
        .header("X-Forwarded-For", "6.6.6.6")
        .header("Mcp-Protocol-Version", "2025-11-25")
        .header("Connection", "x-hop")
        .header("X-Hop", "not for the server")
        .header("Cookie", "mob_login_abc=secret; app=kept")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["mcp-session-id"], "session-from-server");
    let echoed: Value = response.json().await.unwrap();
    assert_eq!(echoed["path"], "/mcp");
    assert_eq!(echoed["query"], "page=2");
    assert_eq!(echoed["method"], "POST");

    let seen = proxied.upstream.last_headers();
    assert_eq!(seen["x-forwarded-user"], "upstream-user-42");
    assert_eq!(seen["x-forwarded-email"], "ada@corp.example");
    assert_eq!(seen["x-forwarded-groups"], "mcp-users,analysts");
    assert_eq!(seen.get_all("x-forwarded-user").iter().count(), 1);
    assert_eq!(seen["mcp-session-id"], "session-from-client");
    assert_eq!(seen["mcp-protocol-version"], "2025-11-25");
    assert_eq!(seen["cookie"], "app=kept");
    assert!(seen.get("authorization").is_none(), "no token passthrough");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert!(
        proxied
            .app
            .issuer
            .ends_with(seen["x-forwarded-host"].to_str().unwrap())
    );

    // Encoded dot segments do not climb out of the mount at the server. Sent by hand: HTTP
    // client libraries resolve them before sending.
    let requests = proxied.upstream.requests();
    for path in ["/mcp/%2e%2e/admin", "/mcp/../admin", "/mcp/a%2Fb"] {
        let status = raw_status(&proxied.app.origin, path, &token).await;
        assert_eq!(status, 400, "{path}");
    }
    assert_eq!(proxied.upstream.requests(), requests);
    assert!(seen.get("x-hop").is_none());
    let identity = seen["x-identity-token"].to_str().unwrap();
    let header = jsonwebtoken::decode_header(identity).unwrap();
    assert_eq!(header.typ.as_deref(), Some("identity+jwt"));
    let claims = jwt_payload(identity);
    assert_eq!(claims["sub"], "upstream-user-42");
    assert_eq!(claims["aud"], format!("{}/", proxied.upstream.url));
    assert_eq!(claims["iss"], proxied.app.issuer);
    assert_eq!(claims["resource"], proxied.resource);
    assert_eq!(claims["access_token_jti"], jwt_payload(&token)["jti"]);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        60
    );
    // Signed with a key the JWKS publishes.
    let published = proxied.app.get_json(&proxied.app.url("/oauth/jwks")).await;
    assert_eq!(published["keys"][0]["kid"], header.kid.unwrap());
}

#[tokio::test]
async fn server_sent_events_arrive_one_by_one() {
    let proxied = proxied(|_| {}, None).await;
    let token = proxied.access_token().await;
    let mut response = proxied
        .get("/mcp/events", Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let first = first_event(&proxied, &mut response).await;
    let mut text = String::from_utf8_lossy(&first).into_owned();
    while let Some(chunk) = response.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(text.matches("\n\n").count(), EVENTS);
    assert!(text.ends_with(&format!("data: {{\"n\":{}}}\n\n", EVENTS - 1)));
}

#[tokio::test]
async fn requests_one_after_another_reuse_one_connection_to_the_server() {
    let proxied = proxied(|_| {}, None).await;
    let token = proxied.access_token().await;
    for _ in 0..20 {
        let response = proxied.get("/mcp", Some(&token)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.bytes().await.unwrap();
    }
    assert_eq!(proxied.upstream.requests(), 20);
    // A connection per request would cost a handshake each, and a port in TIME_WAIT.
    assert_eq!(proxied.upstream.state.peers.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_hundred_megabyte_upload_streams_through() {
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 100;
    let proxied = proxied(|_| {}, None).await;
    let token = proxied.access_token().await;
    let state = Arc::clone(&proxied.upstream.state);
    // Half the body, then wait until the server has most of it: a proxy that buffered the
    // whole body before forwarding would never let this finish.
    let body = futures_util::stream::unfold(0usize, move |sent| {
        let state = Arc::clone(&state);
        async move {
            if sent == CHUNKS {
                return None;
            }
            if sent == CHUNKS / 2 {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                while state.uploaded.load(Ordering::SeqCst) < (CHUNK * CHUNKS / 4) as u64 {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "the server saw nothing of the first half: the proxy is buffering"
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            Some((Ok::<_, std::io::Error>(vec![b'x'; CHUNK]), sent + 1))
        }
    });
    let response = proxied
        .app
        .api
        .post(proxied.app.url("/mcp/upload"))
        .bearer_auth(&token)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["bytes"], (CHUNK * CHUNKS) as u64);
}

#[tokio::test]
async fn a_server_that_is_down_is_502_and_one_that_is_slow_is_504() {
    // Port 1 is privileged and unused: a freed ephemeral port could be taken by another test.
    let upstream = McpUpstream::start().await;
    let down = proxied_to("http://127.0.0.1:1", upstream, |_| {}, None).await;
    let token = down.access_token().await;
    let response = down.get("/mcp", Some(&token)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "bad_gateway");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("MCP server")
    );

    let slow = proxied(|_| {}, None).await;
    let token = slow.access_token().await;
    let started = std::time::Instant::now();
    let response = slow.get("/mcp/slow", Some(&token)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(5));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "gateway_timeout");
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_upstream_request() {
    let proxied = proxied(|_| {}, None).await;
    let token = proxied.access_token().await;
    let mut response = proxied
        .get("/mcp/endless", Some(&token))
        .send()
        .await
        .unwrap();
    assert!(response.chunk().await.unwrap().is_some());
    assert!(
        !proxied
            .upstream
            .state
            .stream_cancelled
            .load(Ordering::SeqCst)
    );
    drop(response);
    for _ in 0..100 {
        if proxied
            .upstream
            .state
            .stream_cancelled
            .load(Ordering::SeqCst)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the upstream stream was still running 5 s after the client left");
}

#[tokio::test]
async fn headers_a_cgi_server_would_merge_with_the_identity_never_reach_it() {
    let proxied = proxied(|_| {}, None).await;
    let token = proxied.access_token().await;
    let mut request = proxied
        .app
        .api
        .post(proxied.app.url(
            "/mcp/cgi?ACCESS_TOKEN=a&access%5Ftoken=b&Access.Token=c&access_token%5B%5D=d&page=2",
        ))
        .bearer_auth(&token)
        .header("Mcp-Method", "tools/call");
    for (name, value) in [
        ("x_forwarded_user", "admin"),
        ("x_forwarded_groups", "admins"),
        ("x_forwarded_email", "admin@corp.example"),
        ("x_forwarded_for", "6.6.6.6"),
        ("x-real-ip", "6.6.6.6"),
        ("x_real_ip", "6.6.6.6"),
        ("x-original-url", "/admin"),
        ("x-rewrite-url", "/admin"),
        ("true-client-ip", "6.6.6.6"),
        ("x-client-ip", "6.6.6.6"),
        ("cf-connecting-ip", "6.6.6.6"),
        ("forwarded", "for=6.6.6.6"),
        ("x-request-id", "chosen-by-the-client"),
        ("x_custom", "1"),
    ] {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let our_request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let environ: Value = response.json().await.unwrap();
    assert_eq!(
        environ["HTTP_X_FORWARDED_USER"], "upstream-user-42",
        "{environ}"
    );
    assert_eq!(
        environ["HTTP_X_FORWARDED_GROUPS"], "mcp-users,analysts",
        "{environ}"
    );
    assert_eq!(
        environ["HTTP_X_FORWARDED_EMAIL"], "ada@corp.example",
        "{environ}"
    );
    assert_eq!(environ["HTTP_X_FORWARDED_FOR"], "127.0.0.1", "{environ}");
    assert_eq!(environ["HTTP_MCP_METHOD"], "tools/call");
    for absent in [
        "HTTP_X_REAL_IP",
        "HTTP_X_ORIGINAL_URL",
        "HTTP_X_REWRITE_URL",
        "HTTP_TRUE_CLIENT_IP",
        "HTTP_X_CLIENT_IP",
        "HTTP_CF_CONNECTING_IP",
        "HTTP_FORWARDED",
        "HTTP_X_CUSTOM",
        "HTTP_AUTHORIZATION",
    ] {
        assert!(
            environ.get(absent).is_none(),
            "{absent} reached the server: {environ}"
        );
    }
    assert_ne!(environ["HTTP_X_REQUEST_ID"], "chosen-by-the-client");
    assert_eq!(environ["HTTP_X_REQUEST_ID"], our_request_id.as_str());
    assert_eq!(environ["QUERY_STRING"], "page=2");
}

#[tokio::test]
async fn underscored_headers_pass_when_allowed_but_never_as_the_proxys_own() {
    let proxied = proxied(|proxy| proxy.allow_underscore_headers = true, None).await;
    let token = proxied.access_token().await;
    let environ: Value = proxied
        .app
        .api
        .get(proxied.app.url("/mcp/cgi"))
        .bearer_auth(&token)
        .header("x_custom", "kept")
        .header("x_forwarded_groups", "admins")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(environ["HTTP_X_CUSTOM"], "kept");
    assert_eq!(environ["HTTP_X_FORWARDED_GROUPS"], "mcp-users,analysts");
}

#[tokio::test]
async fn paths_some_server_would_resolve_out_of_the_mount_are_refused_the_rest_pass_untouched() {
    let proxied = proxied(|_| {}, None).await;
    let token = proxied.access_token().await;
    for path in [
        "/mcp/..;/secret",
        "/mcp/%2e%2e;/x",
        "/mcp/%2e%2e%3b/x",
        "/mcp/.;/x",
        "/mcp/%252e%252e/x",
        "/mcp/%252fx",
        "/mcp/a%00b",
        "/mcp/a%0d%0ab",
    ] {
        assert_eq!(
            raw_status(&proxied.app.origin, path, &token).await,
            400,
            "{path}"
        );
    }
    assert_eq!(proxied.upstream.requests(), 0);
    let (status, body) = raw_get(
        &proxied.app.origin,
        "/mcp/a;v=1/%41%42/x%20y/..x?q=%2e%2e",
        &token,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let echoed: Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(echoed["path"], "/mcp/a;v=1/%41%42/x%20y/..x");
    assert_eq!(echoed["query"], "q=%2e%2e");
}

#[tokio::test]
async fn proxied_answers_are_sandboxed_unless_the_operator_says_otherwise() {
    let proxied = proxied(|_| {}, None).await;
    let token = proxied.access_token().await;
    let response = proxied.get("/mcp", Some(&token)).send().await.unwrap();
    assert_eq!(response.headers()["content-security-policy"], "sandbox");
    let custom = self::proxied(
        |proxy| proxy.content_security_policy = "sandbox allow-scripts".into(),
        None,
    )
    .await;
    let token = custom.access_token().await;
    let response = custom.get("/mcp", Some(&token)).send().await.unwrap();
    assert_eq!(
        response.headers()["content-security-policy"],
        "sandbox allow-scripts"
    );
    let none = self::proxied(|proxy| proxy.content_security_policy = String::new(), None).await;
    let token = none.access_token().await;
    let response = none.get("/mcp", Some(&token)).send().await.unwrap();
    assert!(response.headers().get("content-security-policy").is_none());
}
