//! Enterprise-Managed Authorization: a client brings an ID-JAG (Identity Assertion JWT
//! Authorization Grant) that a small enterprise IdP of the test mints, and gets our access token
//! for that user; every way an ID-JAG can be wrong is refused.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::document_server::{Answer, CA_FILE, DocumentServer};
use crate::helpers::*;
use crate::private_key_jwt::{RSA_PEM, public_jwk};

const ENTERPRISE_IDP: &str = "https://idp.corp.example";
const AGENT: &str = "enterprise-agent";
const AGENT_SECRET: &str = "enterprise-agent-secret-0123456789";
const OTHER_RSA_PEM: &str = include_str!("../fixtures/upstream_rsa.pem");
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// A second trusted provider, with keys of its own.
const SECOND_IDP: &str = "https://idp.partner.example";

fn now() -> i64 {
    use mcp_oauth_bridge::clock::Clock;
    mcp_oauth_bridge::clock::SystemClock.now().seconds()
}

/// The enterprise IdP: an ID-JAG for alice, for `client_id`, addressed to `audience`.
fn id_jag(audience: &str, change: impl FnOnce(&mut Value, &mut Header)) -> String {
    id_jag_signed_by(RSA_PEM, audience, change)
}

fn id_jag_signed_by(
    pem: &str,
    audience: &str,
    change: impl FnOnce(&mut Value, &mut Header),
) -> String {
    let mut claims = json!({
        "iss": ENTERPRISE_IDP, "sub": "alice-at-corp", "aud": audience, "client_id": AGENT,
        "iat": now(), "exp": now() + 120, "jti": format!("jag-{}", rand::random::<u64>()),
        "resource": RESOURCE, "scope": "openid email",
        "email": "alice@corp.example", "email_verified": true, "name": "Alice",
        "groups": ["mcp-users"],
    });
    let mut header = Header::new(Algorithm::RS256);
    header.typ = Some("oauth-id-jag+jwt".to_owned());
    header.kid = Some("idp-1".to_owned());
    change(&mut claims, &mut header);
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn trusted(config: &mut Config, keys: String) {
    let second = json!({"keys": [public_jwk(OTHER_RSA_PEM, Algorithm::RS256, "idp-1")]});
    let yaml = format!(
        "trusted_issuers:\n  - issuer: {ENTERPRISE_IDP}\n    {keys}\n    allowed_groups: [mcp-users]\n    refresh_tokens: true\n  - issuer: {SECOND_IDP}\n    jwks: {second}\n    allowed_groups: [mcp-users]\n"
    );
    config.oauth.identity_assertion = serde_yaml::from_str(&yaml).unwrap();
    config.oauth.clients.push(ClientConfig {
        secret: Some(SecretString::new(AGENT_SECRET)),
        grant_types: Some(strings([JWT_BEARER, "refresh_token"])),
        ..client(AGENT)
    });
}

async fn enterprise_app() -> TestApp {
    spawn_app_with(Options {
        configure: configure(|config| {
            let jwks = json!({"keys": [public_jwk(RSA_PEM, Algorithm::RS256, "idp-1")]});
            trusted(config, format!("jwks: {jwks}"));
        }),
        ..Options::default()
    })
    .await
}

async fn grant(app: &TestApp, assertion: &str, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut form = vec![("grant_type", JWT_BEARER), ("assertion", assertion)];
    form.extend_from_slice(extra);
    app.api
        .post(app.url("/oauth/token"))
        .basic_auth(AGENT, Some(AGENT_SECRET))
        .form(&form)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_id_jag_from_a_trusted_idp_brings_an_access_token_for_its_user() {
    let app = enterprise_app().await;
    let metadata = app
        .get_json(&app.url("/.well-known/oauth-authorization-server"))
        .await;
    assert!(
        metadata["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(JWT_BEARER)),
        "{metadata}"
    );
    let response = grant(&app, &id_jag(&app.issuer, |_, _| {}), &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let tokens: Value = response.json().await.unwrap();
    assert_eq!(tokens["scope"], "openid email");
    assert!(tokens.get("id_token").is_none(), "{tokens}");
    let claims = jwt_payload(tokens["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], "alice-at-corp");
    assert_eq!(claims["client_id"], AGENT);
    assert_eq!(claims["aud"], RESOURCE);
    assert_eq!(claims["groups"], json!(["mcp-users"]));

    // The trusted issuer allows refresh tokens and the client may refresh.
    let refreshed = app
        .api
        .post(app.url("/oauth/token"))
        .basic_auth(AGENT, Some(AGENT_SECRET))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), StatusCode::OK);

    // Without a scope: what the grant names that the client may have (`admin` is no scope here).
    let partly = id_jag(&app.issuer, |c, _| c["scope"] = json!("openid email admin"));
    let partly: Value = grant(&app, &partly, &[]).await.json().await.unwrap();
    assert_eq!(partly["scope"], "openid email");
    let metadata = app
        .get_json(&app.url("/.well-known/oauth-authorization-server"))
        .await;
    assert_eq!(
        metadata["authorization_grant_profiles_supported"],
        json!(["urn:ietf:params:oauth:grant-profile:id-jag"])
    );
    // Narrower than granted is fine; wider is not.
    let narrower = grant(&app, &id_jag(&app.issuer, |_, _| {}), &[("scope", "email")]).await;
    let narrower: Value = narrower.json().await.unwrap();
    assert_eq!(narrower["scope"], "email");
    let wider = grant(
        &app,
        &id_jag(&app.issuer, |_, _| {}),
        &[("scope", "email profile")],
    )
    .await;
    oauth_error(wider, StatusCode::BAD_REQUEST, "invalid_scope").await;
}

#[tokio::test]
async fn every_wrong_id_jag_is_invalid_grant_and_a_replay_too() {
    let app = enterprise_app().await;
    let issuer = app.issuer.clone();
    let cases: Vec<(&str, String)> = vec![
        ("no typ", id_jag(&issuer, |_, h| h.typ = None)),
        (
            "an ID token's typ",
            id_jag(&issuer, |_, h| h.typ = Some("JWT".into())),
        ),
        (
            "an untrusted issuer",
            id_jag(&issuer, |c, _| c["iss"] = json!("https://evil.example")),
        ),
        (
            "another audience",
            id_jag("https://other-as.example", |_, _| {}),
        ),
        (
            "another client",
            id_jag(&issuer, |c, _| c["client_id"] = json!(WEB_CLIENT)),
        ),
        (
            "no client_id",
            id_jag(&issuer, |c, _| {
                c.as_object_mut().unwrap().remove("client_id");
            }),
        ),
        (
            "expired",
            id_jag(&issuer, |c, _| c["exp"] = json!(now() - 1)),
        ),
        (
            "an hour long",
            id_jag(&issuer, |c, _| c["exp"] = json!(now() + 3600)),
        ),
        (
            "not yet valid",
            id_jag(&issuer, |c, _| c["nbf"] = json!(now() + 600)),
        ),
        (
            "no jti",
            id_jag(&issuer, |c, _| {
                c.as_object_mut().unwrap().remove("jti");
            }),
        ),
        (
            "no subject",
            id_jag(&issuer, |c, _| {
                c.as_object_mut().unwrap().remove("sub");
            }),
        ),
        (
            "outside the allowed groups",
            id_jag(&issuer, |c, _| c["groups"] = json!(["contractors"])),
        ),
        (
            "signed by another key",
            id_jag_signed_by(OTHER_RSA_PEM, &issuer, |_, _| {}),
        ),
        ("HS256", {
            let claims =
                jsonwebtoken::dangerous::insecure_decode::<Value>(id_jag(&issuer, |_, _| {}))
                    .unwrap()
                    .claims;
            let mut header = Header::new(Algorithm::HS256);
            header.typ = Some("oauth-id-jag+jwt".into());
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(b"guess")).unwrap()
        }),
        ("not a JWT", "not-a-jwt".to_owned()),
        (
            "two audiences",
            id_jag(&issuer, |c, _| {
                c["aud"] = json!(["https://other-as.example", issuer])
            }),
        ),
        (
            "no iat",
            id_jag(&issuer, |c, _| {
                c.as_object_mut().unwrap().remove("iat");
            }),
        ),
        (
            "authorization_details",
            id_jag(&issuer, |c, _| {
                c["authorization_details"] = json!([{"type": "payment_initiation"}]);
            }),
        ),
        (
            "another trusted issuer named, ours signing",
            id_jag(&issuer, |c, _| c["iss"] = json!(SECOND_IDP)),
        ),
    ];
    for (what, assertion) in cases {
        let response = grant(&app, &assertion, &[]).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{what}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_grant", "{what}: {body}");
    }

    let once = id_jag(&issuer, |_, _| {});
    assert_eq!(grant(&app, &once, &[]).await.status(), StatusCode::OK);
    oauth_error(
        grant(&app, &once, &[]).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;

    // A resource the grant does not name, or one that is no resource at all (which resources
    // are served is the audience rules' own test).
    let unserved = id_jag(&issuer, |c, _| c["resource"] = json!("not a uri#fragment"));
    oauth_error(
        grant(&app, &unserved, &[]).await,
        StatusCode::BAD_REQUEST,
        "invalid_target",
    )
    .await;
    // Several resources granted: the request must name one of them.
    let several = id_jag(&issuer, |c, _| {
        c["resource"] = json!(["https://other.example/mcp", RESOURCE])
    });
    oauth_error(
        grant(&app, &several, &[]).await,
        StatusCode::BAD_REQUEST,
        "invalid_target",
    )
    .await;
    let named = grant(&app, &several, &[("resource", RESOURCE)]).await;
    assert_eq!(named.status(), StatusCode::OK);
    // A scope wider than granted is refused without spending the ID-JAG.
    let spared = id_jag(&issuer, |_, _| {});
    let wider = grant(&app, &spared, &[("scope", "openid profile")]).await;
    oauth_error(wider, StatusCode::BAD_REQUEST, "invalid_scope").await;
    assert_eq!(grant(&app, &spared, &[]).await.status(), StatusCode::OK);
    let good = id_jag(&issuer, |_, _| {});
    let differs = grant(
        &app,
        &good,
        &[("resource", "https://elsewhere.example/mcp")],
    )
    .await;
    oauth_error(differs, StatusCode::BAD_REQUEST, "invalid_target").await;
    // Refused before it was spent: the same ID-JAG still works.
    assert_eq!(grant(&app, &good, &[]).await.status(), StatusCode::OK);

    // Without the parameter, from a client that may not, or without authentication.
    let response = app
        .api
        .post(app.url("/oauth/token"))
        .basic_auth(AGENT, Some(AGENT_SECRET))
        .form(&[("grant_type", JWT_BEARER)])
        .send()
        .await
        .unwrap();
    oauth_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    let response = app
        .api
        .post(app.url("/oauth/token"))
        .basic_auth(WEB_CLIENT, Some(WEB_SECRET))
        .form(&[
            ("grant_type", JWT_BEARER),
            ("assertion", &id_jag(&issuer, |_, _| {})),
        ])
        .send()
        .await
        .unwrap();
    oauth_error(response, StatusCode::BAD_REQUEST, "unauthorized_client").await;
    let response = app
        .post_token(&[
            ("grant_type", JWT_BEARER),
            ("client_id", AGENT),
            ("assertion", &id_jag(&issuer, |_, _| {})),
        ])
        .await;
    oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;
}

#[tokio::test]
async fn the_idp_keys_come_from_its_jwks_uri() {
    let idp = DocumentServer::start().await;
    idp.serve(
        "/jwks",
        Answer {
            status: StatusCode::OK,
            headers: vec![(
                axum::http::header::CONTENT_TYPE,
                "application/json".to_owned(),
            )],
            body: json!({"keys": [
                {"kty": "EC", "crv": "P-256", "use": "enc", "kid": "enc-1",
                 "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                 "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
                public_jwk(RSA_PEM, Algorithm::RS256, "idp-1"),
            ]})
            .to_string(),
            streamed: false,
        },
    );
    let jwks_uri = idp.url("/jwks");
    let app = spawn_app_with(Options {
        configure: configure(move |config| {
            trusted(config, format!("jwks_uri: \"{jwks_uri}\""));
            config.oauth.cimd.extra_root_certificates = vec![CA_FILE.into()];
        }),
        ..Options::default()
    })
    .await;
    for _ in 0..2 {
        let response = grant(&app, &id_jag(&app.issuer, |_, _| {}), &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(idp.hits(), 1, "the provider's keys are cached");
}

#[test]
fn a_client_with_the_grant_needs_a_trusted_issuer() {
    let yaml = format!(
        "server: {{public_url: \"http://127.0.0.1:1\"}}\noauth:\n  clients:\n    - {{id: a, secret: \"0123456789abcdef0123456789\", grant_types: [\"{JWT_BEARER}\"]}}\n  upstream: {{issuer: \"http://127.0.0.1:1\", client_id: c, client_secret: s}}\nstorage: {{backend: memory}}\n"
    );
    let error = Config::from_yaml(&yaml, &|_| None).unwrap_err().to_string();
    assert!(
        error.contains("needs oauth.identity_assertion.trusted_issuers"),
        "{error}"
    );
}
