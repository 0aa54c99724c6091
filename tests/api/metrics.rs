//! `GET /metrics` (Prometheus): off unless configured, and after a scripted flow it counts what
//! happened, with labels from fixed sets only (no client id, no subject).

use reqwest::StatusCode;

use crate::helpers::*;
use crate::mcp_upstream::McpUpstream;

pub(crate) async fn scrape(app: &TestApp) -> String {
    let response = app.api.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
    );
    response.text().await.unwrap()
}

/// Signs in for the proxy's resource: the token response.
async fn tokens_for_the_proxy(app: &TestApp) -> serde_json::Value {
    let pkce = Pkce::new();
    let params: Vec<(&str, String)> = app
        .authorize_params(&pkce)
        .into_iter()
        .map(|(name, value)| match name {
            "resource" => (name, app.url("/mcp")),
            _ => (name, value),
        })
        .collect();
    let back = location(&app.sign_in(&params).await);
    let code = query_of(&back)["code"].clone();
    let response = app.redeem_code(&code, &pkce).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("{series} not in:\n{text}"))
}

#[tokio::test]
async fn metrics_are_off_unless_configured() {
    let app = spawn_app().await;
    let response = app.api.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_scripted_flow_is_counted_without_a_client_id_or_subject_in_a_label() {
    let upstream = McpUpstream::start().await;
    let upstream_url = upstream.url.clone();
    let app = spawn_app_with(Options {
        configure: configure(move |config| {
            config.metrics.enabled = true;
            config.proxy = Some(ProxyConfig::forwarding_to(upstream_url));
            config.oauth.dcr.enabled = true;
            config.oauth.dcr.allowed_redirect_profiles = strings(["loopback"]);
        }),
        ..Options::default()
    })
    .await;
    let before = scrape(&app).await;
    assert!(
        before.contains("mcp_oauth_bridge_build_info{version=\""),
        "{before}"
    );
    assert_eq!(
        value(&before, "mcp_oauth_bridge_pending_authorizations"),
        0.0
    );

    let tokens = tokens_for_the_proxy(&app).await;
    let first_refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let refreshed = app.refresh(&first_refresh).await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let refreshed: serde_json::Value = refreshed.json().await.unwrap();
    let again = app
        .refresh(refreshed["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(again.status(), StatusCode::OK);
    // The first refresh token, whose successor was used: reuse, the family is revoked.
    let reused = app.refresh(&first_refresh).await;
    assert_eq!(reused.status(), StatusCode::BAD_REQUEST);
    let to_revoke = tokens_for_the_proxy(&app).await;
    let revoked = app
        .api
        .post(app.url("/oauth/revoke"))
        .form(&[
            ("client_id", PUBLIC_CLIENT),
            ("token", to_revoke["refresh_token"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    let unauthenticated = app.api.get(app.url("/mcp")).send().await.unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
    let second = tokens_for_the_proxy(&app).await;
    let proxied = app
        .api
        .get(app.url("/mcp"))
        .bearer_auth(second["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), StatusCode::OK);

    for redirect_uri in ["http://127.0.0.1:4000/cb", "https://evil.example/cb"] {
        app.api
            .post(app.url("/oauth/register"))
            .json(&serde_json::json!({"redirect_uris": [redirect_uri], "token_endpoint_auth_method": "none"}))
            .send()
            .await
            .unwrap();
    }

    let text = scrape(&app).await;
    for (series, expected) in [
        (
            "mcp_oauth_bridge_upstream_discovered{provider=\"upstream\"}",
            1.0,
        ),
        (
            "mcp_oauth_bridge_tokens_issued_total{grant_type=\"authorization_code\"}",
            3.0,
        ),
        (
            "mcp_oauth_bridge_tokens_issued_total{grant_type=\"refresh_token\"}",
            2.0,
        ),
        (
            "mcp_oauth_bridge_token_errors_total{error=\"invalid_grant\"}",
            1.0,
        ),
        ("mcp_oauth_bridge_refresh_reuse_detections_total", 1.0),
        (
            "mcp_oauth_bridge_registrations_total{kind=\"dcr\",outcome=\"created\"}",
            1.0,
        ),
        ("mcp_oauth_bridge_revocations_total", 1.0),
        (
            "mcp_oauth_bridge_sign_ins_total{outcome=\"success\",provider=\"upstream\"}",
            3.0,
        ),
        (
            "mcp_oauth_bridge_consent_decisions_total{decision=\"allow\"}",
            1.0,
        ),
        ("mcp_oauth_bridge_proxy_requests_total{status=\"2xx\"}", 1.0),
        ("mcp_oauth_bridge_proxy_requests_total{status=\"4xx\"}", 1.0),
        ("mcp_oauth_bridge_proxy_request_duration_seconds_count", 2.0),
    ] {
        assert_eq!(value(&text, series), expected, "{series} in:\n{text}");
    }
    // Three sign-ins at the test provider; storage operations timed by name.
    assert_eq!(
        value(
            &text,
            "mcp_oauth_bridge_upstream_request_duration_seconds_count{endpoint=\"token\",provider=\"upstream\"}"
        ),
        3.0
    );
    assert_eq!(
        value(
            &text,
            "mcp_oauth_bridge_upstream_failures_total{endpoint=\"token\",provider=\"upstream\"}"
        ),
        0.0
    );
    // Series that saw nothing are there, at 0, for alerts to compare against.
    assert_eq!(
        value(
            &text,
            "mcp_oauth_bridge_token_errors_total{error=\"server_error\"}"
        ),
        0.0
    );
    assert!(
        value(
            &text,
            "mcp_oauth_bridge_storage_operation_duration_seconds_count{operation=\"rotate_refresh\"}"
        ) >= 3.0
    );
    let claims = jwt_payload(second["access_token"].as_str().unwrap());
    let subject = claims["sub"].as_str().unwrap();
    for private in [PUBLIC_CLIENT, subject, "ada@corp.example", "127.0.0.1:4000"] {
        assert!(!text.contains(private), "{private} in:\n{text}");
    }
}

#[tokio::test]
async fn metrics_address_serves_them_on_a_listener_of_their_own() {
    let free_port = || async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    };
    let (port, metrics_port) = (free_port().await, free_port().await);
    let hash = bcrypt::hash("a-password-of-no-importance", 4).unwrap();
    let config_path =
        std::env::temp_dir().join(format!("mob-metrics-{:032x}.yaml", rand::random::<u128>()));
    std::fs::write(
        &config_path,
        format!(
            "server: {{ address: \"127.0.0.1:{port}\", public_url: \"http://127.0.0.1:{port}\" }}\n\
             oauth:\n  local_users:\n    - {{ username: ada, password_hash: \"{hash}\" }}\n\
             metrics: {{ enabled: true, address: \"127.0.0.1:{metrics_port}\" }}\n"
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-oauth-bridge"))
        .args(["--config", config_path.to_str().unwrap(), "serve"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let text = loop {
        let answer = client
            .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
            .send()
            .await;
        if let Ok(answer) = answer {
            assert_eq!(answer.status(), StatusCode::OK);
            break answer.text().await.unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no metrics listener"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(text.contains("mcp_oauth_bridge_build_info"), "{text}");
    // Not on the service's own address, and nothing else on the metrics one.
    let main = client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(main.status(), StatusCode::NOT_FOUND);
    let other = client
        .get(format!("http://127.0.0.1:{metrics_port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    child.kill().await.unwrap();
    std::fs::remove_file(config_path).unwrap();
}
