//! `private_key_jwt` client authentication (RFC 7523 §2.2, OIDC Core §9) at the token,
//! revocation and introspection endpoints: configured clients with `jwks` or `jwks_uri`,
//! registered ones, and every assertion a hostile client could send instead of a good one.

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::document_server::{Answer, CA_FILE, DocumentServer};
use crate::helpers::*;

const SERVICE: &str = "reports-service";
pub(crate) const RSA_PEM: &str = include_str!("../fixtures/other_rsa.pem");
const OTHER_RSA_PEM: &str = include_str!("../fixtures/upstream_rsa.pem");
const EC_PEM: &str = include_str!("../fixtures/signing_es256.pem");

fn encoding_key(pem: &str, algorithm: Algorithm) -> EncodingKey {
    match algorithm {
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        _ => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    }
}

/// The public JWK of a private key, named `kid`.
pub(crate) fn public_jwk(pem: &str, algorithm: Algorithm, kid: &str) -> Value {
    let mut jwk = Jwk::from_encoding_key(&encoding_key(pem, algorithm), algorithm).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    serde_json::to_value(jwk).unwrap()
}

fn now() -> i64 {
    use mcp_oauth_bridge::clock::Clock;
    mcp_oauth_bridge::clock::SystemClock.now().seconds()
}

/// A client assertion for `client_id`, addressed to `audience`, with `change` applied.
pub(crate) fn assertion_with(
    client_id: &str,
    audience: &str,
    (pem, algorithm, kid): (&str, Algorithm, &str),
    change: impl FnOnce(&mut Value),
) -> String {
    let mut claims = json!({
        "iss": client_id, "sub": client_id, "aud": audience,
        "iat": now(), "exp": now() + 60, "jti": format!("jti-{}", rand::random::<u64>()),
    });
    change(&mut claims);
    let mut header = Header::new(algorithm);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, &claims, &encoding_key(pem, algorithm)).unwrap()
}

pub(crate) const RSA_KEY: (&str, Algorithm, &str) = (RSA_PEM, Algorithm::RS256, "rsa-1");

async fn service_app(extra: impl FnOnce(&mut Config) + Send + 'static) -> TestApp {
    spawn_app_with(Options {
        configure: configure(move |config| {
            config.oauth.clients.push(ClientConfig {
                grant_types: Some(strings(["client_credentials"])),
                jwks: Some(json!({"keys": [public_jwk(RSA_PEM, Algorithm::RS256, "rsa-1")]})),
                ..client(SERVICE)
            });
            extra(config);
        }),
        ..Options::default()
    })
    .await
}

async fn post(app: &TestApp, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
    app.api.post(app.url(path)).form(form).send().await.unwrap()
}

async fn token_with(app: &TestApp, assertion: &str) -> reqwest::Response {
    post(
        app,
        "/oauth/token",
        &[
            ("grant_type", "client_credentials"),
            ("resource", RESOURCE),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
        ],
    )
    .await
}

fn token_endpoint(app: &TestApp) -> String {
    app.url("/oauth/token")
}

#[tokio::test]
async fn a_configured_client_authenticates_with_a_signed_assertion_once() {
    let app = service_app(|_| {}).await;
    let assertion = assertion_with(SERVICE, &token_endpoint(&app), RSA_KEY, |_| {});
    let response = token_with(&app, &assertion).await;
    assert_eq!(response.status(), StatusCode::OK);
    let tokens: Value = response.json().await.unwrap();
    let claims = jwt_payload(tokens["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], SERVICE);
    assert_eq!(claims["client_id"], SERVICE);

    // The same assertion again: a replay, whatever else is right about it.
    let body = oauth_error(
        token_with(&app, &assertion).await,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    )
    .await;
    assert!(
        !body.to_string().contains("jti"),
        "the client hears no reason: {body}"
    );

    // The issuer is an audience too (RFC 7523 §3), and an array may name it.
    let to_issuer = assertion_with(SERVICE, &app.issuer, RSA_KEY, |_| {});
    assert_eq!(token_with(&app, &to_issuer).await.status(), StatusCode::OK);
    let in_array = assertion_with(SERVICE, "", RSA_KEY, |claims| {
        claims["aud"] = json!(["https://elsewhere.example", token_endpoint(&app)]);
    });
    assert_eq!(token_with(&app, &in_array).await.status(), StatusCode::OK);

    let metadata = app
        .get_json(&app.url("/.well-known/oauth-authorization-server"))
        .await;
    for endpoint in ["token", "revocation", "introspection"] {
        let methods = &metadata[format!("{endpoint}_endpoint_auth_methods_supported")];
        assert!(
            methods
                .as_array()
                .unwrap()
                .contains(&json!("private_key_jwt")),
            "{endpoint}: {methods}"
        );
        let algorithms =
            &metadata[format!("{endpoint}_endpoint_auth_signing_alg_values_supported")];
        assert!(algorithms.as_array().unwrap().contains(&json!("RS256")));
        assert!(!algorithms.as_array().unwrap().contains(&json!("HS256")));
    }
}

#[tokio::test]
async fn every_bad_assertion_is_invalid_client() {
    let app = service_app(|_| {}).await;
    let endpoint = token_endpoint(&app);
    let hs256 = {
        let claims = json!({"iss": SERVICE, "sub": SERVICE, "aud": endpoint,
                            "exp": now() + 60, "jti": "hs"});
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"a secret the client chose"),
        )
        .unwrap()
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "expired",
            assertion_with(SERVICE, &endpoint, RSA_KEY, |c| c["exp"] = json!(now() - 5)),
        ),
        (
            "too long-lived",
            assertion_with(SERVICE, &endpoint, RSA_KEY, |c| {
                c["exp"] = json!(now() + 3600)
            }),
        ),
        (
            "no exp",
            assertion_with(SERVICE, &endpoint, RSA_KEY, |c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
        ),
        (
            "no jti",
            assertion_with(SERVICE, &endpoint, RSA_KEY, |c| {
                c.as_object_mut().unwrap().remove("jti");
            }),
        ),
        (
            "another audience",
            assertion_with(SERVICE, &app.url("/oauth/introspect"), RSA_KEY, |_| {}),
        ),
        (
            "iss of another client",
            assertion_with(SERVICE, &endpoint, RSA_KEY, |c| {
                c["iss"] = json!(WEB_CLIENT)
            }),
        ),
        (
            "not yet valid",
            assertion_with(SERVICE, &endpoint, RSA_KEY, |c| {
                c["nbf"] = json!(now() + 600)
            }),
        ),
        (
            "another key",
            assertion_with(
                SERVICE,
                &endpoint,
                (OTHER_RSA_PEM, Algorithm::RS256, "rsa-1"),
                |_| {},
            ),
        ),
        (
            "unknown kid",
            assertion_with(
                SERVICE,
                &endpoint,
                (RSA_PEM, Algorithm::RS256, "rsa-2"),
                |_| {},
            ),
        ),
        (
            "PS256 where the key says RS256",
            assertion_with(
                SERVICE,
                &endpoint,
                (RSA_PEM, Algorithm::PS256, "rsa-1"),
                |_| {},
            ),
        ),
        ("HS256", hs256),
        ("not a JWT", "eyJhbGciOiJSUzI1NiJ9.e30.c2ln".to_owned()),
    ];
    for (what, assertion) in cases {
        let response = token_with(&app, &assertion).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_client", "{what}");
    }
    // Another client's assertion for a client that has keys of its own: a sub that is not
    // the client_id sent.
    let theirs = assertion_with(WEB_CLIENT, &endpoint, RSA_KEY, |_| {});
    let response = post(
        &app,
        "/oauth/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", SERVICE),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &theirs),
        ],
    )
    .await;
    oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;
    // A client with a secret cannot authenticate with an assertion, and a keyed client not
    // with a secret.
    let web = assertion_with(WEB_CLIENT, &endpoint, RSA_KEY, |_| {});
    oauth_error(
        token_with(&app, &web).await,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    )
    .await;
    let response = post(
        &app,
        "/oauth/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", SERVICE),
            ("client_secret", "guess"),
        ],
    )
    .await;
    oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;
    // Two methods at once, or half of one.
    let good = assertion_with(SERVICE, &endpoint, RSA_KEY, |_| {});
    let response = post(
        &app,
        "/oauth/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_secret", "s"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &good),
        ],
    )
    .await;
    oauth_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    let response = post(
        &app,
        "/oauth/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_assertion", &good),
        ],
    )
    .await;
    oauth_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    // None of these spent the good assertion.
    assert_eq!(token_with(&app, &good).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn revocation_and_introspection_take_assertions_too() {
    let app = service_app(|_| {}).await;
    let endpoint = token_endpoint(&app);
    let tokens: Value = token_with(&app, &assertion_with(SERVICE, &endpoint, RSA_KEY, |_| {}))
        .await
        .json()
        .await
        .unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let kind = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
    // Addressed to the token endpoint (OIDC Core §9) or the issuer, wherever it is used.
    let introspect = |assertion: String, access: String| {
        let app = &app;
        async move {
            post(
                app,
                "/oauth/introspect",
                &[
                    ("token", &access),
                    ("client_assertion_type", kind),
                    ("client_assertion", &assertion),
                ],
            )
            .await
        }
    };
    let answer: Value = introspect(
        assertion_with(SERVICE, &endpoint, RSA_KEY, |_| {}),
        access.clone(),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(answer["active"], true, "{answer}");
    assert_eq!(answer["client_id"], SERVICE);

    let response = post(
        &app,
        "/oauth/revoke",
        &[
            ("token", &access),
            ("client_assertion_type", kind),
            (
                "client_assertion",
                &assertion_with(SERVICE, &app.issuer, RSA_KEY, |_| {}),
            ),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = introspect(
        assertion_with(SERVICE, &endpoint, RSA_KEY, |_| {}),
        access.clone(),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(answer, json!({"active": false}));
    let replayed = assertion_with(SERVICE, &endpoint, RSA_KEY, |_| {});
    assert_eq!(
        introspect(replayed.clone(), access.clone()).await.status(),
        StatusCode::OK
    );
    let response = introspect(replayed, access).await;
    oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;
}

const EC_KEY: (&str, Algorithm, &str) = (EC_PEM, Algorithm::ES256, "ec-1");

#[tokio::test]
async fn keys_at_a_jwks_uri_are_fetched_cached_and_fetched_again_when_the_client_rotates() {
    let keys = DocumentServer::start().await;
    let serve = |jwks: Value| Answer {
        status: StatusCode::OK,
        headers: vec![
            (
                axum::http::header::CONTENT_TYPE,
                "application/json".to_owned(),
            ),
            (axum::http::header::CACHE_CONTROL, "max-age=3600".to_owned()),
        ],
        body: jwks.to_string(),
        streamed: false,
    };
    keys.serve(
        "/jwks.json",
        serve(json!({"keys": [public_jwk(EC_PEM, Algorithm::ES256, "ec-1")]})),
    );
    let jwks_uri = keys.url("/jwks.json");
    let clock = std::sync::Arc::new(mcp_oauth_bridge::clock::FixedClock::at(now()));
    let app = spawn_app_with(Options {
        configure: configure(move |config| {
            config.oauth.clients.push(ClientConfig {
                grant_types: Some(strings(["client_credentials"])),
                jwks_uri: Some(jwks_uri),
                ..client(SERVICE)
            });
            config.oauth.cimd.extra_root_certificates = vec![CA_FILE.into()];
            dcr(config);
        }),
        clock: Some(clock.clone() as _),
        ..Options::default()
    })
    .await;
    let endpoint = token_endpoint(&app);
    for _ in 0..3 {
        let assertion = assertion_with(SERVICE, &endpoint, EC_KEY, |_| {});
        assert_eq!(token_with(&app, &assertion).await.status(), StatusCode::OK);
    }
    assert_eq!(keys.hits(), 1, "the key set is cached");

    // The client rotates to an RSA key. Within a minute of the last fetch a signature that no
    // cached key verifies does not make the bridge fetch again...
    keys.serve(
        "/jwks.json",
        serve(json!({"keys": [public_jwk(RSA_PEM, Algorithm::RS256, "rsa-1")]})),
    );
    let rotated = assertion_with(SERVICE, &endpoint, RSA_KEY, |_| {});
    oauth_error(
        token_with(&app, &rotated).await,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    )
    .await;
    assert_eq!(keys.hits(), 1);
    // ...after it, it does, once, and the new key works.
    clock.advance(std::time::Duration::from_secs(61));
    let rotated = assertion_with(SERVICE, &endpoint, RSA_KEY, |c| {
        c["iat"] = json!(now() + 61);
        c["exp"] = json!(now() + 120);
    });
    assert_eq!(token_with(&app, &rotated).await.status(), StatusCode::OK);
    assert_eq!(keys.hits(), 2);

    // The operator's URL on a private address does not open that host to anyone else: a
    // registered client naming another path there is refused before any fetch.
    let registered: Value = app
        .api
        .post(app.url("/oauth/register"))
        .json(&json!({
            "redirect_uris": ["http://localhost:33418/callback"],
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks_uri": keys.url("/internal/admin"),
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let intruder = registered["client_id"].as_str().unwrap();
    let response = post(
        &app,
        "/oauth/token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", "anything"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            (
                "client_assertion",
                &assertion_with(intruder, &endpoint, RSA_KEY, |_| {}),
            ),
        ],
    )
    .await;
    oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;
    assert_eq!(
        keys.hits(),
        2,
        "localhost is private: never fetched for a registered client"
    );
    // Nor does an assertion that would fail anyway make the bridge fetch for the operator's.
    clock.advance(std::time::Duration::from_secs(7200));
    let expired = assertion_with(SERVICE, &endpoint, RSA_KEY, |c| c["exp"] = json!(now() - 1));
    oauth_error(
        token_with(&app, &expired).await,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    )
    .await;
    assert_eq!(keys.hits(), 2);
}

fn dcr(config: &mut Config) {
    config.oauth.dcr = DcrConfig {
        enabled: true,
        allowed_redirect_profiles: strings(["loopback"]),
        ..DcrConfig::default()
    };
}

#[tokio::test]
async fn a_client_registers_its_keys_and_redeems_its_code_with_an_assertion() {
    let app = spawn_app_with(Options {
        configure: configure(dcr),
        ..Options::default()
    })
    .await;
    let register = |body: Value| {
        let app = &app;
        async move {
            app.api
                .post(app.url("/oauth/register"))
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let metadata = |extra: Value| {
        let mut body = json!({
            "redirect_uris": ["http://localhost:33418/callback"],
            "token_endpoint_auth_method": "private_key_jwt",
            "grant_types": ["authorization_code", "refresh_token"],
        });
        if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
            body.extend(extra);
        }
        body
    };
    let jwk = public_jwk(RSA_PEM, Algorithm::RS256, "rsa-1");
    let mut private = jwk.clone();
    private["d"] = json!("AQAB");
    for (what, extra) in [
        ("no keys", json!({})),
        ("a private key", json!({"jwks": {"keys": [private]}})),
        (
            "a symmetric key",
            json!({"jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}),
        ),
        (
            "both",
            json!({"jwks": {"keys": [jwk.clone()]}, "jwks_uri": "https://c.example.com/k"}),
        ),
        (
            "plain http",
            json!({"jwks_uri": "http://c.example.com/jwks"}),
        ),
        ("not a set", json!({"jwks": [jwk.clone()]})),
    ] {
        let response = register(metadata(extra)).await;
        let body = oauth_error(response, StatusCode::BAD_REQUEST, "invalid_client_metadata").await;
        assert!(body["error_description"].is_string(), "{what}");
    }

    let response = register(metadata(json!({"jwks": {"keys": [jwk.clone()]}}))).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let registered: Value = response.json().await.unwrap();
    assert!(registered.get("client_secret").is_none(), "{registered}");
    assert_eq!(registered["token_endpoint_auth_method"], "private_key_jwt");
    assert_eq!(registered["jwks"]["keys"][0]["kid"], "rsa-1");
    let client_id = registered["client_id"].as_str().unwrap().to_owned();

    let pkce = Pkce::new();
    let redirect = "http://localhost:40123/callback";
    let params = vec![
        ("client_id", client_id.clone()),
        ("redirect_uri", redirect.to_owned()),
        ("response_type", "code".to_owned()),
        ("code_challenge", pkce.challenge.clone()),
        ("code_challenge_method", "S256".to_owned()),
        ("state", "s".to_owned()),
        ("scope", "openid email".to_owned()),
    ];
    let back = location(&app.sign_in(&params).await);
    let code = query_of(&back)["code"].clone();
    let redeem = |assertion: Option<String>| {
        let (app, code, client_id, verifier) =
            (&app, code.clone(), client_id.clone(), pkce.verifier.clone());
        async move {
            let mut form = vec![
                ("grant_type", "authorization_code".to_owned()),
                ("code", code),
                ("redirect_uri", redirect.to_owned()),
                ("code_verifier", verifier),
                ("client_id", client_id),
            ];
            if let Some(assertion) = assertion {
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
                ));
                form.push(("client_assertion", assertion));
            }
            app.api
                .post(app.url("/oauth/token"))
                .form(&form)
                .send()
                .await
                .unwrap()
        }
    };
    // As a public client it would be: refused, and the code is not spent.
    oauth_error(
        redeem(None).await,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    )
    .await;
    let response = redeem(Some(assertion_with(
        &client_id,
        &token_endpoint(&app),
        RSA_KEY,
        |_| {},
    )))
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let tokens: Value = response.json().await.unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let response = post(
        &app,
        "/oauth/token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            (
                "client_assertion",
                &assertion_with(&client_id, &app.issuer, RSA_KEY, |_| {}),
            ),
        ],
    )
    .await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "client_id taken from the assertion's sub"
    );
}

#[tokio::test]
async fn a_metadata_document_client_declares_its_keys_and_signs_its_code_exchange() {
    let documents = DocumentServer::start().await;
    let app = spawn_app_with(Options {
        configure: configure(|config| {
            config.oauth.dcr.allowed_redirect_profiles = strings(["loopback"]);
            config.oauth.cimd = CimdConfig {
                enabled: true,
                allowed_hosts: strings(["localhost"]),
                extra_root_certificates: vec![CA_FILE.into()],
                ..CimdConfig::default()
            };
        }),
        ..Options::default()
    })
    .await;
    let client_id = documents.url("/client.json");
    let document = |method: &str| {
        json!({
            "client_id": client_id,
            "client_name": "Keyed Document Client",
            "redirect_uris": [PUBLIC_REDIRECT],
            "grant_types": ["authorization_code"],
            "token_endpoint_auth_method": method,
            "jwks": {"keys": [public_jwk(EC_PEM, Algorithm::ES256, "ec-1")]},
        })
    };
    documents.serve_document("/client.json", document("private_key_jwt"), "max-age=60");
    let pkce = Pkce::new();
    let params = vec![
        ("client_id", client_id.clone()),
        ("redirect_uri", PUBLIC_REDIRECT.to_owned()),
        ("response_type", "code".to_owned()),
        ("code_challenge", pkce.challenge.clone()),
        ("code_challenge_method", "S256".to_owned()),
        ("state", "s".to_owned()),
    ];
    let back = location(&app.sign_in(&params).await);
    let code = query_of(&back)["code"].clone();
    let form = |assertion: Option<&str>| {
        let mut form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.clone()),
            ("redirect_uri", PUBLIC_REDIRECT.to_owned()),
            ("code_verifier", pkce.verifier.clone()),
            ("client_id", client_id.clone()),
        ];
        if let Some(assertion) = assertion {
            form.push((
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
            ));
            form.push(("client_assertion", assertion.to_owned()));
        }
        form
    };
    let unauthenticated = app
        .api
        .post(app.url("/oauth/token"))
        .form(&form(None))
        .send()
        .await
        .unwrap();
    oauth_error(unauthenticated, StatusCode::UNAUTHORIZED, "invalid_client").await;
    let assertion = assertion_with(&client_id, &token_endpoint(&app), EC_KEY, |_| {});
    let response = app
        .api
        .post(app.url("/oauth/token"))
        .form(&form(Some(&assertion)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}
