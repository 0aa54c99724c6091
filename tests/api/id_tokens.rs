//! ID tokens as a strict OpenID Connect client expects them: RS256 unless the client registered
//! another `id_token_signed_response_alg` (OIDC Core §15.1, Registration §2), verifiable with a
//! key the JWKS publishes.

use jsonwebtoken::Algorithm;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn published_algorithms(jwks: &Value) -> Vec<(String, String)> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| {
            (
                key["kty"].as_str().unwrap().to_owned(),
                key["alg"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn id_tokens_are_rs256_by_default_while_access_tokens_keep_their_algorithm() {
    let app = spawn_app().await;
    let discovery = app
        .get_json(&app.url("/.well-known/openid-configuration"))
        .await;
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        json!(["RS256", "ES256"])
    );
    let jwks = app.get_json(&app.url("/oauth/jwks")).await;
    assert_eq!(
        published_algorithms(&jwks),
        [
            ("EC".into(), "ES256".into()),
            ("RSA".into(), "RS256".into())
        ]
    );
    let rsa = &jwks["keys"][1];
    assert_eq!(rsa["use"], "sig");
    for private in ["d", "p", "q", "dp", "dq", "qi"] {
        assert!(
            rsa.get(private).is_none(),
            "{private} must never be published"
        );
    }
    // 2048 bits: 256 bytes of modulus, 342 base64url characters.
    assert_eq!(rsa["n"].as_str().unwrap().len(), 342);

    let tokens = app.tokens().await;
    let id_token = tokens["id_token"].as_str().unwrap();
    let claims = verify_with_jwks(&app, id_token, Algorithm::RS256, PUBLIC_CLIENT).await;
    assert_eq!(claims["sub"], "upstream-user-42");
    assert_eq!(kid_of(id_token), rsa["kid"].as_str().unwrap());
    let access = tokens["access_token"].as_str().unwrap();
    verify_with_jwks(&app, access, Algorithm::ES256, RESOURCE).await;
    // An ID token is no access token, whatever key signed it.
    let introspected: Value = app
        .api
        .post(app.url("/oauth/introspect"))
        .basic_auth(WEB_CLIENT, Some(WEB_SECRET))
        .form(&[("token", id_token)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(introspected, json!({"active": false}));
}

#[tokio::test]
async fn a_configured_client_can_ask_for_es256_id_tokens() {
    let app = spawn_app_with(Options {
        configure: configure(|config| {
            let client = config
                .oauth
                .clients
                .iter_mut()
                .find(|client| client.id == PUBLIC_CLIENT)
                .unwrap();
            client.id_token_signed_response_alg = Some(SigningAlgorithm::ES256);
        }),
        ..Options::default()
    })
    .await;
    let tokens = app.tokens().await;
    let id_token = tokens["id_token"].as_str().unwrap();
    verify_with_jwks(&app, id_token, Algorithm::ES256, PUBLIC_CLIENT).await;
}

#[tokio::test]
async fn an_rs256_access_token_key_signs_the_id_tokens_too_and_es256_is_then_refused() {
    let key_file = fixture("upstream_rsa.pem");
    let rs256 = move |config: &mut Config| {
        config.oauth.signing = Some(SigningConfig {
            algorithm: Some(SigningAlgorithm::RS256),
            key_file: Some(key_file),
            keys: Vec::new(),
            rotation_period: None,
        });
    };
    let app = spawn_app_with(Options {
        configure: configure(rs256.clone()),
        ..Options::default()
    })
    .await;
    let jwks = app.get_json(&app.url("/oauth/jwks")).await;
    assert_eq!(
        published_algorithms(&jwks),
        [("RSA".into(), "RS256".into())]
    );
    let discovery = app
        .get_json(&app.url("/.well-known/openid-configuration"))
        .await;
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        json!(["RS256"])
    );
    let tokens = app.tokens().await;
    let id_token = tokens["id_token"].as_str().unwrap();
    verify_with_jwks(&app, id_token, Algorithm::RS256, PUBLIC_CLIENT).await;
    assert_eq!(
        kid_of(id_token),
        kid_of(tokens["access_token"].as_str().unwrap())
    );

    // A configured client asking for what these keys cannot sign stops the start, by name.
    let mut config = Config::from_yaml(
        "server: {public_url: \"http://127.0.0.1:1\"}\noauth:\n  clients:\n    - {id: strict, redirect_uris: [\"http://127.0.0.1/cb\"], id_token_signed_response_alg: ES256}\n  upstream: {issuer: \"http://127.0.0.1:1\", client_id: c, client_secret: s}\nstorage: {backend: memory}\n",
        &|_| None,
    )
    .unwrap();
    rs256(&mut config);
    let error = mcp_oauth_bridge::app::build(
        &config,
        std::sync::Arc::new(mcp_oauth_bridge::clock::SystemClock),
    )
    .await
    .err()
    .expect("ES256 ID tokens cannot be signed by an RS256 key set");
    let message = format!("{error:#}");
    assert!(
        message.contains("oauth.clients[0].id_token_signed_response_alg"),
        "{message}"
    );
}

#[tokio::test]
async fn a_shared_hs256_key_no_longer_leaves_clients_without_a_verifiable_id_token() {
    let app = spawn_app_with(Options {
        configure: configure(|config| {
            config.oauth.signing_key = Some(SecretString::new(
                "0123456789abcdef0123456789abcdef0123456789abcdef",
            ));
        }),
        ..Options::default()
    })
    .await;
    let jwks = app.get_json(&app.url("/oauth/jwks")).await;
    // The shared secret stays unpublished; the RSA key is what ID tokens are checked with.
    assert_eq!(
        published_algorithms(&jwks),
        [("RSA".into(), "RS256".into())]
    );
    let tokens = app.tokens().await;
    let id_token = tokens["id_token"].as_str().unwrap();
    verify_with_jwks(&app, id_token, Algorithm::RS256, PUBLIC_CLIENT).await;
}

fn dcr() -> Option<Configure> {
    configure(|config| {
        config.oauth.dcr = DcrConfig {
            enabled: true,
            allowed_redirect_profiles: strings(["loopback"]),
            ..DcrConfig::default()
        };
    })
}

async fn register(app: &TestApp, metadata: Value) -> reqwest::Response {
    let mut body = json!({
        "redirect_uris": ["http://localhost:33418/callback"],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
    });
    if let (Value::Object(body), Value::Object(extra)) = (&mut body, metadata) {
        body.extend(extra);
    }
    app.api
        .post(app.url("/oauth/register"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Signs in with a registered public client; the token response.
async fn tokens_for(app: &TestApp, client_id: &str) -> Value {
    let pkce = Pkce::new();
    let redirect = "http://localhost:40123/callback";
    let params = vec![
        ("client_id", client_id.to_owned()),
        ("redirect_uri", redirect.to_owned()),
        ("response_type", "code".to_owned()),
        ("code_challenge", pkce.challenge.clone()),
        ("code_challenge_method", "S256".to_owned()),
        ("state", "s".to_owned()),
        ("scope", "openid email".to_owned()),
        ("nonce", "n-0S6_WzA2Mj".to_owned()),
    ];
    let back = location(&app.sign_in(&params).await);
    let response = app
        .post_token(&[
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("code", &query_of(&back)["code"]),
            ("redirect_uri", redirect),
            ("code_verifier", &pkce.verifier),
        ])
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_registered_client_gets_the_algorithm_it_registered_and_rs256_without_one() {
    let app = spawn_app_with(Options {
        configure: dcr(),
        ..Options::default()
    })
    .await;
    let registered: Value = register(&app, json!({"id_token_signed_response_alg": "ES256"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(registered["id_token_signed_response_alg"], "ES256");
    let client_id = registered["client_id"].as_str().unwrap();
    let tokens = tokens_for(&app, client_id).await;
    let claims = verify_with_jwks(
        &app,
        tokens["id_token"].as_str().unwrap(),
        Algorithm::ES256,
        client_id,
    )
    .await;
    assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
    // RFC 7592: reading the registration back says the same.
    let read: Value = app
        .api
        .get(registered["registration_client_uri"].as_str().unwrap())
        .bearer_auth(registered["registration_access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["id_token_signed_response_alg"], "ES256");

    let default: Value = register(&app, json!({})).await.json().await.unwrap();
    assert!(
        default.get("id_token_signed_response_alg").is_none(),
        "{default}"
    );
    let client_id = default["client_id"].as_str().unwrap();
    let tokens = tokens_for(&app, client_id).await;
    verify_with_jwks(
        &app,
        tokens["id_token"].as_str().unwrap(),
        Algorithm::RS256,
        client_id,
    )
    .await;
}

#[tokio::test]
async fn an_id_token_algorithm_we_cannot_sign_in_is_refused_at_registration() {
    let app = spawn_app_with(Options {
        configure: dcr(),
        ..Options::default()
    })
    .await;
    for algorithm in [
        json!("none"),
        json!("HS256"),
        json!("RS512"),
        json!("rs256"),
        json!(""),
        json!("RS256\u{0}"),
    ] {
        let response = register(&app, json!({"id_token_signed_response_alg": algorithm})).await;
        let body = oauth_error(response, StatusCode::BAD_REQUEST, "invalid_client_metadata").await;
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("RS256 or ES256"),
            "{body}"
        );
    }
    // Not a string at all: the body is not client metadata.
    let response = register(&app, json!({"id_token_signed_response_alg": 256})).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}
