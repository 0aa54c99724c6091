//! `cargo run --release --example bench`: figures for the hot paths of the token endpoint.
//! In-process (no HTTP), one thread. With `BENCH_DATABASE_URL` (a database it may create tables
//! in; use a scratch one) the refresh grant and the code exchange also run on PostgreSQL, one
//! request at a time and sixteen at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mcp_oauth_bridge::clients::ClientConfig;
use mcp_oauth_bridge::clients::ClientRegistry;
use mcp_oauth_bridge::clock::{Clock, SystemClock, UnixTime};
use mcp_oauth_bridge::identity::Identity;
use mcp_oauth_bridge::oauth::token::{ClientCredentials, exchange};
use mcp_oauth_bridge::oauth::{Bridge, Params, Settings, SignIn};
use mcp_oauth_bridge::secret::SecretString;
use mcp_oauth_bridge::storage::settings::PostgresConfig;
use mcp_oauth_bridge::storage::{AuthorizationCodeRecord, MemoryStorage, PostgresStorage, Storage};
use mcp_oauth_bridge::tokens::jwt::{AccessTokenClaims, sign_access_token};
use mcp_oauth_bridge::tokens::keys::{KeyRing, SigningKey};
use mcp_oauth_bridge::tokens::refresh::RefreshFamily;
use mcp_oauth_bridge::tokens::{KeySet, generate_token};
use mcp_oauth_bridge::upstream::claims::AccessPolicy;
use mcp_oauth_bridge::upstream::claims::ClaimsConfig;
use mcp_oauth_bridge::upstream::providers::{Provider, Providers};
use mcp_oauth_bridge::upstream::{
    Upstream, UpstreamError, UpstreamLogin, UpstreamRefresh, UpstreamRequest,
};
use sha2::{Digest, Sha256};

/// The token endpoint never calls the upstream provider.
struct NoUpstream;

#[async_trait]
impl Upstream for NoUpstream {
    fn issuer(&self) -> &str {
        "https://idp.example.com"
    }

    fn client_id(&self) -> &str {
        "bridge"
    }

    fn is_ready(&self) -> bool {
        false
    }

    fn authorization_url(&self, _: &UpstreamRequest<'_>) -> Result<url::Url, UpstreamError> {
        Err(UpstreamError::NotReady)
    }
    async fn exchange_code(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: UnixTime,
    ) -> Result<UpstreamLogin, UpstreamError> {
        Err(UpstreamError::NotReady)
    }
    async fn refresh(
        &self,
        _: &SecretString,
        _: UnixTime,
    ) -> Result<UpstreamRefresh, UpstreamError> {
        Err(UpstreamError::NotReady)
    }
}

fn report(name: &str, count: u32, elapsed: Duration) {
    let per = elapsed / count;
    println!(
        "{name:<48} {count:>7} in {elapsed:>10.2?}  {per:>10.2?}/op  {:>9.0} op/s",
        f64::from(count) / elapsed.as_secs_f64()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let secret = "bench-client-secret";
    let client = |id: &str, secret: Option<&str>| ClientConfig {
        id: id.into(),
        secret: secret.map(SecretString::new),
        redirect_uris: vec!["http://127.0.0.1/callback".into()],
        name: None,
        scopes: None,
        grant_types: None,
        skip_consent: false,
        id_token_signed_response_alg: None,
        jwks: None,
        jwks_uri: None,
    };
    let clients = ClientRegistry::from_config(
        &[client("public", None), client("confidential", Some(secret))],
        bcrypt::DEFAULT_COST,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let bridge = bridge_on(clients, Arc::clone(&storage))?;
    let now = SystemClock.now();

    let wrong = SecretString::new("wrong");
    let rounds = 5;
    let started = Instant::now();
    for _ in 0..rounds {
        let _ = bridge
            .clients
            .authenticate("confidential", Some(&wrong), now)
            .await;
    }
    report(
        "client auth, bcrypt cost 12 (wrong secret)",
        rounds,
        started.elapsed(),
    );
    let right = SecretString::new(secret);
    bridge
        .clients
        .authenticate("confidential", Some(&right), now)
        .await?;
    let rounds = 100_000;
    let started = Instant::now();
    for _ in 0..rounds {
        bridge
            .clients
            .authenticate("confidential", Some(&right), now)
            .await?;
    }
    report("client auth, remembered secret", rounds, started.elapsed());

    let claims = AccessTokenClaims {
        iss: "https://bridge.example.com".into(),
        sub: "u".into(),
        aud: "https://mcp.example.com/mcp".into(),
        client_id: "public".into(),
        scope: "openid".into(),
        exp: now.seconds() + 3600,
        iat: now.seconds(),
        nbf: now.seconds(),
        jti: "j".into(),
        email: None,
        name: None,
        groups: vec![],
        sid: None,
        act: None,
    };
    let rounds = 5_000;
    let started = Instant::now();
    for _ in 0..rounds {
        sign_access_token(&bridge.keys.current(), &claims)?;
    }
    report("sign ES256 access token", rounds, started.elapsed());
    // What an ID token costs a client that registered no algorithm (OIDC's RS256 default).
    let rsa = KeySet::new(SigningKey::generate_rs256()?);
    let rounds = 1_000;
    let started = Instant::now();
    for _ in 0..rounds {
        sign_access_token(&rsa, &claims)?;
    }
    report("sign RS256 (ID token default)", rounds, started.elapsed());
    let rounds = 5;
    let started = Instant::now();
    for _ in 0..rounds {
        SigningKey::generate_rs256()?;
    }
    report("generate a 2048-bit RSA key", rounds, started.elapsed());

    storage_figures("memory", &bridge, 20_000).await?;
    if let Ok(url) = std::env::var("BENCH_DATABASE_URL") {
        let clients = ClientRegistry::from_config(&[client("public", None)], 4)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let postgres = PostgresStorage::new(
            &PostgresConfig {
                url: SecretString::new(url),
                pool_size: 16,
                connect_timeout: Duration::from_secs(5),
            },
            None,
        )?;
        postgres.migrate().await?;
        let bridge = Arc::new(bridge_on(clients, Arc::new(postgres))?);
        storage_figures("postgres", &bridge, 2_000).await?;
        concurrent_refreshes("postgres", &bridge, 16, 250).await?;
    }
    concurrent_refreshes("memory", &Arc::new(bridge), 16, 1_000).await?;
    Ok(())
}

fn bridge_on(clients: ClientRegistry, storage: Arc<dyn Storage>) -> anyhow::Result<Bridge> {
    Ok(Bridge {
        settings: Settings {
            issuer: "https://bridge.example.com".into(),
            default_audience: "https://mcp.example.com/mcp".into(),
            allowed_resources: vec![],
            scopes_supported: vec!["openid".into(), "email".into()],
            access_token_ttl: Duration::from_secs(3600),
            refresh_token_ttl: Duration::from_secs(30 * 86400),
            refresh_token_max_lifetime: Duration::from_secs(90 * 86400),
            refresh_token_retry_window: Duration::from_secs(300),
            registration_enabled: false,
            metadata_documents_enabled: false,
            introspection_tokens: vec![],
            access_token_claims: vec![mcp_oauth_bridge::oauth::disclosure::IdentityClaim::Groups],
            jwt_bearer_grant: false,
            token_exchange_grant: false,
        },
        clients,
        storage,
        sign_in: SignIn::Upstream(Arc::new(Providers::new(vec![Provider {
            name: "upstream",
            display_name: "upstream".into(),
            callback: None,
            email_domains: vec![],
            foreign_domains: vec![],
            subject_prefix: String::new(),
            claims: ClaimsConfig::default(),
            access_policy: AccessPolicy::default(),
            revalidate_on_refresh: false,
            keep_tokens: false,
            upstream: Arc::new(NoUpstream),
        }]))),
        sealer: None,
        renewals: Default::default(),
        pending: Arc::new(mcp_oauth_bridge::oauth::pending_cap::PendingCap::new(
            1_000_000,
        )),
        metrics: Arc::new(mcp_oauth_bridge::metrics::Metrics::new()),
        identity_assertions: None,
        token_exchange: None,
        keys: Arc::new(KeyRing::new(
            KeySet::new(SigningKey::generate_es256()?)
                .with_id_token_keys(vec![SigningKey::generate_rs256()?]),
        )),
    })
}

fn identity() -> Identity {
    Identity {
        subject: "u".into(),
        email: Some("u@example.com".into()),
        email_verified: Some(true),
        name: None,
        groups: vec!["g".into()],
    }
}

/// A new refresh-token family; its first refresh token.
async fn new_family(bridge: &Bridge, now: UnixTime) -> anyhow::Result<String> {
    let (refresh, hash) = generate_token();
    bridge
        .storage
        .create_family(RefreshFamily {
            id: mcp_oauth_bridge::tokens::opaque::random_string(16),
            client_id: "public".into(),
            identity: identity(),
            scope: vec!["openid".into()],
            audience: "https://mcp.example.com/mcp".into(),
            absolute_expires_at: now.plus(Duration::from_secs(90 * 86400)),
            current: Some(hash),
            current_expires_at: now.plus(Duration::from_secs(30 * 86400)),
            previous: None,
            revoked: false,
            access_tokens: vec![],
            upstream_refresh: None,
            upstream_access: None,
            upstream_session: None,
            created_at: now,
            last_used_at: None,
        })
        .await?;
    Ok(refresh)
}

fn public() -> ClientCredentials {
    ClientCredentials {
        client_id: "public".into(),
        secret: None,
        assertion: None,
    }
}

async fn refresh_once(bridge: &Bridge, refresh: &str, now: UnixTime) -> anyhow::Result<String> {
    let params = Params::from([("grant_type", "refresh_token"), ("refresh_token", refresh)]);
    let response = exchange(bridge, &public(), &params, now)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(response
        .refresh_token
        .map(|token| token.expose().to_owned())
        .unwrap_or_default())
}

/// Sequential refresh grants and code exchanges on the bridge's storage.
async fn storage_figures(name: &str, bridge: &Bridge, rounds: u32) -> anyhow::Result<()> {
    let now = SystemClock.now();
    let mut refresh = new_family(bridge, now).await?;
    let started = Instant::now();
    for _ in 0..rounds {
        refresh = refresh_once(bridge, &refresh, now).await?;
    }
    report(
        &format!("{name}: refresh grant, one at a time"),
        rounds,
        started.elapsed(),
    );

    let verifier = "bench-verifier-0123456789-0123456789-0123456789";
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let started = Instant::now();
    for _ in 0..rounds {
        let (code, hash): (String, _) = generate_token();
        bridge
            .storage
            .put_code(
                hash,
                AuthorizationCodeRecord {
                    client_id: "public".into(),
                    redirect_uri: "http://127.0.0.1/callback".into(),
                    redirect_uri_given: true,
                    code_challenge: challenge.clone(),
                    scope: vec!["openid".into()],
                    audience: "https://mcp.example.com/mcp".into(),
                    identity: identity(),
                    auth_time: now,
                    client_nonce: None,
                    family_id: mcp_oauth_bridge::tokens::opaque::random_string(16),
                    expires_at: now.plus(Duration::from_secs(600)),
                    upstream_refresh: None,
                    upstream_access: None,
                    upstream_session: None,
                },
            )
            .await?;
        let params = Params::from([
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", "http://127.0.0.1/callback"),
            ("code_verifier", verifier),
        ]);
        exchange(bridge, &public(), &params, now)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    report(
        &format!("{name}: code exchange (incl. storing the code)"),
        rounds,
        started.elapsed(),
    );
    Ok(())
}

/// `tasks` families refreshed in parallel, `rounds` times each.
async fn concurrent_refreshes(
    name: &str,
    bridge: &Arc<Bridge>,
    tasks: u32,
    rounds: u32,
) -> anyhow::Result<()> {
    let now = SystemClock.now();
    let mut families = Vec::new();
    for _ in 0..tasks {
        families.push(new_family(bridge, now).await?);
    }
    let started = Instant::now();
    let mut running = tokio::task::JoinSet::new();
    for mut refresh in families {
        let bridge = Arc::clone(bridge);
        running.spawn(async move {
            for _ in 0..rounds {
                refresh = refresh_once(&bridge, &refresh, now).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = running.join_next().await {
        done??;
    }
    report(
        &format!("{name}: refresh grant, {tasks} at once"),
        tasks * rounds,
        started.elapsed(),
    );
    Ok(())
}
