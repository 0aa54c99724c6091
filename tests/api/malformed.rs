//! Bad input: every malformed request gets a clear OAuth error, never a 5xx or an open redirect.

use reqwest::StatusCode;

use crate::helpers::*;

#[tokio::test]
async fn authorize_errors_before_the_redirect_is_proven_are_pages_not_redirects() {
    let app = spawn_app().await;
    let pkce = Pkce::new();
    let with = |name: &'static str, value: &str| {
        let mut params = app.authorize_params(&pkce);
        params.retain(|(k, _)| *k != name);
        params.push((name, value.to_owned()));
        params
    };
    for params in [
        with("client_id", "unknown-client"),
        with("redirect_uri", "https://evil.example.com/steal"),
        with("redirect_uri", "http://127.0.0.1:33418/other"),
    ] {
        let response = app.get_authorize(&params).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(
            response.headers().get("location").is_none(),
            "never redirect to an unproven URI"
        );
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
    }
    let mut repeated = app.authorize_params(&pkce);
    repeated.push(("redirect_uri", "https://evil.example.com/steal".to_owned()));
    let response = app.get_authorize(&repeated).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().contains("repeated"));
}

#[tokio::test]
async fn authorize_errors_after_the_redirect_is_proven_go_to_the_client_with_state_and_iss() {
    let app = spawn_app().await;
    let pkce = Pkce::new();
    for (name, value, expected) in [
        ("code_challenge_method", Some("plain"), "invalid_request"),
        ("code_challenge", None, "invalid_request"),
        ("response_type", Some("token"), "unsupported_response_type"),
        ("scope", Some("openid admin"), "invalid_scope"),
        ("resource", Some("relative/path"), "invalid_target"),
    ] {
        let mut params = app.authorize_params(&pkce);
        params.retain(|(k, _)| *k != name);
        if let Some(value) = value {
            params.push((name, value.to_owned()));
        }
        let back = location(&app.get_authorize(&params).await);
        assert!(back.starts_with(PUBLIC_REDIRECT), "{back}");
        let query = query_of(&back);
        assert_eq!(query["error"], expected, "{name}");
        assert_eq!(query["state"], "client-state-1");
        assert_eq!(query["iss"], app.issuer);
    }
}

#[tokio::test]
async fn token_endpoint_refuses_malformed_requests_with_oauth_errors() {
    let app = spawn_app().await;
    let url = app.url("/oauth/token");
    let repeated = app
        .api
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=authorization_code&client_id=mcp-cli&code=a&code=b")
        .send()
        .await
        .unwrap();
    let body = oauth_error(repeated, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("repeated")
    );

    let json_body = app
        .api
        .post(&url)
        .json(&serde_json::json!({"grant_type": "refresh_token"}))
        .send()
        .await
        .unwrap();
    oauth_error(json_body, StatusCode::BAD_REQUEST, "invalid_request").await;

    let huge = format!(
        "grant_type=refresh_token&client_id=mcp-cli&refresh_token={}",
        "a".repeat(64 * 1024)
    );
    let oversized = app
        .api
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(huge)
        .send()
        .await
        .unwrap();
    // RFC 9110 §15.5.14, with the RFC 6749 body.
    oauth_error(oversized, StatusCode::PAYLOAD_TOO_LARGE, "invalid_request").await;

    let unsupported = app
        .post_token(&[("grant_type", "password"), ("client_id", PUBLIC_CLIENT)])
        .await;
    oauth_error(
        unsupported,
        StatusCode::BAD_REQUEST,
        "unsupported_grant_type",
    )
    .await;

    let missing = app.post_token(&[("client_id", PUBLIC_CLIENT)]).await;
    oauth_error(missing, StatusCode::BAD_REQUEST, "invalid_request").await;

    assert_eq!(
        app.api.get(&url).send().await.unwrap().status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test]
async fn garbage_never_produces_a_server_error() {
    let app = spawn_app().await;
    let bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"%%%%".to_vec(),
        b"grant_type=authorization_code&client_id=mcp-cli&code=%FF%FE".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x01],
        b"grant_type=refresh_token&client_id=mcp-cli&refresh_token=".to_vec(),
        b"client_id=mcp-cli&grant_type=authorization_code&code=x&code_verifier=\x00".to_vec(),
        b"=&=&&&==".to_vec(),
    ];
    let authorizations: [&[u8]; 7] = [
        b"Basic",
        b"Basic ####",
        b"Basic Og==",
        b"Bearer x",
        b"basic bWNwLWNsaTo=",
        b"Basic \xff\xfe",
        b"Basic bWNwLWNsaTpzZWNyZXQ=\xc3",
    ];
    for body in &bodies {
        for authorization in authorizations {
            let value = reqwest::header::HeaderValue::from_bytes(authorization).unwrap();
            let status = app
                .api
                .post(app.url("/oauth/token"))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("authorization", value)
                .body(body.clone())
                .send()
                .await
                .unwrap()
                .status();
            assert!(
                status.is_client_error(),
                "{status} for {body:?} / {authorization:?}"
            );
        }
    }
    for query in [
        "",
        "%",
        "client_id",
        "client_id=%FF",
        "state=x&state=y",
        "code=a&state=",
        "error=access_denied",
    ] {
        for path in ["/oauth/authorize", "/oauth/callback"] {
            let status = app
                .browser
                .get(format!("{}?{query}", app.url(path)))
                .send()
                .await
                .unwrap()
                .status();
            assert!(status.is_client_error(), "{status} for {path}?{query}");
        }
    }
}
