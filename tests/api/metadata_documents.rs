//! Client ID Metadata Documents: https `client_id`s fetched from a real TLS server on loopback.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::document_server::{Answer, CA_FILE, DocumentServer};
use crate::helpers::*;

/// Metadata documents on, trusting the test CA, with `allowed_hosts` allowed to be private.
fn cimd_config(config: &mut Config, allowed_hosts: &[&str]) {
    config.oauth.dcr.allowed_redirect_profiles = strings(["loopback"]);
    config.oauth.cimd = CimdConfig {
        enabled: true,
        allowed_hosts: allowed_hosts
            .iter()
            .map(|host| (*host).to_owned())
            .collect(),
        extra_root_certificates: vec![CA_FILE.into()],
        ..CimdConfig::default()
    };
}

async fn app_with_documents() -> (TestApp, DocumentServer) {
    let documents = DocumentServer::start().await;
    let app = spawn_app_with(Options {
        configure: configure(|config| cimd_config(config, &["localhost"])),
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

const UNIFORM: &str = "the client&#39;s metadata document could not be fetched";

/// A document that could not be fetched: the browser learns only that, whatever the reason,
/// so the bridge tells nobody what its network looks like. The reason, as the log has it.
async fn fetch_refusal(app: &TestApp, client_id: &str, allowed_hosts: &[&str]) -> String {
    let page = refusal(app, client_id).await;
    assert!(page.contains(UNIFORM), "{page}");
    let reason = reason(client_id, allowed_hosts).await;
    assert!(!page.contains(&reason), "the page told {reason:?}");
    reason
}

/// Why the bridge's document fetcher, configured as the test app's, refuses `client_id`.
async fn reason(client_id: &str, allowed_hosts: &[&str]) -> String {
    use mcp_oauth_bridge::clients::metadata_documents::{
        CimdSettings, DocumentError, MetadataDocuments,
    };
    use std::time::Duration;
    let pem = std::fs::read(CA_FILE).unwrap();
    let documents = MetadataDocuments::new(CimdSettings {
        allowed_hosts: allowed_hosts.iter().map(|h| (*h).to_owned()).collect(),
        timeout: Duration::from_secs(5),
        max_bytes: 16 * 1024,
        min_cache: Duration::from_secs(300),
        max_cache: Duration::from_secs(86400),
        root_certificates: vec![reqwest::Certificate::from_pem(&pem).unwrap()],
        redirects: mcp_oauth_bridge::oauth::redirect_policy::RedirectPolicy::compile(
            &[],
            &["loopback".to_owned()],
        )
        .unwrap(),
        scopes_supported: vec!["openid".into(), "email".into()],
        id_token_algorithms: vec![SigningAlgorithm::RS256],
    });
    let now = mcp_oauth_bridge::clock::UnixTime(1_800_000_000);
    match documents.client(client_id, now).await {
        Err(DocumentError::Unreachable { reason }) => reason,
        other => panic!("expected a fetch failure, got {other:?}"),
    }
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
async fn a_document_that_lies_or_breaks_policy_is_refused_with_its_reason() {
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

    let evil = documents.url("/clients/evil.json");
    let mut outside = document(&evil);
    outside["redirect_uris"] = json!(["https://evil.example.com/callback"]);
    documents.serve_document("/clients/evil.json", outside, "max-age=60");
    assert!(refusal(&app, &evil).await.contains("redirect URI policy"));
}

#[tokio::test]
async fn a_document_that_cannot_be_fetched_is_refused_with_one_message_whatever_the_reason() {
    let (app, documents) = app_with_documents().await;
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
        fetch_refusal(&app, &moved, &["localhost"])
            .await
            .contains("redirects are not followed")
    );

    let huge = documents.url("/clients/huge.json");
    let mut big = document(&huge);
    big["padding"] = json!("x".repeat(32 * 1024));
    documents.serve_document("/clients/huge.json", big.clone(), "max-age=60");
    assert!(
        fetch_refusal(&app, &huge, &["localhost"])
            .await
            .contains("larger than")
    );
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
    assert!(
        fetch_refusal(&app, &streamed, &["localhost"])
            .await
            .contains("larger than")
    );
    assert!(
        fetch_refusal(
            &app,
            &documents.url("/clients/missing.json"),
            &["localhost"]
        )
        .await
        .contains("404")
    );
}

#[tokio::test]
async fn a_document_on_a_private_or_loopback_address_is_refused_without_an_allow_list() {
    let documents = DocumentServer::start().await;
    let app = spawn_app_with(Options {
        configure: configure(|config| cimd_config(config, &[])),
        ..Options::default()
    })
    .await;
    let client_id = documents.url("/clients/good.json");
    documents.serve_document("/clients/good.json", document(&client_id), "max-age=600");
    // Another port than 443 is refused before any lookup: the bridge is no port scanner.
    assert!(
        fetch_refusal(&app, &client_id, &[])
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
            fetch_refusal(&app, private, &[])
                .await
                .contains("private, loopback or link-local"),
            "{private}"
        );
    }
    // A trailing dot is refused too: as loopback, or as a name the resolver will not answer.
    fetch_refusal(&app, "https://localhost./client.json", &[]).await;
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

#[tokio::test]
async fn each_address_may_have_only_a_few_documents_fetched_per_window() {
    let documents = DocumentServer::start().await;
    let app = spawn_app_with(Options {
        configure: configure(|config| {
            cimd_config(config, &["localhost"]);
            config.oauth.cimd.fetch_rate_limit = RateLimitConfig {
                requests: 2,
                window: seconds(60),
            };
        }),
        ..Options::default()
    })
    .await;
    let first = documents.url("/clients/one.json");
    documents.serve_document("/clients/one.json", document(&first), "max-age=600");
    let pkce = Pkce::new();
    for path in ["/clients/one.json", "/clients/two.json"] {
        let response = app
            .get_authorize(&params(&documents.url(path), &pkce))
            .await;
        assert_ne!(response.status(), StatusCode::TOO_MANY_REQUESTS, "{path}");
    }
    let third = app
        .get_authorize(&params(&documents.url("/clients/three.json"), &pkce))
        .await;
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        third.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    // The token endpoint counts the same fetches.
    let at_token = app
        .post_token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &documents.url("/clients/four.json")),
            ("refresh_token", "x"),
        ])
        .await;
    oauth_error(
        at_token,
        StatusCode::TOO_MANY_REQUESTS,
        "temporarily_unavailable",
    )
    .await;
    // A document already cached costs no fetch, so it is not counted.
    let cached = app.get_authorize(&params(&first, &pkce)).await;
    assert!(location(&cached).starts_with(&app.url("/oauth/consent")));
    assert_eq!(documents.hits(), 2, "nothing was fetched beyond the limit");
}
