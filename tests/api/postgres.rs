//! Several instances on one PostgreSQL database: whichever instance a request reaches, a sign-in,
//! a code, a refresh-token family and a registration are the same. Each test gets a database of
//! its own on the server `mcp_oauth_bridge::testing` finds (`TEST_DATABASE_URL`, else a throwaway
//! cluster).

use std::collections::HashSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_postgres::NoTls;

use crate::helpers::*;

/// A database of this test's own, dropped by `drop_database` at the end.
struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("TEST_DATABASE_URL accepts connections");
    tokio::spawn(connection);
    client
}

async fn test_database() -> Option<TestDatabase> {
    let admin_url = mcp_oauth_bridge::testing::postgres_url().unwrap()?;
    let name = format!("mob_it_{:016x}", rand::random::<u64>());
    admin(&admin_url)
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let mut url = url::Url::parse(&admin_url).unwrap();
    url.set_path(&format!("/{name}"));
    Some(TestDatabase {
        admin_url,
        name,
        url: url.to_string(),
    })
}

impl TestDatabase {
    async fn client(&self) -> tokio_postgres::Client {
        admin(&self.url).await
    }

    async fn drop_database(self) {
        admin(&self.admin_url)
            .await
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .unwrap();
    }
}

/// An instance on `db`; `behind` makes it a second instance under another's issuer (as behind a
/// load balancer), sharing that instance's upstream provider. No signing key is configured: the
/// instances must share the one generated in the database.
async fn instance(db: &TestDatabase, behind: Option<&TestApp>) -> TestApp {
    let url = db.url.clone();
    spawn_app_with(Options {
        configure: configure(move |config| {
            postgres(config, &url);
            config.oauth.dcr.enabled = true;
            config.oauth.dcr.allowed_redirect_profiles = strings(["loopback"]);
        }),
        public_url: behind.map(|a| a.issuer.clone()),
        upstream_issuer: behind.map(|a| a.provider.issuer.clone()),
        ..Options::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sign_in_spans_instances_and_their_tokens_verify_on_each() {
    let Some(db) = test_database().await else {
        return;
    };
    let a = instance(&db, None).await;
    let b = instance(&db, Some(&a)).await;

    // Authorize and consent on A; the provider sends the browser back, and B takes the callback.
    let pkce = Pkce::new();
    let to_upstream = a.authorize_to_upstream(&a.authorize_params(&pkce)).await;
    let upstream = a.browser.get(&to_upstream).send().await.unwrap();
    let to_callback = location(&upstream).replace(&a.local, &b.local);
    assert!(to_callback.starts_with(&b.url("/oauth/callback")));
    let back = location(&a.browser.get(&to_callback).send().await.unwrap());
    let query = query_of(&back);
    assert_eq!(query["iss"], a.issuer);

    // The code B minted is redeemed on A; the refresh token A issued is rotated on B.
    let response = a.redeem_code(&query["code"], &pkce).await;
    assert_eq!(response.status(), StatusCode::OK);
    let tokens: Value = response.json().await.unwrap();
    let refreshed = b.refresh(tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let refreshed: Value = refreshed.json().await.unwrap();

    // One generated key for both: what A signed, B publishes, and the other way round.
    let kid = kid_of(tokens["access_token"].as_str().unwrap());
    assert_eq!(kid, kid_of(refreshed["access_token"].as_str().unwrap()));
    for app in [&a, &b] {
        let jwks = app.get_json(&app.url("/oauth/jwks")).await;
        assert_eq!(jwks["keys"][0]["kid"], kid.as_str());
    }
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_registered_on_one_instance_signs_in_on_the_other() {
    let Some(db) = test_database().await else {
        return;
    };
    let a = instance(&db, None).await;
    let b = instance(&db, Some(&a)).await;
    let registered: Value = a
        .api
        .post(a.url("/oauth/register"))
        .json(&serde_json::json!({
            "redirect_uris": ["http://127.0.0.1:5555/cb"],
            "token_endpoint_auth_method": "none"
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let client_id = registered["client_id"].as_str().unwrap().to_owned();
    let pkce = Pkce::new();
    let params = [
        ("client_id", client_id),
        ("redirect_uri", "http://127.0.0.1:5555/cb".to_owned()),
        ("response_type", "code".to_owned()),
        ("code_challenge", pkce.challenge.clone()),
        ("code_challenge_method", "S256".to_owned()),
        ("state", "s".to_owned()),
    ];
    // B knows the client: it shows B's consent page (registered clients must be approved).
    let next = location(&b.get_authorize(&params).await);
    assert!(next.starts_with(&b.issuer), "{next}");
    assert!(next.contains("/oauth/consent?request="), "{next}");
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_redeemed_on_one_instance_is_a_replay_on_the_other_and_revokes_the_grant() {
    let Some(db) = test_database().await else {
        return;
    };
    let a = instance(&db, None).await;
    let b = instance(&db, Some(&a)).await;
    let pkce = Pkce::new();
    let code = a.authorization_code(&pkce).await;
    let first = a.redeem_code(&code, &pkce).await;
    assert_eq!(first.status(), StatusCode::OK);
    let tokens: Value = first.json().await.unwrap();
    oauth_error(
        b.redeem_code(&code, &pkce).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    // The replay on B revoked what A issued (RFC 6749 §4.1.2).
    let refresh = a.refresh(tokens["refresh_token"].as_str().unwrap()).await;
    oauth_error(refresh, StatusCode::BAD_REQUEST, "invalid_grant").await;
    db.drop_database().await;
}

/// Fifty presentations of one code at once, over both instances. Exactly one gets tokens; the
/// other forty-nine are replays, which wait for that grant to be stored and then revoke it
/// (RFC 6749 §4.1.2): its refresh token is refused and its access token is on the revoked list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_redemptions_of_one_code_over_two_instances_succeed_once_and_revoke_it() {
    let Some(db) = test_database().await else {
        return;
    };
    let a = instance(&db, None).await;
    let b = instance(&db, Some(&a)).await;
    let pkce = Pkce::new();
    let code = a.authorization_code(&pkce).await;
    let attempts = (0..50).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        app.redeem_code(&code, &pkce)
    });
    let mut issued = Vec::new();
    for response in futures_util::future::join_all(attempts).await {
        match response.status() {
            StatusCode::OK => issued.push(response.json::<Value>().await.unwrap()),
            StatusCode::BAD_REQUEST => {
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["error"], "invalid_grant", "{body}");
            }
            other => panic!("a redemption answered {other}"),
        }
    }
    assert_eq!(issued.len(), 1, "{} redemptions got tokens", issued.len());
    let tokens = &issued[0];
    let refresh = b.refresh(tokens["refresh_token"].as_str().unwrap()).await;
    oauth_error(refresh, StatusCode::BAD_REQUEST, "invalid_grant").await;
    let jti = jwt_payload(tokens["access_token"].as_str().unwrap())["jti"]
        .as_str()
        .unwrap()
        .to_owned();
    let client = db.client().await;
    let revoked: i64 = client
        .query_one(
            "SELECT count(*) FROM revoked_access_tokens WHERE jti = $1",
            &[&jti],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        revoked, 1,
        "the access token of the replayed code is revoked"
    );
    let redeemed: i64 = client
        .query_one(
            "SELECT count(*) FROM authorization_codes WHERE redeemed",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(redeemed, 1);
    let live: i64 = client
        .query_one(
            "SELECT count(*) FROM refresh_families WHERE NOT (data->>'revoked')::boolean",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(live, 0, "no grant of the replayed code is usable");
    db.drop_database().await;
}

fn sha256(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The family's current refresh-token hash, read from the database.
async fn current_refresh_hash(db: &TestDatabase) -> Vec<u8> {
    let row = db
        .client()
        .await
        .query_one("SELECT data->'current' FROM refresh_families", &[])
        .await
        .unwrap();
    let current: Value = row.get::<_, tokio_postgres::types::Json<Value>>(0).0;
    current
        .as_array()
        .expect("the hash is stored as its bytes")
        .iter()
        .map(|b| u8::try_from(b.as_u64().unwrap()).unwrap())
        .collect()
}

/// Presents one refresh token `times` at once, alternately at `a` and `b`: the refresh tokens
/// handed out.
async fn concurrent_refreshes(
    a: &TestApp,
    b: &TestApp,
    token: &str,
    times: usize,
) -> HashSet<String> {
    let attempts = (0..times).map(|i| {
        let app = if i % 2 == 0 { a } else { b };
        app.refresh(token)
    });
    let mut issued = HashSet::new();
    for response in futures_util::future::join_all(attempts).await {
        match response.status() {
            StatusCode::OK => {
                let body: Value = response.json().await.unwrap();
                issued.insert(body["refresh_token"].as_str().unwrap().to_owned());
            }
            StatusCode::BAD_REQUEST => {
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["error"], "invalid_grant", "{body}");
            }
            other => panic!("a refresh answered {other}"),
        }
    }
    issued
}

/// Two instances on `db`, and a refresh token signed in for on the first.
async fn two_instances_and_a_refresh_token(db: &TestDatabase) -> (TestApp, TestApp, String) {
    let a = instance(db, None).await;
    let b = instance(db, Some(&a)).await;
    let pkce = Pkce::new();
    let code = a.authorization_code(&pkce).await;
    let tokens: Value = a.redeem_code(&code, &pkce).await.json().await.unwrap();
    let refresh_token = tokens["refresh_token"].as_str().unwrap().to_owned();
    (a, b, refresh_token)
}

/// One rotation and the few retries a lost response may take (three).
const ALLOWED_PRESENTATIONS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_leave_exactly_one_usable_token_which_survives_a_restart() {
    let Some(db) = test_database().await else {
        return;
    };
    let (a, b, refresh_token) = two_instances_and_a_refresh_token(&db).await;

    let issued = concurrent_refreshes(&a, &b, &refresh_token, ALLOWED_PRESENTATIONS).await;
    assert_eq!(issued.len(), ALLOWED_PRESENTATIONS);
    // Of all the refresh tokens handed out, exactly one is the family's current one.
    let current = current_refresh_hash(&db).await;
    let usable: Vec<&String> = issued.iter().filter(|t| sha256(t) == current).collect();
    assert_eq!(usable.len(), 1, "{} issued", issued.len());

    // A new instance (a restart) honours it.
    let restarted = instance(&db, Some(&a)).await;
    let response = restarted.refresh(usable[0]).await;
    assert_eq!(response.status(), StatusCode::OK);
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_refreshes_across_instances_get_at_most_the_allowed_retries() {
    let Some(db) = test_database().await else {
        return;
    };
    let (a, b, refresh_token) = two_instances_and_a_refresh_token(&db).await;

    let issued = concurrent_refreshes(&a, &b, &refresh_token, 50).await;
    assert!(
        !issued.is_empty() && issued.len() <= ALLOWED_PRESENTATIONS,
        "{} issued",
        issued.len()
    );
    // Presentations beyond the allowance are reuse: nothing of the family is left usable.
    for token in &issued {
        assert_eq!(a.refresh(token).await.status(), StatusCode::BAD_REQUEST);
    }
    db.drop_database().await;
}

/// A TCP relay between the bridge and PostgreSQL that the test can cut and restore.
struct Relay {
    port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start(target: String) -> Relay {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let connections = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (accept_up, accept_connections) = (up.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !accept_up.load(Ordering::SeqCst) {
                    continue; // dropped: the database is "down"
                }
                let target = target.clone();
                let handle = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                accept_connections.lock().unwrap().push(handle);
            }
        });
        Relay {
            port,
            up,
            connections,
        }
    }

    fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_a_503_and_not_ready_then_service_resumes_with_nothing_lost() {
    let Some(db) = test_database().await else {
        return;
    };
    let direct = url::Url::parse(&db.url).unwrap();
    let target = format!(
        "{}:{}",
        direct.host_str().unwrap(),
        direct.port().unwrap_or(5432)
    );
    let relay = Relay::start(target).await;
    let mut through_relay = direct.clone();
    through_relay.set_host(Some("127.0.0.1")).unwrap();
    through_relay.set_port(Some(relay.port)).unwrap();
    let app = spawn_app_with(Options {
        configure: configure(move |config| {
            postgres(config, through_relay.as_str()).connect_timeout = Duration::from_secs(1);
        }),
        ..Options::default()
    })
    .await;
    let tokens = app.tokens().await;
    let refresh_token = tokens["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(
        app.api
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    relay.cut();
    let refused = app.refresh(&refresh_token).await;
    let body = oauth_error(
        refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
    )
    .await;
    assert!(body["error_description"].is_string());
    let ready = app.api.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["storage"], "unavailable");
    assert_eq!(
        app.api
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    relay.restore();
    // Back by itself: no restart, and the refresh token of before the outage still works.
    let mut resumed = None;
    for _ in 0..50 {
        let response = app.refresh(&refresh_token).await;
        if response.status() == StatusCode::OK {
            resumed = Some(response);
            break;
        }
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(resumed.is_some(), "the service resumed");
    assert_eq!(
        app.api
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    db.drop_database().await;
}

/// With re-validation on, the provider's refresh token is kept sealed in the database, and
/// another instance with the same encryption key can use it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_providers_refresh_token_is_stored_sealed_and_used_by_every_instance() {
    let Some(db) = test_database().await else {
        return;
    };
    let sealed_revalidation = |url: String| {
        configure(move |config| {
            postgres(config, &url);
            config.storage.encryption_key = Some(SecretString::new(
                "an encryption key of at least 32 characters",
            ));
            upstream(config).revalidate_on_refresh = true;
        })
    };
    let a = spawn_app_with(Options {
        configure: sealed_revalidation(db.url.clone()),
        ..Options::default()
    })
    .await;
    let b = spawn_app_with(Options {
        configure: sealed_revalidation(db.url.clone()),
        public_url: Some(a.issuer.clone()),
        upstream_issuer: Some(a.provider.issuer.clone()),
        ..Options::default()
    })
    .await;
    let tokens = a.tokens().await;
    let client = db.client().await;
    let row = client
        .query_one(
            "SELECT data::text, data->>'upstream_refresh' FROM refresh_families",
            &[],
        )
        .await
        .unwrap();
    let (data, sealed): (String, Option<String>) = (row.get(0), row.get(1));
    assert!(!data.contains("upstream-rt-"), "stored in clear: {data}");
    assert!(sealed.is_some_and(|s| s.len() > 40), "{data}");
    let response = b.refresh(tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(a.provider.refresh_requests(), 1);
    db.drop_database().await;
}

/// Registration URLs with client ids no registration can have, against a real database: a NUL,
/// which PostgreSQL refuses in text, a string far longer than any id, invalid UTF-8. Each is the
/// same `401 invalid_token` as an unknown client, never a storage error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_url_with_a_hostile_client_id_is_an_invalid_token() {
    let Some(db) = test_database().await else {
        return;
    };
    let app = instance(&db, None).await;
    let long = "a".repeat(8_000);
    for id in ["dcr_%00", "%00", long.as_str(), "dcr_%ff%fe", "a%2Fb"] {
        for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
            let response = app
                .api
                .request(method.clone(), app.url(&format!("/oauth/register/{id}")))
                .bearer_auth("any-token")
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {}",
                &id[..id.len().min(20)]
            );
            let challenge = response.headers()["www-authenticate"].to_str().unwrap();
            assert!(
                challenge.contains(r#"error="invalid_token""#),
                "{challenge}"
            );
        }
    }
    db.drop_database().await;
}
