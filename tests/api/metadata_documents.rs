//! Client ID Metadata Documents: https `client_id`s fetched from a real TLS server on loopback.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::document_server::{Answer, CA_FILE, DocumentServer};
use crate::helpers::*;

fn cimd_config(allowed_hosts: &str) -> String {
    format!(
        "  dcr:\n    allowed_redirect_profiles: [loopback]\n  cimd:\n    enabled: true\n    allowed_hosts: [{allowed_hosts}]\n    extra_root_certificates: [\"{CA_FILE}\"]"
    )
}

async fn app_with_documents() -> (TestApp, DocumentServer) {
    let documents = DocumentServer::start().await;
    let app = spawn_app_with(Options {
        extra_oauth: cimd_config("localhost"),
        ..Options::default()
    })
    .await;
    (app, documents)
}

fn document(client_id: &str) -> Value {
    json!({
        "client_id": client_id,
        "client_name": "Document Client",
        "redirect_uris": [PUBLIC_REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    })
}

fn params(client_id: &str, pkce: &Pkce) -> Vec<(&'static str, String)> {
    let mut params = vec![];
    params.push(("client_id", client_id.to_owned()));
    params.extend(
        [
            ("redirect_uri", PUBLIC_REDIRECT),
            ("response_type", "code"),
            ("code_challenge_method", "S256"),
            ("state", "doc-state"),
        ]
        .map(|(k, v)| (k, v.to_owned())),
    );
    params.push(("code_challenge", pkce.challenge.clone()));
    params
}

async fn refusal(app: &TestApp, client_id: &str) -> String {
    let response = app.get_authorize(&params(client_id, &Pkce::new())).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.headers().get("location").is_none());
    response.text().await.unwrap()
}

#[tokio::test]
async fn a_client_named_by_its_metadata_document_signs_in_after_consent() {
    let (app, documents) = app_with_documents().await;
    let client_id = documents.url("/clients/good.json");
    documents.serve_document("/clients/good.json", document(&client_id), "max-age=600");
    let metadata: Value = app
        .get_json(&app.url("/.well-known/oauth-authorization-server"))
        .await;
    assert_eq!(metadata["client_id_metadata_document_supported"], true);

    let pkce = Pkce::new();
    let consent = location(&app.get_authorize(&params(&client_id, &pkce)).await);
    let (html, _) = app.consent_page(&consent).await;
    assert!(html.contains("Document Client"));
    let back = location(&app.sign_in(&params(&client_id, &pkce)).await);
    let code = query_of(&back)["code"].clone();
    let response = app
        .post_token(&[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
            ("code", &code),
            ("redirect_uri", PUBLIC_REDIRECT),
            ("code_verifier", &pkce.verifier),
        ])
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    // Cached per Cache-Control: one fetch served every step above.
    assert_eq!(documents.hits(), 1);
}

#[tokio::test]
async fn a_document_that_lies_redirects_is_too_large_or_breaks_policy_is_refused() {
    let (app, documents) = app_with_documents().await;
    let liar = documents.url("/clients/liar.json");
    documents.serve_document(
        "/clients/liar.json",
        document(&documents.url("/clients/other.json")),
        "max-age=60",
    );
    assert!(
        refusal(&app, &liar)
            .await
            .contains("client_id differs from its URL")
    );

    let moved = documents.url("/clients/moved.json");
    documents.serve(
        "/clients/moved.json",
        Answer {
            status: StatusCode::FOUND,
            headers: vec![(
                axum::http::header::LOCATION,
                documents.url("/clients/good.json"),
            )],
            body: String::new(),
            streamed: false,
        },
    );
    assert!(
        refusal(&app, &moved)
            .await
            .contains("redirects are not followed")
    );

    let huge = documents.url("/clients/huge.json");
    let mut big = document(&huge);
    big["padding"] = json!("x".repeat(32 * 1024));
    documents.serve_document("/clients/huge.json", big.clone(), "max-age=60");
    assert!(refusal(&app, &huge).await.contains("larger than"));
    let streamed = documents.url("/clients/streamed.json");
    big["client_id"] = json!(streamed);
    documents.serve(
        "/clients/streamed.json",
        Answer {
            status: StatusCode::OK,
            headers: vec![],
            body: big.to_string(),
            streamed: true,
        },
    );
    assert!(refusal(&app, &streamed).await.contains("larger than"));

    let evil = documents.url("/clients/evil.json");
    let mut outside = document(&evil);
    outside["redirect_uris"] = json!(["https://evil.example.com/callback"]);
    documents.serve_document("/clients/evil.json", outside, "max-age=60");
    assert!(refusal(&app, &evil).await.contains("redirect URI policy"));

    assert!(
        refusal(&app, &documents.url("/clients/missing.json"))
            .await
            .contains("404")
    );
}

#[tokio::test]
async fn a_document_on_a_private_or_loopback_address_is_refused_without_an_allow_list() {
    let documents = DocumentServer::start().await;
    let app = spawn_app_with(Options {
        extra_oauth: cimd_config(""),
        ..Options::default()
    })
    .await;
    let client_id = documents.url("/clients/good.json");
    documents.serve_document("/clients/good.json", document(&client_id), "max-age=600");
    // Another port than 443 is refused before any lookup: the bridge is no port scanner.
    assert!(
        refusal(&app, &client_id)
            .await
            .contains("default https port")
    );
    for private in [
        "https://localhost/client.json",
        "https://127.0.0.1/client.json",
        "https://[::1]/client.json",
        "https://[::ffff:127.0.0.1]/client.json",
    ] {
        assert!(
            refusal(&app, private)
                .await
                .contains("private, loopback or link-local"),
            "{private}"
        );
    }
    // A trailing dot is refused too: as loopback, or as a name the resolver will not answer.
    refusal(&app, "https://localhost./client.json").await;
    assert_eq!(documents.hits(), 0, "nothing was fetched");
}

#[tokio::test]
async fn an_unusable_document_client_is_invalid_client_at_the_token_endpoint() {
    let (app, documents) = app_with_documents().await;
    let client_id = documents.url("/clients/gone.json");
    let response = app
        .post_token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &client_id),
            ("refresh_token", "x"),
        ])
        .await;
    assert_eq!(
        response.headers()["www-authenticate"],
        "Basic realm=\"mcp-oauth-bridge\""
    );
    oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;
}
