//! Discovery documents, JWKS and health.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn metadata_advertises_exactly_what_is_implemented() {
    let app = spawn_app().await;
    let doc = app
        .get_json(&app.url("/.well-known/oauth-authorization-server"))
        .await;
    assert_eq!(doc["issuer"], app.issuer);
    assert_eq!(doc["authorization_endpoint"], app.url("/oauth/authorize"));
    assert_eq!(doc["token_endpoint"], app.url("/oauth/token"));
    assert_eq!(doc["jwks_uri"], app.url("/oauth/jwks"));
    assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(doc["authorization_response_iss_parameter_supported"], true);
    assert_eq!(
        doc["grant_types_supported"],
        json!(["authorization_code", "refresh_token", "client_credentials"])
    );
    assert_eq!(doc["revocation_endpoint"], app.url("/oauth/revoke"));
    assert_eq!(doc["introspection_endpoint"], app.url("/oauth/introspect"));
    assert!(doc.get("registration_endpoint").is_none());
    let oidc = app
        .get_json(&app.url("/.well-known/openid-configuration"))
        .await;
    assert_eq!(oidc["issuer"], app.issuer);
    assert_eq!(oidc["token_endpoint"], doc["token_endpoint"]);
    assert_eq!(oidc["userinfo_endpoint"], app.url("/oauth/userinfo"));
    assert_eq!(
        oidc["id_token_signing_alg_values_supported"],
        json!(["RS256", "ES256"])
    );
}

#[tokio::test]
async fn issuer_with_a_path_is_served_at_the_path_inserted_and_appended_locations() {
    let app = spawn_app_with(Options {
        base_path: "/bridge",
        ..Options::default()
    })
    .await;
    for url in [
        format!(
            "{}/.well-known/oauth-authorization-server/bridge",
            app.origin
        ),
        format!("{}/.well-known/openid-configuration/bridge", app.origin),
        app.url("/.well-known/openid-configuration"),
        app.url("/.well-known/oauth-authorization-server"),
    ] {
        let doc = app.get_json(&url).await;
        assert_eq!(doc["issuer"], app.issuer, "{url}");
        assert_eq!(
            doc["token_endpoint"],
            format!("{}/bridge/oauth/token", app.origin)
        );
    }
    let root = app
        .api
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            app.origin
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        root.status(),
        StatusCode::NOT_FOUND,
        "the root location belongs to another issuer"
    );
}

#[tokio::test]
async fn jwks_publishes_only_public_keys() {
    let app = spawn_app().await;
    let jwks = app.get_json(&app.url("/oauth/jwks")).await;
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "EC");
    assert_eq!(key["alg"], "ES256");
    assert!(key.get("d").is_none());
}

#[tokio::test]
async fn healthz_answers() {
    let app = spawn_app().await;
    assert_eq!(
        app.get_json(&format!("{}/healthz", app.origin)).await["status"],
        "ok"
    );
}

#[tokio::test]
async fn readyz_reports_storage_and_upstream() {
    let app = spawn_app().await;
    let ready = app.get_json(&format!("{}/readyz", app.origin)).await;
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["storage"], "ok");
    assert_eq!(ready["upstream"], "discovered");

    // A provider that does not answer: the bridge serves, but is not ready.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_issuer = format!("http://{}/realms/test", dead.local_addr().unwrap());
    drop(dead);
    let waiting = spawn_app_with(Options {
        upstream_issuer: Some(dead_issuer),
        ..Options::default()
    })
    .await;
    let response = waiting
        .api
        .get(format!("{}/readyz", waiting.origin))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["upstream"], "not discovered");
    assert_eq!(body["storage"], "ok");
}

#[tokio::test]
async fn browser_clients_may_read_metadata_cross_origin() {
    let app = spawn_app().await;
    let response = app
        .api
        .get(app.url("/.well-known/oauth-authorization-server"))
        .header("origin", "https://inspector.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
}
